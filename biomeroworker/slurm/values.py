"""Parsers for the scalar formats Slurm prints: durations, sizes, exit codes, times."""

from __future__ import annotations

import re
from datetime import datetime

from biomeroworker.errors import SlurmError

_DURATION = re.compile(r"^(?:(?P<d>\d+)-)?(?:(?P<h>\d+):)?(?P<m>\d+):(?P<s>\d+)(?:\.\d+)?$")
_DAYS_HOURS = re.compile(r"^(?P<d>\d+)-(?P<h>\d+)$")
_SIZE = re.compile(r"^(?P<n>\d+(?:\.\d+)?)(?P<unit>[KMGTP]?)$")
_UNIT_POWER = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5}
_TASK_RANGE = re.compile(r"^(?P<first>\d+)(?:-(?P<last>\d+)(?::(?P<step>\d+))?)?$")
_NO_TIME = {"", "Unknown", "None", "N/A", "NONE"}
_UNLIMITED = {"UNLIMITED", "INFINITE", "infinite", "NOT_SET", "Partition_Limit"}


def parse_duration_s(text: str) -> int | None:
    """``[D-][HH:]MM:SS`` (sacct Elapsed, squeue %M, sinfo %l) to seconds.

    Returns None for "unlimited"-style words and for the empty string. Also takes
    the ``D-HH`` form that time limits may use.
    """
    text = text.strip()
    if not text or text in _UNLIMITED or text == "INVALID":
        return None
    match = _DURATION.fullmatch(text) or _DAYS_HOURS.fullmatch(text)
    if match is None:
        raise SlurmError(f"cannot read duration {text!r}")
    parts = match.groupdict()
    days, hours = int(parts.get("d") or 0), int(parts.get("h") or 0)
    minutes, seconds = int(parts.get("m") or 0), int(parts.get("s") or 0)
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def parse_size_bytes(text: str) -> int | None:
    """sacct sizes such as MaxRSS ("1180K", "12M", "1.5G", "0") to bytes; "" is None.

    Slurm's suffixes are powers of 1024; a bare number is bytes.
    """
    text = text.strip()
    if not text:
        return None
    match = _SIZE.fullmatch(text)
    if match is None:
        raise SlurmError(f"cannot read size {text!r}")
    return round(float(match["n"]) * 1024 ** _UNIT_POWER[match["unit"]])


def parse_exit_code(text: str) -> tuple[int | None, int | None]:
    """sacct ExitCode ``"code:signal"`` ("0:0", "1:0", "0:9") to (code, signal)."""
    text = text.strip()
    if not text:
        return None, None
    code, sep, signal = text.partition(":")
    if not (code.isdigit() and (not sep or signal.isdigit())):
        raise SlurmError(f"cannot read exit code {text!r}")
    return int(code), int(signal) if sep else 0


def parse_timestamp(text: str) -> datetime | None:
    """``2026-11-21T05:01:39`` (cluster local time, no zone) to a naive datetime.

    "Unknown", "None" and "N/A" (not started, not ended) become None.
    """
    text = text.strip()
    if text in _NO_TIME:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S")  # Slurm prints local time
    except ValueError as exc:
        raise SlurmError(f"cannot read timestamp {text!r}") from exc


def expand_task_ids(spec: str) -> list[int]:
    """An array task expression ("1-3,7", "0-10:2%4") to task ids; the %throttle is dropped."""
    ids: list[int] = []
    for item in spec.split("%", 1)[0].split(","):
        match = _TASK_RANGE.fullmatch(item)
        if match is None or match["step"] == "0":
            raise SlurmError(f"cannot read array task expression {spec!r}")
        first = int(match["first"])
        last = int(match["last"] or first)
        ids.extend(range(first, last + 1, int(match["step"] or 1)))
    return ids
