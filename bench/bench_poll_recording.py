"""Events per second of supervisor poll cycles that record a status change for every
waiting run, on PostgreSQL.

    .venv/bin/python bench/bench_poll_recording.py [--sizes 100,1000] [--cycles 5]

For each size N: a throwaway database on the local PostgreSQL (127.0.0.1:5432, trust
auth, as bench_tracking), N runs recorded as waiting on a submitted job, and one
in-process ``Supervisor`` (the real one, its tracker opened as ``biomero supervise``
opens it: the read models catch up after each command) driving them. Slurm is a fake
``squeue`` that answers at once, so only our side counts: after one warm-up cycle
(claiming the runs, recording PENDING) every measured cycle sees every job change state
(RUNNING, SUSPENDED, RUNNING, ...) and records N events. Per cycle: wall time, events
appended, the process's CPU time (``process_time``: this process only, not PostgreSQL's)
the time spent in the poll's part of the cycle (``Supervisor._poll``) and, of the
whole cycle, in bringing the read models up to date (``Tracker.project``).

The code measured is the ``biomeroworker`` first on ``sys.path``: run the script with
``PYTHONPATH=<another checkout>`` to measure that one (the before/after in
docs/performance.md). Results: ``bench/results/<date>-poll-recording.json`` (``--out``).
Asserts nothing; not part of ``bench/run``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))  # after PYTHONPATH: another checkout's code can be measured

from sqlalchemy import text  # noqa: E402

import biomeroworker  # noqa: E402
from bench.bench_supervisor import record_waiting  # noqa: E402
from bench.bench_tracking import Server  # noqa: E402
from biomeroworker.config import load_settings  # noqa: E402
from biomeroworker.runs import RunEngine  # noqa: E402
from biomeroworker.supervisor.leases import LeaseStore  # noqa: E402
from biomeroworker.supervisor.loop import Supervisor  # noqa: E402
from biomeroworker.tracking.application import Tracker  # noqa: E402
from biomeroworker.transport.base import CommandResult  # noqa: E402

SERVER = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
LINE = "{0}|{0}|{1}|0:0|00:00:01|2026-11-29T20:27:08|Unknown||vm|cpu=1|"
SQUEUE_LINE = "{0}|{0}|{0}|N/A|{1}|0:01|2026-11-29T20:27:08|2026-11-29T22:27:08|vm|None"


class InstantSacct:
    """Fake transport: squeue (and sacct) list every job asked in ``state``, at once."""

    commands_run = 0

    def __init__(self) -> None:
        self.state = "PENDING"

    def run(self, argv: Sequence[str], **_: Any) -> CommandResult:
        jobs = next(a for a in argv if a.startswith("--jobs="))[len("--jobs=") :].split(",")
        line = SQUEUE_LINE if "squeue" in argv else LINE
        out = "".join(line.format(job, self.state) + "\n" for job in jobs)
        return CommandResult(tuple(argv), 0, out, "", 0.0)


def events(tracker: Tracker) -> int:
    with tracker.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM workflowtracker_events")).scalar_one())


def record_waiting_runs(url: str, size: int) -> None:
    """``size`` runs waiting on jobs 10000.., recorded 100 to a transaction."""
    with Tracker(url, project=False) as tracker:
        for start in range(0, size, 100):
            with tracker.batch():
                record_waiting(
                    tracker, [str(10_000 + n) for n in range(start, min(size, start + 100))]
                )
        tracker.project()


def one_size(settings: Any, size: int, cycles: int) -> dict[str, Any]:
    load_before = os.getloadavg()
    with Server(**SERVER).database() as url:
        record_waiting_runs(url, size)
        slurm = InstantSacct()
        with Tracker(url) as tracker:  # as `biomero supervise` opens it
            engine = RunEngine(settings, slurm, tracker)  # type: ignore[arg-type]
            sup = Supervisor(engine, LeaseStore(tracker.engine, f"bench-{size}", ttl_s=3600))
            polled = [0.0]
            real_poll = sup._poll

            def timed_poll(waiting: Any) -> bool:
                started = time.perf_counter()
                try:
                    return real_poll(waiting)
                finally:
                    polled[0] = time.perf_counter() - started

            sup._poll = timed_poll  # type: ignore[method-assign]
            projected = [0.0]
            real_project = tracker.project

            def timed_project() -> int:
                started = time.perf_counter()
                try:
                    return real_project()
                finally:
                    projected[0] += time.perf_counter() - started

            tracker.project = timed_project  # type: ignore[method-assign]
            sup.cycle()  # warm-up: claims the runs, records PENDING
            rows = []
            for n in range(cycles):
                slurm.state = "RUNNING" if n % 2 == 0 else "SUSPENDED"
                before = events(tracker)
                projected[0] = 0.0
                cpu = time.process_time()
                started = time.perf_counter()
                sup.cycle()
                wall = time.perf_counter() - started
                cpu = time.process_time() - cpu
                appended = events(tracker) - before
                rows.append(
                    {
                        "wall_s": wall,
                        "cpu_s": cpu,
                        "poll_s": polled[0],
                        "project_s": projected[0],
                        "events": appended,
                    }
                )
            sup.shutdown()
    cycle_rate = [r["events"] / r["wall_s"] for r in rows]
    poll_rate = [r["events"] / r["poll_s"] for r in rows]
    return {
        "waiting_runs": size,
        "cycles": rows,
        "events_per_cycle": sorted({r["events"] for r in rows}),
        "cycle_s_median": round(statistics.median(r["wall_s"] for r in rows), 3),
        "cpu_s_median": round(statistics.median(r["cpu_s"] for r in rows), 3),
        "poll_s_median": round(statistics.median(r["poll_s"] for r in rows), 3),
        "project_s_median": round(statistics.median(r["project_s"] for r in rows), 3),
        "events_per_s_cycle_median": round(statistics.median(cycle_rate)),
        "events_per_s_poll_median": round(statistics.median(poll_rate)),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000")
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    code = Path(biomeroworker.__file__).resolve().parents[1]
    started = dt.datetime.now()
    results: dict[str, Any] = {
        "date": started.isoformat(timespec="seconds"),
        "code": str(code),
        "store": "PostgreSQL 127.0.0.1:5432",
        "sizes": [],
    }
    with tempfile.TemporaryDirectory(prefix="biomero-bench-poll-") as tmp:
        config = Path(tmp) / "slurm-config.ini"
        config.write_text(
            "[SSH]\nhost = nowhere\n[SLURM]\nslurm_data_path = d\nslurm_images_path = i\n"
            "slurm_converters_path = c\nslurm_script_path = s\n"
        )
        os.environ.setdefault("XDG_DATA_HOME", str(Path(tmp) / "data"))
        settings = load_settings([config], env={})
        for size in (int(s) for s in args.sizes.split(",")):
            row = one_size(settings, size, args.cycles)
            print(
                f"{size:5d} waiting runs ({code}): {row['events_per_cycle']} events/cycle, "
                f"cycle {row['cycle_s_median']:.3f} s (CPU {row['cpu_s_median']:.3f} s), "
                f"poll part {row['poll_s_median']:.3f} s, read models "
                f"{row['project_s_median']:.3f} s: "
                f"{row['events_per_s_cycle_median']} events/s over the cycle, "
                f"{row['events_per_s_poll_median']} in the poll part; "
                f"load {row['load_average_before'][0]}",
                flush=True,
            )
            results["sizes"].append(row)
    out = args.out or REPO / "bench" / "results" / f"{started.date()}-poll-recording.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
