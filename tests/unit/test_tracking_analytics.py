"""The arithmetic behind `biomero stats`: the nearest-rank reference and the periods.
The SQL aggregation itself is checked on real stores (tests/tracking_reads.py)."""

from __future__ import annotations

from datetime import datetime

import pytest

from biomeroworker.tracking.analytics import percentile, period_key

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
