"""What one poll says about all waiting runs is recorded in one transaction (issue 16: one
command per transaction gave 515 events/s against 7,187 batched), and a run's failure
stays its own: the others' recordings are kept, also when the batch cannot be saved.

Real supervisor, engine, squeue and sacct parsers and tracking store (SQLite); Slurm is a
fake squeue and sacct answering each job's state from a table, and ``tail`` for a failed
job's log.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from biomeroworker.config import load_settings
from biomeroworker.runs import RunEngine, Step, next_step
from biomeroworker.supervisor.leases import LeaseStore
from biomeroworker.supervisor.loop import Supervisor
from biomeroworker.tracking.application import Tracker
from biomeroworker.transport.base import CommandResult

# squeue's lines (the controller, asked first) and sacct's (asked about failures only).
SQUEUE = {
    "PENDING": "{0}|{0}|{0}|N/A|PENDING|0:00|N/A|N/A||JobHeldUser",
    "RUNNING": "{0}|{0}|{0}|N/A|RUNNING|0:01|2026-11-29T20:27:08|2026-11-29T22:27:08|vm|None",
    "COMPLETED": "{0}|{0}|{0}|N/A|COMPLETED|0:04|2026-11-29T20:27:08|2026-11-29T20:27:12|vm|None",
    "FAILED": "{0}|{0}|{0}|N/A|FAILED|0:04|2026-11-29T20:27:08|2026-11-29T20:27:12|vm|None",
}
LINES = {
    "PENDING": "{0}|{0}|PENDING|0:0|00:00:00|Unknown|Unknown||None assigned||JobHeldUser",
    "RUNNING": "{0}|{0}|RUNNING|0:0|00:00:01|2026-11-29T20:27:08|Unknown||vm|cpu=1|",
    "COMPLETED": "{0}|{0}|COMPLETED|0:0|00:00:04|2026-11-29T20:27:08|2026-11-29T20:27:12||vm||",
    "FAILED": "{0}|{0}|FAILED|1:0|00:00:04|2026-11-29T20:27:08|2026-11-29T20:27:12||vm||",
}


class FakeSlurm:
    """Fake transport: squeue and sacct list each job in the state ``states`` gives it;
    ``tail`` of a log answers one line."""

    commands_run = 0

    def __init__(self) -> None:
        self.states: dict[str, str] = {}

    def run(self, argv: Sequence[str], **_: Any) -> CommandResult:
        if argv[0] == "tail":
            return CommandResult(tuple(argv), 0, "Traceback: segmentation went wrong\n", "", 0.0)
        assert "sacct" in argv or "squeue" in argv, f"unexpected command {argv[:3]}"
        lines = SQUEUE if "squeue" in argv else LINES
        jobs = next(a for a in argv if a.startswith("--jobs="))[len("--jobs=") :].split(",")
        out = "".join(lines[self.states[job]].format(job) + "\n" for job in jobs)
        return CommandResult(tuple(argv), 0, out, "", 0.0)


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    config = tmp_path / "slurm-config.ini"
    config.write_text(
        "[SSH]\nhost = nowhere\n[SLURM]\nslurm_data_path = d\nslurm_images_path = i\n"
        "slurm_converters_path = c\nslurm_script_path = s\n"
    )
    slurm = FakeSlurm()
    with Tracker(f"sqlite:///{tmp_path / 't.sqlite'}") as tracker:
        engine = RunEngine(load_settings([config], env={}), slurm, tracker)  # type: ignore[arg-type]
        sup = Supervisor(engine, LeaseStore(tracker.engine, "batch-test", ttl_s=600), workers=1)
        yield {"tracker": tracker, "slurm": slurm, "engine": engine, "sup": sup}
        sup.shutdown()


def waiting_run(world: dict[str, Any], job: str, state: str = "PENDING") -> tuple[str, str]:
    """A run whose job ``job`` was submitted and is in ``state`` at Slurm; (run, task)."""
    tracker: Tracker = world["tracker"]
    run_id = tracker.record_run_requested(
        workflow="w", version="1", user_name="u", inputs={"files": ["/in/a.tif"]}
    )
    up = tracker.start_task(run_id, "stage_up")
    tracker.complete_task(up)
    task = tracker.start_task(run_id, "job")
    tracker.record_job_submitted(task, job, "slurm")
    world["slurm"].states[job] = state
    return run_id, task


def job_task(tracker: Tracker, run_id: str) -> dict[str, Any]:
    return next(t for t in tracker.get_run(run_id)["tasks"] if t["kind"] == "job")


class Inserts:
    """Counts the transactions that append events."""

    def __init__(self, tracker: Tracker) -> None:
        self.engine = tracker.engine
        self.count = 0

    def __enter__(self) -> Inserts:
        event.listen(self.engine, "before_cursor_execute", self.note)
        event.listen(self.engine, "commit", self.committed)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self.note)
        event.remove(self.engine, "commit", self.committed)

    def note(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO WORKFLOWTRACKER_EVENTS"):
            conn.info["appended"] = True

    def committed(self, conn: Any) -> None:
        if conn.info.pop("appended", False):
            self.count += 1


def test_a_poll_cycle_records_every_runs_news_in_one_transaction(world) -> None:  # type: ignore[no-untyped-def]
    tracker, sup = world["tracker"], world["sup"]
    runs = [waiting_run(world, str(100 + n), "RUNNING")[0] for n in range(50)]
    with Inserts(tracker) as inserts:
        sup.cycle()
    assert inserts.count == 1
    assert {job_task(tracker, r)["job_state"] for r in runs} == {"RUNNING"}
    with Inserts(tracker) as inserts:
        sup.cycle()  # nothing new: nothing recorded
    assert inserts.count == 0


def test_ended_jobs_complete_or_fail_their_runs_in_the_same_batch(world) -> None:  # type: ignore[no-untyped-def]
    tracker, sup = world["tracker"], world["sup"]
    running, _ = waiting_run(world, "201", "RUNNING")
    done, _ = waiting_run(world, "202", "COMPLETED")
    failed, _ = waiting_run(world, "203", "FAILED")
    with Inserts(tracker) as inserts:
        sup.cycle()
    assert inserts.count == 1
    assert job_task(tracker, running)["job_state"] == "RUNNING"
    assert job_task(tracker, done)["state"] == "COMPLETED"
    assert next_step(tracker.run_record(done)) is Step.STAGE_DOWN
    run = tracker.get_run(failed)
    assert run["state"] == "FAILED" and "segmentation went wrong" in run["error"]
    assert job_task(tracker, failed)["state"] == "FAILED"
    assert sup.counters.failed_runs == 1 and sup.counters.step_errors == 0


def test_a_run_that_raises_keeps_the_others_recordings(world, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    tracker, sup, engine = world["tracker"], world["sup"], world["engine"]
    runs = [waiting_run(world, str(300 + n), "RUNNING")[0] for n in range(5)]
    bad = runs[2]
    real = engine.record_poll

    def record_poll(run, kind, polled):  # type: ignore[no-untyped-def]
        view = real(run, kind, polled)
        if run.run_id == bad:
            raise RuntimeError("bug 42 after recording")
        return view

    monkeypatch.setattr(engine, "record_poll", record_poll)
    sup.cycle()
    # As without a batch: what the run recorded before it raised is kept, and so is
    # everything the others recorded; its failed attempt is counted.
    assert {job_task(tracker, r)["job_state"] for r in runs} == {"RUNNING"}
    assert sup.counters.step_errors == 1
    recorded = sup.attempts.of(bad)
    assert recorded is not None and recorded.failed == 1 and "bug 42" in recorded.error


def test_a_batch_that_cannot_be_saved_is_recorded_run_by_run(world, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """One run's events cannot be saved (a poisoned row): the batch fails as a whole, so
    each run is recorded on its own and only that run fails to record."""
    tracker, sup = world["tracker"], world["sup"]
    made = [waiting_run(world, str(400 + n), "RUNNING") for n in range(6)]
    poison_run, poison_task = made[3]
    real = tracker._app.save
    saves: list[int] = []

    def save(*items, **kwargs):  # type: ignore[no-untyped-def]
        saves.append(len(items))
        ids = {getattr(i, "originator_id", None) or getattr(i, "id", None) for i in items}
        if UUID(poison_task) in ids:
            raise OperationalError("INSERT INTO workflowtracker_events", {}, Exception("bad row"))
        return real(*items, **kwargs)

    monkeypatch.setattr(tracker._app, "save", save)
    sup.cycle()
    for run_id, _ in made:
        state = job_task(tracker, run_id)["job_state"]
        assert state == (None if run_id == poison_run else "RUNNING"), run_id
    assert len(saves) == 1 + len(made)  # the batch, then each run's own
    assert sup.counters.transient_errors == 1  # the poisoned run's store error, its own
    monkeypatch.setattr(tracker._app, "save", real)
    sup.cycle()  # the next cycle records it
    assert job_task(tracker, poison_run)["job_state"] == "RUNNING"
