"""Running totals for `biomero stats`, kept by the projection and refilled from the rows.

Each totals table (``tables.TOTALS_TABLES``) holds, per group, the sum of what the rows
of ``biomero_run``/``biomero_task`` contribute to that group (``run_parts``,
``task_parts``). For every run and task a batch changes, the projection takes away the
parts of the row as it was and adds those of the row as it is now (``Changes.move``):
a run going from RUNNING to FAILED moves its count from one column to the other, and a
task's accounting recorded a second time replaces the first instead of adding to it.
``write`` applies what changed, as upserts, a few statements a batch (none when a batch
changes no total). ``refill`` recomputes every table from the rows with one
INSERT ... SELECT each: for a database whose read models predate the totals, and for
rows written outside the projection (the bench's generated rows, tests).

Rows whose count falls to zero are deleted and a largest value that is taken away is
recomputed from its group's rows, so the tables always equal ``refill``'s.

Step durations are histograms: a duration in microseconds rounded to three significant
digits (``bucket_us``: 1.23456 s counts as 1.23 s, 456 ms as 456 ms), with the exact sum
beside it. Rounding keeps order, so the nearest-rank p95 read from the histogram is the
exact p95 rounded the same way (within 0.5 %), and the mean is exact.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any, NamedTuple

import psycopg2
from psycopg2.extras import execute_values
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Date,
    Integer,
    Select,
    Table,
    and_,
    case,
    cast,
    delete,
    extract,
    func,
    insert,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError

from biomeroworker.tracking import tables as t

SIGNIFICANT_DIGITS = 3
COMPLETED = "COMPLETED"  # (domain.COMPLETED / FAILED: not imported, to keep this module
FAILED = "FAILED"  # free of the event classes)

# per totals table: the column that counts its rows' members (a row at 0 is deleted),
# and the column holding a largest value, if any
COUNTS = {
    t.run_totals.name: "runs",
    t.run_month_totals.name: "runs",
    t.failure_totals.name: "runs",
    t.slurm_totals.name: "jobs",
    t.step_totals.name: "tasks",
    t.user_step_totals.name: "tasks",
}
PEAKS = {t.slurm_totals.name: "max_rss_bytes"}
TABLES = {table.name: table for table in t.TOTALS_TABLES}


def bucket_us(micros: int) -> int:
    """``micros`` rounded half up to SIGNIFICANT_DIGITS significant digits."""
    size = abs(micros)
    step = 10 ** max(0, len(str(size)) - SIGNIFICANT_DIGITS)
    rounded = (size + step // 2) // step * step
    return -rounded if micros < 0 else rounded


def duration_us(started: datetime, ended: datetime) -> int:
    return (ended - started) // timedelta(microseconds=1)


class Part(NamedTuple):
    """What one row adds to one group of one totals table."""

    table: str
    key: tuple[Any, ...]
    sums: tuple[tuple[str, float], ...]
    peak: int | None = None


def run_parts(run: Mapping[str, Any] | None) -> list[Part]:
    if run is None:
        return []
    day, user, state = run["created_at"].date(), run["user_name"], run["state"]
    counts = (("runs", 1), ("completed", int(state == COMPLETED)), ("failed", int(state == FAILED)))
    parts = [
        Part(t.run_totals.name, (day, run["workflow"], user), counts),
        Part(t.run_month_totals.name, (day.replace(day=1), run["workflow"], user), counts),
    ]
    if state == FAILED:
        cause = (run["error_type"] or "unknown", run["step"] or "-")
        parts.append(Part(t.failure_totals.name, (day, user, *cause), (("runs", 1),)))
    return parts


def task_parts(task: Mapping[str, Any] | None, run: Mapping[str, Any] | None) -> list[Part]:
    """A task's parts; those of a task whose run is not recorded (yet) have no owner and
    no day: only the step kind's histogram over everyone counts it."""
    if task is None:
        return []
    parts = []
    if task["state"] == COMPLETED and task["ended_at"] is not None:
        micros = duration_us(task["started_at"], task["ended_at"])
        sums = (("tasks", 1), ("sum_us", micros))
        bucket = bucket_us(micros)
        parts.append(Part(t.step_totals.name, (task["kind"], bucket), sums))
        if run is not None:
            parts.append(
                Part(t.user_step_totals.name, (run["user_name"], task["kind"], bucket), sums)
            )
    if task["slurm_job_id"] is not None and run is not None:
        elapsed = task["elapsed_s"]
        sums = (
            ("jobs", 1),
            ("elapsed_n", int(elapsed is not None)),
            ("elapsed_s", 0.0 if elapsed is None else float(elapsed)),
        )
        key = (run["created_at"].date(), run["user_name"])
        parts.append(Part(t.slurm_totals.name, key, sums, task["max_rss_bytes"]))
    return parts


@dataclass
class Change:
    """One group's change: what its sums gain (or lose), the largest value added and
    the largest taken away."""

    sums: dict[str, float] = field(default_factory=lambda: defaultdict(int))
    added_peak: int | None = None
    removed_peak: int | None = None

    def lowers_peak(self) -> bool:
        """A value taken away may have been the group's largest, and nothing as large
        came in: the largest must be read again from the group's rows."""
        if self.removed_peak is None:
            return False
        return self.added_peak is None or self.removed_peak > self.added_peak


def larger(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


class Changes:
    """The changes of one batch, per totals table and group."""

    def __init__(self) -> None:
        self.groups: dict[str, dict[tuple[Any, ...], Change]] = defaultdict(dict)

    def move(self, before: list[Part], after: list[Part]) -> None:
        """A row's parts were ``before`` and are ``after`` now."""
        if before == after:
            return
        for parts, sign in ((before, -1), (after, 1)):
            for part in parts:
                change = self.groups[part.table].setdefault(part.key, Change())
                for name, value in part.sums:
                    change.sums[name] += sign * value
                if sign > 0:
                    change.added_peak = larger(change.added_peak, part.peak)
                else:
                    change.removed_peak = larger(change.removed_peak, part.peak)


def write(conn: Connection, changes: Changes) -> None:
    """Apply a batch's changes, after its rows are written (a peak is read again from
    them)."""
    for name, groups in changes.groups.items():
        table = TABLES[name]
        peak = PEAKS.get(name)
        sums = _sum_columns(table)
        values = [
            (*key, *(change.sums.get(column, 0) for column in sums))
            + ((change.added_peak,) if peak else ())
            for key, change in groups.items()
            if any(change.sums.values()) or change.added_peak is not None
        ]
        if values:
            _upsert(conn, table, values)
        if peak is not None:
            for key, change in groups.items():
                if change.lowers_peak():
                    _recount_peak(conn, key)
        count = COUNTS[name]
        _delete_emptied(
            conn, table, [key for key, change in groups.items() if change.sums.get(count, 0) < 0]
        )


def _delete_emptied(conn: Connection, table: Table, keys: list[tuple[Any, ...]]) -> None:
    """Delete the rows of these groups whose count fell to zero."""
    names = [column.name for column in table.primary_key.columns]
    count = table.c[COUNTS[table.name]]
    for start in range(0, len(keys), 100):
        chunk = keys[start : start + 100]
        conn.execute(
            delete(table).where(count == 0, or_(*(_key_is(table, names, key) for key in chunk)))
        )


def _sum_columns(table: Table) -> list[str]:
    return [
        column.name
        for column in table.columns
        if not column.primary_key and column.name != PEAKS.get(table.name)
    ]


def _key_is(table: Table, keys: list[str], key: tuple[Any, ...]) -> ColumnElement[bool]:
    return and_(*(table.c[name] == value for name, value in zip(keys, key, strict=True)))


def _upsert(conn: Connection, table: Table, values: list[tuple[Any, ...]]) -> None:
    """Insert these groups (values in column order) or add them to the sums of those
    already there, keeping the larger peak. On PostgreSQL with psycopg2, one multi-row
    statement a chunk (``execute_values``: a quarter of the time SQLAlchemy's executemany
    takes for a batch's few hundred groups); elsewhere through SQLAlchemy."""
    if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg2":
        _upsert_psycopg2(conn, table, values)
        return
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(table)
    new = statement.excluded
    changes: dict[str, Any] = {name: table.c[name] + new[name] for name in _sum_columns(table)}
    peak = PEAKS.get(table.name)
    if peak is not None:
        old = table.c[peak]
        changes[peak] = case(
            (new[peak].is_(None), old),
            (or_(old.is_(None), new[peak] > old), new[peak]),
            else_=old,
        )
    keys = [column.name for column in table.primary_key.columns]
    names = [column.name for column in table.columns]
    conn.execute(
        statement.on_conflict_do_update(index_elements=keys, set_=changes),
        [dict(zip(names, row, strict=True)) for row in values],
    )


def _upsert_psycopg2(conn: Connection, table: Table, values: list[tuple[Any, ...]]) -> None:
    quote = conn.dialect.identifier_preparer.quote
    keys = [quote(column.name) for column in table.primary_key.columns]
    changes = [
        f"{quote(name)} = t.{quote(name)} + excluded.{quote(name)}" for name in _sum_columns(table)
    ]
    peak = PEAKS.get(table.name)
    if peak is not None:  # GREATEST ignores NULLs
        changes.append(f"{quote(peak)} = GREATEST(t.{quote(peak)}, excluded.{quote(peak)})")
    # Names from our table definitions (quoted), values as parameters.
    statement = (
        f"INSERT INTO {conn.dialect.identifier_preparer.format_table(table)} AS t "  # noqa: S608
        f"({', '.join(quote(column.name) for column in table.columns)}) VALUES %s "
        f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {', '.join(changes)}"
    )
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        execute_values(cursor, statement, values, page_size=500)
    except psycopg2.Error as exc:  # as SQLAlchemy raises it (store_errors)
        raise DBAPIError.instance(statement, None, exc, psycopg2.Error) from exc
    finally:
        cursor.close()


def _recount_peak(conn: Connection, key: tuple[Any, ...]) -> None:
    """Read one (day, user) group's largest MaxRSS again from its tasks."""
    day, user = key
    start = datetime.combine(day, time())
    largest = (
        select(func.max(t.tasks.c.max_rss_bytes))
        .select_from(t.tasks.join(t.runs, t.runs.c.run_id == t.tasks.c.run_id))
        .where(
            t.runs.c.user_name == user,
            t.runs.c.created_at >= start,
            t.runs.c.created_at < start + timedelta(days=1),
            t.tasks.c.slurm_job_id.is_not(None),
        )
        .scalar_subquery()
    )
    totals = t.slurm_totals
    conn.execute(
        update(totals)
        .where(totals.c.day == day, totals.c.user_name == user)
        .values(max_rss_bytes=largest)
    )


# --- the same totals in SQL, from the rows ---------------------------------------------


def day_of(conn: Connection, moment: Any) -> ColumnElement[Any]:
    """The UTC day of a naive UTC timestamp column, as the dialect stores a Date."""
    if conn.dialect.name == "postgresql":
        return cast(moment, Date)
    return func.date(moment)


def month_of(conn: Connection, moment: Any) -> ColumnElement[Any]:
    """The first day of the UTC month of a naive UTC timestamp column, as a Date."""
    if conn.dialect.name == "postgresql":
        return cast(func.date_trunc(literal_column("'month'"), moment), Date)
    return func.date(moment, literal_column("'start of month'"))


def _sqlite_micros(moment: Any) -> ColumnElement[int]:
    """Microseconds since the epoch of a timestamp SQLAlchemy stored on SQLite (text
    ``YYYY-MM-DD HH:MM:SS.ffffff``), in integers: julianday's float is off by a few, and
    SQLite reads fractions of a second to milliseconds only (23:59:59.9996 is midnight),
    so the whole seconds and the microseconds are read apart."""
    seconds = cast(func.strftime("%s", func.substr(moment, 1, 19)), Integer)
    return seconds * 1_000_000 + cast(func.substr(moment, 21, 6), Integer)


def duration_us_sql(conn: Connection, start: Any, end: Any) -> ColumnElement[int]:
    """``end - start`` in whole microseconds, exact in both dialects."""
    if conn.dialect.name == "postgresql":
        # EXTRACT gives a numeric (exact) on PostgreSQL 14 and later
        return cast(extract("epoch", end - start) * 1_000_000, BigInteger)
    return _sqlite_micros(end) - _sqlite_micros(start)


def bucket_us_sql(micros: Any) -> ColumnElement[int]:
    """``bucket_us`` in portable integer SQL (integer division in both dialects)."""
    size = case((micros < 0, -micros), else_=micros)
    first = 10**SIGNIFICANT_DIGITS
    step = case(
        *((size < first * 10**n, 10**n) for n in range(16)),
        else_=10**16,
    )
    rounded = (size + step // 2) // step * step
    return case((micros < 0, -rounded), else_=rounded)


def step_histogram(
    conn: Connection,
    *,
    by_user: bool = False,
    user: str | None = None,
    since: datetime | None = None,
) -> Select[Any]:
    """(kind, bucket_us, tasks, sum_us) of completed tasks, and ``user_name`` first when
    ``by_user``; with ``user``/``since``, of those runs only (tasks joined with them)."""
    tasks = t.tasks.c
    micros = duration_us_sql(conn, tasks.started_at, tasks.ended_at).label("us")
    columns: list[Any] = [tasks.kind, micros]
    inner = select(*columns).where(tasks.state == COMPLETED, tasks.ended_at.is_not(None))
    if by_user or user is not None or since is not None:
        inner = inner.join(t.runs, t.runs.c.run_id == tasks.run_id)
        inner = inner.add_columns(t.runs.c.user_name)
        if user is not None:
            inner = inner.where(t.runs.c.user_name == user)
        if since is not None:
            inner = inner.where(t.runs.c.created_at >= since)
    done = inner.subquery()
    bucket = bucket_us_sql(done.c.us)
    groups = [done.c.user_name] if by_user else []
    groups += [done.c.kind, bucket]
    return select(
        *groups[:-1],
        bucket.label("bucket_us"),
        func.count().label("tasks"),
        func.sum(done.c.us).label("sum_us"),
    ).group_by(*groups)


def refill(conn: Connection) -> None:
    """Recompute every totals table from biomero_run/biomero_task (one INSERT ...
    SELECT each), in the caller's transaction."""
    for table in t.TOTALS_TABLES:
        conn.execute(delete(table))
    day = day_of(conn, t.runs.c.created_at)
    counted = [
        (t.run_totals, _runs_select(day)),
        (t.run_month_totals, _runs_select(month_of(conn, t.runs.c.created_at))),
        (t.failure_totals, _failures_select(day)),
        (t.slurm_totals, _slurm_select(day)),
        (t.step_totals, step_histogram(conn)),
        (t.user_step_totals, step_histogram(conn, by_user=True)),
    ]
    for table, query in counted:
        conn.execute(insert(table).from_select([c.name for c in table.columns], query))


def _runs_select(start: ColumnElement[Any]) -> Select[Any]:
    runs = t.runs.c
    return select(
        start,
        runs.workflow,
        runs.user_name,
        func.count(),
        func.sum(case((runs.state == COMPLETED, 1), else_=0)),
        func.sum(case((runs.state == FAILED, 1), else_=0)),
    ).group_by(start, runs.workflow, runs.user_name)


def _failures_select(day: ColumnElement[Any]) -> Select[Any]:
    runs = t.runs.c
    cause = func.coalesce(func.nullif(runs.error_type, ""), "unknown")
    step = func.coalesce(func.nullif(runs.step, ""), "-")
    return (
        select(day, runs.user_name, cause, step, func.count())
        .where(runs.state == FAILED)
        .group_by(day, runs.user_name, cause, step)
    )


def _slurm_select(day: ColumnElement[Any]) -> Select[Any]:
    runs, tasks = t.runs.c, t.tasks.c
    return (
        select(
            day,
            runs.user_name,
            func.count(),
            func.count(tasks.elapsed_s),
            func.coalesce(func.sum(tasks.elapsed_s), 0.0),
            func.max(tasks.max_rss_bytes),
        )
        .select_from(t.tasks.join(t.runs, runs.run_id == tasks.run_id))
        .where(tasks.slurm_job_id.is_not(None))
        .group_by(day, runs.user_name)
    )
