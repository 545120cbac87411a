"""`biomero supervise`: claim recorded runs and drive each to its end.

One cycle: list the active runs (oldest first), claim those within the limits, queue
the next step of the runs that are not waiting (transfers and submissions run on a small
thread pool), then poll ALL waiting jobs with one command and advance those that changed,
recording what that poll says in one transaction. The pool holds a few steps at a time
(``QUEUED_PER_WORKER`` per worker); the other runs wait in a backlog, furthest along first
(``STEP_PRIORITY``), from which a worker that finishes a step takes the next: so a job
reaches Slurm while new runs are still uploading. The poll interval drops to its minimum
after any news (and stays there while runs wait in the backlog) and backs off to its
ceiling while nothing moves. Nothing lives only in memory: a restarted supervisor reads
the same runs from the event store and carries on; a Slurm job keeps running while no
supervisor does.

One run cannot take the supervisor down. An unreachable cluster or database is waited
out. Anything else a step raises (a bug, a file it cannot read, a MemoryError) is a
failed attempt, counted in the database (``supervisor.attempts``): the step is tried
again after ``step_retry_s`` (doubling), and after ``step_attempts`` failed attempts the
run fails with the last error. A restart does not reset the count or the wait.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from biomeroworker.config import Settings
from biomeroworker.errors import BiomeroError, CommandError, TransportError
from biomeroworker.redaction import redact
from biomeroworker.run_record import RunRecord
from biomeroworker.runs import (
    RunCancelled,
    RunEngine,
    RunFailed,
    Step,
    next_step,
    source,
)
from biomeroworker.supervisor.attempts import Attempts, AttemptStore
from biomeroworker.supervisor.leases import LeaseStore
from biomeroworker.tracking.errors import TrackingStoreError
from biomeroworker.transport.base import Transport
from biomeroworker.waits import Polled

log = logging.getLogger(__name__)

# Steps in the pool at once (running or queued), per worker: a worker that finishes one
# finds the next queued, and a run that gets further along (its job ready to submit)
# waits behind a handful of steps, not behind every new run's upload.
QUEUED_PER_WORKER = 2

# Which runs get a step first when more could start one than the pool holds: the run
# furthest along (its results come home, its job reaches Slurm) before new runs' exports
# and uploads; among equals the oldest (the active runs come oldest first).
STEP_PRIORITY = {
    step: rank
    for rank, step in enumerate(
        (
            Step.COMPLETE,
            Step.IMPORT,
            Step.STAGE_DOWN,
            Step.SUBMIT_JOB,
            Step.SUBMIT_CONVERT,
            Step.STAGE_UP,
            Step.CONVERT_HERE,
            Step.EXPORT,
        )
    )
}


def config_stamp(paths: Iterable[Path]) -> tuple[tuple[str, int, int], ...]:
    """What changes when a config file is edited or replaced: path, mtime, size."""
    stamps = []
    for path in paths:
        try:
            st = Path(path).stat()
            stamps.append((str(path), st.st_mtime_ns, st.st_size))
        except OSError:
            stamps.append((str(path), -1, -1))
    return tuple(stamps)


def transient(exc: BaseException) -> bool:
    """A service is away or slow (cluster, slurmrestd, database): wait, count no attempt.
    A command that ran and failed (CommandError) says the step is wrong: it counts."""
    if isinstance(exc, CommandError):
        return False
    return isinstance(exc, TransportError | TrackingStoreError | SQLAlchemyError)


def default_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class Counters:
    cycles: int = 0
    polls: int = 0
    steps: int = 0
    transient_errors: int = 0
    failed_runs: int = 0
    step_errors: int = 0
    history: list[str] = field(default_factory=list)


class Supervisor:
    def __init__(
        self,
        engine: RunEngine,
        leases: LeaseStore,
        *,
        workers: int = 2,
        queued: int | None = None,
        status_dir: Path | None = None,
        reload: Callable[[], tuple[Settings, Transport]] | None = None,
    ) -> None:
        self.engine = engine
        self.status_dir = status_dir
        # Reads the config again (and opens its transport) when a file of it changed.
        self.reload = reload
        self.config_stamp = config_stamp(engine.settings.sources)
        self.config_problem = ""
        self.leases = leases
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="biomero-step")
        self.in_flight: dict[str, Future[None]] = {}
        # At most this many steps in the pool; the other runs wait in ``backlog`` (the last
        # cycle's, in STEP_PRIORITY order), from which finishing steps take the next.
        self.max_queued = max(1, queued if queued is not None else QUEUED_PER_WORKER * workers)
        self.queued = 0
        self.backlog: list[RunRecord] = []
        self.queue_lock = threading.Lock()
        self.held: set[str] = set()
        self.stopping = threading.Event()
        w = engine.settings.worker
        self.fast_s = w.poll_min_s
        self.slow_s = w.poll_max_s
        self.interval_s = self.fast_s
        self.counters = Counters()
        # run id -> (step, monotonic time before which it is not tried again); filled
        # from the run's recorded errors the first time this process sees the run.
        self.retry_at: dict[str, tuple[str, float]] = {}
        self.attempts = AttemptStore(engine.tracker.engine)

    # -- admission ------------------------------------------------------------------

    def admit(self, active: list[RunRecord]) -> list[RunRecord]:
        """Claim the runs this supervisor drives, keeping the concurrency limits.

        Started runs count against the limits; waiting (REQUESTED) runs are admitted
        oldest first while there is room, for all users and per user.
        """
        w = self.engine.settings.worker
        started = [r for r in active if r.state != "REQUESTED"]
        total = len(started)
        per_user = Counter(r.user for r in started)
        # Runs we already hold are renewed together.
        kept = self.leases.renew(r.run_id for r in active if r.run_id in self.held)
        wanted = []
        for run in active:
            if run.state == "REQUESTED":
                if w.max_runs_total and total >= w.max_runs_total:
                    continue
                if w.max_runs_per_user and per_user[run.user] >= w.max_runs_per_user:
                    continue
                total += 1
                per_user[run.user] += 1
            wanted.append(run)
        # The others are claimed together (a restart claims every active run at once).
        claimed = self.leases.claim_all(r.run_id for r in wanted if r.run_id not in self.held)
        return [r for r in wanted if r.run_id in kept or r.run_id in claimed]

    # -- one cycle -----------------------------------------------------------------

    def cycle(self) -> None:
        self.counters.cycles += 1
        self._reload_config()
        self._reap()
        mine = self.admit(self.engine.tracker.active_run_records())
        self._release_finished({r.run_id for r in mine})
        self._learn_attempts(mine)
        waiting = []
        ready = []
        for run in mine:
            if run.run_id in self.in_flight or not self._due(run):
                continue
            on = self.engine.waiting_on(run)
            if on is not None:
                waiting.append((run, on))
            else:
                ready.append(run)
        started_any = self._queue_steps(ready)
        news = self._poll(waiting) if waiting else False
        self._settle_accounting()
        # While runs wait in the backlog, the next cycle comes soon: it finds the runs
        # whose steps ended meanwhile, which may go before the backlog.
        busy = news or started_any or bool(self.backlog)
        self.interval_s = self.fast_s if busy else min(self.interval_s * 1.5, self.slow_s)
        self._write_status()

    # -- the step queue --------------------------------------------------------------

    def _queue_steps(self, ready: list[RunRecord]) -> bool:
        """Queue the next step of ``ready`` runs, furthest along first, while the pool has
        room; the rest become the backlog (replacing the last cycle's). True if any was
        queued now."""
        ranked = sorted(
            ready, key=lambda run: STEP_PRIORITY.get(next_step(run), len(STEP_PRIORITY))
        )
        with self.queue_lock:
            before = self.queued
            # A worker may have taken a run of the old backlog since this cycle began.
            self.backlog = [run for run in ranked if run.run_id not in self.in_flight]
            self._fill()
            return self.queued > before

    def _fill(self) -> None:
        """Move runs from the backlog into the pool up to ``max_queued`` (queue_lock held)."""
        while self.backlog and self.queued < self.max_queued and not self.stopping.is_set():
            run = self.backlog.pop(0)
            self.queued += 1
            self.in_flight[run.run_id] = self.pool.submit(self._step, run)

    def _reload_config(self) -> None:
        """A changed slurm-config.ini (the OMERO.biomero admin page edits it while we
        run) is validated and used from this cycle on; a bad edit keeps the last good
        config running and is reported (log, status file) until it is fixed."""
        if self.reload is None:
            return
        stamp = config_stamp(self.engine.settings.sources)
        if stamp == self.config_stamp:
            return
        try:
            settings, transport = self.reload()
        except BiomeroError as exc:
            if str(exc) != self.config_problem:
                log.error(
                    "slurm-config.ini changed but is not valid; keeping the last good "
                    "config until it is fixed: %s",
                    exc,
                )
            self.config_problem = str(exc)
            return
        self.config_stamp = config_stamp(settings.sources)
        self.config_problem = ""
        self.engine.reconfigure(settings, transport)
        w = settings.worker
        self.fast_s, self.slow_s = w.poll_min_s, w.poll_max_s
        log.info("slurm-config.ini changed: now using %s", " + ".join(map(str, settings.sources)))

    def _write_status(self) -> None:
        """For the container's healthcheck: when the last cycle ended, and the runs
        waiting on a job no query can see (one line each). Replaced atomically."""
        if self.status_dir is None:
            return
        lines = [f"run {run_id}: {message}" for run_id, message in self.engine.stalled.values()]
        try:
            self.status_dir.mkdir(parents=True, exist_ok=True)
            files = {
                "stalled": "".join(f"{x}\n" for x in lines),
                "cycle": f"{time.time():.0f}\n",
                "config": f"{self.config_problem}\n" if self.config_problem else "",
            }
            for name, text in files.items():
                partial = self.status_dir / f".{name}.partial"
                partial.write_text(text)
                partial.replace(self.status_dir / name)
        except OSError as exc:
            log.warning("cannot write the status files in %s: %s", self.status_dir, exc)

    def _poll(self, waiting: list[tuple[RunRecord, tuple[str, int]]]) -> bool:
        """One status command for every waiting job of every run."""
        try:
            polled = self.engine.poll_jobs(dict(on for _, on in waiting))
        except TransportError as exc:
            self.counters.transient_errors += 1
            log.warning("poll failed (will retry): %s", exc)
            return False
        self.counters.polls += 1
        return self._advance_waiting([run for run, _on in waiting], polled)

    def _advance_waiting(self, runs: list[RunRecord], polled: Polled) -> bool:
        """Advance the waiting ``runs`` with this cycle's poll, recording all of it in one
        transaction (``Tracker.batch``): one commit and one catch-up of the read models
        for the cycle instead of one per job status, progress or ended task.

        Nothing in a waiting step reads back what it recorded (the run is read again only
        to see whether someone else cancelled it), so a batch changes no decision. A run's
        exception stays its own: it is caught inside the batch and handled after the
        commit, and the other runs' recordings are kept. A commit that fails records
        nothing of the batch; then each run is advanced again on its own, as without the
        batch, from its record as the store now has it (a run whose step has moved on was
        recorded after all), with the engine's clocks of unlisted jobs as they were
        before the batch. A waiting step does nothing outside the store but read (a log's
        tail), so doing it again is harmless."""
        engine = self.engine
        clocks = dict(engine.unseen_since), dict(engine.stalled)
        try:
            with engine.tracker.batch():
                outcomes = [self._advance_one(run, polled) for run in runs]
        except Exception as exc:  # the commit failed: nothing of the batch was recorded
            log.warning(
                "recording the poll of %d run(s) in one transaction failed; recording each "
                "run on its own: %s",
                len(runs),
                redact(f"{type(exc).__name__}: {exc}"),
            )
            for kept, clock in zip((engine.unseen_since, engine.stalled), clocks, strict=True):
                kept.clear()
                kept.update(clock)  # type: ignore[arg-type]
            outcomes = [self._advance_again(run, polled) for run in runs]
        news = False
        for run, moved, exc in outcomes:
            news |= moved
            if isinstance(exc, RunFailed | RunCancelled):
                self.counters.failed_runs += 1
                log.info("run %s: %s", run.run_id, exc)
                news = True
            elif exc is not None:  # one run never stops the others
                self._attempt_failed(run, next_step(run), exc)
        return news

    def _advance_one(
        self, run: RunRecord, polled: Polled
    ) -> tuple[RunRecord, bool, Exception | None]:
        """The waiting run's news and step, with what it raised (not raised)."""
        moved = False
        try:
            moved = self.engine.poll_news(run, polled)
            self.engine.advance(run, polled)
        except Exception as exc:
            return run, moved, exc
        return run, moved, None

    def _advance_again(
        self, run: RunRecord, polled: Polled
    ) -> tuple[RunRecord, bool, Exception | None]:
        """``_advance_one`` on its own after a batch that failed, from the run's record now."""
        try:
            fresh = self.engine.tracker.run_record(run.run_id)
        except Exception as exc:
            return run, False, exc
        if next_step(fresh) is not next_step(run):
            return fresh, True, None  # the failed commit was recorded after all
        return self._advance_one(fresh, polled)

    def _settle_accounting(self) -> None:
        """Memory use of jobs seen ending a few seconds ago: at most one more query."""
        try:
            self.engine.settle_accounting()
        except TransportError as exc:
            self.counters.transient_errors += 1
            log.warning("accounting query failed (will retry): %s", exc)

    def _step(self, run: RunRecord) -> None:
        try:
            self._do_step(run)
        finally:
            # The run stays in ``in_flight`` until the next cycle reaps it (that cycle
            # reads the records after this step's), but its room in the pool is free.
            with self.queue_lock:
                self.queued -= 1
                self._fill()

    def _do_step(self, run: RunRecord) -> None:
        step = next_step(run)
        try:
            self.engine.advance(run)
            self.counters.steps += 1
            self.counters.history.append(f"{run.run_id}:{step.name}")
        except (RunFailed, RunCancelled) as exc:
            self.counters.failed_runs += 1
            log.info("run %s: %s", run.run_id, exc)
        except Exception as exc:  # a MemoryError too: the supervisor outlives the step
            self._attempt_failed(run, step, exc)

    # -- failed attempts (poison runs) ------------------------------------------------

    def _due(self, run: RunRecord) -> bool:
        """False while the run's step waits out its backoff after a failed attempt."""
        step = next_step(run).value
        if run.run_id not in self.retry_at:
            self._learn_attempts([run])
        failed_step, not_before = self.retry_at[run.run_id]
        return failed_step != step or time.monotonic() >= not_before

    def _learn_attempts(self, runs: list[RunRecord]) -> None:
        """For runs this process has not seen yet: when each one's step may run again,
        from the failed attempts recorded for it (after a restart), in one query."""
        new = [r for r in runs if r.run_id not in self.retry_at]
        if not new:
            return
        try:
            found = self.attempts.of_all(r.run_id for r in new)
        except SQLAlchemyError as exc:
            log.warning("cannot read the runs' earlier attempts: %s", redact(str(exc)))
            found = {}
        for run in new:
            step = next_step(run).value
            self.retry_at[run.run_id] = (step, self._retry_after(found.get(run.run_id), step))

    def _retry_after(self, found: Attempts | None, step: str) -> float:
        """When ``step`` may run again after the recorded failed attempts ``found``."""
        if found is None or found.step != step:
            return 0.0
        since = time.time() - found.at
        return time.monotonic() + max(0.0, self._backoff(found.failed) - since)

    def _backoff(self, failed: int) -> float:
        return float(self.engine.settings.worker.step_retry_s * 2 ** max(0, failed - 1))

    def _attempt_failed(self, run: RunRecord, step: Step, exc: BaseException) -> None:
        """Wait out a transient error; count anything else, and fail the run at the limit."""
        run_id = run.run_id
        message = redact(f"{type(exc).__name__}: {exc}")
        if transient(exc):
            self.counters.transient_errors += 1
            log.warning(
                "run %s: %s failed transiently (will retry): %s", run_id, step.value, message
            )
            return
        self.counters.step_errors += 1
        limit = self.engine.settings.worker.step_attempts
        log.error("run %s: %s failed: %s", run_id, step.value, message, exc_info=exc)
        try:
            failed = self.attempts.failed(run_id, step.value, message)
            if failed >= limit:
                why = f"{step.value} failed {failed} times; last: {message}"
                # The step's open task ends with the run (dashboards would show it running).
                for task in run.tasks:
                    if task.state == "STARTED":
                        self.engine.tracker.fail_task(task.task_id, "StepError", why)
                self.engine.tracker.fail_run(run_id, "StepError", why)
                self.counters.failed_runs += 1
                log.error("run %s: failed after %d attempts of %s", run_id, failed, step.value)
                return
        except (BiomeroError, SQLAlchemyError) as store_exc:
            # The database is away: back off anyway; the attempt is not counted.
            log.warning("run %s: attempt not recorded: %s", run_id, redact(str(store_exc)))
            failed = 1
        wait = self._backoff(failed)
        self.retry_at[run_id] = (step.value, time.monotonic() + wait)
        log.warning(
            "run %s: %s attempt %d of %d failed; next in %.0f s",
            run_id,
            step.value,
            failed,
            limit,
            wait,
        )

    def _reap(self) -> None:
        with self.queue_lock:  # workers add to in_flight as they take from the backlog
            done = {r: f for r, f in self.in_flight.items() if f.done()}
            for run_id in done:
                del self.in_flight[run_id]
        for run_id, future in done.items():
            if future.exception() is not None:
                log.error("run %s: step crashed: %r", run_id, future.exception())

    def _release_finished(self, current: set[str]) -> None:
        """Runs that left the active list: clean up cancelled ones, tell the DataSide of
        finished ones (an OMERO run's E-mail), drop their leases."""
        with self.queue_lock:
            gone = self.held - current - set(self.in_flight)
        for run_id in gone:
            try:
                run = self.engine.tracker.run_record(run_id)
            except BiomeroError as exc:
                log.warning("run %s: cannot read it after it left: %s", run_id, exc)
                continue
            if run.state == "CANCELLED":
                try:
                    self.engine.cleanup_remote(run)
                except BiomeroError as exc:
                    log.warning("run %s: cleanup after cancel failed: %s", run_id, exc)
            if run.finished:
                self._run_ended(run)
        self.leases.release(gone)
        self.held = (self.held - gone) | current
        for run_id in gone:
            self.retry_at.pop(run_id, None)

    def _run_ended(self, run: RunRecord) -> None:
        hook = getattr(self.engine.data_sides.get(source(run)), "run_ended", None)
        if hook is None:
            return
        try:
            hook(run)
        except BiomeroError as exc:  # a notification never changes the run's outcome
            log.warning("run %s: end-of-run notice failed: %s", run.run_id, exc)

    # -- lifecycle -------------------------------------------------------------------

    def run_forever(self) -> None:
        log.info("supervisor %s started", self.leases.holder)
        while not self.stopping.is_set():
            try:
                self.cycle()
            except TransportError as exc:
                self.counters.transient_errors += 1
                log.warning("cycle failed (will retry): %s", exc)
            except Exception as exc:  # the next cycle tries again; the process stays up
                log.error("cycle failed: %s", redact(f"{type(exc).__name__}: {exc}"))
            self.stopping.wait(self.interval_s)
        self.shutdown()

    def stop(self) -> None:
        """Stop after the current cycle; steps in flight finish their bookkeeping."""
        self.stopping.set()

    def shutdown(self) -> None:
        """Let the steps in the pool finish (the backlog is dropped), release the leases."""
        self.stopping.set()
        with self.queue_lock:
            self.backlog = []
        self.pool.shutdown(wait=True)
        self.leases.release(self.held | set(self.in_flight))
        log.info("supervisor %s stopped; Slurm jobs keep running", self.leases.holder)
