"""[ANALYTICS] enable_* and analytics_rebuild_*: biomero's listener switches and rebuild
window, on an SQLite store. biomero_run / biomero_task are always written."""

from __future__ import annotations

import argparse
import textwrap
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from biomeroworker.cli import tracking
from biomeroworker.config import AnalyticsSettings, load_settings
from biomeroworker.tracking import Tracker
from biomeroworker.tracking import tables as t
from biomeroworker.tracking.application import dashboards_of, rebuild_since
from tests.tracking_reads import view_row_counts

SWITCHED = {
    "enable_job_accounting": {"biomero_job_view"},
    "enable_job_progress": {"biomero_job_progress_view", "biomero_workflow_progress_view"},
    "enable_workflow_analytics": {"biomero_task_execution"},
}
DASHBOARDS = {table.name for table in t.DASHBOARD_TABLES}
# every own table a finished run writes (it counts no failure)
OWN = {table.name for table in t.OWN_TABLES} - {t.failure_totals.name}


def config(tmp_path: Path, *analytics: str) -> Path:
    path = tmp_path / "slurm-config.ini"
    lines = "\n".join(analytics)
    path.write_text(
        textwrap.dedent(
            f"""
            [SSH]
            host = testcluster
            [ANALYTICS]
            sqlalchemy_url = sqlite:///{tmp_path / "t.sqlite"}
            """
        )
        + lines
        + "\n"
    )
    return path


def finished_run(tracker: Tracker, job_id: str = "4242") -> str:
    run_id = tracker.record_run_requested(
        workflow="cellpose", version="v1", user_name="alice", omero_user_id=3, omero_group_id=5
    )
    job = tracker.start_task(run_id, "job")
    tracker.record_job_submitted(job, job_id, "c")
    tracker.record_job_status(job, "RUNNING")
    tracker.record_progress(job, "50%")
    tracker.record_job_status(job, "COMPLETED", 0, 3.0, 2**20)
    tracker.complete_task(job)
    tracker.complete_run(run_id)
    return run_id


def filled(url: str) -> set[str]:
    return {name for name, count in view_row_counts(url).items() if count}


@pytest.fixture(autouse=True)
def _no_env_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SQLALCHEMY_URL", raising=False)
    monkeypatch.delenv("BIOMERO_CONFIG", raising=False)
    monkeypatch.delenv("BIOMERO_SLURM_CONFIG_FILE", raising=False)


def test_with_every_switch_on_every_table_is_written(tmp_path: Path) -> None:
    settings = load_settings([config(tmp_path)], env={})
    with Tracker.configured(settings.analytics) as tracker:
        finished_run(tracker)
        url = tracker.url
    assert url == f"sqlite:///{tmp_path / 't.sqlite'}"  # [ANALYTICS] sqlalchemy_url
    assert filled(url) == DASHBOARDS | OWN


@pytest.mark.parametrize("key", sorted(SWITCHED))
def test_an_analytics_switch_off_leaves_its_dashboard_table_unwritten(
    tmp_path: Path, key: str
) -> None:
    settings = load_settings([config(tmp_path, f"{key} = false")], env={})
    with Tracker.configured(settings.analytics) as tracker:
        finished_run(tracker)
        tracker.rebuild()  # a rebuild does not fill it either
        url = tracker.url
    assert filled(url) == (DASHBOARDS - SWITCHED[key]) | OWN


def test_a_reloaded_config_switches_the_dashboards_from_the_next_event(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 't.sqlite'}"
    with Tracker(url) as tracker:
        off = AnalyticsSettings(enable_job_accounting=False)
        tracker.use_dashboards(dashboards_of(off))
        assert tracker.dashboards == DASHBOARDS - SWITCHED["enable_job_accounting"]
        finished_run(tracker)
        assert view_row_counts(url)["biomero_job_view"] == 0
        tracker.use_dashboards(dashboards_of(AnalyticsSettings()))
        finished_run(tracker, "4243")
    assert view_row_counts(url)["biomero_job_view"] == 1


def test_the_rebuild_window_gives_dashboard_rows_only_to_runs_begun_inside_it(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 't.sqlite'}"
    with Tracker(url) as tracker:
        finished_run(tracker, "100")
        cutoff = datetime.now(UTC)
        newer = finished_run(tracker, "200")
        tracker.rebuild(cutoff)
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        jobs = conn.execute(sa.select(t.job_view.c.slurm_job_id)).scalars().all()
        progress = conn.execute(sa.select(t.job_progress_view.c.slurm_job_id)).scalars().all()
        workflows = conn.execute(sa.select(t.workflow_progress_view.c.workflow_id)).all()
        tasks = conn.execute(sa.select(t.task_execution.c.task_id)).all()
        runs = conn.execute(sa.select(t.runs.c.run_id)).scalars().all()
    engine.dispose()
    assert jobs == [200] and progress == [200]
    assert [str(row[0]) for row in workflows] == [newer]
    assert len(tasks) == 1
    assert len(runs) == 2  # our own tables always get the whole history


def test_rebuild_since_follows_upstream_days_ago_over_start_time() -> None:
    now = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    assert rebuild_since(AnalyticsSettings(), now) is None
    day = AnalyticsSettings(analytics_rebuild_start_time=date(2026, 1, 2))
    assert rebuild_since(day, now) == datetime(2026, 1, 2, tzinfo=UTC)
    both = AnalyticsSettings(
        analytics_rebuild_start_time=date(2026, 1, 2), analytics_rebuild_days_ago=3
    )
    assert rebuild_since(both, now) == datetime(2026, 3, 7, 12, 0, tzinfo=UTC)


def _rebuild_cli(path: Path) -> int:
    parser = argparse.ArgumentParser(prog="biomero")
    parser.add_argument("--config")
    sub = parser.add_subparsers(dest="command", required=True)
    tracking.register(sub)
    args = parser.parse_args(["--config", str(path), "tracking", "rebuild"])
    return args.func(args)


@pytest.mark.parametrize(
    ("line", "kept"),
    [
        ("", True),
        ("analytics_rebuild_start_time = 2000-01-01", True),
        ("analytics_rebuild_days_ago = 0", False),
    ],
)
def test_tracking_rebuild_applies_the_configured_window(
    tmp_path: Path, capsys: Any, line: str, kept: bool
) -> None:
    path = config(tmp_path, line)
    settings = load_settings([path], env={})
    with Tracker.configured(settings.analytics) as tracker:
        finished_run(tracker)
        url = tracker.url
    assert _rebuild_cli(path) == 0
    out = capsys.readouterr().out
    assert ("dashboard tables from" in out) == bool(line)
    assert filled(url) == (DASHBOARDS | OWN if kept else OWN)
