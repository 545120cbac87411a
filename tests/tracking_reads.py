"""`biomero status` paging and `biomero stats` checks, run on SQLite (unit) and on the
real PostgreSQL (integration): both dialects must give the same answers.

Rows are written straight into the read models (``biomero_run``/``biomero_task``) where a
case needs exact times or ties that events cannot give; paging across new runs goes
through the tracker's own commands.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from biomeroworker.tracking import Tracker, totals
from biomeroworker.tracking import tables as t
from biomeroworker.tracking.analytics import percentile, period_key

T0 = datetime(2025, 3, 31, 12, 0, 0, 123456)  # a Monday (ISO week 14), with microseconds
MIDNIGHT = datetime(2025, 6, 29)  # a Sunday
HOUR = timedelta(hours=1)


def run_row(**values: Any) -> dict[str, Any]:
    row = {
        "run_id": str(uuid.uuid4()),
        "workflow": "cellpose",
        "version": "v1",
        "user_name": "alice",
        "state": "COMPLETED",
        "inputs": "{}",
        "parameters": "{}",
        "created_at": T0,
        "updated_at": T0,
        "slurm_job_ids": "",
        "origin": "worker",
        "error_type": None,
        "step": None,
    }
    return row | values


def task_row(run_id: str, **values: Any) -> dict[str, Any]:
    row = {
        "task_id": str(uuid.uuid4()),
        "run_id": run_id,
        "kind": "job",
        "name": "cellpose",
        "state": "COMPLETED",
        "result_locations": "[]",
        "started_at": T0,
        "ended_at": None,
        "slurm_job_id": None,
        "elapsed_s": None,
        "max_rss_bytes": None,
        "linked": True,
        "dash_status": "COMPLETED",
    }
    return row | values


def insert(tracker: Tracker, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """Write read-model rows as the projection would have, and count them in the running
    totals (refilled from the rows, as for a database whose rows predate them)."""
    with tracker.engine.begin() as conn:
        conn.execute(sa.insert(table), rows)
        totals.refill(conn)


def view_row_counts(url: str) -> dict[str, int]:
    """Rows in each read-model table."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        found = {
            table.name: conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            for table in t.VIEW_TABLES
        }
    engine.dispose()
    return found


def check_stats(url: str) -> None:
    """Counts per period, mean and nearest-rank p95, failures, Slurm use: hand-checked."""
    with Tracker(url) as tracker:
        day = timedelta(days=1)
        runs = [
            run_row(),  # alice cellpose, W14, 2025-03
            run_row(
                state="FAILED", error_type="SlurmError", step="job", created_at=T0 - day
            ),  # Sunday 03-30: W13
            run_row(workflow="stardist", created_at=T0 + day),  # 04-01: W14, 2025-04
            run_row(user_name="bob", state="RUNNING"),
            run_row(
                user_name="bob",
                state="FAILED",
                error_type="TransportError",
                step="stage_up",
                created_at=datetime(2025, 2, 1),
            ),
            run_row(user_name="bob", state="FAILED", error_type="SlurmError", step="job"),
        ]
        insert(tracker, t.runs, runs)
        alice, bob = runs[0]["run_id"], runs[3]["run_id"]
        tasks = [
            task_row(
                alice,
                ended_at=T0 + timedelta(seconds=n),
                slurm_job_id=str(n),
                elapsed_s=float(n),
                max_rss_bytes=100 * n,
            )
            for n in range(20, 0, -1)
        ]
        tasks.append(
            task_row(
                alice,
                state="FAILED",
                ended_at=T0 + timedelta(seconds=999),
                slurm_job_id="999",
                elapsed_s=999.0,
                max_rss_bytes=5000,
            )
        )
        tasks.append(task_row(alice, kind="stage_up", ended_at=T0 + timedelta(seconds=0.25)))
        tasks.append(task_row(bob, state="STARTED", slurm_job_id="7"))
        insert(tracker, t.tasks, tasks)

        every = tracker.stats(period="month")
        assert every["runs"] == [
            {"period": "2025-02", "workflow": "cellpose", "user": "bob", "runs": 1}
            | {"completed": 0, "failed": 1},
            {"period": "2025-03", "workflow": "cellpose", "user": "alice", "runs": 2}
            | {"completed": 1, "failed": 1},
            {"period": "2025-03", "workflow": "cellpose", "user": "bob", "runs": 2}
            | {"completed": 0, "failed": 1},
            {"period": "2025-04", "workflow": "stardist", "user": "alice", "runs": 1}
            | {"completed": 1, "failed": 0},
        ]
        assert every["step_durations"] == [
            {"step": "job", "count": 20, "mean_s": 10.5, "p95_s": 19.0},
            {"step": "stage_up", "count": 1, "mean_s": 0.25, "p95_s": 0.25},
        ]
        assert every["failures"] == [
            {"error_type": "SlurmError", "step": "job", "runs": 2},
            {"error_type": "TransportError", "step": "stage_up", "runs": 1},
        ]
        assert every["slurm_use"] == [
            {
                "user": "alice",
                "jobs": 21,
                "elapsed_s": 1209.0,
                "mean_elapsed_s": 1209.0 / 21,
                "max_rss_bytes": 5000,
            },
            {"user": "bob", "jobs": 1, "elapsed_s": 0.0, "mean_elapsed_s": None}
            | {"max_rss_bytes": None},
        ]

        weeks = tracker.stats(user="alice", period="week")
        assert [(r["period"], r["workflow"], r["runs"]) for r in weeks["runs"]] == [
            ("2025-W13", "cellpose", 1),
            ("2025-W14", "cellpose", 1),
            ("2025-W14", "stardist", 1),
        ]
        assert [r["user"] for r in weeks["slurm_use"]] == ["alice"]

        recent = tracker.stats(period="year", since=T0.replace(hour=0))
        assert [(r["period"], r["workflow"], r["user"], r["runs"]) for r in recent["runs"]] == [
            ("2025", "cellpose", "alice", 1),
            ("2025", "cellpose", "bob", 2),
            ("2025", "stardist", "alice", 1),
        ]
        assert recent["failures"] == [{"error_type": "SlurmError", "step": "job", "runs": 1}]


def walk(tracker: Tracker, size: int, user: str | None = None, between: Any = None) -> list[str]:
    """Every page of ``size`` runs by keyset, calling ``between`` after each page."""
    seen: list[str] = []
    after = None
    while True:
        page = tracker.list_runs(user=user, limit=size, after=after)
        seen += [run["run_id"] for run in page]
        if len(page) < size:
            return seen
        after = page[-1]["run_id"]
        if between is not None:
            between()


def check_paging(url: str) -> None:
    """Pages give every run exactly once, newest first, while new runs are recorded."""
    with Tracker(url) as tracker:
        # ties on the creation time are ordered by run id
        tied = [run_row(created_at=T0, user_name=f"u{n % 2}") for n in range(7)]
        insert(tracker, t.runs, tied)
        for n in range(11):
            tracker.record_run_requested(workflow="w", version="1", user_name=f"u{n % 2}")
        expected = [run["run_id"] for run in tracker.list_runs()]
        assert len(expected) == 18
        assert expected[-7:] == sorted((r["run_id"] for r in tied), reverse=True)
        created = [run["created_at"] for run in tracker.list_runs()]
        assert created == sorted(created, reverse=True)

        added: list[str] = []

        def record_one() -> None:
            added.append(tracker.record_run_requested(workflow="w", version="1", user_name="u0"))

        for size in (1, 4, 5, 18, 50):
            # runs recorded during a walk are newer than its pages: they neither show up
            # in it nor shift it; the next walk starts with them
            earlier = added[::-1]
            assert walk(tracker, size, between=record_one) == earlier + expected
        assert len(added) > 18

        mine = [run["run_id"] for run in tracker.list_runs(user="u1")]
        assert walk(tracker, 3, user="u1") == mine
        assert len(mine) == 3 + 5
        assert list(r["run_id"] for r in tracker.iter_runs(user="u1", page=2)) == mine


# --- running totals (biomeroworker/tracking/totals.py) ----------------------------------


def totals_rows(conn: sa.Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {
        table.name: sorted(conn.execute(sa.select(table)).all(), key=repr)
        for table in t.TOTALS_TABLES
    }


def refilled(tracker: Tracker) -> dict[str, list[tuple[Any, ...]]]:
    """The totals counted afresh from the rows (in a transaction rolled back)."""
    with tracker.engine.connect() as conn:
        totals.refill(conn)
        found = totals_rows(conn)
        conn.rollback()
    return found


def kept(tracker: Tracker) -> dict[str, list[tuple[Any, ...]]]:
    """The totals as the projection keeps them."""
    tracker.project()
    with tracker.engine.connect() as conn:
        return totals_rows(conn)


def check_totals_follow_every_change(url: str) -> None:
    """After each command the kept totals equal a fresh count of the rows: a run moving
    between states, accounting recorded again (a smaller MaxRSS replacing a larger), a
    run failing, a task completing; and a rebuild keeps them."""
    with Tracker(url) as tracker:

        def same() -> None:
            assert kept(tracker) == refilled(tracker)

        run = tracker.record_run_requested(workflow="cellpose", version="1", user_name="ann")
        same()
        job = tracker.start_task(run, "job", name="cellpose")
        tracker.record_job_submitted(job, "41", "c")
        same()
        tracker.record_job_status(job, "RUNNING")
        tracker.record_job_status(job, "COMPLETED", 0, 61.0, 2**30)
        same()
        tracker.record_job_status(job, "COMPLETED", 0, 65.0, 2**20)  # accounting again
        same()
        assert tracker.stats()["slurm_use"] == [
            {"user": "ann", "jobs": 1, "elapsed_s": 65.0, "mean_elapsed_s": 65.0}
            | {"max_rss_bytes": 2**20}
        ]
        tracker.complete_task(job)
        tracker.complete_run(run)
        same()
        assert [(r["runs"], r["completed"], r["failed"]) for r in tracker.stats()["runs"]] == [
            (1, 1, 0)
        ]

        other = tracker.record_run_requested(workflow="cellpose", version="1", user_name="ann")
        stage = tracker.start_task(other, "stage_up")
        tracker.fail_task(stage, "TransportError", "gone")
        tracker.fail_run(other, "TransportError", "gone")
        same()
        found = tracker.stats()
        assert [(r["runs"], r["completed"], r["failed"]) for r in found["runs"]] == [(2, 1, 1)]
        assert found["failures"] == [
            {"error_type": "TransportError", "step": "stage_up", "runs": 1}
        ]
        assert [(r["step"], r["count"]) for r in found["step_durations"]] == [("job", 1)]

        before = kept(tracker)
        tracker.rebuild()
        assert kept(tracker) == before


def check_totals_are_counted_once_for_a_store_that_predates_them(url: str) -> None:
    """A store whose read models predate the totals gets them from its rows when opened,
    without reading its events again."""
    from unittest import mock

    from biomeroworker.tracking.projection import SCHEMA, Projector

    with Tracker(url) as tracker:
        for user in ("ann", "bob"):
            run = tracker.record_run_requested(workflow="w", version="1", user_name=user)
            job = tracker.start_task(run, "job")
            tracker.record_job_submitted(job, "7", "c")
            tracker.record_job_status(job, "COMPLETED", 0, 5.0, 100)
            tracker.complete_task(job)
            tracker.complete_run(run)
        expected, counted = tracker.stats(), kept(tracker)
        with tracker.engine.begin() as conn:  # as the worker before the totals left it
            for table in t.TOTALS_TABLES:
                table.drop(conn)
            conn.execute(
                sa.update(t.positions).where(t.positions.c.name == SCHEMA).values(position=2)
            )
    replayed = AssertionError("events replayed")
    with mock.patch.object(Projector, "_apply_next", side_effect=replayed), Tracker(url) as tracker:
        assert kept(tracker) == counted
        assert tracker.stats() == expected


def check_bucket_sql(url: str) -> None:
    """The totals' duration rounding gives the same buckets in SQL as in Python."""
    values = [0, 1, -1, 999, 1000, 1004, 1005, 9994, 9995, 99_949, 99_950, 999_499, 999_500]
    values += [123_456_789, -123_456_789, 86_400_000_000, 10**17 + 5 * 10**14, 9 * 10**18]
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        found = [
            conn.execute(sa.select(totals.bucket_us_sql(sa.literal(v, sa.BigInteger)))).scalar()
            for v in values
        ]
    engine.dispose()
    assert found == [totals.bucket_us(v) for v in values]


def random_rows(seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Runs over four days (some a microsecond either side of midnight) and their
    tasks: durations from microseconds to hours, one negative, accounting or not, and
    one task whose run is not recorded."""
    rng = random.Random(seed)
    runs: list[dict[str, Any]] = []
    tasks: list[dict[str, Any]] = []
    for n in range(120):
        created = MIDNIGHT + timedelta(microseconds=rng.randrange(4 * 86_400_000_000))
        if n % 10 == 0:
            created = MIDNIGHT + timedelta(days=rng.randrange(4), microseconds=rng.choice([-1, 0]))
        state = rng.choice(["COMPLETED", "COMPLETED", "FAILED", "RUNNING", "CANCELLED"])
        failed = state == "FAILED"
        runs.append(
            run_row(
                user_name=rng.choice(["ann", "bob", "cy"]),
                workflow=rng.choice(["cellpose", "stardist"]),
                state=state,
                created_at=created,
                error_type=rng.choice(["SlurmError", None, ""]) if failed else None,
                step=rng.choice(["job", "stage_up", None]) if failed else None,
            )
        )
        for kind in rng.sample(["stage_up", "job", "stage_down"], rng.randrange(4)):
            micros = rng.choice([rng.randrange(2000), rng.randrange(10**10), 999_500])
            done = rng.random() < 0.8
            is_job = kind == "job"
            tasks.append(
                task_row(
                    runs[-1]["run_id"],
                    kind=kind,
                    state="COMPLETED" if done else rng.choice(["STARTED", "FAILED"]),
                    started_at=created,
                    ended_at=created + timedelta(microseconds=micros) if done else None,
                    slurm_job_id=str(n) if is_job else None,
                    elapsed_s=float(rng.randrange(9999)) if is_job and done else None,
                    max_rss_bytes=rng.randrange(2**34) if is_job and rng.random() < 0.7 else None,
                )
            )
    tasks.append(task_row(str(uuid.uuid4()), ended_at=MIDNIGHT, started_at=MIDNIGHT + HOUR))
    tasks.append(task_row(str(uuid.uuid4()), slurm_job_id="9", elapsed_s=3.0))
    return runs, tasks


def reference(
    runs: list[dict[str, Any]],
    tasks: list[dict[str, Any]],
    *,
    user: str | None = None,
    since: datetime | None = None,
    period: str = "month",
) -> dict[str, Any]:
    """`biomero stats` counted in Python from the rows themselves."""
    inside = {
        r["run_id"]: r
        for r in runs
        if (user is None or r["user_name"] == user) and (since is None or r["created_at"] >= since)
    }
    counted: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for r in inside.values():
        counts = counted[(period_key(r["created_at"], period), r["workflow"], r["user_name"])]
        counts[0] += 1
        counts[1] += r["state"] == "COMPLETED"
        counts[2] += r["state"] == "FAILED"
    # unfiltered, step durations count tasks whose run is not recorded (no join)
    scoped = tasks if user is None and since is None else []
    scoped = scoped or [task for task in tasks if task["run_id"] in inside]
    durations: dict[str, list[int]] = defaultdict(list)
    for task in scoped:
        if task["state"] == "COMPLETED" and task["ended_at"] is not None:
            durations[task["kind"]].append(totals.duration_us(task["started_at"], task["ended_at"]))
    failures = Counter(
        (r["error_type"] or "unknown", r["step"] or "-")
        for r in inside.values()
        if r["state"] == "FAILED"
    )
    jobs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for task in tasks:
        if task["slurm_job_id"] is not None and task["run_id"] in inside:
            jobs[inside[task["run_id"]]["user_name"]].append(task)
    return {
        "period": period,
        "runs": [
            {"period": p, "workflow": w, "user": u, "runs": n, "completed": c, "failed": f}
            for (p, w, u), (n, c, f) in sorted(counted.items())
        ],
        "step_durations": [
            {
                "step": kind,
                "count": len(values),
                "mean_s": round(sum(values) / len(values) / 1e6, 3),
                "p95_s": round(totals.bucket_us(percentile(values, 0.95)) / 1e6, 3),
            }
            for kind, values in sorted(durations.items())
        ],
        "failures": [
            {"error_type": c, "step": s, "runs": n}
            for (c, s), n in sorted(failures.items(), key=lambda item: (-item[1], item[0]))
        ],
        "slurm_use": [slurm_row(name, found) for name, found in sorted(jobs.items())],
    }


def slurm_row(user: str, jobs: list[dict[str, Any]]) -> dict[str, Any]:
    elapsed = [job["elapsed_s"] for job in jobs if job["elapsed_s"] is not None]
    rss = [job["max_rss_bytes"] for job in jobs if job["max_rss_bytes"] is not None]
    return {
        "user": user,
        "jobs": len(jobs),
        "elapsed_s": float(sum(elapsed)),
        "mean_elapsed_s": sum(elapsed) / len(elapsed) if elapsed else None,
        "max_rss_bytes": max(rss) if rss else None,
    }


SCOPES = [
    {},
    {"user": "bob"},
    {"since": MIDNIGHT + timedelta(days=1)},  # whole days only
    {"since": MIDNIGHT + timedelta(days=1, hours=13, microseconds=7)},  # a partial first day
    {"since": MIDNIGHT + timedelta(days=2, microseconds=1), "user": "ann", "period": "day"},
    {"since": MIDNIGHT - timedelta(days=9), "period": "week"},
    {"since": MIDNIGHT + timedelta(days=9)},  # after every run
    {"since": MIDNIGHT + timedelta(days=2), "period": "year"},  # from the first whole month
    {"since": MIDNIGHT + timedelta(days=1, hours=2), "user": "cy", "period": "day"},
]


def check_stats_equal_a_count_of_the_rows(url: str) -> None:
    """For each user/since/period scope, the stats equal a count over the rows."""
    runs, tasks = random_rows(16)
    with Tracker(url) as tracker:
        insert(tracker, t.runs, runs)
        insert(tracker, t.tasks, tasks)
        for scope in SCOPES:
            assert tracker.stats(**scope) == reference(runs, tasks, **scope), scope
