"""Our half of the benchmarks: biomeroworker's staging, SlurmClient.poll, RunEngine, Tracker."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.bench_staging import NullSink
from biomeroworker import runs as runs_module
from biomeroworker.config import load_settings
from biomeroworker.run_record import RunRecord
from biomeroworker.runs import RunEngine
from biomeroworker.slurm.client import SlurmClient
from biomeroworker.slurm.states import JobState
from biomeroworker.staging import stage_down, stage_up
from biomeroworker.tracking.application import Tracker
from biomeroworker.transport.base import Transport

REMOTE = "bench-ours"
# Item 4 replaces each poll wait by this much real time (slurmdbd needs a few seconds to
# list a new job; the same for both systems).
COMPRESSED_SLEEP_S = 0.3


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


# --- item 1: staging -------------------------------------------------------------------


def make_tar(folder: Path, path: Path) -> Path:
    """The dataset as one tar file: the bytes the single-channel limit moves."""
    if not path.is_file():
        with tarfile.open(path, "w") as tar:
            tar.add(folder, arcname=folder.name)
    return path


def limit_runs(transport: Transport, alias: str, tar_path: Path, reps: int) -> dict[str, list]:
    """One SSH channel, no files: tar bytes into ``dd of=/dev/null`` and ``cat`` back.
    OpenSSH reuses one connection (``ssh_master``), as our transport does."""
    remote_tar = f"{REMOTE}/limit.tar"
    transport.run(["mkdir", "-p", REMOTE])
    with tar_path.open("rb") as fh:
        transport.run(["dd", f"of={remote_tar}", "bs=1M", "status=none"], stdin=fh)
    runs: dict[str, list[float]] = {
        k: [] for k in ("up_openssh", "up_ours", "down_openssh", "down_ours")
    }
    to_null = ["dd", "of=/dev/null", "bs=1M", "status=none"]
    with ssh_master(alias) as ssh:
        for _ in range(reps):
            with tar_path.open("rb") as fh:
                runs["up_openssh"].append(
                    timed(functools.partial(subprocess.run, [*ssh, *to_null], stdin=fh, check=True))
                )
            with tar_path.open("rb") as fh:
                runs["up_ours"].append(timed(functools.partial(transport.run, to_null, stdin=fh)))
            runs["down_openssh"].append(
                timed(
                    functools.partial(
                        subprocess.run,
                        [*ssh, "cat", remote_tar],
                        stdout=subprocess.DEVNULL,
                        check=True,
                    )
                )
            )
            runs["down_ours"].append(
                timed(functools.partial(transport.run, ["cat", remote_tar], stdout=NullSink()))
            )
    transport.run(["rm", "-f", remote_tar])
    return runs


# Copies a repetition made are removed only after every repetition of both systems
# (``left``): on this VM's ext4 (no journal) creating files right after thousands were
# deleted costs several times the system time (docs/performance.md, a helper's profile),
# which a real transfer does not meet and would land on whichever system runs next.


def staging_up_runs(
    transport: Transport, zarr: Path, reps: int, left: list[str]
) -> list[dict[str, Any]]:
    """``reps`` uploads of ``zarr``; the remote copies are appended to ``left``."""
    out = []
    for _ in range(reps):
        remote = f"{REMOTE}/up_{uuid.uuid4().hex[:8]}"
        report = stage_up(transport, [zarr], remote)
        out.append({"total_s": report.seconds, "files_arrived": report.manifest.files})
        left.append(remote)
    return out


def staging_down_runs(
    transport: Transport, remote_dir: str, tmp: Path, reps: int, left: list[Path]
) -> list[dict[str, Any]]:
    """``reps`` downloads of ``remote_dir``; the local copies are appended to ``left``."""
    out = []
    for _ in range(reps):
        local = tmp / f"down_{uuid.uuid4().hex[:8]}"
        local.parent.mkdir(parents=True, exist_ok=True)
        report = stage_down(transport, remote_dir, local)
        out.append({"total_s": report.seconds, "files_arrived": report.manifest.files})
        left.append(local)
    return out


@contextlib.contextmanager
def ssh_master(alias: str) -> Iterator[list[str]]:
    """An OpenSSH command line reusing one connection (ControlMaster), so the reference
    times the transfer, not a new key exchange and login per command as staging never
    pays either (one connection for everything)."""
    socket = Path(f"/tmp/bench-ssh-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    base = ["ssh", "-o", "BatchMode=yes", "-S", str(socket)]
    subprocess.run([*base, "-M", "-N", "-f", alias], check=True)
    try:
        yield [*base, alias, "--"]
    finally:
        subprocess.run([*base, "-O", "exit", alias], check=False, capture_output=True)


def tar_pipe_runs(
    alias: str,
    zarr: Path,
    remote_src: str,
    tmp: Path,
    reps: int,
    left_remote: list[str],
    left_local: list[Path],
) -> dict[str, list[float]]:
    """The same files moved by standard tools, no checks: ``tar -c | ssh tar -x`` up and
    ``ssh tar -c | tar -x`` down (OpenSSH, GNU tar at both ends). It pays what staging
    pays beyond the one-channel limit, creating every file at the receiving end, so it
    is the practical limit for a folder of many files; copies go to the ``left`` lists."""
    runs: dict[str, list[float]] = {"up": [], "down": []}
    with ssh_master(alias) as ssh:
        for _ in range(reps):
            remote = f"{REMOTE}/ref_{uuid.uuid4().hex[:8]}"
            subprocess.run([*ssh, "mkdir", "-p", remote], check=True)
            left_remote.append(remote)
            local = tmp / f"ref_{uuid.uuid4().hex[:8]}"
            local.mkdir(parents=True)
            left_local.append(local)
            up = functools.partial(
                _piped,
                ["tar", "-c", "-f", "-", "-C", str(zarr.parent), zarr.name],
                [*ssh, "tar", "-x", "-f", "-", "-C", remote],
            )
            down = functools.partial(
                _piped,
                [*ssh, "tar", "-c", "-f", "-", "-C", remote_src, "."],
                ["tar", "-x", "-f", "-", "-C", str(local)],
            )
            runs["up"].append(timed(up))
            runs["down"].append(timed(down))
    return runs


def _piped(first: list[str], second: list[str]) -> None:
    """``first | second``, both checked."""
    writer = subprocess.Popen(first, stdout=subprocess.PIPE)
    try:
        subprocess.run(second, stdin=writer.stdout, check=True)
    finally:
        writer.stdout.close()  # type: ignore[union-attr]
        if writer.wait() != 0:
            raise subprocess.CalledProcessError(writer.returncode, first)


# --- item 2: polling -------------------------------------------------------------------


def submit_held(transport: Transport, count: int, partition: str) -> list[str]:
    argv = [
        "sbatch",
        "--parsable",
        "--hold",
        "-p",
        partition,
        "-J",
        "bench-held",
        "-o",
        "/dev/null",
        "--wrap",
        "sleep 1",
    ]
    return [transport.run(argv).stdout.strip().split(";")[0] for _ in range(count)]


def wait_visible(transport: Transport, ids: list[str], timeout_s: float = 60) -> None:
    """slurmdbd lists a new job a few seconds after sbatch; wait until it knows all."""
    client = SlurmClient(transport)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        states = client.poll(ids)
        if all(s.state is not JobState.UNKNOWN for s in states.values()):
            return
        time.sleep(1)


def cancel(transport: Transport, ids: list[str]) -> None:
    if ids:
        transport.run(["scancel", *ids], check=False)


def poll_runs(transport: Transport, ids: list[str], cycles: int) -> list[dict[str, Any]]:
    client = SlurmClient(transport)
    out = []
    for _ in range(cycles):
        before = transport.commands_run
        started = time.perf_counter()
        states = client.poll(ids)
        out.append(
            {
                "commands": transport.commands_run - before,
                "wall_s": time.perf_counter() - started,
                "states": sorted({s.state.name for s in states.values()}),
            }
        )
    return out


# --- item 3: end to end ----------------------------------------------------------------


def sacct_times(transport: Transport, job_id: str) -> tuple[float, float, float]:
    """(Elapsed seconds, Start and End as epoch), retried while slurmdbd catches up."""
    for _ in range(20):
        line = transport.run(["sacct", "-n", "-P", "-X", "-o", "Elapsed,Start,End", "-j", job_id])
        text = line.stdout.strip()
        if text and "Unknown" not in text:
            elapsed, start, end = text.splitlines()[0].split("|")
            h, m, s = (int(x) for x in elapsed.split("-")[-1].split(":"))
            return (
                h * 3600 + m * 60 + s,
                datetime.fromisoformat(start).timestamp(),
                datetime.fromisoformat(end).timestamp(),
            )
        time.sleep(0.5)
    raise RuntimeError(f"sacct has no end time for job {job_id}")


# localslurm's slurmctld log: its lines carry milliseconds, where sacct's Start and End
# are whole seconds (the bench runs on localslurm only).
CTLD_LOG = (
    Path(os.environ.get("LOCALSLURM_HOME", "/var/lib/biomero-localslurm")) / "log/slurmctld.log"
)
_CTLD_LINE = re.compile(
    r"^\[(?P<at>[0-9T:.-]+)\] (?:sched: Allocate JobId=(?P<alloc>[0-9]+) "
    r"|_job_complete: JobId=(?P<done>[0-9]+) done)"
)


def controller_times(job_id: str) -> tuple[float | None, float | None]:
    """When slurmctld gave ``job_id`` its node and when it saw the job done (epoch, ms),
    from localslurm's log; None where the log does not say."""
    alloc = done = None
    try:
        lines = CTLD_LOG.read_text(errors="replace").splitlines()[-5000:]
    except OSError:
        return None, None
    for line in lines:
        match = _CTLD_LINE.match(line)
        if match is None:
            continue
        at = datetime.fromisoformat(match["at"]).timestamp()
        if match["alloc"] == job_id:
            alloc = at
        elif match["done"] == job_id:
            done = at
    return alloc, done


def e2e_runs(
    config: Path, transport: Transport, store_url: str, images: list[Path], tmp: Path, reps: int
) -> list[dict[str, Any]]:
    settings = load_settings(config_file=str(config))
    out = []
    with Tracker(store_url) as tracker:
        for _ in range(reps):
            engine = RunEngine(settings, transport, tracker)
            out.append(_one_e2e(engine, transport, images, tmp))
    return out


class Timeline:
    """Where a driven run's wall time goes: each engine phase's wall time, the remote
    commands (and SFTP writes) inside it, the sleeps between polls; what no phase
    covers is the drive loop's own bookkeeping (reading the run back, deciding)."""

    PHASES = ("stage_up", "submit", "record_poll", "finish", "stage_down", "complete")

    def __init__(self, engine: RunEngine, transport: Transport) -> None:
        self.phase = "request"
        self.wall: dict[str, float] = {}
        self.remote: dict[str, float] = {}
        self.commands: dict[str, int] = {}
        self.sbatch_done: float | None = None
        self.terminal_seen: float | None = None
        self.first_listed: float | None = None
        self.sleeps = 0.0
        self._undo: list[tuple[object, str, object]] = []
        for name in self.PHASES:
            self._wrap(engine, name, name)
        self._wrap(engine, "request", "request")
        self._wrap(engine.slurm, "poll", "poll")
        self._wrap_remote(transport, "run")
        self._wrap_remote(transport, "write_text")
        sleep = engine.sleep

        def noted_sleep(seconds: float) -> None:
            started = time.perf_counter()
            sleep(seconds)
            self.sleeps += time.perf_counter() - started

        self._undo.append((engine, "sleep", sleep))
        engine.sleep = noted_sleep

    def _wrap(self, obj: object, name: str, phase: str) -> None:
        original = getattr(obj, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            outer, self.phase = self.phase, phase
            if phase == "finish" and self.terminal_seen is None:
                self.terminal_seen = time.time()  # the poll that saw the job end
            started = time.perf_counter()
            try:
                result = original(*args, **kwargs)
            finally:
                self.wall[phase] = self.wall.get(phase, 0.0) + time.perf_counter() - started
                self.phase = outer
            listed = phase == "poll" and self.first_listed is None
            if listed and any(s.state is not JobState.UNKNOWN for s in result.values()):
                self.first_listed = time.time()
            return result

        self._undo.append((obj, name, original))
        setattr(obj, name, timed)

    def _wrap_remote(self, obj: object, name: str) -> None:
        original = getattr(obj, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                phase = self.phase
                self.remote[phase] = self.remote.get(phase, 0.0) + time.perf_counter() - started
                self.commands[phase] = self.commands.get(phase, 0) + 1
                if name == "run" and args and list(args[0])[:1] == ["sbatch"]:
                    self.sbatch_done = time.time()

        self._undo.append((obj, name, original))
        setattr(obj, name, timed)

    def restore(self) -> None:
        for obj, name, original in reversed(self._undo):
            setattr(obj, name, original)

    def breakdown(self, total: float) -> dict[str, Any]:
        """Seconds per phase (local = phase wall minus its remote time), the sleeps, and
        the rest of the loop; they add up to ``total``."""
        out: dict[str, Any] = {}
        for phase, wall in self.wall.items():
            remote = self.remote.get(phase, 0.0)
            out[phase] = {
                "wall_s": round(wall, 3),
                "remote_s": round(remote, 3),
                "local_s": round(wall - remote, 3),
                "commands": self.commands.get(phase, 0),
            }
        covered = sum(self.wall.values()) + self.sleeps
        out["sleeps_s"] = round(self.sleeps, 3)
        out["loop_bookkeeping_s"] = round(total - covered, 3)
        return out


def _one_e2e(engine: RunEngine, transport: Transport, images: list[Path], tmp: Path) -> dict:
    dest = tmp / f"e2e_{uuid.uuid4().hex[:8]}"
    local_at: list[float] = []
    stage_down_step = engine.stage_down

    def stage_down_noting_time(run: RunRecord) -> Path:
        path = stage_down_step(run)
        local_at.append(time.time())
        return path

    engine.stage_down = stage_down_noting_time  # type: ignore[method-assign]
    timeline = Timeline(engine, transport)
    before = transport.commands_run
    started = time.time()
    try:
        run_id = engine.request("noop", images, {}, output_dir=dest)
        engine.drive(run_id)
    finally:
        timeline.restore()
    total = time.time() - started
    commands = transport.commands_run - before
    job = next(t for t in engine.tracker.get_run(run_id)["tasks"] if t.get("slurm_job_id"))
    elapsed, start_epoch, end_epoch = sacct_times(transport, job["slurm_job_id"])
    allocated, done = controller_times(job["slurm_job_id"])
    files_back = sum(1 for p in dest.rglob("*") if p.is_file())
    shutil.rmtree(dest)
    slurm = {
        # Slurm's Start, End and Elapsed are whole seconds: each of these carries up to 1 s.
        "sbatch_to_first_listed_s": _since(timeline.sbatch_done, timeline.first_listed),
        "sbatch_to_start_s": _since(timeline.sbatch_done, start_epoch),
        "end_to_terminal_seen_s": _since(end_epoch, timeline.terminal_seen),
        "sbatch_to_terminal_seen_s": _since(timeline.sbatch_done, timeline.terminal_seen),
        # From slurmctld's log, to the millisecond: the scheduler's delay (batch_sched_delay,
        # sched_interval), the job on its node, and how late our poll saw it done.
        "sbatch_to_allocated_s": _since(timeline.sbatch_done, allocated),
        "allocated_to_done_s": _since(allocated, done),
        "done_to_terminal_seen_s": _since(done, timeline.terminal_seen),
    }
    return {
        "total_s": total,
        "job_elapsed_s": elapsed,
        "overhead_s": total - elapsed,
        # The wall time that is not Slurm's (sbatch returned to the job done): ours.
        "worker_s": None
        if done is None or timeline.sbatch_done is None
        else total - (done - timeline.sbatch_done),
        "end_to_local_s": local_at[0] - end_epoch,
        "commands": commands,
        "files_back": files_back,
        "job_id": job["slurm_job_id"],
        "steps_s": dict(engine.step_seconds),
        "breakdown": timeline.breakdown(total),
        "slurm": slurm,
    }


def where_it_goes(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Medians over ``runs`` of where a run's wall time went (``Timeline.breakdown``,
    remote and local apart) and of the Slurm-side intervals."""
    keys: dict[str, list[float]] = {}
    for r in runs:
        flat: dict[str, float] = {}
        for phase, part in r["breakdown"].items():
            if isinstance(part, dict):
                flat[f"{phase} remote"] = part["remote_s"]
                flat[f"{phase} local"] = part["local_s"]
            else:
                flat[phase] = part
        flat.update({k: v for k, v in r["slurm"].items() if v is not None})
        for key, value in flat.items():
            keys.setdefault(key, []).append(value)
    return {k: round(statistics.median(v), 2) for k, v in keys.items()}


def _since(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else round(end - start, 3)


# --- item 4: events per poll -----------------------------------------------------------


class _Stop(Exception):
    pass


def count_events(store: Path) -> int:
    with sqlite3.connect(store) as db:
        return db.execute("SELECT count(*) FROM workflowtracker_events").fetchone()[0]


class _SkippedClock:
    """The ``time`` module as the engine sees it in a compressed run: each compressed
    sleep has lasted what was asked, so clocks such as ``FRESH_JOB_S`` run as they would."""

    def __init__(self) -> None:
        self.skipped = 0.0

    def time(self) -> float:
        return time.time() + self.skipped

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def events_run(
    config: Path, transport: Transport, store: Path, image: Path, cycles: int
) -> dict[str, Any]:
    """Drive a no-op run whose job waits in the queue for ``cycles`` polls, sleeps compressed.

    The config adds ``sbatch --begin=now+1hour`` to the job, so it stays PENDING. Events
    are counted from the first poll on (staging and submit events are not a poll's).
    """
    settings = load_settings(config_file=str(config))
    waits: list[float] = []
    at_first_poll: list[int] = []
    per_cycle: list[int] = []

    clock = _SkippedClock()

    def compressed(seconds: float) -> None:
        waits.append(seconds)
        per_cycle.append(count_events(store) - at_first_poll[0])
        if len(waits) >= cycles:
            raise _Stop
        time.sleep(COMPRESSED_SLEEP_S)
        clock.skipped += max(0.0, seconds - COMPRESSED_SLEEP_S)

    real_time = runs_module.time
    runs_module.time = clock  # type: ignore[assignment]
    try:
        return _events_run(settings, transport, store, image, compressed, at_first_poll) | {
            "cycles": len(waits),
            "waits_s": waits,
            "events_after_cycle": per_cycle,
            "poll_max_s": settings.worker.poll_max_s,
        }
    finally:
        runs_module.time = real_time


def _events_run(
    settings: Any,
    transport: Transport,
    store: Path,
    image: Path,
    compressed: Callable[[float], None],
    at_first_poll: list[int],
) -> dict[str, Any]:
    with Tracker(f"sqlite:///{store}") as tracker:
        engine = RunEngine(settings, transport, tracker, sleep=compressed)
        poll = engine.slurm.poll

        def counting_poll(ids: Any, expected: Any = None) -> Any:
            if not at_first_poll:
                # slurmdbd lists a new job only after a few seconds; a 10-minute wait
                # would not notice, so the counted cycles start once it does.
                wait_visible(transport, list(ids))
                at_first_poll.append(count_events(store))
            return poll(ids, expected)

        engine.slurm.poll = counting_poll  # type: ignore[method-assign]
        run_id = engine.request("noop", [image], {}, output_dir=store.parent / "tmp" / "held")
        with contextlib.suppress(_Stop):
            engine.drive(run_id)
        appended = count_events(store) - at_first_poll[0]
        states = [t.get("job_state") for t in tracker.get_run(run_id)["tasks"]]
        engine.cancel(run_id, "benchmark done")
    return {"events": appended, "task_states": states}
