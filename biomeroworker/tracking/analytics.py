"""What admins ask of the history: runs per workflow, step durations, failures, Slurm use.

The database does the aggregation: each analysis is one grouped query over the read
models, so the work in Python is bounded by the number of groups, never by the number
of runs. What the two dialects spell differently (a duration in seconds, the first day
of a period, the nearest-rank p95) is chosen per dialect; the rest is portable SQL, and
PostgreSQL and SQLite give the same answers (durations rounded to milliseconds).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    case,
    func,
    literal_column,
    select,
    text,
)

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
    """``end - start`` in seconds, a float, in the connection's dialect (SQLite's is
    off by microseconds: results are rounded to milliseconds here, after the SQL)."""
    if conn.dialect.name == "postgresql":
        return func.date_part(literal_column("'epoch'"), end - start)
    return (func.julianday(end) - func.julianday(start)) * 86400.0


def _task_scope(
    query: Select[Any], user: str | None, since: datetime | None, *, by_user: bool = False
) -> Select[Any]:
    """Tasks of the runs in scope: joined with their runs only when a run's column is
    needed (a filter, or the user to group by)."""
    if user is None and since is None and not by_user:
        return query
    return _scope(query.join(t.runs, t.runs.c.run_id == t.tasks.c.run_id), user, since)


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


# The first day of each period, spelt by each dialect (PostgreSQL weeks start on Monday,
# as ISO weeks do; SQLite's 'weekday 0' is the next Sunday, six days after that Monday).
_PERIOD_START = {
    "postgresql": {
        "day": "date_trunc('day', {})",
        "week": "date_trunc('week', {})",
        "month": "date_trunc('month', {})",
        "year": "date_trunc('year', {})",
    },
    "sqlite": {
        "day": "date({})",
        "week": "date({}, 'weekday 0', '-6 days')",
        "month": "date({}, 'start of month')",
        "year": "date({}, 'start of year')",
    },
}


def _period_start(conn: Connection, column: Any, period: str) -> ColumnElement[Any]:
    """The first day of ``column``'s period, as SQL (``period`` is one of PERIODS)."""
    template = _PERIOD_START[conn.dialect.name][period]
    return literal_column(template.format(f"{column.table.name}.{column.name}"))


def runs_per_workflow(
    conn: Connection, period: str, user: str | None, since: datetime | None
) -> list[dict[str, Any]]:
    start = _period_start(conn, t.runs.c.created_at, period)
    completed = func.sum(case((t.runs.c.state == "COMPLETED", 1), else_=0))
    failed = func.sum(case((t.runs.c.state == "FAILED", 1), else_=0))
    query = _scope(
        select(
            start.label("start"),
            t.runs.c.workflow,
            t.runs.c.user_name,
            func.count().label("runs"),
            completed.label("completed"),
            failed.label("failed"),
        ),
        user,
        since,
    ).group_by(start, t.runs.c.workflow, t.runs.c.user_name)
    rows = [
        {
            "period": period_key(_as_day(row.start), period),
            "workflow": row.workflow,
            "user": row.user_name,
            "runs": int(row.runs),
            "completed": int(row.completed or 0),
            "failed": int(row.failed or 0),
        }
        for row in conn.execute(query)
    ]
    return sorted(rows, key=lambda r: (r["period"], r["workflow"], r["user"]))


def step_durations(
    conn: Connection, user: str | None, since: datetime | None
) -> list[dict[str, Any]]:
    """Per step kind: count, mean and nearest-rank p95 of completed tasks' durations."""
    seconds = _seconds(conn, t.tasks.c.started_at, t.tasks.c.ended_at)
    completed = (t.tasks.c.state == "COMPLETED", t.tasks.c.ended_at.is_not(None))
    kind = t.tasks.c.kind
    if conn.dialect.name == "postgresql":
        # percentile_disc is the nearest rank: the first value at or past the fraction
        p95 = func.percentile_disc(P95_PERCENT / 100).within_group(seconds)
        query = _task_scope(
            select(kind, func.count().label("n"), func.avg(seconds).label("mean_s"))
            .add_columns(p95.label("seconds"))
            .where(*completed),
            user,
            since,
        ).group_by(kind)
    else:
        ranked = _task_scope(
            select(
                kind.label("kind"),
                seconds.label("seconds"),
                func.row_number().over(partition_by=kind, order_by=seconds).label("rank"),
                func.count().over(partition_by=kind).label("n"),
                func.avg(seconds).over(partition_by=kind).label("mean_s"),
            ).where(*completed),
            user,
            since,
        ).subquery()
        # ceil(0.95 n) without floating point: (95 n + 99) // 100
        p95_rank = (ranked.c.n * P95_PERCENT + 99) // 100
        query = select(ranked.c.kind, ranked.c.n, ranked.c.mean_s, ranked.c.seconds).where(
            ranked.c.rank == p95_rank
        )
    rows = sorted(conn.execute(query), key=lambda r: r.kind)
    return [
        {
            "step": row.kind,
            "count": int(row.n),
            "mean_s": round(float(row.mean_s), 3),
            "p95_s": round(float(row.seconds), 3),
        }
        for row in rows
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
    query = _task_scope(
        select(
            t.runs.c.user_name,
            func.count().label("jobs"),
            func.sum(t.tasks.c.elapsed_s).label("elapsed_s"),
            func.avg(t.tasks.c.elapsed_s).label("mean_elapsed_s"),
            func.max(t.tasks.c.max_rss_bytes).label("max_rss_bytes"),
        ).where(t.tasks.c.slurm_job_id.is_not(None)),
        user,
        since,
        by_user=True,
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


# The p95 of every step's durations sorts all completed tasks in scope: with
# PostgreSQL's default 4 MB per sort that spills to disk past about 100,000 tasks.
# Measured at 100,000 runs (300,000 tasks) on this project's 2-core VM: step durations
# 0.46 s with 4 MB, 0.27 s with 64 MB.
STATS_WORK_MEM = "64MB"


def _sort_memory(conn: Connection) -> None:
    """More memory for this transaction's sorts, on PostgreSQL only (``SET LOCAL``: it
    ends with the transaction the stats are read in)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text(f"SET LOCAL work_mem = '{STATS_WORK_MEM}'"))


def compute_stats(
    conn: Connection,
    *,
    user: str | None = None,
    period: str = "month",
    since: datetime | None = None,
) -> dict[str, Any]:
    """All four analyses over the runs ``user`` may see (None: everyone's)."""
    period_key(datetime(2000, 1, 1), period)  # reject an unknown period before querying
    _sort_memory(conn)
    return {
        "period": period,
        "runs": runs_per_workflow(conn, period, user, since),
        "step_durations": step_durations(conn, user, since),
        "failures": failures_by_cause(conn, user, since),
        "slurm_use": slurm_use(conn, user, since),
    }
