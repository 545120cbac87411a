"""A supervisor with a thousand runs waiting on Slurm: still one status command a cycle.

Everything here is the real code (Supervisor, RunEngine, SlurmClient's squeue argv and
parser, the tracking store on SQLite) except the cluster: a fake transport stands in for
SSH because a thousand queued jobs are too many for a unit test (the bench measures
them on localslurm, bench/bench_supervisor.py). It answers each squeue with the line
localslurm prints for a held job, for every id asked, and counts what it was asked.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from biomeroworker.config import load_settings
from biomeroworker.run_record import RunRecord
from biomeroworker.runs import RunEngine, Step, next_step
from biomeroworker.supervisor.leases import LeaseStore
from biomeroworker.supervisor.loop import Supervisor
from biomeroworker.tracking.application import Tracker
from biomeroworker.transport.base import CommandResult

RUNS = 1000
# localslurm's squeue line for a held job (tests/unit/test_waits.py, SQUEUE_HELD).
HELD = "{0}|{0}|{0}|N/A|PENDING|0:00|N/A|N/A||JobHeldUser"


class FakeSqueueTransport:
    """Fake: answers squeue for any job id as held; anything else is a test failure
    (held jobs are settled by the controller's answer: accounting is never asked)."""

    def __init__(self) -> None:
        self.commands_run = 0
        self.asked: list[list[str]] = []

    def run(self, argv: Sequence[str], **_: Any) -> CommandResult:
        self.commands_run += 1
        assert "squeue" in argv, f"unexpected command {argv[:3]}"
        jobs = next(a for a in argv if a.startswith("--jobs="))[len("--jobs=") :].split(",")
        self.asked.append(jobs)
        out = "".join(HELD.format(job) + "\n" for job in jobs)
        return CommandResult(tuple(argv), 0, out, "", 0.0)


@pytest.fixture
def waiting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Tracker, dict]]:
    # The store's disk speed is not under test: its SQLite file lives in memory when it can.
    shm = Path("/dev/shm")
    db = Path(tempfile.mkdtemp(dir=shm)) if shm.is_dir() else tmp_path
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    config = tmp_path / "slurm-config.ini"
    config.write_text(
        "[SSH]\nhost = nowhere\n[SLURM]\nslurm_data_path = d\nslurm_images_path = i\n"
        "slurm_converters_path = c\nslurm_script_path = s\n"
    )
    settings = load_settings([config], env={})
    with Tracker(f"sqlite:///{db / 't.sqlite'}", project=False) as tracker:
        jobs = {}
        for i in range(RUNS):
            run_id = tracker.record_run_requested(
                workflow="nuclei", version="1", user_name="u", inputs={"files": ["/in/a.tif"]}
            )
            up = tracker.start_task(run_id, "stage_up")
            tracker.complete_task(up)
            task = tracker.start_task(run_id, "job")
            tracker.record_job_submitted(task, str(1000 + i), "slurm")
            jobs[run_id] = str(1000 + i)
        yield tracker, {"settings": settings, "jobs": jobs}
    if db != tmp_path:
        shutil.rmtree(db)


def events(tracker: Tracker) -> int:
    with tracker.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM workflowtracker_events")).scalar_one())


def test_a_thousand_waiting_runs_cost_one_status_command_a_cycle_and_no_events(waiting) -> None:  # type: ignore[no-untyped-def]
    tracker, world = waiting
    transport = FakeSqueueTransport()
    engine = RunEngine(world["settings"], transport, tracker)  # type: ignore[arg-type]
    sup = Supervisor(engine, LeaseStore(tracker.engine, "scale", ttl_s=600), workers=2)
    statements: list[str] = []

    def note(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    event.listen(tracker.engine, "before_cursor_execute", note)
    try:
        counts = []
        for _ in range(3):
            before = transport.commands_run
            sup.cycle()
            counts.append(transport.commands_run - before)
            if len(counts) == 1:
                # Taking up 1,000 runs: their leases and earlier attempts in a few
                # statements, not one or two per run.
                first = list(statements)
        assert counts == [1, 1, 1]
        assert sum("biomero_supervisor_lease" in q for q in first) <= 3
        assert sum("biomero_step_attempt" in q for q in first) == 1
        assert all(sorted(asked) == sorted(world["jobs"].values()) for asked in transport.asked)
        # Every run heard its own job's state (recorded once), and still waits on it.
        runs = {r["run_id"]: r for r in tracker.active_runs()}
        assert len(runs) == RUNS
        for run_id, job_id in world["jobs"].items():
            job = next(t for t in runs[run_id]["tasks"] if t["kind"] == "job")
            assert (job["slurm_job_id"], job["job_state"]) == (job_id, "PENDING")
            assert next_step(RunRecord.from_row(runs[run_id])) is Step.WAIT_JOB
        assert sup.counters.step_errors == sup.counters.failed_runs == 0
        # Nothing new from Slurm: a cycle appends no event.
        before = events(tracker)
        sup.cycle()
        assert events(tracker) == before
    finally:
        event.remove(tracker.engine, "before_cursor_execute", note)
        sup.shutdown()
