"""Tracking on the real PostgreSQL at 127.0.0.1:5432 (one throwaway database per session)."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import psycopg2
import pytest
import sqlalchemy as sa

from biomeroworker.tracking import Tracker
from biomeroworker.tracking import tables as t
from tests.tracking_reads import (
    check_bucket_sql,
    check_paging,
    check_stats,
    check_stats_equal_a_count_of_the_rows,
    check_totals_are_counted_once_for_a_store_that_predates_them,
    check_totals_follow_every_change,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def database(new_database) -> Iterator[str]:  # type: ignore[no-untyped-def]
    with new_database() as url:
        yield url


@pytest.fixture
def url(database: str) -> str:
    """The session database, emptied for each test."""
    engine = sa.create_engine(database)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()
    return database


def dump(url: str) -> dict[str, list[tuple[Any, ...]]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = {
            table.name: sorted(conn.execute(sa.select(table)).all(), key=repr)
            for table in t.VIEW_TABLES
        }
    engine.dispose()
    return rows


def scalar(url: str, sql: str, **params: Any) -> Any:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        value = conn.execute(sa.text(sql), params).scalar_one()
    engine.dispose()
    return value


def finished_run(tracker: Tracker, user: str = "alice") -> str:
    run_id = tracker.record_run_requested(
        workflow="cellpose", version="v1.2.7", user_name=user, omero_user_id=2, omero_group_id=3
    )
    job = tracker.start_task(run_id, "job", name="cellpose", version="v1.2.7")
    tracker.record_job_submitted(job, "31", "localslurm")
    tracker.record_job_status(job, "COMPLETED", 0, 12.0, 4096)
    tracker.complete_task(job)
    tracker.complete_run(run_id, "Dataset:1")
    return run_id


# Workers for the multi-process tests: module level so "spawn" children can import them.


def _start_tasks(url: str, run_id: str, count: int) -> None:
    with Tracker(url) as tracker:
        for n in range(count):
            task = tracker.start_task(run_id, "job")
            tracker.record_job_submitted(task, str(1000 + n), "c")


def _project(url: str, results: Any) -> None:
    with Tracker(url) as tracker:
        results.put(tracker.project())


def _run_processes(target: Any, args_list: list[tuple[Any, ...]]) -> None:
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=target, args=args) for args in args_list]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [p.exitcode for p in processes] == [0] * len(processes)


UPSTREAM_COLUMNS = {
    "biomero_job_view": [
        ("slurm_job_id", "INTEGER"),
        ("user", "INTEGER"),
        ("group", "INTEGER"),
        ("task_id", "UUID"),
    ],
    "biomero_job_progress_view": [
        ("slurm_job_id", "INTEGER"),
        ("status", "VARCHAR"),
        ("progress", "VARCHAR"),
    ],
    "biomero_workflow_progress_view": [
        ("workflow_id", "UUID"),
        ("status", "VARCHAR"),
        ("progress", "VARCHAR"),
        ("user", "INTEGER"),
        ("group", "INTEGER"),
        ("name", "VARCHAR"),
        ("task", "VARCHAR"),
        ("main_task_name", "VARCHAR"),
        ("start_time", "TIMESTAMP"),
    ],
    "biomero_task_execution": [
        ("task_id", "UUID"),
        ("task_name", "VARCHAR"),
        ("task_version", "VARCHAR"),
        ("user_id", "INTEGER"),
        ("group_id", "INTEGER"),
        ("status", "VARCHAR"),
        ("start_time", "TIMESTAMP"),
        ("end_time", "TIMESTAMP"),
        ("error_type", "VARCHAR"),
    ],
}


def test_dashboard_tables_have_upstream_names_columns_and_types(url: str) -> None:
    Tracker(url).close()
    inspector = sa.inspect(sa.create_engine(url))
    found = {
        name: [(c["name"], str(c["type"]).split("(")[0]) for c in inspector.get_columns(name)]
        for name in UPSTREAM_COLUMNS
    }
    assert found == UPSTREAM_COLUMNS


def test_a_finished_run_is_tracked_on_postgresql(url: str) -> None:
    with Tracker(url) as tracker:
        run = tracker.get_run(finished_run(tracker))
    assert (run["state"], run["slurm_job_ids"], run["tasks"][0]["max_rss_bytes"]) == (
        "COMPLETED",
        ["31"],
        4096,
    )
    assert scalar(url, "SELECT status FROM biomero_job_progress_view") == "COMPLETED"


def test_parallel_writers_on_one_run_lose_no_event(url: str) -> None:
    with Tracker(url) as tracker:
        run_id = tracker.record_run_requested(workflow="w", version="1", user_name="alice")
    writers, tasks_each = 3, 8
    _run_processes(_start_tasks, [(url, run_id, tasks_each)] * writers)
    with Tracker(url) as tracker:
        aggregate = tracker._app.repository.get(UUID(run_id))
        run = tracker.get_run(run_id)
    total = writers * tasks_each
    assert len(aggregate.task_ids) == total
    assert len(run["tasks"]) == total
    assert sum(1 for task in run["tasks"] if task["slurm_job_id"]) == total
    # initiated + per task: run.TaskAdded, Task.TaskCreated, Task.JobIdAdded
    assert scalar(url, "SELECT count(*) FROM workflowtracker_events") == 1 + 3 * total


def test_parallel_projectors_apply_each_event_once(url: str) -> None:
    with Tracker(url, project=False) as writer:
        for user in ("alice", "bob", "carol", "dave"):
            finished_run(writer, user)
    written = scalar(url, "SELECT count(*) FROM workflowtracker_events")
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    _run_processes(_project, [(url, results)] * 3)
    applied = [results.get(timeout=10) for _ in range(3)]
    assert sum(applied) == written
    assert scalar(url, "SELECT count(*) FROM biomero_run") == 4
    assert scalar(url, "SELECT count(*) FROM biomero_job_view") == 1  # all four used job 31


def test_rebuild_gives_identical_rows_on_postgresql(url: str) -> None:
    with Tracker(url) as tracker:
        finished_run(tracker)
        failed = tracker.record_run_requested(workflow="w", version="1", user_name="bob")
        tracker.fail_run(failed, "SlurmError", "sbatch refused")
        before = dump(url)
        tracker.rebuild()
    assert dump(url) == before


def test_a_missing_database_is_a_clear_error(database: str) -> None:
    from biomeroworker.tracking import TrackingStoreError

    with pytest.raises(TrackingStoreError, match="does not exist"):
        Tracker(database.rsplit("/", 1)[0] + "/biomero_no_such_db")


def test_stats_are_aggregated_right_on_postgresql(url: str) -> None:
    check_stats(url)


def test_totals_follow_state_moves_repeated_accounting_failures_and_rebuilds_on_postgresql(
    url: str,
) -> None:
    check_totals_follow_every_change(url)


def test_a_store_that_predates_the_totals_counts_them_from_its_rows_on_postgresql(
    url: str,
) -> None:
    check_totals_are_counted_once_for_a_store_that_predates_them(url)


def test_stats_for_every_user_and_since_equal_a_count_of_the_rows_on_postgresql(
    url: str,
) -> None:
    check_stats_equal_a_count_of_the_rows(url)


def test_durations_round_to_the_same_buckets_in_sql_and_python_on_postgresql(url: str) -> None:
    check_bucket_sql(url)


def test_pages_give_every_run_once_in_order_while_runs_are_added_on_postgresql(
    url: str,
) -> None:
    check_paging(url)


def _waiting_runs(tracker: Tracker, count: int) -> list[str]:
    """``count`` runs waiting on a submitted job, projected; their job tasks' ids."""
    tasks = []
    with tracker.batch():
        for n in range(count):
            run_id = tracker.record_run_requested(
                workflow="cellpose",
                version="v1",
                user_name="alice",
                omero_user_id=2,
                omero_group_id=3,
            )
            task = tracker.start_task(run_id, "job")
            tracker.record_job_submitted(task, str(500 + n), "localslurm")
            tasks.append(task)
    return tasks


def test_poll_cycles_update_read_rows_in_place_as_a_rebuild_writes_them(url: str) -> None:
    """Stored rows get only their changed columns (UPDATE ... FROM VALUES, keys of every
    type, NULLs); the tables equal a rebuild's."""
    with Tracker(url) as tracker:
        tasks = _waiting_runs(tracker, 30)
        for state in ("PENDING", "RUNNING", "SUSPENDED", "RUNNING"):
            with tracker.batch():  # one poll cycle, projected once after its commit
                for task in tasks:
                    tracker.record_job_status(task, state)
                tracker.record_progress(tasks[0], "40%")
        with tracker.batch():
            for task in tasks[:10]:
                tracker.record_job_status(task, "COMPLETED", 0, 12.5, 4096)
                tracker.complete_task(task)
            for task in tasks[10:12]:
                tracker.record_job_status(task, "FAILED", 3)
                tracker.fail_task(task, "JobFailed", "exit 3")
        before = dump(url)
        assert tracker.rebuild() < tracker._projector.batch_size  # one batch: all inserts
    assert dump(url) == before
    rows = {row.task_id: row for row in before["biomero_task"]}
    assert rows[tasks[0]].job_state == "COMPLETED" and rows[tasks[0]].exit_code == 0
    assert rows[tasks[20]].job_state == "RUNNING" and rows[tasks[20]].exit_code is None


def test_a_failed_in_place_update_loses_no_event(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A projection batch that fails halfway is rolled back whole: position and rows as
    before; the next catch-up applies every event once."""
    from biomeroworker.tracking import TrackingStoreError, projection

    with Tracker(url) as tracker:
        tasks = _waiting_runs(tracker, 5)
    with Tracker(url, project=False) as tracker:
        with tracker.batch():
            for task in tasks:
                tracker.record_job_status(task, "RUNNING")
        before, position = dump(url), tracker._projector.position()
        calls = []
        real = projection.execute_values

        def fail_second(*args: Any, **kwargs: Any) -> None:
            calls.append(1)
            if len(calls) == 2:
                raise psycopg2.OperationalError("server closed the connection unexpectedly")
            real(*args, **kwargs)

        monkeypatch.setattr(projection, "execute_values", fail_second)
        with pytest.raises(TrackingStoreError):
            tracker.project()
        assert tracker._projector.position() == position
        assert dump(url) == before
        monkeypatch.setattr(projection, "execute_values", real)
        assert tracker.project() == len(tasks)
        assert tracker.project() == 0
        projected = dump(url)
        tracker.rebuild()
    assert dump(url) == projected
    assert {row.job_state for row in projected["biomero_task"]} == {"RUNNING"}


def test_stats_sort_memory_is_raised_for_its_own_transaction_only(url: str) -> None:
    from biomeroworker.tracking import analytics

    Tracker(url).close()  # the tables
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            before = conn.execute(sa.text("SHOW work_mem")).scalar_one()
            analytics.compute_stats(conn)
            during = conn.execute(sa.text("SHOW work_mem")).scalar_one()
            conn.rollback()
            after = conn.execute(sa.text("SHOW work_mem")).scalar_one()
    finally:
        engine.dispose()
    assert (during, after) == (analytics.STATS_WORK_MEM, before)
