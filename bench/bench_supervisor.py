"""Supervisor cost with many active runs, and the delay from a job's end to local results.

    .venv/bin/python bench/bench_supervisor.py [--runs 100] [--cycles 20] [--url URL]

Part 1 records N runs of a test workflow, lets one in-process supervisor bring them all
to "waiting on Slurm" (start time an hour away, so they stay queued), then measures the
supervisor's own CPU time and remote commands over a number of poll cycles.
Part 2 runs one short job and measures the time from the job's End (sacct) to the
results being local. Prints numbers; asserts nothing. Needs localslurm/up.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import tifffile

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from biomeroworker.config import load_settings  # noqa: E402
from biomeroworker.prepare import init_cluster  # noqa: E402
from biomeroworker.runs import RunEngine  # noqa: E402
from biomeroworker.supervisor.leases import LeaseStore  # noqa: E402
from biomeroworker.supervisor.loop import Supervisor  # noqa: E402
from biomeroworker.tracking.application import Tracker  # noqa: E402
from biomeroworker.transport.ssh import SSHOptions, SSHTransport  # noqa: E402


def _config(root: Path, url: str) -> Path:
    base = (REPO / "localslurm/run/slurm-config.ini").read_text()
    extra = (
        "[WORKFLOWS]\nmisbehave = misbehave\n"
        f"misbehave_repo = {REPO}/tests/fixtures/misbehave\nmisbehave_job_mem = 100M\n"
        "misbehave_job_begin = now+3600\n"
    )
    text = base.replace("[WORKFLOWS]\n", extra, 1)
    text = text.replace("[ANALYTICS]\n", f"[ANALYTICS]\nsqlalchemy_url = {url}\n")
    path = root / "slurm-config.ini"
    path.write_text(text)
    return path


def _supervisor(settings, tracker, holder: str) -> Supervisor:  # type: ignore[no-untyped-def]
    engine = RunEngine(settings, SSHTransport(SSHOptions("localslurm")), tracker)
    return Supervisor(engine, LeaseStore(tracker.engine, holder, ttl_s=600), workers=2)


def many_runs(settings, tracker, root: Path, runs: int, cycles: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    source = root / "input"
    source.mkdir()
    tifffile.imwrite(source / "x.tif", np.zeros((32, 32), np.uint8))  # ~1 kB
    engine = RunEngine(settings, SSHTransport(SSHOptions("localslurm")), tracker)
    ids = [engine.request("misbehave", [source], {"mode": "ok"}) for _ in range(runs)]
    sup = _supervisor(settings, tracker, "bench-many")
    started = time.monotonic()
    while True:
        sup.cycle()
        jobs = [r.latest_task("job") for r in tracker.active_run_records()]
        waiting = sum(1 for task in jobs if task and task.slurm_job_id)
        if waiting == runs:
            break
        time.sleep(0.2)
    setup_s = time.monotonic() - started
    cpu, wall, commands = [], [], []
    for _ in range(cycles):
        c0, w0, n0 = time.process_time(), time.monotonic(), sup.engine.transport.commands_run
        sup.cycle()
        cpu.append(time.process_time() - c0)
        wall.append(time.monotonic() - w0)
        commands.append(sup.engine.transport.commands_run - n0)
    for run_id in ids:
        sup.engine.cancel(run_id)
    sup.shutdown()
    return {
        "runs": runs,
        "setup_s": round(setup_s, 1),
        "cpu_s_per_cycle_median": round(statistics.median(cpu), 4),
        "wall_s_per_cycle_median": round(statistics.median(wall), 4),
        "commands_per_cycle_max": max(commands),
        "cpu_percent_at_poll_max": round(
            100 * statistics.median(cpu) / settings.worker.poll_max_s, 2
        ),
    }


def end_to_local(settings, tracker, root: Path) -> float:  # type: ignore[no-untyped-def]
    source = root / "input-small"
    source.mkdir()
    tifffile.imwrite(source / "x.tif", np.zeros((32, 32), np.uint8))  # ~1 kB
    unheld = dataclasses.replace(
        settings,
        workflows={
            **settings.workflows,
            "misbehave": dataclasses.replace(
                settings.workflows["misbehave"],
                # The job script carries --begin=now+3600 from init; a flag overrides it.
                job_flags={**settings.workflows["misbehave"].job_flags, "begin": "now"},
            ),
        },
    )
    engine = RunEngine(unheld, SSHTransport(SSHOptions("localslurm")), tracker)
    run_id = engine.request(
        "misbehave", [source], {"mode": "nap", "nap_s": 3}, output_dir=root / "out"
    )
    engine.drive(run_id)
    local_at = time.time()
    task = tracker.run_record(run_id).latest_task("job")
    assert task is not None and task.slurm_job_id
    job = task.slurm_job_id
    end = subprocess.run(
        ["sacct", "-a", "-n", "-X", "-P", "-o", "End", "-j", job], capture_output=True, text=True
    ).stdout.strip()
    return round(local_at - datetime.fromisoformat(end).timestamp(), 2)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--url", help="tracking database (default: a SQLite file in a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="biomero-bench-sup-") as tmp:
        root = Path(tmp)
        url = args.url or f"sqlite:///{root}/t.sqlite"
        settings = load_settings(config_file=_config(root, url))
        list(init_cluster(SSHTransport(SSHOptions("localslurm")), settings))
        tracker = Tracker(url)
        print(
            "supervisor with many waiting runs:",
            many_runs(settings, tracker, root, args.runs, args.cycles),
        )
        print("job end -> results local (s):", end_to_local(settings, tracker, root))
        tracker.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
