"""Many images in batches: 1,000 small images split into runs of Batch_Size, driven by
one supervisor on localslurm, at several batch sizes.

    .venv/bin/python -m bench.bench_batches [--images 1000] [--sizes 1,32,256]

The batched OMERO script (scripts/__workflows/SLURM_Run_Workflow_Batched.py) records one
run per Batch_Size images; this does the same with local files (no OMERO server here):
``RunEngine.request`` per batch, then the real ``Supervisor`` (in process, over SSH,
the localslurm config's poll intervals) drives every run to its end, sleeping between
cycles as ``biomero supervise`` does. The workflow is bench/workflows/noop (copies its
inputs), the images small TIFFs (64 kB), so what is measured is our cost per run.
Per batch size: runs, Slurm jobs and job arrays, poll cycles, remote commands, events
appended, wall time to the last run's end. Results: bench/results/<date>-batches.json.
Asserts nothing. Needs localslurm/up.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import text

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import data, machine  # noqa: E402
from bench.cluster_setup import WORK, init_cluster, write_configs  # noqa: E402
from biomeroworker.config import load_settings  # noqa: E402
from biomeroworker.runs import RunEngine  # noqa: E402
from biomeroworker.supervisor.leases import LeaseStore  # noqa: E402
from biomeroworker.supervisor.loop import Supervisor  # noqa: E402
from biomeroworker.tracking.application import Tracker  # noqa: E402
from biomeroworker.transport.ssh import SSHOptions, SSHTransport  # noqa: E402


def events(tracker: Tracker) -> int:
    with tracker.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM workflowtracker_events")).scalar_one())


def _after(since: float, moments: list[str]) -> float | None:
    """Seconds from ``since`` (epoch) to the first of the recorded ISO ``moments``."""
    if not moments:
        return None
    return round(min(dt.datetime.fromisoformat(m).timestamp() for m in moments) - since, 1)


def one_size(config: Path, images: list[Path], size: int, out: Path, limit_s: float) -> dict:
    settings = load_settings(config_file=str(config))
    transport = SSHTransport(SSHOptions("localslurm"))
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="biomero-bench-batch-") as tmp:
        url = f"sqlite:///{tmp}/t.sqlite"
        with Tracker(url) as tracker:
            engine = RunEngine(settings, transport, tracker)
            started = time.monotonic()
            batches = [images[i : i + size] for i in range(0, len(images), size)]
            run_ids = [
                engine.request("noop", batch, {}, output_dir=out / f"b{size}") for batch in batches
            ]
            request_s = time.monotonic() - started
            events_before, commands_before = events(tracker), transport.commands_run
            sup = Supervisor(engine, LeaseStore(tracker.engine, f"batch-{size}", ttl_s=600))
            cpu0, started, since = time.process_time(), time.monotonic(), time.time()
            while time.monotonic() - started < limit_s:
                sup.cycle()
                if not tracker.active_runs() and not sup.in_flight:
                    break
                time.sleep(sup.interval_s)
            wall_s = time.monotonic() - started
            cpu_s = time.process_time() - cpu0
            sup.shutdown()
            runs = [tracker.get_run(r) for r in run_ids]
            tasks = [t for r in runs for t in r["tasks"]]
            submitted = [t["started_at"] for t in tasks if t["kind"] == "job"]
            ended = [r["ended_at"] for r in runs if r["state"] == "COMPLETED"]
            row = {
                "batch_size": size,
                "images": len(images),
                "runs": len(runs),
                "runs_completed": sum(1 for r in runs if r["state"] == "COMPLETED"),
                "slurm_jobs": sum(1 for t in tasks if t.get("slurm_job_id")),
                "job_arrays": sum(1 for t in tasks if t["kind"] == "convert" and t["slurm_job_id"]),
                "poll_cycles": sup.counters.polls,
                "supervisor_cycles": sup.counters.cycles,
                "remote_commands": transport.commands_run - commands_before,
                "events": events(tracker) - events_before,
                "request_s": round(request_s, 1),
                "wall_s": round(wall_s, 1),
                # From the supervisor's start: its first job task (submission) and the
                # first run done, against the last run's end (wall_s).
                "first_job_s": _after(since, submitted),
                "first_run_done_s": _after(since, ended),
                "supervisor_cpu_s": round(cpu_s, 1),
                "load_average_before": [round(x, 2) for x in load_before],
                "load_average_after": [round(x, 2) for x in os.getloadavg()],
            }
            unfinished = [r["run_id"] for r in runs if r["state"] not in ("COMPLETED", "FAILED")]
            for run_id in unfinished:
                engine.cancel(run_id, "benchmark time limit")
            row["runs_unfinished_at_limit"] = len(unfinished)
    transport.close()
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--sizes", default="1,32,256")
    parser.add_argument("--limit-s", type=float, default=1800, help="per batch size")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    config, _ = write_configs(WORK / "tracking.sqlite")
    init_cluster(config)
    images = data.make_images(WORK / "data" / f"images_{args.images}", args.images)
    started = dt.datetime.now()
    worker = load_settings(config_file=str(config)).worker
    results: dict[str, Any] = {
        "date": started.isoformat(timespec="seconds"),
        "machine": machine.describe(WORK),
        "workflow": "bench/workflows/noop, native, TIFF inputs of 64 kB",
        "poll_s": [worker.poll_min_s, worker.poll_max_s],
        "sizes": [],
    }
    with tempfile.TemporaryDirectory(prefix="biomero-bench-batch-out-", dir=WORK) as out:
        for size in (int(s) for s in args.sizes.split(",")):
            row = one_size(config, images, size, Path(out), args.limit_s)
            print(json.dumps(row), flush=True)
            results["sizes"].append(row)
    path = REPO / "bench" / "results" / f"{started.date().isoformat()}-batches.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
