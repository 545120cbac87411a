"""What a tracking database already holds, and whether this worker can share it.

A site switching from biomero 2.x points the worker at the database biomero's
WorkflowTracker wrote: its events stay (read-only history, never altered), its
dashboard rows stay, and our runs are appended beside them (docs/tracking.md).
Sharing is refused when the database holds what this worker cannot read or write
faithfully: event topics it does not know, or dashboard tables of another shape.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine, column, func, inspect, select, text
from sqlalchemy import table as sql_table

from biomeroworker.tracking import tables as t
from biomeroworker.tracking.domain import KNOWN_TOPICS, RECORDED_BY, WorkflowRun
from biomeroworker.tracking.projection import PROJECTION_NAME, SCHEMA, SCHEMA_VERSION

EVENTS_TABLE = "workflowtracker_events"
_events = sql_table(EVENTS_TABLE, column("id"), column("topic"), column("state"))
INITIATED = WorkflowRun.WorkflowInitiated.TOPIC
# biomero releases after 2.8 version their tables with Alembic under this name.
UPSTREAM_MIGRATIONS = "alembic_version_biomero"


@dataclass
class Survey:
    events: int = 0
    upstream_runs: int = 0
    worker_runs: int = 0
    migrations: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def shareable(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if not self.events:
            return "tracking database: no runs recorded yet"
        parts = []
        if self.upstream_runs:
            parts.append(
                f"biomero tracking database: {self.upstream_runs:,} runs from biomero 2.x, "
                "read-only history"
            )
        if self.worker_runs or not parts:
            parts.append(f"{self.worker_runs:,} runs of this worker")
        if self.migrations:
            parts.append(f"{UPSTREAM_MIGRATIONS} {self.migrations}")
        return "; ".join(parts)


def _dashboard_problems(conn: Connection, names: set[str]) -> list[str]:
    problems = []
    for table in t.DASHBOARD_TABLES:
        if table.name not in names:
            continue
        # the columns of the table as it is (a LIMIT 0 query: cheaper than reflection)
        found = set(
            conn.execute(select(text("*")).select_from(sql_table(table.name)).limit(0)).keys()
        )
        known = {c.name for c in table.columns}
        if found != known:
            extra = ", ".join(sorted(found - known)) or "-"
            missing = ", ".join(sorted(known - found)) or "-"
            problems.append(
                f"{table.name} has another shape than biomero 2.8's (extra columns: {extra}; "
                f"missing: {missing}): a newer biomero schema this worker does not write"
            )
    return problems


def refusal(engine: Engine) -> str | None:
    """Why this database cannot be shared, or None. Cheap enough for every open."""
    problems = survey(engine, count_runs=False, every_topic=False).problems
    return "; ".join(problems) if problems else None


def survey(engine: Engine, *, count_runs: bool = True, every_topic: bool = True) -> Survey:
    """What the database holds. Without ``every_topic``, only the topics of events the
    projection has not applied yet are checked (those it applied were known to the worker
    that applied them; a worker that adds topics marks a newer read-model schema, which
    is refused): reading every event's topic on each open grew with the history."""
    found = Survey()
    names = set(inspect(engine).get_table_names())
    with engine.connect() as conn:
        found.problems.extend(_dashboard_problems(conn, names))
        if UPSTREAM_MIGRATIONS in names:
            found.migrations = conn.execute(
                select(column("version_num")).select_from(sql_table(UPSTREAM_MIGRATIONS))
            ).scalar()
        projected = 0  # events up to here were applied, so their topics are known
        if t.positions.name in names:
            marked = conn.execute(
                select(t.positions.c.position).where(t.positions.c.name == SCHEMA)
            ).scalar()
            position = conn.execute(
                select(t.positions.c.position).where(t.positions.c.name == PROJECTION_NAME)
            ).scalar()
            projected = 0 if every_topic else int(position or 0)
            if marked is not None and int(marked) > SCHEMA_VERSION:
                found.problems.append(
                    f"written by a newer biomero worker (read-model schema {marked}, this one "
                    f"knows up to {SCHEMA_VERSION})"
                )
        if EVENTS_TABLE not in names:
            return found
        topics = conn.execute(
            select(_events.c.topic).distinct().where(_events.c.id > projected)
        ).scalars()
        unknown = sorted(set(topics) - KNOWN_TOPICS)
        if unknown:
            found.problems.append(
                f"{EVENTS_TABLE} holds events this worker does not know "
                f"({', '.join(unknown[:5])}{', ...' if len(unknown) > 5 else ''}): "
                "written by a newer biomero?"
            )
        if not count_runs:
            return found
        found.events = int(conn.execute(select(func.count()).select_from(_events)).scalar_one())
        states = conn.execute(select(_events.c.state).where(_events.c.topic == INITIATED)).scalars()
        for state in states:
            try:
                ours = json.loads(bytes(state)).get("recorded_by") == RECORDED_BY
            except ValueError:
                found.problems.append(
                    f"{EVENTS_TABLE} holds events that are not plain JSON (compressed or "
                    "encrypted by another configuration)"
                )
                break
            if ours:
                found.worker_runs += 1
            else:
                found.upstream_runs += 1
    return found
