"""`biomero status` pages and `biomero stats` numbers on SQLite (tests/tracking_reads.py;
the same checks run on PostgreSQL in tests/integration/test_tracking_postgres.py)."""

from __future__ import annotations

from pathlib import Path

from tests.tracking_reads import check_paging, check_stats


def test_stats_are_aggregated_right_on_sqlite(tmp_path: Path) -> None:
    check_stats(f"sqlite:///{tmp_path / 'tracking.sqlite'}")


def test_pages_give_every_run_once_in_order_while_runs_are_added_on_sqlite(
    tmp_path: Path,
) -> None:
    check_paging(f"sqlite:///{tmp_path / 'tracking.sqlite'}")
