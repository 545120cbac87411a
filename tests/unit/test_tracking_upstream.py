"""biomero 2.x's stored events, read by our tracker (SQLite; no biomero needed).

The stored states below are byte for byte what biomero 2.8.3's WorkflowTracker writes
(captured from it on PostgreSQL); the rows expected are what its own views wrote for
them. tests/integration/test_tracking_biomero_peer.py checks the same against the real
biomero.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
import sqlalchemy as sa
from eventsourcing.persistence import StoredEvent

from biomeroworker.tracking import Tracker, TrackingStoreError, UnknownRunError
from biomeroworker.tracking import tables as t
from biomeroworker.tracking.application import TrackingApp, app_env
from biomeroworker.tracking.domain import (
    Task,
    WorkflowRun,
    dashboard_progress,
    job_number,
)
from biomeroworker.tracking.takeover import survey
from tests.tracking_reads import kept, refilled

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def state(seconds: int, **fields: Any) -> bytes:
    stamp = (T0 + timedelta(seconds=seconds)).isoformat()
    return json.dumps(
        {"timestamp": {"_type_": "datetime_iso", "_data_": stamp}, **fields},
        separators=(",", ":"),
    ).encode()


def uuid_hex(value: UUID) -> dict[str, str]:
    return {"_type_": "uuid_hex", "_data_": value.hex}


class History:
    """Events as biomero's SLURM_Run_Workflow.py + WorkflowTracker record them."""

    def __init__(self) -> None:
        self.events: list[StoredEvent] = []
        self.versions: dict[UUID, int] = {}
        self.clock = 0

    def add(self, aggregate: UUID, topic: str, **fields: Any) -> None:
        version = self.versions.get(aggregate, -1) + 1  # upstream's INITIAL_VERSION is 0
        self.versions[aggregate] = version
        self.clock += 1
        self.events.append(
            StoredEvent(
                originator_id=aggregate,
                originator_version=version,
                topic=f"biomero.eventsourcing:{topic}",
                state=state(self.clock, **fields),
            )
        )

    def run(self, user: int, group: int, tasks: list[tuple[str, int | None, str]]) -> UUID:
        run = uuid4()
        self.add(
            run,
            "WorkflowRun.WorkflowInitiated",
            originator_topic="biomero.eventsourcing:WorkflowRun",
            name="Slurm Workflow",
            description="d\n2.8.2",
            user=user,
            group=group,
        )
        for name, job, final in tasks:
            task = uuid4()
            self.add(
                task,
                "Task.TaskCreated",
                originator_topic="biomero.eventsourcing:Task",
                workflow_id=uuid_hex(run),
                task_name=name,
                task_version="v1.4.0" if job else "2.8.2",
                input_data="",
                params={},
            )
            self.add(run, "WorkflowRun.TaskAdded", task_id=uuid_hex(task))
            self.add(task, "Task.TaskStarted")
            if job is not None:
                self.add(task, "Task.JobIdAdded", job_id=job)
                self.add(task, "Task.StatusUpdated", status="RUNNING")
                self.add(task, "Task.ProgressUpdated", progress="43%")
                self.add(task, "Task.StatusUpdated", status=final)
            if final == "COMPLETED":
                self.add(task, "Task.TaskCompleted", result="done")
            else:
                self.add(task, "Task.TaskFailed", error_message=f"Slurm job state {final}")
        if all(final == "COMPLETED" for _, _, final in tasks):
            self.add(run, "WorkflowRun.WorkflowCompleted")
        else:
            self.add(run, "WorkflowRun.WorkflowFailed", error_message="Workflow execution failed")
        return run


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'tracking.sqlite'}"


def write_history(url: str, history: History) -> None:
    """biomero's events in the table, before any worker saw the database."""
    with Tracker(url) as tracker:
        tracker._app.recorder.insert_events(history.events)
        tracker.rebuild()  # a fresh database: our projection writes the dashboards too


def rows(url: str, table: sa.Table) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        found = sorted((tuple(map(str, r)) for r in conn.execute(sa.select(table))), key=repr)
    engine.dispose()
    return found


def test_biomero_runs_show_as_biomero_showed_them(url: str) -> None:
    history = History()
    done = history.run(
        5, 3, [("_SLURM_Image_Transfer.py", None, "COMPLETED"), ("cellpose", 102, "COMPLETED")]
    )
    failed = history.run(-1, -1, [("cellpose", 103, "FAILED")])
    write_history(url, history)
    progress = {r[0]: r for r in rows(url, t.workflow_progress_view)}
    # status, progress, user, group, name, task, main_task_name
    assert progress[str(done)][1:8] == (
        "DONE",
        "100%",
        "5",
        "3",
        "Slurm Workflow",
        "cellpose",
        "cellpose",
    )
    # biomero's interpolation of 43% between 50% and 90%
    assert progress[str(failed)][1:3] == ("FAILED", "67.2%")
    execution = {(r[1], r[3], r[5], r[8]) for r in rows(url, t.task_execution)}
    assert execution == {
        ("_SLURM_Image_Transfer.py", "5", "CREATED", "None"),
        ("cellpose", "5", "COMPLETED", "None"),
        ("cellpose", "-1", "FAILED", "Slurm job state FAILED"),
    }
    assert {r[:3] for r in rows(url, t.job_view)} == {("102", "5", "3"), ("103", "-1", "-1")}
    assert {r for r in rows(url, t.job_progress_view)} == {
        ("102", "COMPLETED", "43%"),
        ("103", "FAILED", "43%"),
    }
    with Tracker(url) as tracker:
        runs = {r["run_id"]: r for r in tracker.list_runs()}
        assert (runs[str(done)]["workflow"], runs[str(done)]["user"]) == (
            "cellpose",
            "omero-user-5",
        )
        assert (runs[str(failed)]["state"], runs[str(failed)]["user"]) == ("FAILED", "biomero")
        assert runs[str(done)]["origin"] == "biomero"
        with pytest.raises(UnknownRunError, match="read-only history"):
            tracker.cancel_run(str(done))
        engine = sa.create_engine(url)
        found = survey(engine)
        engine.dispose()
        assert (
            found.summary()
            == "biomero tracking database: 2 runs from biomero 2.x, read-only history"
        )


def test_taking_over_leaves_biomeros_dashboard_rows_as_they_are(url: str) -> None:
    history = History()
    run = history.run(5, 3, [("cellpose", 102, "COMPLETED")])
    engine = sa.create_engine(url)
    t.metadata.create_all(engine, tables=list(t.DASHBOARD_TABLES))
    with engine.begin() as conn:  # what biomero's views wrote, as they left it
        conn.execute(
            sa.insert(t.workflow_progress_view).values(
                workflow_id=run,
                status="JOB_RUNNING",
                progress="50%",
                user=5,
                group=3,
                name="Slurm Workflow",
                task="cellpose",
                main_task_name="cellpose",
                start_time=T0.replace(tzinfo=None),
            )
        )
    store = TrackingApp(env=app_env(url))  # biomero's table and events, no worker yet
    store.recorder.insert_events(history.events)
    store.close()
    engine.dispose()
    # the worker's first contact: history read, dashboard rows not rewritten...
    with Tracker(url) as tracker:
        assert tracker.get_run(str(run))["state"] == "COMPLETED"
        assert [r[1] for r in rows(url, t.workflow_progress_view)] == ["JOB_RUNNING"]
        # ...until a rebuild, which writes what biomero's views would
        tracker.rebuild()
    assert [r[1] for r in rows(url, t.workflow_progress_view)] == ["DONE"]


def test_a_cli_run_is_shown_with_upstreams_minus_one(url: str) -> None:
    with Tracker(url) as tracker:
        run = tracker.record_run_requested(workflow="cellpose", version="v1.4.0", user_name="al")
        job = tracker.start_task(run, "job")
        tracker.record_job_submitted(job, "7", "c")
        assert tracker.get_run(run)["omero_user_id"] is None
    assert rows(url, t.job_view)[0][:3] == ("7", "-1", "-1")
    assert rows(url, t.workflow_progress_view)[0][3:5] == ("-1", "-1")


def test_events_carry_upstreams_topics_and_fields() -> None:
    run = WorkflowRun.request(
        workflow="cellpose",
        workflow_version="v1.4.0",
        user_name="al",
        omero_user_id=None,
        omero_group_id=None,
        inputs={},
        parameters={},
    )
    task = Task.start(run_id=run.id, kind="job", name="cellpose", version="v1.4.0")
    run.add_task(task.id, "job")
    task.submit_job("902_3", "c")
    task.update_progress("resubmission 1/2 after TIMEOUT: more mem")
    initiated, _added = run.collect_events()
    created, job, progress = task.collect_events()
    assert type(initiated).TOPIC == "biomero.eventsourcing:WorkflowRun.WorkflowInitiated"
    assert (initiated.name, initiated.user, initiated.group) == ("cellpose", -1, -1)
    assert type(created).TOPIC == "biomero.eventsourcing:Task.TaskCreated"
    assert (created.task_name, created.task_version, created.workflow_id) == (
        "cellpose",
        "v1.4.0",
        run.id,
    )
    assert (job.job_id, job.slurm_job_ref) == (902, "902_3")
    assert progress.progress is None  # biomero parses it with int(): never free text
    assert progress.note.startswith("resubmission")


@pytest.mark.parametrize(
    ("text", "percent"),
    [("43%", "43%"), ("3/4", "75%"), ("0/0", None), ("manifest in 1.0 s", None), (None, None)],
)
def test_progress_shown_to_biomero_is_a_percentage_or_nothing(text, percent) -> None:  # type: ignore[no-untyped-def]
    assert dashboard_progress(text) == percent


def test_job_numbers_are_upstreams_integers() -> None:
    assert [job_number(j) for j in ("31", "31_2", "31+1", "x")] == [31, 31, 31, -1]


def test_an_unknown_upstream_event_is_refused_with_its_topic(url: str) -> None:
    history = History()
    history.run(5, 3, [("cellpose", 102, "COMPLETED")])
    history.add(uuid4(), "WorkflowRun.WorkflowPaused")
    with Tracker(url) as tracker:
        tracker._app.recorder.insert_events(history.events)
    with pytest.raises(TrackingStoreError, match=r"WorkflowRun\.WorkflowPaused"):
        Tracker(url)


def test_read_models_of_an_earlier_worker_are_rebuilt_not_refused(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # this worker before the takeover change
        conn.execute(
            sa.text(
                "CREATE TABLE biomero_projection_position "
                "(name VARCHAR(64) PRIMARY KEY, position BIGINT NOT NULL)"
            )
        )
        conn.execute(
            sa.text("INSERT INTO biomero_projection_position VALUES ('biomero_views', 41)")
        )
        conn.execute(
            sa.text("CREATE TABLE biomero_run (run_id VARCHAR(36) PRIMARY KEY, workflow VARCHAR)")
        )
        conn.execute(sa.text("CREATE TABLE biomero_task (task_id VARCHAR(36) PRIMARY KEY)"))
    engine.dispose()
    with Tracker(url) as tracker:
        run = tracker.record_run_requested(workflow="cellpose", version="v1", user_name="al")
        assert tracker.get_run(run)["origin"] == "worker"


def test_a_database_marked_by_a_newer_worker_is_refused(url: str) -> None:
    Tracker(url).close()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE biomero_projection_position SET position = 99 "
                "WHERE name = 'biomero_views.schema'"
            )
        )
    engine.dispose()
    with pytest.raises(TrackingStoreError, match="newer biomero worker"):
        Tracker(url)


def test_biomero_status_and_stats_show_biomero_runs_to_an_admin(
    url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from biomeroworker.cli import stats, status

    history = History()
    run = history.run(
        5, 3, [("_SLURM_Image_Transfer.py", None, "COMPLETED"), ("cellpose", 102, "COMPLETED")]
    )
    write_history(url, history)
    monkeypatch.setenv("SQLALCHEMY_URL", url)
    monkeypatch.delenv("BIOMERO_CONFIG", raising=False)
    monkeypatch.setattr("biomeroworker.tracking.access.current_user", lambda: "root")
    parser = argparse.ArgumentParser(prog="biomero")
    parser.add_argument("--config")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (status, stats):
        module.register(sub)
    for argv in (["status", "--all"], ["status", "--all", str(run)], ["stats", "--all", "--json"]):
        args = parser.parse_args(argv)
        assert args.func(args) == 0, argv
    out = capsys.readouterr().out
    assert str(run)[:8] in out and "cellpose" in out and "omero-user-5" in out


def test_biomero_runs_count_in_the_totals_as_their_rows_do_batch_by_batch(url: str) -> None:
    """A run biomero records is named after its workflow only once its task is added,
    and a task recorded before its run is its owner's from then on: applied one event a
    batch, the totals still equal a fresh count of the rows."""
    history = History()
    for user in (5, 6):
        history.run(
            user,
            3,
            [
                ("_SLURM_Image_Transfer.py", None, "COMPLETED"),
                ("cellpose", 100 + user, "COMPLETED"),
            ],
        )
    history.run(5, 3, [("cellpose", 110, "FAILED")])
    # the first run's transfer task is recorded and completed before the run itself
    history.events.insert(4, history.events.pop(0))
    assert history.events[3].topic.endswith("Task.TaskCompleted")
    with Tracker(url, project=False) as tracker:
        tracker._app.recorder.insert_events(history.events)
        tracker._projector.batch_size = 1
        tracker.project()
        assert kept(tracker) == refilled(tracker)
        found = tracker.stats()
    assert [(r["workflow"], r["user"], r["runs"], r["failed"]) for r in found["runs"]] == [
        ("cellpose", "omero-user-5", 2, 1),
        ("cellpose", "omero-user-6", 1, 0),
    ]
    assert [row["jobs"] for row in found["slurm_use"]] == [2, 1]
