"""Grow a job's time limit or memory for a resubmission (pure functions over sbatch syntax)."""

from __future__ import annotations

import math
import re

from biomeroworker.errors import SlurmError
from biomeroworker.slurm.offer import format_limit, sbatch_time_s

_MEM = re.compile(r"(?P<n>[0-9]+(?:\.[0-9]+)?)(?P<unit>[KMGT]?)B?", re.IGNORECASE)
_MB_PER_UNIT = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 * 1024}


def time_limit_s(text: str) -> int:
    """sbatch --time in seconds, read as sbatch reads it (``1-12:30`` is a day and
    twelve and a half hours); an unlimited or unreadable limit cannot be scaled."""
    try:
        seconds = sbatch_time_s(text)
    except ValueError as exc:
        raise SlurmError(f"time limit {text!r} cannot be scaled: {exc}") from None
    if seconds is None:
        raise SlurmError(f"time limit {text!r} is unlimited: there is nothing to scale")
    return seconds


def scale_time_limit(text: str, factor: float) -> str:
    return format_limit(math.ceil(time_limit_s(text) * factor))


def memory_mb(text: str) -> float:
    """sbatch --mem: a bare number is megabytes; K, M, G, T suffixes (an optional B)."""
    match = _MEM.fullmatch(text.strip())
    if match is None:
        raise SlurmError(f"memory {text!r} cannot be scaled")
    return float(match["n"]) * _MB_PER_UNIT[match["unit"].upper()]


def scale_memory(text: str, factor: float) -> str:
    return f"{math.ceil(memory_mb(text) * factor)}M"
