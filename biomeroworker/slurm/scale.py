"""Grow a job's time limit or memory for a resubmission (pure functions over sbatch syntax)."""

from __future__ import annotations

import math
import re

from biomeroworker.errors import SlurmError
from biomeroworker.slurm.values import parse_duration_s

_MEM = re.compile(r"(?P<n>[0-9]+(?:\.[0-9]+)?)(?P<unit>[KMGT]?)B?", re.IGNORECASE)
_MB_PER_UNIT = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 * 1024}


def time_limit_s(text: str) -> int:
    """sbatch --time: a bare number is minutes; otherwise [D-]HH:MM:SS and friends."""
    text = text.strip()
    if text.isdigit():
        return int(text) * 60
    seconds = parse_duration_s(text)
    if seconds is None:
        raise SlurmError(f"time limit {text!r} cannot be scaled")
    return seconds


def format_time_limit(seconds: int) -> str:
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}-{clock}" if days else clock


def scale_time_limit(text: str, factor: float) -> str:
    return format_time_limit(math.ceil(time_limit_s(text) * factor))


def memory_mb(text: str) -> float:
    """sbatch --mem: a bare number is megabytes; K, M, G, T suffixes (an optional B)."""
    match = _MEM.fullmatch(text.strip())
    if match is None:
        raise SlurmError(f"memory {text!r} cannot be scaled")
    return float(match["n"]) * _MB_PER_UNIT[match["unit"].upper()]


def scale_memory(text: str, factor: float) -> str:
    return f"{math.ceil(memory_mb(text) * factor)}M"
