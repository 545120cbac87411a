"""Tracking on PostgreSQL: events appended and projected per second, and what `biomero
status` and `biomero stats` cost against 1,000 / 10,000 / 100,000 tracked runs.

    .venv/bin/python -m bench.bench_tracking            # full sizes (a few minutes)
    .venv/bin/python -m bench.bench_tracking --quick    # 300 and 3,000 runs (about 15 s)

Throughput goes through the tracker's own write path: runs are requested and moved
through their steps one command per transaction, and in cycles of ``--cycle`` runs per
``Tracker.batch()`` (one command per run per cycle, as a supervisor cycle records the
news of many jobs). The read curve fills ``biomero_run``/``biomero_task`` directly with
generated rows (three tasks per run; states, users, workflows and two years of creation
times drawn from a fixed seed), and the running totals from them as for a database
that predates them: appending 700,000 events to get 100,000 runs would take longer than
the whole benchmark may. Every figure runs the command's own code in this
process (`status.run`, `stats.run`: opening the store, catching up, querying, printing);
the interpreter's start and imports are measured apart (`process_s`).

Creates throwaway databases on --host/--port and drops them. Writes
bench/results/<date>-tracking[-quick].json and, when matplotlib is installed,
docs/tracking-curves.png. Not run by the tests.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg2
import sqlalchemy as sa

from biomeroworker.cli import stats, status
from biomeroworker.tracking import Tracker, totals
from biomeroworker.tracking import tables as t

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
USERS = [f"user{n}" for n in range(20)]
WORKFLOWS = ["cellpose", "stardist", "omero-ai", "nuclei", "spots", "tracking"]
GOAL_READ_S = 0.5
GOAL_EVENTS_PER_S = 2000
EVENTS_PER_RUN = 7  # requested, task created + added, submitted, status, task done, run done


class Server:
    def __init__(self, host: str, port: int, user: str) -> None:
        self.params = {"host": host, "port": port, "user": user}
        self.base = f"postgresql+psycopg2://{user}@{host}:{port}"

    def admin(self, statement: str) -> None:
        conn = psycopg2.connect(dbname="postgres", **self.params)
        conn.autocommit = True
        try:
            with conn.cursor() as cursor:
                cursor.execute(statement)
        finally:
            conn.close()

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        name = f"biomero_bench_{secrets.token_hex(4)}"
        self.admin(f"CREATE DATABASE {name}")
        try:
            yield f"{self.base}/{name}"
        finally:
            self.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def say(text: str) -> None:
    print(text, flush=True)


def timed(action: Callable[[], object]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = action()
    return time.perf_counter() - start, result


def count_events(url: str) -> int:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        found = conn.execute(sa.text("SELECT count(*) FROM workflowtracker_events"))
        events = int(found.scalar_one())
    engine.dispose()
    return events


# --- throughput: the tracker's own write path ------------------------------------------


def one_run(tracker: Tracker, n: int) -> None:
    """Seven events, one command per transaction."""
    run_id = tracker.record_run_requested(
        workflow="cellpose", version="v1.2.7", user_name=USERS[n % len(USERS)]
    )
    job = tracker.start_task(run_id, "job", name="cellpose")
    tracker.record_job_submitted(job, str(10_000 + n), "bench")
    tracker.record_job_status(job, "COMPLETED", 0, 42.0, 2**28)
    tracker.complete_task(job)
    tracker.complete_run(run_id, f"Dataset:{n}")


def cycles(tracker: Tracker, first: int, count: int) -> None:
    """``count`` runs moved through their steps together: each step of every run is one
    command, and each step is one batch (a supervisor cycle over ``count`` runs)."""
    numbers = range(first, first + count)
    with tracker.batch():
        runs = [
            tracker.record_run_requested(
                workflow="cellpose", version="v1.2.7", user_name=USERS[n % len(USERS)]
            )
            for n in numbers
        ]
    with tracker.batch():
        jobs = [tracker.start_task(run_id, "job", name="cellpose") for run_id in runs]
    with tracker.batch():
        for n, job in zip(numbers, jobs, strict=True):
            tracker.record_job_submitted(job, str(10_000 + n), "bench")
    with tracker.batch():
        for job in jobs:
            tracker.record_job_status(job, "COMPLETED", 0, 42.0, 2**28)
    with tracker.batch():
        for job in jobs:
            tracker.complete_task(job)
    with tracker.batch():
        for n, run_id in zip(numbers, runs, strict=True):
            tracker.complete_run(run_id, f"Dataset:{n}")


def rate(events: int, seconds: float, **extra: int) -> dict[str, float]:
    return {**extra, "events": events, "seconds": seconds, "events_per_s": events / seconds}


def throughput(server: Server, single_runs: int, batched_runs: int, cycle: int) -> dict:
    result: dict[str, Any] = {"cycle_runs": cycle}
    with server.database() as url, Tracker(url, project=False) as tracker:
        seconds, _ = timed(lambda: [one_run(tracker, n) for n in range(single_runs)])
        result["append_single"] = rate(count_events(url), seconds, runs=single_runs)
        seconds, applied = timed(tracker.project)
        result["project_small"] = rate(applied, seconds)
    with server.database() as url, Tracker(url, project=False) as tracker:

        def batched() -> None:
            for first in range(0, batched_runs, cycle):
                cycles(tracker, first, min(cycle, batched_runs - first))

        seconds, _ = timed(batched)
        result["append_batched"] = rate(count_events(url), seconds, runs=batched_runs)
        seconds, applied = timed(tracker.project)
        result["project"] = rate(applied, seconds)
        seconds, replayed = timed(tracker.rebuild)
        result["rebuild"] = rate(replayed, seconds)
    return result


# --- the read curve: generated rows in the read models ----------------------------------


def generated_rows(rng: random.Random, count: int) -> tuple[list[dict], list[dict]]:
    """``count`` finished or running runs with three tasks each, as the projection
    would have written them (columns the commands do not read are left empty)."""
    now = dt.datetime(2026, 11, 1)
    runs, tasks = [], []
    for _ in range(count):
        run_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        created = now - dt.timedelta(seconds=rng.uniform(0, 730 * 86400))
        roll = rng.random()
        state = "COMPLETED" if roll < 0.85 else "FAILED" if roll < 0.95 else "RUNNING"
        job_id = str(rng.randrange(1, 10_000_000))
        ended = created + dt.timedelta(seconds=rng.uniform(30, 3600))
        failed_step = rng.choice(["stage_up", "job", "stage_down"]) if state == "FAILED" else None
        runs.append(
            {
                "run_id": run_id,
                "workflow": rng.choice(WORKFLOWS),
                "version": "v1",
                "user_name": rng.choice(USERS),
                "omero_user_id": None,
                "omero_group_id": None,
                "state": state,
                "step": failed_step or ("job" if state == "RUNNING" else "import"),
                "inputs": "{}",
                "parameters": "{}",
                "created_at": created,
                "updated_at": ended,
                "ended_at": None if state == "RUNNING" else ended,
                "error_type": "SlurmError" if state == "FAILED" else None,
                "error": "job failed" if state == "FAILED" else None,
                "result_location": None,
                "slurm_job_ids": job_id,
                "cluster": "bench",
                "origin": "worker",
            }
        )
        start = created
        for kind in ("stage_up", "job", "stage_down"):
            seconds = rng.uniform(1, 600)
            done = state != "RUNNING" or kind == "stage_up"
            is_job = kind == "job"
            tasks.append(
                {
                    "task_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                    "run_id": run_id,
                    "kind": kind,
                    "name": kind,
                    "state": "COMPLETED" if done else "STARTED",
                    "slurm_job_id": job_id if is_job else None,
                    "job_number": int(job_id) if is_job else None,
                    "elapsed_s": seconds if is_job and done else None,
                    "max_rss_bytes": rng.randrange(2**20, 2**34) if is_job and done else None,
                    "result_locations": "[]",
                    "started_at": start,
                    "ended_at": start + dt.timedelta(seconds=seconds) if done else None,
                    "linked": True,
                    "dash_status": "COMPLETED",
                }
            )
            start += dt.timedelta(seconds=seconds)
    return runs, tasks


def fill(url: str, rng: random.Random, count: int) -> float:
    """Add ``count`` generated runs to the read models, and count every run in the
    running totals as a database that predates them is (``totals.refill``); return the
    seconds it took."""
    engine = sa.create_engine(url)
    start = time.perf_counter()
    chunk = 5000
    for first in range(0, count, chunk):
        runs, tasks = generated_rows(rng, min(chunk, count - first))
        with engine.begin() as conn:
            conn.execute(sa.insert(t.runs), runs)
            conn.execute(sa.insert(t.tasks), tasks)
    with engine.begin() as conn:
        totals.refill(conn)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("ANALYZE"))
    engine.dispose()
    return time.perf_counter() - start


def run_command(module: Any, argv: list[str], user: str) -> float:
    """Seconds one `biomero <argv>` takes in this process, run as ``user``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    module.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    with (
        _as_user(user),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        seconds, _ = timed(lambda: module.run(args))
    return seconds


@contextlib.contextmanager
def _as_user(name: str) -> Iterator[None]:
    """The commands take the caller from the OS account; the bench plays one."""
    from biomeroworker.tracking import access

    real = access.current_user
    access.current_user = lambda: name  # type: ignore[assignment]
    try:
        yield
    finally:
        access.current_user = real  # type: ignore[assignment]


def process_seconds(url: str, argv: list[str]) -> float:
    """Wall time of `python -m biomeroworker <argv>` as a new process (root: an admin)."""
    env = {**os.environ, "SQLALCHEMY_URL": url, "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "biomeroworker", *argv],
        env=env,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def reads(url: str, reps: int) -> dict[str, float]:
    """Median seconds of each command against the store as it is."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(t.runs)).scalar_one()
        middle = conn.execute(
            sa.select(t.runs.c.run_id)
            .order_by(t.runs.c.created_at.desc(), t.runs.c.run_id.desc())
            .offset(total // 2)
            .limit(1)
        ).scalar_one()
    engine.dispose()
    cases: dict[str, tuple[Any, list[str], str]] = {
        "status": (status, ["status"], USERS[0]),
        "status_all": (status, ["status", "--all"], "root"),
        "status_all_deep_page": (status, ["status", "--all", "--after", middle], "root"),
        "status_run": (status, ["status", middle], "root"),
        "stats": (stats, ["stats"], USERS[0]),
        "stats_all": (stats, ["stats", "--all"], "root"),
        "status_all_every_run_json": (
            status,
            ["status", "--all", "--limit", "0", "--json"],
            "root",
        ),
    }
    os.environ["SQLALCHEMY_URL"] = url
    found = {}
    for name, (module, argv, user) in cases.items():
        times = [run_command(module, argv, user) for _ in range(reps)]
        found[name] = statistics.median(times)
    found["process_s"] = process_seconds(url, ["status", "--all"])
    return found


def read_curve(server: Server, sizes: list[int], reps: int) -> list[dict[str, Any]]:
    rng = random.Random(16)  # noqa: S311 (generated bench rows, not secrets)
    points = []
    with server.database() as url:
        Tracker(url).close()  # the tables, as the worker creates them
        have = 0
        for size in sizes:
            fill_s = fill(url, rng, size - have)
            have = size
            measured = reads(url, reps)
            points.append({"runs": size, "fill_s": fill_s, **measured})
            say(
                f"  {size:>7,} runs: status {measured['status']:.3f} s, --all "
                f"{measured['status_all']:.3f} s, deep page "
                f"{measured['status_all_deep_page']:.3f} s, one run "
                f"{measured['status_run']:.3f} s, stats {measured['stats']:.3f} s, stats "
                f"--all {measured['stats_all']:.3f} s, every run (JSON) "
                f"{measured['status_all_every_run_json']:.2f} s; a new process for "
                f"status --all {measured['process_s']:.2f} s (filled in {fill_s:.1f} s)"
            )
    return points


# --- report -----------------------------------------------------------------------------


READ_LABELS = {
    "status": "status (a user's newest 50)",
    "status_all": "status --all (first page)",
    "status_all_deep_page": "status --all --after (middle page)",
    "status_run": "status RUN",
    "stats": "stats (one user)",
    "stats_all": "stats --all",
}


def plot(result: dict[str, Any], path: Path) -> bool:
    """Draw the read curve and the throughput; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    curve = result["reads"]
    sizes = [p["runs"] for p in curve]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    for key, label in READ_LABELS.items():
        left.plot(sizes, [p[key] for p in curve], marker="o", label=label)
    left.plot(
        sizes,
        [p["status_all_every_run_json"] for p in curve],
        marker="s",
        linestyle="--",
        label="status --all --limit 0 --json (every run)",
    )
    left.axhline(GOAL_READ_S, color="red", linestyle=":", label="goal 0.5 s")
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("tracked runs (PostgreSQL)")
    left.set_ylabel("seconds (median, in process)")
    left.set_title("biomero status / stats against tracked runs")
    left.legend(fontsize=7)
    tp = result["throughput"]
    bars = {
        "append,\n1 command\na transaction": tp["append_single"]["events_per_s"],
        f"append,\nbatches of\n{tp['cycle_runs']} commands": tp["append_batched"]["events_per_s"],
        "projection\ncatch-up": tp["project"]["events_per_s"],
        "rebuild": tp["rebuild"]["events_per_s"],
    }
    right.bar(list(bars), list(bars.values()), color=["grey", "tab:blue", "tab:green", "teal"])
    right.axhline(GOAL_EVENTS_PER_S, color="red", linestyle=":", label="goal 2,000 events/s")
    for n, value in enumerate(bars.values()):
        right.text(n, value, f"{value:,.0f}", ha="center", va="bottom", fontsize=8)
    right.set_ylabel("events per second")
    right.set_title("event append and projection (PostgreSQL)")
    right.legend(fontsize=7)
    load = result["load_average"]
    fig.suptitle(
        f"{result['date']}, {os.cpu_count()} cores, load average {load['before'][0]:.1f} "
        f"before, {load['after'][0]:.1f} after",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def measure(quick: bool, server: Server | None = None, reps: int | None = None) -> dict[str, Any]:
    """Both halves; the sizes of a full or a quick run."""
    server = server or Server("127.0.0.1", 5432, "postgres")
    sizes = [300, 3_000] if quick else [1_000, 10_000, 100_000]
    reps = reps or (1 if quick else 5)
    single, batched, cycle = (30, 200, 100) if quick else (100, 3_000, 100)
    result: dict[str, Any] = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "mode": "quick" if quick else "full",
        "load_average": {"before": os.getloadavg()},
    }
    say(
        f"\n[tracking] append and projection on PostgreSQL ({single} runs one command per "
        f"transaction, {batched} runs in cycles of {cycle})"
    )
    tp = throughput(server, single, batched, cycle)
    result["throughput"] = tp
    say(
        f"  append {tp['append_single']['events_per_s']:,.0f} events/s one command per "
        f"transaction, {tp['append_batched']['events_per_s']:,.0f} events/s in cycles of "
        f"{cycle}; projection {tp['project']['events_per_s']:,.0f} events/s "
        f"({tp['project']['events']} events), rebuild {tp['rebuild']['events_per_s']:,.0f}"
        " events/s"
    )
    say(f"\n[tracking] status and stats against {', '.join(f'{s:,}' for s in sizes)} runs")
    result["reads"] = read_curve(server, sizes, reps)
    result["load_average"]["after"] = os.getloadavg()
    return result


def write(result: dict[str, Any]) -> Path:
    suffix = "-quick" if result["mode"] == "quick" else ""
    out = BENCH / "results" / f"{result['date'][:10]}-tracking{suffix}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 and 3,000 runs")
    parser.add_argument("--reps", type=int, help="repetitions per read figure")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5432)
    parser.add_argument("--user", default="postgres")
    parser.add_argument(
        "--plot", type=Path, default=REPO / "docs" / "tracking-curves.png", help="PNG to draw"
    )
    opts = parser.parse_args()
    result = measure(opts.quick, Server(opts.host, opts.port, opts.user), opts.reps)
    out = write(result)
    say(f"\nresults: {out.relative_to(REPO)}")
    if not opts.quick:
        if plot(result, opts.plot):
            say(f"curve: {opts.plot}")
        else:
            say("matplotlib is not installed: no curve drawn (bench/run installs it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
