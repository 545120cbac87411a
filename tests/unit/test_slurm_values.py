from __future__ import annotations

from datetime import datetime

import pytest

from biomeroworker.errors import SlurmError
from biomeroworker.slurm.values import (
    expand_task_ids,
    parse_duration_s,
    parse_exit_code,
    parse_size_bytes,
    parse_timestamp,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("00:00:05", 5),  # sacct Elapsed
        ("00:01:16", 76),
        ("1-02:03:04", 93784),
        ("0:02", 2),  # squeue %M
        ("1:02:03", 3723),
        ("2:00:00", 7200),  # sinfo %l
        ("7-00:00:00", 604800),
        ("1-12", 129600),  # days-hours time limit
        ("00:00:01.500", 1),
        ("infinite", None),  # sinfo, partition without a limit
        ("UNLIMITED", None),
        ("", None),
    ],
)
def test_duration_reads_slurm_forms(text: str, seconds: int | None) -> None:
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize("text", ["5", "1:2:3:4", "abc", "-1:00"])
def test_duration_rejects_garbage(text: str) -> None:
    with pytest.raises(SlurmError):
        parse_duration_s(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("4208K", 4208 * 1024),  # real MaxRSS of a .batch step
        ("318072K", 318072 * 1024),
        ("12M", 12 * 1024**2),
        ("1.5G", 1536 * 1024**2),
        ("2T", 2 * 1024**4),
        ("0", 0),
        ("512", 512),
        ("", None),  # job line: MaxRSS lives on the steps
    ],
)
def test_size_reads_slurm_suffixes_as_powers_of_1024(text: str, size: int | None) -> None:
    assert parse_size_bytes(text) == size


@pytest.mark.parametrize("text", ["12X", "K", "1.2.3M", "-5K"])
def test_size_rejects_garbage(text: str) -> None:
    with pytest.raises(SlurmError):
        parse_size_bytes(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0:0", (0, 0)),
        ("1:0", (1, 0)),
        ("3:0", (3, 0)),  # real: array element that ran `exit 3`
        ("0:9", (0, 9)),  # real: step killed over its memory limit
        ("0:15", (0, 15)),  # real: batch step of a cancelled job
        ("", (None, None)),
    ],
)
def test_exit_code_splits_code_and_signal(
    text: str, expected: tuple[int | None, int | None]
) -> None:
    assert parse_exit_code(text) == expected


@pytest.mark.parametrize("text", ["x:0", "1:y", "1:2:3"])
def test_exit_code_rejects_garbage(text: str) -> None:
    with pytest.raises(SlurmError):
        parse_exit_code(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-21T05:01:39", datetime(2026, 11, 21, 5, 1, 39)),
        ("Unknown", None),  # sacct End of a running job
        ("None", None),
        ("N/A", None),  # squeue %S of a pending job
        ("", None),
    ],
)
def test_timestamp_reads_iso_and_not_set_words(text: str, expected: datetime | None) -> None:
    assert parse_timestamp(text) == expected


def test_timestamp_rejects_other_formats() -> None:
    with pytest.raises(SlurmError):
        parse_timestamp("21 Nov 2026")


@pytest.mark.parametrize(
    ("spec", "ids"),
    [
        ("1-3", [1, 2, 3]),
        ("1,3-5,9%2", [1, 3, 4, 5, 9]),  # real pending range after cancelling 5_2
        ("0-10:5", [0, 5, 10]),
        ("7", [7]),
    ],
)
def test_array_task_expression_expands(spec: str, ids: list[int]) -> None:
    assert expand_task_ids(spec) == ids


@pytest.mark.parametrize("spec", ["", "1-", "a-3", "1-3:0", "1-3..."])
def test_array_task_expression_rejects_garbage(spec: str) -> None:
    with pytest.raises(SlurmError):
        expand_task_ids(spec)
