"""The benchmark report's pure helpers (bench/stats.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

# bench/ is not an installed package; load the one pure module by its path.
_SPEC = importlib.util.spec_from_file_location(
    "bench_stats", Path(__file__).resolve().parents[2] / "bench" / "stats.py"
)
assert _SPEC is not None and _SPEC.loader is not None
stats = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(stats)
cycles_within, fmt, median, ratio, table = (
    stats.cycles_within,
    stats.fmt,
    stats.median,
    stats.ratio,
    stats.table,
)


def test_median_of_an_even_count_is_the_mean_of_the_middle_two() -> None:
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5


def test_median_of_nothing_is_none() -> None:
    assert median([]) is None


def test_ratio_is_ours_over_theirs() -> None:
    assert ratio(1.0, 4.0) == 0.25


@pytest.mark.parametrize(("ours", "theirs"), [(None, 1.0), (1.0, None), (1.0, 0.0)])
def test_ratio_is_none_when_a_side_is_missing_or_zero(ours, theirs) -> None:
    assert ratio(ours, theirs) is None


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (None, "s", "-"),
        (0.1234, "s", "0.12 s"),
        (12.34, "x", "12.3 x"),
        (1234.5, "", "1234"),
        (3, "", "3"),
    ],
)
def test_fmt_keeps_three_significant_digits_or_a_dash(value, unit, text) -> None:
    assert fmt(value, unit) == text


def test_table_pads_every_column_to_its_widest_cell() -> None:
    text = table(["a", "bb"], [["ccc", "d"]])
    assert text.splitlines() == ["| a   | bb |", "|-----|----|", "| ccc | d  |"]


def test_fixed_interval_of_10_s_polls_61_times_in_10_minutes() -> None:
    assert cycles_within(600, 10, 1.0, 10) == 61


def test_backoff_polls_fewer_times_than_its_first_interval_would() -> None:
    # waits 1, 1.5, 2.25, ... reach 60 s after 11 polls (171 s); then one poll a minute
    assert cycles_within(600, 1.0, 1.5, 60) == 19


def test_cycles_within_refuses_a_shrinking_interval() -> None:
    with pytest.raises(ValueError):
        cycles_within(600, 1.0, 0.5, 60)
