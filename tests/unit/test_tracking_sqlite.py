"""The tracker end to end on an SQLite file (the default store, no services needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from biomeroworker import __version__
from biomeroworker.tracking import Tracker, UnknownRunError
from biomeroworker.tracking import tables as t
from biomeroworker.tracking.application import SNAPSHOT_EVERY


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'tracking.sqlite'}"


@pytest.fixture
def tracker(url: str) -> Any:
    with Tracker(url) as opened:
        yield opened


def request(tracker: Tracker, user: str = "alice", **extra: Any) -> str:
    return tracker.record_run_requested(
        workflow="cellpose",
        version="v1.2.7",
        user_name=user,
        inputs={"images": [11, 12]},
        parameters={"diameter": 30},
        **extra,
    )


def finished_run(tracker: Tracker) -> tuple[str, str]:
    run_id = request(tracker, omero_user_id=3, omero_group_id=5)
    export = tracker.start_task(run_id, "export")
    tracker.complete_task(export)
    job = tracker.start_task(run_id, "job", name="cellpose", version="v1.2.7")
    tracker.record_job_submitted(job, "4242", "localslurm")
    tracker.record_job_status(job, "RUNNING")
    tracker.record_progress(job, "50%")
    tracker.record_job_status(job, "COMPLETED", 0, 61.0, 512 * 2**20)
    tracker.record_result(job, "/data/out")
    tracker.complete_task(job)
    tracker.complete_run(run_id, "Dataset:7")
    return run_id, job


def dump(url: str) -> dict[str, list[tuple[Any, ...]]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = {
            table.name: sorted(conn.execute(sa.select(table)).all(), key=repr)
            for table in t.VIEW_TABLES
        }
    engine.dispose()
    return rows


def event_count(url: str) -> int:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        count = conn.execute(sa.text("SELECT count(*) FROM workflowtracker_events")).scalar_one()
    engine.dispose()
    return int(count)


def test_tables_are_created_on_first_use(url: str) -> None:
    Tracker(url).close()
    names = set(sa.inspect(sa.create_engine(url)).get_table_names())
    assert {table.name for table in t.VIEW_TABLES} <= names
    assert {"workflowtracker_events", "workflowtracker_snapshots"} <= names


def test_a_finished_run_fills_the_upstream_dashboard_tables(tracker: Tracker, url: str) -> None:
    run_id, job = finished_run(tracker)
    rows = dump(url)
    assert [
        (r.slurm_job_id, r.user, r.group, str(r.task_id)) for r in rows["biomero_job_view"]
    ] == [(4242, 3, 5, job)]
    assert [tuple(r) for r in rows["biomero_job_progress_view"]] == [(4242, "COMPLETED", "50%")]
    (progress,) = rows["biomero_workflow_progress_view"]
    assert (str(progress.workflow_id), progress.status, progress.progress) == (
        run_id,
        "DONE",
        "100%",
    )
    assert (progress.name, progress.task, progress.main_task_name) == (
        "cellpose",
        "cellpose",
        "cellpose",
    )
    # Upstream's words: a task starts CREATED and shows its last Slurm state; the export
    # step has none, so it stays CREATED (with an end time), as biomero's own does.
    statuses = {
        (r.task_name, r.task_version, r.status, r.user_id, r.end_time is not None)
        for r in rows["biomero_task_execution"]
    }
    assert statuses == {
        ("_SLURM_Image_Transfer.py", __version__, "CREATED", 3, True),
        ("cellpose", "v1.2.7", "COMPLETED", 3, True),
    }


def test_get_run_answers_who_what_where_and_how_it_went(tracker: Tracker) -> None:
    run_id, _ = finished_run(tracker)
    run = tracker.get_run(run_id)
    assert (run["user"], run["workflow"], run["version"], run["state"]) == (
        "alice",
        "cellpose",
        "v1.2.7",
        "COMPLETED",
    )
    assert run["parameters"] == {"diameter": 30}
    assert (run["slurm_job_ids"], run["cluster"], run["result_location"]) == (
        ["4242"],
        "localslurm",
        "Dataset:7",
    )
    job = run["tasks"][1]
    assert (job["exit_code"], job["elapsed_s"], job["max_rss_bytes"]) == (0, 61.0, 512 * 2**20)
    assert job["result_locations"] == ["/data/out"]


def test_a_failed_run_keeps_its_error_type_and_message(tracker: Tracker, url: str) -> None:
    run_id = request(tracker)
    task = tracker.start_task(run_id, "stage_up")
    tracker.fail_task(task, "TransportError", "connection reset")
    tracker.fail_run(run_id, "TransportError", "stage_up: connection reset")
    run = tracker.get_run(run_id)
    assert (run["state"], run["step"], run["error_type"]) == (
        "FAILED",
        "stage_up",
        "TransportError",
    )
    # As upstream: the dashboards' error_type column holds the message.
    assert [r.error_type for r in dump(url)["biomero_task_execution"]] == ["connection reset"]


def test_an_unchanged_poll_appends_no_event(tracker: Tracker, url: str) -> None:
    run_id = request(tracker)
    job = tracker.start_task(run_id, "job")
    tracker.record_job_submitted(job, "7", "c")
    assert tracker.record_job_status(job, "PENDING")
    before = event_count(url)
    assert not tracker.record_job_status(job, "PENDING")
    assert event_count(url) == before


def test_loading_a_long_lived_task_reads_only_events_after_its_snapshot(tracker: Tracker) -> None:
    run_id = request(tracker)
    job = tracker.start_task(run_id, "job")
    tracker.record_job_submitted(job, "7", "c")
    for step in range(3 * SNAPSHOT_EVERY):
        tracker.record_progress(job, f"{step}%")
    recorder = tracker._app.events.recorder
    real_select = recorder.select_events
    returned: list[int] = []

    def counting_select(*args: Any, **kwargs: Any) -> Any:
        events = real_select(*args, **kwargs)
        returned.append(len(events))
        return events

    recorder.select_events = counting_select  # type: ignore[method-assign]
    assert tracker.record_progress(job, "done")
    assert sum(returned) < SNAPSHOT_EVERY


def test_read_models_do_not_depend_on_the_writing_process(url: str) -> None:
    with Tracker(url, project=False) as writer:
        run_id, _ = finished_run(writer)
    with Tracker(url) as reader:
        assert reader.get_run(run_id)["state"] == "COMPLETED"


def test_catching_up_twice_applies_each_event_once(url: str) -> None:
    with Tracker(url, project=False) as writer:
        finished_run(writer)
        written = event_count(url)
    with Tracker(url) as first, Tracker(url) as second:
        assert first.project() == written
        rows = dump(url)
        assert second.project() == 0
    assert dump(url) == rows


def test_rebuild_gives_identical_rows(tracker: Tracker, url: str) -> None:
    finished_run(tracker)
    failed = request(tracker, user="bob")
    tracker.fail_run(failed, "ConfigError", "bad key")
    before = dump(url)
    assert tracker.rebuild() == event_count(url)
    assert dump(url) == before


def test_a_run_can_be_named_by_a_unique_id_prefix(tracker: Tracker) -> None:
    run_id = request(tracker)
    assert tracker.get_run(run_id[:8])["run_id"] == run_id


def test_an_unknown_run_is_a_clear_error(tracker: Tracker) -> None:
    with pytest.raises(UnknownRunError, match="not a known run"):
        tracker.get_run("00000000")


def test_list_runs_filters_by_user_newest_first(tracker: Tracker) -> None:
    first = request(tracker, user="alice")
    request(tracker, user="bob")
    second = request(tracker, user="alice")
    assert [r["run_id"] for r in tracker.list_runs(user="alice")] == [second, first]


def test_a_task_kind_outside_the_six_steps_is_refused(tracker: Tracker) -> None:
    with pytest.raises(ValueError, match="task kind"):
        tracker.start_task(request(tracker), "upload")


def test_a_command_that_collides_with_another_writer_is_retried(url: str) -> None:
    from uuid import UUID

    from biomeroworker.tracking.domain import WorkflowRun

    with Tracker(url) as mine, Tracker(url) as theirs:
        run_id = request(mine)
        calls = []

        def cancel_while_they_add_a_task(run: WorkflowRun) -> bool:
            calls.append(run.version)
            if len(calls) == 1:
                theirs.start_task(run_id, "export")  # lands between my load and my save
            return run.cancel("user asked")

        assert mine._change(WorkflowRun, UUID(run_id), cancel_while_they_add_a_task)
        run = mine.get_run(run_id)
    assert calls == [1, 2]
    assert (run["state"], [task["kind"] for task in run["tasks"]]) == ("CANCELLED", ["export"])
