"""Tracking throughput on PostgreSQL: events appended and projected per second, and the
time `biomero status` takes with many runs in the store.

    .venv/bin/python bench/bench_tracking.py            # 10,000 runs (a few minutes)
    .venv/bin/python bench/bench_tracking.py --quick    # 300 runs

Creates a throwaway database on the server given by --server and drops it afterwards.
Not run by the tests.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import secrets
import time
from collections.abc import Callable

import psycopg2
import sqlalchemy as sa

from biomeroworker.cli import status
from biomeroworker.tracking import Tracker

USERS = [f"user{n}" for n in range(10)]


def admin_sql(server: dict[str, object], statement: str) -> None:
    conn = psycopg2.connect(dbname="postgres", **server)
    conn.autocommit = True
    try:
        with conn.cursor() as cursor:
            cursor.execute(statement)
    finally:
        conn.close()


def one_run(tracker: Tracker, n: int) -> None:
    """Seven events: requested, task added + started, submitted, status, done, run done."""
    run_id = tracker.record_run_requested(
        workflow="cellpose", version="v1.2.7", user_name=USERS[n % len(USERS)]
    )
    job = tracker.start_task(run_id, "job", name="cellpose")
    tracker.record_job_submitted(job, str(10_000 + n), "bench")
    tracker.record_job_status(job, "COMPLETED", 0, 42.0, 2**28)
    tracker.complete_task(job)
    tracker.complete_run(run_id, f"Dataset:{n}")


def timed(action: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = action()
    return time.perf_counter() - start, result


def status_seconds(url: str, argv: list[str]) -> float:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    status.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["status", *argv])
    os.environ["SQLALCHEMY_URL"] = url
    with contextlib.redirect_stdout(io.StringIO()):
        seconds, _ = timed(lambda: status.run(args))
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="300 runs")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5432)
    parser.add_argument("--user", default="postgres")
    opts = parser.parse_args()
    runs = 300 if opts.quick else opts.runs
    server = {"host": opts.host, "port": opts.port, "user": opts.user}
    name = f"biomero_bench_{secrets.token_hex(4)}"
    url = f"postgresql+psycopg2://{opts.user}@{opts.host}:{opts.port}/{name}"
    admin_sql(server, f"CREATE DATABASE {name}")
    try:
        with Tracker(url, project=False) as tracker:
            append_s, _ = timed(lambda: [one_run(tracker, n) for n in range(runs)])
            events = (
                sa.create_engine(url)
                .connect()
                .execute(sa.text("SELECT count(*) FROM workflowtracker_events"))
                .scalar_one()
            )
            project_s, projected = timed(tracker.project)
            rebuild_s, _ = timed(tracker.rebuild)
        print(f"runs: {runs}, events: {events}")
        print(
            f"append:  {events / append_s:8.0f} events/s ({append_s:.1f} s, one save per command)"
        )
        print(f"project: {int(projected) / project_s:8.0f} events/s ({project_s:.1f} s catch-up)")
        print(f"rebuild: {events / rebuild_s:8.0f} events/s ({rebuild_s:.1f} s)")
        os.environ["LOGNAME"] = USERS[0]
        print(f"biomero status (one user's 50 newest):   {status_seconds(url, []):.3f} s")
        os.environ["LOGNAME"] = "root"
        every = status_seconds(url, ["--all", "--limit", "0"])
        print(f"biomero status --all --limit 0 (admin): {every:.3f} s")
        print(f"biomero status RUN (one run):           {_one_run_status(url):.3f} s")
    finally:
        admin_sql(server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _one_run_status(url: str) -> float:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        run_id = conn.execute(sa.text("SELECT run_id FROM biomero_run LIMIT 1")).scalar_one()
    engine.dispose()
    return status_seconds(url, [run_id])


if __name__ == "__main__":
    main()
