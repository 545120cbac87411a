"""`biomero status` pages and `biomero stats` numbers on SQLite (tests/tracking_reads.py;
the same checks run on PostgreSQL in tests/integration/test_tracking_postgres.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tracking_reads import (
    check_bucket_sql,
    check_paging,
    check_stats,
    check_stats_equal_a_count_of_the_rows,
    check_totals_are_counted_once_for_a_store_that_predates_them,
    check_totals_follow_every_change,
)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'tracking.sqlite'}"


def test_stats_are_aggregated_right_on_sqlite(tmp_path: Path) -> None:
    check_stats(f"sqlite:///{tmp_path / 'tracking.sqlite'}")


def test_pages_give_every_run_once_in_order_while_runs_are_added_on_sqlite(
    tmp_path: Path,
) -> None:
    check_paging(f"sqlite:///{tmp_path / 'tracking.sqlite'}")


def test_totals_follow_state_moves_repeated_accounting_failures_and_rebuilds_on_sqlite(
    url: str,
) -> None:
    check_totals_follow_every_change(url)


def test_a_store_that_predates_the_totals_counts_them_from_its_rows_on_sqlite(url: str) -> None:
    check_totals_are_counted_once_for_a_store_that_predates_them(url)


def test_stats_for_every_user_and_since_equal_a_count_of_the_rows_on_sqlite(url: str) -> None:
    check_stats_equal_a_count_of_the_rows(url)


def test_durations_round_to_the_same_buckets_in_sql_and_python_on_sqlite(url: str) -> None:
    check_bucket_sql(url)
