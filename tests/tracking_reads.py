"""`biomero status` paging and `biomero stats` checks, run on SQLite (unit) and on the
real PostgreSQL (integration): both dialects must give the same answers.

Rows are written straight into the read models (``biomero_run``/``biomero_task``) where a
case needs exact times or ties that events cannot give; paging across new runs goes
through the tracker's own commands.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from biomeroworker.tracking import Tracker, totals
from biomeroworker.tracking import tables as t

T0 = datetime(2025, 3, 31, 12, 0, 0, 123456)  # a Monday (ISO week 14), with microseconds


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
