"""Our half of the benchmarks: biomeroworker's staging, SlurmClient.poll, RunEngine, Tracker."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import subprocess
import tarfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from biomeroworker.config import load_settings
from biomeroworker.run_record import RunRecord
from biomeroworker.runs import RunEngine
from biomeroworker.slurm.client import SlurmClient
from biomeroworker.slurm.states import JobState
from biomeroworker.staging import stage_down, stage_up
from biomeroworker.tracking.application import Tracker
from biomeroworker.transport.base import Transport

try:  # the staging benchmark's helpers, when its owner has them in place
    from bench.bench_staging import NullSink, openssh
except ImportError:  # pragma: no cover - same behaviour, kept local

    class NullSink:  # type: ignore[no-redef]
        def write(self, chunk: bytes) -> int:
            return len(chunk)

    def openssh(alias: str, argv: list[str], **kwargs: object) -> None:  # type: ignore[misc]
        subprocess.run(["ssh", "-o", "BatchMode=yes", alias, "--", *argv], check=True, **kwargs)  # type: ignore[call-overload]


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
    """One SSH channel, no files: tar bytes into ``dd of=/dev/null`` and ``cat`` back."""
    remote_tar = f"{REMOTE}/limit.tar"
    transport.run(["mkdir", "-p", REMOTE])
    with tar_path.open("rb") as fh:
        transport.run(["dd", f"of={remote_tar}", "bs=1M", "status=none"], stdin=fh)
    runs: dict[str, list[float]] = {
        k: [] for k in ("up_openssh", "up_ours", "down_openssh", "down_ours")
    }
    for _ in range(reps):
        with tar_path.open("rb") as fh:
            runs["up_openssh"].append(
                timed(
                    lambda: openssh(alias, ["dd", "of=/dev/null", "bs=1M", "status=none"], stdin=fh)
                )
            )
        with tar_path.open("rb") as fh:
            runs["up_ours"].append(
                timed(
                    lambda: transport.run(["dd", "of=/dev/null", "bs=1M", "status=none"], stdin=fh)
                )
            )
        runs["down_openssh"].append(
            timed(lambda: openssh(alias, ["cat", remote_tar], stdout=subprocess.DEVNULL))
        )
        runs["down_ours"].append(
            timed(lambda: transport.run(["cat", remote_tar], stdout=NullSink()))
        )  # type: ignore[arg-type]
    transport.run(["rm", "-f", remote_tar])
    return runs


def staging_up_runs(transport: Transport, zarr: Path, reps: int) -> list[dict[str, Any]]:
    out = []
    for _ in range(reps):
        remote = f"{REMOTE}/up_{uuid.uuid4().hex[:8]}"
        report = stage_up(transport, [zarr], remote)
        out.append({"total_s": report.seconds, "files_arrived": report.manifest.files})
        transport.run(["rm", "-rf", remote])
    return out


def staging_down_runs(
    transport: Transport, remote_dir: str, tmp: Path, reps: int
) -> list[dict[str, Any]]:
    out = []
    for _ in range(reps):
        local = tmp / f"down_{uuid.uuid4().hex[:8]}"
        local.parent.mkdir(parents=True, exist_ok=True)
        report = stage_down(transport, remote_dir, local)
        out.append({"total_s": report.seconds, "files_arrived": report.manifest.files})
        shutil.rmtree(local)
    return out


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


def sacct_times(transport: Transport, job_id: str) -> tuple[float, float]:
    """(Elapsed seconds, End as epoch), retried while slurmdbd catches up."""
    for _ in range(20):
        line = transport.run(["sacct", "-n", "-P", "-X", "-o", "Elapsed,End", "-j", job_id])
        text = line.stdout.strip()
        if text and "Unknown" not in text:
            elapsed, end = text.splitlines()[0].split("|")
            h, m, s = (int(x) for x in elapsed.split("-")[-1].split(":"))
            return h * 3600 + m * 60 + s, datetime.fromisoformat(end).timestamp()
        time.sleep(0.5)
    raise RuntimeError(f"sacct has no end time for job {job_id}")


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


def _one_e2e(engine: RunEngine, transport: Transport, images: list[Path], tmp: Path) -> dict:
    dest = tmp / f"e2e_{uuid.uuid4().hex[:8]}"
    local_at: list[float] = []
    stage_down_step = engine.stage_down

    def stage_down_noting_time(run: RunRecord) -> Path:
        path = stage_down_step(run)
        local_at.append(time.time())
        return path

    engine.stage_down = stage_down_noting_time  # type: ignore[method-assign]
    before = transport.commands_run
    started = time.time()
    run_id = engine.request("noop", images, {}, output_dir=dest)
    engine.drive(run_id)
    total = time.time() - started
    commands = transport.commands_run - before
    job = next(t for t in engine.tracker.get_run(run_id)["tasks"] if t.get("slurm_job_id"))
    elapsed, end_epoch = sacct_times(transport, job["slurm_job_id"])
    files_back = sum(1 for p in dest.rglob("*") if p.is_file())
    shutil.rmtree(dest)
    return {
        "total_s": total,
        "job_elapsed_s": elapsed,
        "overhead_s": total - elapsed,
        "end_to_local_s": local_at[0] - end_epoch,
        "commands": commands,
        "files_back": files_back,
        "job_id": job["slurm_job_id"],
        "steps_s": dict(engine.step_seconds),
    }


# --- item 4: events per poll -----------------------------------------------------------


class _Stop(Exception):
    pass


def count_events(store: Path) -> int:
    with sqlite3.connect(store) as db:
        return db.execute("SELECT count(*) FROM workflowtracker_events").fetchone()[0]


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

    def compressed(seconds: float) -> None:
        waits.append(seconds)
        per_cycle.append(count_events(store) - at_first_poll[0])
        if len(waits) >= cycles:
            raise _Stop
        time.sleep(COMPRESSED_SLEEP_S)

    with Tracker(f"sqlite:///{store}") as tracker:
        engine = RunEngine(settings, transport, tracker, sleep=compressed)
        poll = engine.slurm.poll

        def counting_poll(ids: Any) -> Any:
            if not at_first_poll:
                # slurmdbd lists a new job only after a few seconds; a 10-minute wait
                # would not notice, so the counted cycles start once it does.
                wait_visible(transport, list(ids))
                at_first_poll.append(count_events(store))
            return poll(ids)

        engine.slurm.poll = counting_poll  # type: ignore[method-assign]
        run_id = engine.request("noop", [image], {}, output_dir=store.parent / "tmp" / "held")
        with contextlib.suppress(_Stop):
            engine.drive(run_id)
        appended = count_events(store) - at_first_poll[0]
        states = [t.get("job_state") for t in tracker.get_run(run_id)["tasks"]]
        engine.cancel(run_id, "benchmark done")
    return {
        "cycles": len(waits),
        "events": appended,
        "waits_s": waits,
        "events_after_cycle": per_cycle,
        "poll_max_s": settings.worker.poll_max_s,
        "task_states": states,
    }
