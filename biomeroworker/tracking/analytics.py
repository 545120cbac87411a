"""What admins ask of the history: runs per workflow, step durations, failures, Slurm use.

The projection keeps running totals of what each analysis counts (totals.py: per UTC
day of a run's creation, workflow, owner, step kind, ...), so each analysis reads one
row per group, never the runs themselves: its cost follows the number of groups, not
of runs. With ``since``, whole days come from the totals and the hours of a first day
that starts after midnight from the runs of those hours; step durations, kept as
histograms over all days, are then read from the tasks of the runs since then. The
answers equal an aggregation over every run: counts, sums, means and largest values
exactly, and the p95 of step durations to three significant digits (totals.bucket_us),
the same on PostgreSQL and SQLite.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    Table,
    case,
    func,
    literal_column,
    select,
    text,
)

from biomeroworker.tracking import tables as t
from biomeroworker.tracking import totals
from biomeroworker.tracking.totals import larger

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
    (``durations_summary`` finds the same rank in a histogram; this is its reference.)"""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def _as_day(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


@dataclass(frozen=True)
class Scope:
    """The runs an analysis covers: ``user``'s (None: everyone's) created at or after
    ``since`` (naive UTC; None: all). Whole days come from the running totals; the
    rest of a first day that starts after midnight, from the runs themselves."""

    user: str | None = None
    since: datetime | None = None

    @property
    def first_day(self) -> date | None:
        """The first day the totals answer for whole."""
        if self.since is None:
            return None
        day = self.since.date()
        return day if self.since == datetime.combine(day, time()) else day + timedelta(days=1)

    @property
    def first_month(self) -> date | None:
        """The first day of the first month the totals answer for whole."""
        day = self.first_day
        if day is None or day.day == 1:
            return day
        return (day.replace(day=28) + timedelta(days=4)).replace(day=1)

    @property
    def partial(self) -> tuple[datetime, datetime] | None:
        """[since, the next midnight): the part of a day read from the rows, if any."""
        if self.since is None or self.first_day is None:
            return None
        midnight = datetime.combine(self.first_day, time())
        return None if midnight == self.since else (self.since, midnight)


def _totals_scope(query: Select[Any], table: Table, scope: Scope) -> Select[Any]:
    if scope.user is not None:
        query = query.where(table.c.user_name == scope.user)
    if scope.first_day is not None:
        query = query.where(table.c.day >= scope.first_day)
    return query


def _rows_scope(query: Select[Any], scope: Scope) -> Select[Any]:
    """The runs of the partial first day (``scope.partial``)."""
    assert scope.partial is not None
    start, until = scope.partial
    if scope.user is not None:
        query = query.where(t.runs.c.user_name == scope.user)
    return query.where(t.runs.c.created_at >= start, t.runs.c.created_at < until)


# The first day of each period, spelt by each dialect (PostgreSQL weeks start on Monday,
# as ISO weeks do; SQLite's 'weekday 0' is the next Sunday, six days after that Monday).
_PERIOD_START = {
    "postgresql": {
        "day": "date_trunc('day', CAST({} AS timestamp))",
        "week": "date_trunc('week', CAST({} AS timestamp))",
        "month": "date_trunc('month', CAST({} AS timestamp))",
        "year": "date_trunc('year', CAST({} AS timestamp))",
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


def _added(found: dict[tuple[Any, ...], list[Any]], key: tuple[Any, ...], values: Any) -> None:
    """Add ``values`` to ``found[key]`` column by column (a group counted in two parts)."""
    known = found.get(key)
    found[key] = (
        list(values) if known is None else [a + b for a, b in zip(known, values, strict=True)]
    )


def _run_counts(
    conn: Connection,
    table: Table,
    period: str,
    scope: Scope,
    start: date | None,
    until: date | None = None,
) -> Select[Any]:
    """Runs, completed and failed per (period start, workflow, user) from a totals table
    keyed by day or by month, its first column, from ``start`` (None: the first) until
    ``until`` (None: the last)."""
    first = table.c[table.primary_key.columns.keys()[0]]
    columns = table.c
    period_start = _period_start(conn, first, period)
    query = select(period_start, columns.workflow, columns.user_name)
    query = query.add_columns(*(func.sum(columns[n]) for n in ("runs", "completed", "failed")))
    query = query.where(columns.runs > 0)
    if scope.user is not None:
        query = query.where(columns.user_name == scope.user)
    if start is not None:
        query = query.where(first >= start)
    if until is not None:
        query = query.where(first < until)
    return query.group_by(period_start, columns.workflow, columns.user_name)


def runs_per_workflow(conn: Connection, period: str, scope: Scope) -> list[dict[str, Any]]:
    """Per period, workflow and user. By month or year, whole months come from the
    monthly totals and the days before the first whole month from the daily ones."""
    if period in ("month", "year"):
        months = scope.first_month
        queries = [_run_counts(conn, t.run_month_totals, period, scope, months)]
        if scope.first_day is not None and scope.first_day != months:
            queries.append(_run_counts(conn, t.run_totals, period, scope, scope.first_day, months))
    else:
        queries = [_run_counts(conn, t.run_totals, period, scope, scope.first_day)]
    if scope.partial is not None:
        start = _period_start(conn, t.runs.c.created_at, period)
        state = t.runs.c.state
        queries.append(
            _rows_scope(
                select(
                    start,
                    t.runs.c.workflow,
                    t.runs.c.user_name,
                    func.count(),
                    func.sum(case((state == "COMPLETED", 1), else_=0)),
                    func.sum(case((state == "FAILED", 1), else_=0)),
                ),
                scope,
            ).group_by(start, t.runs.c.workflow, t.runs.c.user_name)
        )
    found: dict[tuple[Any, ...], list[Any]] = {}
    for query in queries:
        for first, workflow, user, *values in conn.execute(query):
            key = (period_key(_as_day(first), period), workflow, user)
            _added(found, key, [int(v or 0) for v in values])
    return [
        {"period": p, "workflow": w, "user": u, "runs": n, "completed": c, "failed": f}
        for (p, w, u), (n, c, f) in sorted(found.items())
    ]


def durations_summary(histogram: Iterable[Any]) -> list[dict[str, Any]]:
    """Per step kind, from (kind, bucket_us, tasks, sum_us) rows: how many tasks, their
    mean (exact, from the sum) and the nearest-rank p95 (the bucket it falls in),
    seconds rounded to milliseconds."""
    kinds: dict[str, dict[int, list[int]]] = defaultdict(dict)
    for kind, bucket, tasks, sum_us in histogram:
        if tasks:
            _added(kinds[kind], bucket, [int(tasks), int(sum_us)])  # type: ignore[arg-type]
    summary = []
    for kind in sorted(kinds):
        buckets = sorted(kinds[kind].items())
        count = sum(tasks for _, (tasks, _) in buckets)
        rank = (count * P95_PERCENT + 99) // 100  # ceil(0.95 n) in integers
        p95 = _at_rank([(bucket, tasks) for bucket, (tasks, _) in buckets], rank)
        total_us = sum(sum_us for _, (_, sum_us) in buckets)
        summary.append(
            {
                "step": kind,
                "count": count,
                "mean_s": round(total_us / count / 1e6, 3),
                "p95_s": round(p95 / 1e6, 3),
            }
        )
    return summary


def _at_rank(counted: list[tuple[int, int]], rank: int) -> int:
    """The value at ``rank`` (1 = smallest) of sorted (value, how many) pairs."""
    seen = 0
    for value, count in counted:
        seen += count
        if seen >= rank:
            return value
    raise ValueError(f"rank {rank} past the {seen} values")


def step_durations(conn: Connection, scope: Scope) -> list[dict[str, Any]]:
    """Per step kind: count, mean and nearest-rank p95 of completed tasks' durations,
    the p95 to three significant digits (totals.bucket_us). The histograms are not kept
    per day: with ``since``, the tasks of the runs since then are read."""
    if scope.since is not None:
        histogram = totals.step_histogram(conn, user=scope.user, since=scope.since)
    elif scope.user is not None:
        steps = t.user_step_totals
        histogram = select(steps.c.kind, steps.c.bucket_us, steps.c.tasks, steps.c.sum_us)
        histogram = histogram.where(steps.c.user_name == scope.user)
    else:
        steps = t.step_totals
        histogram = select(steps.c.kind, steps.c.bucket_us, steps.c.tasks, steps.c.sum_us)
    return durations_summary(conn.execute(histogram))


def failures_by_cause(conn: Connection, scope: Scope) -> list[dict[str, Any]]:
    failures = t.failure_totals.c
    queries = [
        _totals_scope(
            select(failures.error_type, failures.step, func.sum(failures.runs)).where(
                failures.runs > 0
            ),
            t.failure_totals,
            scope,
        ).group_by(failures.error_type, failures.step)
    ]
    if scope.partial is not None:
        cause, step = t.runs.c.error_type, t.runs.c.step
        queries.append(
            _rows_scope(
                select(cause, step, func.count()).where(t.runs.c.state == "FAILED"),
                scope,
            ).group_by(cause, step)
        )
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for query in queries:
        for cause, step, runs in conn.execute(query):
            counts[(cause or "unknown", step or "-")] += int(runs)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [{"error_type": c, "step": s, "runs": n} for (c, s), n in ranked]


def slurm_use(conn: Connection, scope: Scope) -> list[dict[str, Any]]:
    """Per user: jobs, total and mean elapsed seconds, largest MaxRSS."""
    slurm = t.slurm_totals.c
    queries = [
        _totals_scope(
            select(
                slurm.user_name,
                func.sum(slurm.jobs),
                func.sum(slurm.elapsed_n),
                func.sum(slurm.elapsed_s),
                func.max(slurm.max_rss_bytes),
            ).where(slurm.jobs > 0),
            t.slurm_totals,
            scope,
        ).group_by(slurm.user_name)
    ]
    if scope.partial is not None:
        tasks = t.tasks.c
        queries.append(
            _rows_scope(
                select(
                    t.runs.c.user_name,
                    func.count(),
                    func.count(tasks.elapsed_s),
                    func.sum(tasks.elapsed_s),
                    func.max(tasks.max_rss_bytes),
                )
                .select_from(t.tasks.join(t.runs, t.runs.c.run_id == tasks.run_id))
                .where(tasks.slurm_job_id.is_not(None)),
                scope,
            ).group_by(t.runs.c.user_name)
        )
    found: dict[str, list[Any]] = {}
    for query in queries:
        for user, jobs, timed, elapsed, largest in conn.execute(query):
            known = found.get(user)
            part = [int(jobs), int(timed), float(elapsed or 0.0), largest]
            if known is not None:
                part = [
                    *(a + b for a, b in zip(known[:3], part[:3], strict=True)),
                    larger(known[3], largest),
                ]
            found[user] = part
    return [
        {
            "user": user,
            "jobs": jobs,
            "elapsed_s": elapsed,
            "mean_elapsed_s": elapsed / timed if timed else None,
            "max_rss_bytes": None if largest is None else int(largest),
        }
        for user, (jobs, timed, elapsed, largest) in sorted(found.items())
    ]


# The running totals need no large sort; what still groups many rows is `stats --since`
# far back (step durations of every task since then): it gets more memory than
# PostgreSQL's default 4 MB per sort, past which a sort spills to disk (measured before
# the totals at 100,000 runs on this project's 2-core VM: the p95 sort of 300,000 tasks
# took 0.46 s with 4 MB, 0.27 s with 64 MB).
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
    """All four analyses over the runs ``user`` may see (None: everyone's), created at
    or after ``since`` (None: all; a naive datetime is UTC)."""
    period_key(datetime(2000, 1, 1), period)  # reject an unknown period before querying
    _sort_memory(conn)
    if since is not None and since.tzinfo is not None:
        since = since.astimezone(UTC).replace(tzinfo=None)
    scope = Scope(user, since)
    return {
        "period": period,
        "runs": runs_per_workflow(conn, period, scope),
        "step_durations": step_durations(conn, scope),
        "failures": failures_by_cause(conn, scope),
        "slurm_use": slurm_use(conn, scope),
    }
