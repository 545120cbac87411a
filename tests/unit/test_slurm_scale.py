"""Time limits and memory grow in sbatch's own syntax for resubmissions."""

from __future__ import annotations

import pytest

from biomeroworker.errors import SlurmError
from biomeroworker.slurm.scale import scale_memory, scale_time_limit, time_limit_s


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10", 600),
        ("00:10:00", 600),
        ("1:30:00", 5400),
        ("2-00:00:00", 172800),
        ("05:30", 330),
        ("1-12:30", 131400),  # days-hours:minutes, not minutes:seconds
        ("1-12", 129600),  # days-hours
    ],
)
def test_time_limits_read_as_sbatch_reads_them(text: str, seconds: int) -> None:
    assert time_limit_s(text) == seconds


@pytest.mark.parametrize(
    ("text", "factor", "expected"),
    [("00:01:00", 2, "00:02:00"), ("13:00:00", 2, "1-02:00:00"), ("30", 2, "01:00:00")],
)
def test_time_limit_doubles(text: str, factor: float, expected: str) -> None:
    assert scale_time_limit(text, factor) == expected


@pytest.mark.parametrize(
    ("text", "expected"), [("100M", "200M"), ("4G", "8192M"), ("4GB", "8192M"), ("512", "1024M")]
)
def test_memory_doubles(text: str, expected: str) -> None:
    assert scale_memory(text, 2) == expected


@pytest.mark.parametrize("bad", ["lots", "4X", ""])
def test_unreadable_memory_is_an_error(bad: str) -> None:
    with pytest.raises(SlurmError):
        scale_memory(bad, 2)


@pytest.mark.parametrize("text", ["INFINITE", "UNLIMITED", "soon"])
def test_an_unlimited_or_unreadable_limit_cannot_be_scaled(text: str) -> None:
    with pytest.raises(SlurmError, match="time limit"):
        scale_time_limit(text, 2)
