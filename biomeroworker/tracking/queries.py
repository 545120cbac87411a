"""Reads over the read-model tables, returning plain JSON-ready dicts."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, func, select, tuple_

from biomeroworker.tracking import tables as t
from biomeroworker.tracking.errors import UnknownRunError

_RUN_REF = re.compile(r"[0-9a-f-]{1,36}")


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.replace(tzinfo=UTC).isoformat()


def _run_dict(row: Any) -> dict[str, Any]:
    return {
        "run_id": row.run_id,
        "workflow": row.workflow,
        "version": row.version,
        "user": row.user_name,
        "omero_user_id": row.omero_user_id,
        "omero_group_id": row.omero_group_id,
        "state": row.state,
        "step": row.step,
        "inputs": json.loads(row.inputs),
        "parameters": json.loads(row.parameters),
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
        "ended_at": iso(row.ended_at),
        "error_type": row.error_type,
        "error": row.error,
        "result_location": row.result_location,
        "slurm_job_ids": [j for j in row.slurm_job_ids.split(",") if j],
        "cluster": row.cluster,
        "origin": row.origin,
    }


def _task_dict(row: Any) -> dict[str, Any]:
    return {
        "task_id": row.task_id,
        "kind": row.kind,
        "name": row.name,
        "version": row.version,
        "state": row.state,
        "slurm_job_id": row.slurm_job_id,
        "cluster": row.cluster,
        "job_state": row.job_state,
        "exit_code": row.exit_code,
        "elapsed_s": row.elapsed_s,
        "max_rss_bytes": row.max_rss_bytes,
        "progress": row.progress,
        "result_locations": json.loads(row.result_locations),
        "started_at": iso(row.started_at),
        "ended_at": iso(row.ended_at),
        "error_type": row.error_type,
        "error": row.error,
    }


def find_run_id(conn: Connection, ref: str) -> str:
    """The full id of the run ``ref`` names: a whole id or a unique prefix of one."""
    ref = ref.strip().lower()
    if not _RUN_REF.fullmatch(ref):
        raise UnknownRunError(f"run {ref!r} is not a run id (hex digits and dashes)")
    # A whole id is a primary-key lookup; a prefix is a LIKE (no index on every collation).
    match = t.runs.c.run_id == ref if len(ref) == 36 else t.runs.c.run_id.like(ref + "%")
    found = conn.execute(select(t.runs.c.run_id).where(match).limit(2)).scalars()
    matches = list(found)
    if len(matches) != 1:
        reason = "is ambiguous" if len(matches) > 1 else "is not a known run"
        raise UnknownRunError(f"run {ref!r} {reason}")
    return matches[0]


def get_run(conn: Connection, run_id: str) -> dict[str, Any]:
    row = conn.execute(select(t.runs).where(t.runs.c.run_id == run_id)).first()
    if row is None:
        raise UnknownRunError(f"run {run_id!r} is not a known run")
    run = _run_dict(row)
    task_rows = conn.execute(
        select(t.tasks).where(t.tasks.c.run_id == run_id).order_by(t.tasks.c.started_at)
    )
    run["tasks"] = [_task_dict(task) for task in task_rows]
    return run


def list_runs(
    conn: Connection,
    *,
    user: str | None = None,
    limit: int | None = None,
    after: str | None = None,
) -> list[dict[str, Any]]:
    """Newest first (creation time, then run id, both descending); only ``user``'s runs
    when given. ``after`` is a run id, the last one of the previous page: the runs that
    follow it in that order (keyset pagination: each page is one range scan of an index,
    however deep into the history it is, and runs recorded meanwhile do not shift it)."""
    order = (t.runs.c.created_at, t.runs.c.run_id)
    query = select(t.runs).order_by(*(column.desc() for column in order))
    if user is not None:
        query = query.where(t.runs.c.user_name == user)
    if after is not None:
        anchor = conn.execute(
            select(t.runs.c.created_at).where(t.runs.c.run_id == after)
        ).scalar_one_or_none()
        if anchor is None:
            raise UnknownRunError(f"run {after!r} is not a known run")
        query = query.where(tuple_(*order) < tuple_(anchor, after))
    if limit is not None:
        query = query.limit(limit)
    return [_run_dict(row) for row in conn.execute(query)]


def active_runs(conn: Connection) -> list[dict[str, Any]]:
    query = (
        select(t.runs)
        .where(t.runs.c.state.not_in(["COMPLETED", "FAILED", "CANCELLED"]))
        .where(t.runs.c.origin == "worker")  # biomero 2.x's runs are history, never resumed
        .order_by(t.runs.c.created_at, t.runs.c.run_id)
    )
    runs = [_run_dict(row) for row in conn.execute(query)]
    by_id = {run["run_id"]: run for run in runs}
    for run in runs:
        run["tasks"] = []
    if by_id:
        task_rows = conn.execute(
            select(t.tasks).where(t.tasks.c.run_id.in_(list(by_id))).order_by(t.tasks.c.started_at)
        )
        for task in task_rows:
            by_id[task.run_id]["tasks"].append(_task_dict(task))
    return runs


def count_runs(conn: Connection, *, user: str | None = None) -> int:
    query = select(func.count()).select_from(t.runs)
    if user is not None:
        query = query.where(t.runs.c.user_name == user)
    return int(conn.execute(query).scalar_one())
