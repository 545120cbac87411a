"""The supervisor's step queue: a few steps in the pool at a time, the run furthest along
first, so jobs reach Slurm while new runs still upload (issue 16: with 1,000 new runs every
upload went before the first submission).

The supervisor, its admission and leases, the engine's step dispatch and the tracking
store (SQLite) are the real ones; the steps themselves are stand-ins that only record
their task (no transfer, no sbatch), and Slurm is a fake sacct that lists every job as held.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from biomeroworker.config import Settings, load_settings
from biomeroworker.run_record import RunRecord
from biomeroworker.runs import RunEngine, Step
from biomeroworker.supervisor.leases import LeaseStore
from biomeroworker.supervisor.loop import Supervisor
from biomeroworker.tracking.application import Tracker
from biomeroworker.transport.base import CommandResult

# localslurm's squeue line for a held job (tests/unit/test_waits.py, SQUEUE_HELD).
HELD = "{0}|{0}|{0}|N/A|PENDING|0:00|N/A|N/A||JobHeldUser"


class FakeSqueueTransport:
    """Fake: answers squeue for any job id as held; anything else is a test failure."""

    commands_run = 0

    def run(self, argv: Sequence[str], **_: Any) -> CommandResult:
        assert "squeue" in argv, f"unexpected command {argv[:3]}"
        jobs = next(a for a in argv if a.startswith("--jobs="))[len("--jobs=") :].split(",")
        out = "".join(HELD.format(job) + "\n" for job in jobs)
        return CommandResult(tuple(argv), 0, out, "", 0.0)


class StandInSteps(RunEngine):
    """The real engine with stand-in steps: each records its task and what ran, in order."""

    step_s = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.done: list[tuple[str, str]] = []  # (step, run id), in the order they ended
        self.jobs = 0
        self.lock = threading.Lock()
        self.during: Callable[[], None] = lambda: None

    def _stand_in(self, run: RunRecord, step: Step, kind: str) -> str:
        self.during()
        time.sleep(self.step_s)
        task = self.open_task(run, kind)
        with self.lock:
            self.done.append((step.value, run.run_id))
        return task

    def export(self, run: RunRecord) -> None:
        self.tracker.complete_task(self._stand_in(run, Step.EXPORT, "export"))

    def stage_up(self, run: RunRecord) -> None:
        self.tracker.complete_task(self._stand_in(run, Step.STAGE_UP, "stage_up"))

    def submit(self, run: RunRecord, kind: str) -> str:
        task = self._stand_in(run, Step.SUBMIT_JOB, kind)
        with self.lock:
            self.jobs += 1
            job = str(1000 + self.jobs)
        self.tracker.record_job_submitted(task, job, "slurm")
        return job

    def stage_down(self, run: RunRecord) -> Path:
        self.tracker.complete_task(self._stand_in(run, Step.STAGE_DOWN, "stage_down"))
        return Path("/results")

    def import_results(self, run: RunRecord) -> None:
        self.tracker.complete_task(self._stand_in(run, Step.IMPORT, "import"))

    def complete(self, run: RunRecord) -> Path:
        self.during()
        with self.lock:
            self.done.append((Step.COMPLETE.value, run.run_id))
        self.tracker.complete_run(run.run_id, "/results")
        return Path("/results")

    def submitted(self) -> int:
        return sum(1 for step, _ in self.done if step == Step.SUBMIT_JOB.value)


class ManualPool:
    """Fake thread pool: keeps what the supervisor queues; the test runs it, in order, as
    the pool's workers would (a step that ends lets the supervisor queue the next)."""

    def __init__(self) -> None:
        self.pending: list[tuple[Future[None], Callable[..., None], tuple[Any, ...]]] = []
        self.most = 0

    def submit(self, fn: Callable[..., None], *args: Any) -> Future[None]:
        future: Future[None] = Future()
        self.pending.append((future, fn, args))
        self.most = max(self.most, len(self.pending))
        return future

    def run(self, count: int) -> None:
        for _ in range(count):
            if not self.pending:
                return
            future, fn, args = self.pending.pop(0)
            fn(*args)
            future.set_result(None)

    def shutdown(self, wait: bool = True) -> None:
        self.pending.clear()


def _settings(tmp_path: Path, worker: str = "") -> Settings:
    config = tmp_path / "slurm-config.ini"
    config.write_text(
        "[SSH]\nhost = nowhere\n[SLURM]\nslurm_data_path = d\nslurm_images_path = i\n"
        "slurm_converters_path = c\nslurm_script_path = s\n[WORKER]\n" + worker
    )
    return load_settings([config], env={})


@pytest.fixture
def tracker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Tracker]:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    with Tracker(f"sqlite:///{tmp_path / 't.sqlite'}", project=False) as opened:
        yield opened


def request(tracker: Tracker, user: str = "u", source: str = "local") -> str:
    inputs: dict[str, Any] = {"files": ["/in/a.tif"], "source": source}
    return tracker.record_run_requested(workflow="w", version="1", user_name=user, inputs=inputs)


# The tasks a run has completed when ``step`` is its next one (EXPORT and IMPORT: OMERO runs).
DONE_BEFORE = {
    Step.EXPORT: [],
    Step.STAGE_UP: [],
    Step.SUBMIT_JOB: ["stage_up"],
    Step.STAGE_DOWN: ["stage_up", "job"],
    Step.COMPLETE: ["stage_up", "job", "stage_down"],
    Step.IMPORT: ["export", "stage_up", "job", "stage_down"],
}


def at_step(tracker: Tracker, step: Step) -> str:
    """A run recorded as far as ``step`` (its next step)."""
    run_id = request(tracker, source="omero" if step in (Step.EXPORT, Step.IMPORT) else "local")
    for kind in DONE_BEFORE[step]:
        task = tracker.start_task(run_id, kind)
        if kind == "job":
            tracker.record_job_submitted(task, "1", "slurm")
        tracker.complete_task(task)
    return run_id


def supervisor(engine: RunEngine, workers: int = 2, queued: int | None = None) -> Supervisor:
    leases = LeaseStore(engine.tracker.engine, "queue-test", ttl_s=600)
    return Supervisor(engine, leases, workers=workers, queued=queued)


def test_jobs_reach_slurm_while_new_runs_still_upload(tracker: Tracker, tmp_path: Path) -> None:
    """40 new runs, 2 workers: the first job is submitted after a handful of uploads (the
    old supervisor queued all 40 uploads first), the pool never holds more than 4 steps,
    and the cycles stay fast while runs wait for room."""
    runs = [request(tracker) for _ in range(40)]
    engine = StandInSteps(_settings(tmp_path), FakeSqueueTransport(), tracker)  # type: ignore[arg-type]
    sup = supervisor(engine)
    sup.pool.shutdown()
    pool = sup.pool = ManualPool()  # type: ignore[assignment]
    try:
        for _ in range(200):
            sup.cycle()
            assert len(pool.pending) <= sup.max_queued == 4
            if sup.backlog:
                assert sup.interval_s == sup.fast_s
            if engine.submitted() == len(runs):
                break
            pool.run(2)  # the two workers each end a step before the next cycle
        steps = [step for step, _ in engine.done]
        assert engine.submitted() == len(runs)
        first_submit = steps.index(Step.SUBMIT_JOB.value)
        assert first_submit <= 8, steps[:12]
        assert pool.most <= 4
        assert sup.counters.step_errors == sup.counters.failed_runs == 0
        # Each run staged up once and submitted once.
        assert sorted(engine.done) == sorted(
            [(s.value, r) for r in runs for s in (Step.STAGE_UP, Step.SUBMIT_JOB)]
        )
    finally:
        sup.shutdown()


def test_the_run_furthest_along_goes_first_then_the_oldest(
    tracker: Tracker, tmp_path: Path
) -> None:
    order = [
        Step.EXPORT,
        Step.STAGE_UP,
        Step.SUBMIT_JOB,
        Step.STAGE_DOWN,
        Step.STAGE_UP,
        Step.COMPLETE,
        Step.SUBMIT_JOB,
        Step.IMPORT,
        Step.EXPORT,
    ]
    runs = [(at_step(tracker, step), step) for step in order]  # oldest first
    engine = StandInSteps(_settings(tmp_path), FakeSqueueTransport(), tracker)  # type: ignore[arg-type]
    sup = supervisor(engine, workers=1, queued=len(runs))
    sup.pool.shutdown()
    pool = sup.pool = ManualPool()  # type: ignore[assignment]
    try:
        sup.cycle()
        pool.run(len(runs))
    finally:
        sup.shutdown()
    ranks = [
        Step.COMPLETE,
        Step.IMPORT,
        Step.STAGE_DOWN,
        Step.SUBMIT_JOB,
        Step.STAGE_UP,
        Step.EXPORT,
    ]
    expected = [(step.value, run_id) for rank in ranks for run_id, step in runs if step is rank]
    assert engine.done == expected


def test_the_queue_keeps_each_users_limit(tracker: Tracker, tmp_path: Path) -> None:
    """Admission is unchanged: runs beyond a user's limit wait in REQUESTED, not in the
    backlog, even when another user's runs are further along."""
    alice = [request(tracker, "alice") for _ in range(5)]
    bob = request(tracker, "bob")
    settings = _settings(tmp_path, "max_runs_per_user = 2\n")
    engine = StandInSteps(settings, FakeSqueueTransport(), tracker)  # type: ignore[arg-type]
    sup = supervisor(engine, workers=1)
    sup.pool.shutdown()
    pool = sup.pool = ManualPool()  # type: ignore[assignment]
    try:
        sup.cycle()
        assert len(pool.pending) == 2 and [r.run_id for r in sup.backlog] == [bob]
        pool.run(3)
        assert {r for _, r in engine.done} == {alice[0], alice[1], bob}
    finally:
        sup.shutdown()
    assert {r.run_id for r in tracker.active_run_records() if r.state == "REQUESTED"} == set(
        alice[2:]
    )


def test_with_real_threads_the_first_job_goes_before_the_last_upload(
    tracker: Tracker, tmp_path: Path
) -> None:
    """The same with the pool's threads and ``run_forever``: uploads take 20 ms each,
    the cycles come every 10 ms."""
    runs = [request(tracker) for _ in range(30)]
    settings = _settings(tmp_path, "poll_min_s = 0.01\npoll_max_s = 0.05\n")
    engine = StandInSteps(settings, FakeSqueueTransport(), tracker)  # type: ignore[arg-type]
    engine.step_s = 0.02
    sup = supervisor(engine)
    most = [0]

    def note() -> None:
        most[0] = max(most[0], sup.queued)

    engine.during = note
    loop = threading.Thread(target=sup.run_forever)
    loop.start()
    try:
        deadline = time.monotonic() + 120
        while engine.submitted() < len(runs) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        sup.stop()
        loop.join(timeout=120)
    steps = [step for step, _ in engine.done]
    assert engine.submitted() == len(runs)
    last_upload = len(steps) - 1 - steps[::-1].index(Step.STAGE_UP.value)
    assert steps.index(Step.SUBMIT_JOB.value) < last_upload
    assert 1 <= most[0] <= sup.max_queued
