"""What admins ask of the history: runs per workflow, step durations, failures, Slurm use.

Rows come from the read models; the arithmetic (periods, percentiles) is done here in
Python so PostgreSQL and SQLite give the same answer.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from biomeroworker.tracking import tables as t

PERIODS = ("day", "week", "month", "year")


def period_key(moment: datetime, period: str) -> str:
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
    """Nearest-rank percentile: the smallest value with ``fraction`` of values at or below."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def runs_per_workflow(rows: Iterable[Any], period: str) -> list[dict[str, Any]]:
    counts: dict[tuple[str, str, str], dict[str, int]] = defaultdict(
        lambda: {"runs": 0, "completed": 0, "failed": 0}
    )
    for row in rows:
        key = (period_key(row.created_at, period), row.workflow, row.user_name)
        counts[key]["runs"] += 1
        if row.state == "COMPLETED":
            counts[key]["completed"] += 1
        elif row.state == "FAILED":
            counts[key]["failed"] += 1
    return [{"period": p, "workflow": w, "user": u, **n} for (p, w, u), n in sorted(counts.items())]


def step_durations(rows: Iterable[Any]) -> list[dict[str, Any]]:
    by_step: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        if row.ended_at is not None and row.state == "COMPLETED":
            by_step[row.kind].append((row.ended_at - row.started_at).total_seconds())
    return [
        {
            "step": step,
            "count": len(seconds),
            "mean_s": sum(seconds) / len(seconds),
            "p95_s": percentile(seconds, 0.95),
        }
        for step, seconds in sorted(by_step.items())
    ]


def failures_by_cause(rows: Iterable[Any]) -> list[dict[str, Any]]:
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for row in rows:
        if row.state == "FAILED":
            counts[(row.error_type or "unknown", row.step or "-")] += 1
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [{"error_type": cause, "step": step, "runs": n} for (cause, step), n in ranked]


def slurm_use(rows: Iterable[Any]) -> list[dict[str, Any]]:
    """Per user: jobs, total and mean elapsed seconds, largest MaxRSS."""
    jobs: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        if row.slurm_job_id is not None:
            jobs[row.user_name].append(row)
    summary = []
    for user, rows_of_user in sorted(jobs.items()):
        elapsed = [r.elapsed_s for r in rows_of_user if r.elapsed_s is not None]
        rss = [r.max_rss_bytes for r in rows_of_user if r.max_rss_bytes is not None]
        summary.append(
            {
                "user": user,
                "jobs": len(rows_of_user),
                "elapsed_s": sum(elapsed),
                "mean_elapsed_s": sum(elapsed) / len(elapsed) if elapsed else None,
                "max_rss_bytes": max(rss) if rss else None,
            }
        )
    return summary


def compute_stats(
    conn: Connection,
    *,
    user: str | None = None,
    period: str = "month",
    since: datetime | None = None,
) -> dict[str, Any]:
    """All four analyses over the runs ``user`` may see (None: everyone's)."""
    period_key(datetime(2000, 1, 1), period)  # reject an unknown period before querying
    run_query = select(
        t.runs.c.run_id,
        t.runs.c.workflow,
        t.runs.c.user_name,
        t.runs.c.state,
        t.runs.c.step,
        t.runs.c.error_type,
        t.runs.c.created_at,
    )
    task_query = select(
        t.tasks.c.kind,
        t.tasks.c.state,
        t.tasks.c.started_at,
        t.tasks.c.ended_at,
        t.tasks.c.slurm_job_id,
        t.tasks.c.elapsed_s,
        t.tasks.c.max_rss_bytes,
        t.runs.c.user_name,
    ).join(t.runs, t.runs.c.run_id == t.tasks.c.run_id)
    if user is not None:
        run_query = run_query.where(t.runs.c.user_name == user)
        task_query = task_query.where(t.runs.c.user_name == user)
    if since is not None:
        run_query = run_query.where(t.runs.c.created_at >= since)
        task_query = task_query.where(t.runs.c.created_at >= since)
    run_rows = conn.execute(run_query).all()
    task_rows = conn.execute(task_query).all()
    return {
        "period": period,
        "runs": runs_per_workflow(run_rows, period),
        "step_durations": step_durations(task_rows),
        "failures": failures_by_cause(run_rows),
        "slurm_use": slurm_use(task_rows),
    }
