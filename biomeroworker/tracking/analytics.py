"""What admins ask of the history: runs per workflow, step durations, failures, Slurm use.

The database does the aggregation: each analysis is one grouped query over the read
models, so the work in Python is bounded by the number of groups, never by the number
of runs. Only what the two dialects spell differently is chosen per dialect (a
duration in seconds); the rest is portable SQL, so PostgreSQL and SQLite give the same
answers. Runs are grouped per day in SQL and the days folded into the asked period
here (ISO weeks have no common spelling), and durations are rounded to milliseconds.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Numeric, Select, case, cast, extract, func, select

from biomeroworker.tracking import tables as t

PERIODS = ("day", "week", "month", "year")
# Nearest-rank percentile in integer arithmetic: rank = ceil(P95_PERCENT * n / 100).
P95_PERCENT = 95


def period_key(moment: datetime | date, period: str) -> str:
    if period == "day":
        return moment.strftime("%Y-%m-%d")
    if period == "week":
        year, week, _ = moment.isocalendar()
        return f"{year}-W{week:02d}"
    if period == "month":
        return moment.strftime("%Y-%m")
    if period == "year":
        return moment.strftime("%Y")
    raise ValueError(f"period must be one of {', '.join(PERIODS)}, not {period!r}")


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile: the smallest value with ``fraction`` of values at or below.
    (The SQL below computes the same rank; this is its reference.)"""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def _seconds(conn: Connection, start: Any, end: Any) -> ColumnElement[float]:
    """``end - start`` in seconds, rounded to milliseconds, in the connection's dialect."""
    if conn.dialect.name == "postgresql":
        return func.round(cast(extract("epoch", end - start), Numeric), 3)
    return func.round((func.julianday(end) - func.julianday(start)) * 86400.0, 3)


def _as_day(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def _scope(query: Select[Any], user: str | None, since: datetime | None) -> Select[Any]:
    if user is not None:
        query = query.where(t.runs.c.user_name == user)
    if since is not None:
        query = query.where(t.runs.c.created_at >= since)
    return query


def runs_per_workflow(
    conn: Connection, period: str, user: str | None, since: datetime | None
) -> list[dict[str, Any]]:
    day = func.date(t.runs.c.created_at)  # a date on PostgreSQL, 'YYYY-MM-DD' on SQLite
    completed = func.sum(case((t.runs.c.state == "COMPLETED", 1), else_=0))
    failed = func.sum(case((t.runs.c.state == "FAILED", 1), else_=0))
    query = _scope(
        select(
            day.label("day"),
            t.runs.c.workflow,
            t.runs.c.user_name,
            func.count().label("runs"),
            completed.label("completed"),
            failed.label("failed"),
        ),
        user,
        since,
    ).group_by(day, t.runs.c.workflow, t.runs.c.user_name)
    counts: dict[tuple[str, str, str], dict[str, int]] = defaultdict(
        lambda: {"runs": 0, "completed": 0, "failed": 0}
    )
    for row in conn.execute(query):
        key = (period_key(_as_day(row.day), period), row.workflow, row.user_name)
        counts[key]["runs"] += int(row.runs)
        counts[key]["completed"] += int(row.completed or 0)
        counts[key]["failed"] += int(row.failed or 0)
    return [{"period": p, "workflow": w, "user": u, **n} for (p, w, u), n in sorted(counts.items())]


def step_durations(
    conn: Connection, user: str | None, since: datetime | None
) -> list[dict[str, Any]]:
    """Per step kind: count, mean and nearest-rank p95 of completed tasks' durations."""
    seconds = _seconds(conn, t.tasks.c.started_at, t.tasks.c.ended_at)
    ranked = _scope(
        select(
            t.tasks.c.kind.label("kind"),
            seconds.label("seconds"),
            func.row_number().over(partition_by=t.tasks.c.kind, order_by=seconds).label("rank"),
            func.count().over(partition_by=t.tasks.c.kind).label("n"),
            func.avg(seconds).over(partition_by=t.tasks.c.kind).label("mean_s"),
        )
        .join(t.runs, t.runs.c.run_id == t.tasks.c.run_id)
        .where(t.tasks.c.state == "COMPLETED", t.tasks.c.ended_at.is_not(None)),
        user,
        since,
    ).subquery()
    # ceil(0.95 n) without floating point: (95 n + 99) // 100
    p95_rank = (ranked.c.n * P95_PERCENT + 99) // 100
    query = (
        select(ranked.c.kind, ranked.c.n, ranked.c.mean_s, ranked.c.seconds)
        .where(ranked.c.rank == p95_rank)
        .order_by(ranked.c.kind)
    )
    return [
        {
            "step": row.kind,
            "count": int(row.n),
            "mean_s": float(row.mean_s),
            "p95_s": float(row.seconds),
        }
        for row in conn.execute(query)
    ]


def failures_by_cause(
    conn: Connection, user: str | None, since: datetime | None
) -> list[dict[str, Any]]:
    cause, step = t.runs.c.error_type, t.runs.c.step
    query = _scope(
        select(cause, step, func.count().label("runs")).where(t.runs.c.state == "FAILED"),
        user,
        since,
    ).group_by(cause, step)
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for row in conn.execute(query):
        counts[(row.error_type or "unknown", row.step or "-")] += int(row.runs)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [{"error_type": c, "step": s, "runs": n} for (c, s), n in ranked]


def slurm_use(conn: Connection, user: str | None, since: datetime | None) -> list[dict[str, Any]]:
    """Per user: jobs, total and mean elapsed seconds, largest MaxRSS."""
    query = _scope(
        select(
            t.runs.c.user_name,
            func.count().label("jobs"),
            func.sum(t.tasks.c.elapsed_s).label("elapsed_s"),
            func.avg(t.tasks.c.elapsed_s).label("mean_elapsed_s"),
            func.max(t.tasks.c.max_rss_bytes).label("max_rss_bytes"),
        )
        .join(t.runs, t.runs.c.run_id == t.tasks.c.run_id)
        .where(t.tasks.c.slurm_job_id.is_not(None)),
        user,
        since,
    ).group_by(t.runs.c.user_name)
    return [
        {
            "user": row.user_name,
            "jobs": int(row.jobs),
            "elapsed_s": float(row.elapsed_s or 0.0),
            "mean_elapsed_s": None if row.mean_elapsed_s is None else float(row.mean_elapsed_s),
            "max_rss_bytes": None if row.max_rss_bytes is None else int(row.max_rss_bytes),
        }
        for row in sorted(conn.execute(query), key=lambda r: r.user_name)
    ]


def compute_stats(
    conn: Connection,
    *,
    user: str | None = None,
    period: str = "month",
    since: datetime | None = None,
) -> dict[str, Any]:
    """All four analyses over the runs ``user`` may see (None: everyone's)."""
    period_key(datetime(2000, 1, 1), period)  # reject an unknown period before querying
    return {
        "period": period,
        "runs": runs_per_workflow(conn, period, user, since),
        "step_durations": step_durations(conn, user, since),
        "failures": failures_by_cause(conn, user, since),
        "slurm_use": slurm_use(conn, user, since),
    }
