"""The arithmetic behind `biomero stats`: the nearest-rank reference, the periods, the
duration buckets and how a `--since` splits. The totals and their SQL are checked on
real stores (tests/tracking_reads.py)."""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime
from typing import Any

import pytest

from biomeroworker.tracking.analytics import Scope, durations_summary, percentile, period_key
from biomeroworker.tracking.totals import bucket_us

T0 = datetime(2025, 3, 31, 12, 0)


def test_p95_of_twenty_values_is_the_nineteenth_smallest() -> None:
    assert percentile([float(v) for v in range(20, 0, -1)], 0.95) == 19.0


def test_p95_of_one_value_is_that_value() -> None:
    assert percentile([7.5], 0.95) == 7.5


@pytest.mark.parametrize(
    ("period", "key"), [("day", "2025-03-31"), ("week", "2025-W14"), ("month", "2025-03")]
)
def test_periods_group_by_calendar_unit(period: str, key: str) -> None:
    assert period_key(T0, period) == key


def test_an_unknown_period_is_refused() -> None:
    with pytest.raises(ValueError, match="period"):
        period_key(T0, "fortnight")


@pytest.mark.parametrize(
    ("micros", "bucket"),
    [
        (0, 0),
        (456, 456),  # under a millisecond: exact
        (1_234, 1_230),
        (1_235, 1_240),  # half up
        (999_499, 999_000),
        (999_500, 1_000_000),
        (1_234_567, 1_230_000),  # 1.234567 s counts as 1.23 s
        (-1_235, -1_240),  # a clock step backwards keeps its sign
    ],
)
def test_durations_are_kept_to_three_significant_digits(micros: int, bucket: int) -> None:
    assert bucket_us(micros) == bucket


def test_the_p95_of_a_histogram_is_the_exact_p95_rounded() -> None:
    values = [1_000_003 * n for n in range(1, 41)]  # 40 tasks: the p95 is the 38th
    counts = Counter(bucket_us(v) for v in values)
    sums: Counter[int] = Counter()
    for v in values:
        sums[bucket_us(v)] += v  # each bucket keeps the exact sum of its durations
    (summary,) = durations_summary(("job", b, counts[b], sums[b]) for b in counts)
    assert summary["count"] == 40
    assert summary["p95_s"] == round(bucket_us(percentile(values, 0.95)) / 1e6, 3) == 38.0
    assert summary["mean_s"] == round(sum(values) / 40 / 1e6, 3)


@pytest.mark.parametrize(
    ("since", "first_day", "first_month", "partial"),
    [
        (None, None, None, None),
        (datetime(2025, 3, 1), date(2025, 3, 1), date(2025, 3, 1), None),
        (datetime(2025, 3, 31), date(2025, 3, 31), date(2025, 4, 1), None),
        (
            datetime(2025, 12, 31, 0, 0, 1),
            date(2026, 1, 1),
            date(2026, 1, 1),
            (datetime(2025, 12, 31, 0, 0, 1), datetime(2026, 1, 1)),
        ),
    ],
)
def test_since_splits_into_whole_months_whole_days_and_the_rest_of_a_day(
    since: datetime | None, first_day: date | None, first_month: date | None, partial: Any
) -> None:
    scope = Scope(since=since)
    assert (scope.first_day, scope.first_month, scope.partial) == (first_day, first_month, partial)
