"""The projection: events in notification order -> read-model rows, restart-safe.

It keeps nothing in process memory. Each batch runs in one database transaction
that first claims the projection's position row (a row lock on PostgreSQL, the
write lock on SQLite), reads the position, applies the next notifications and
moves the position. A crash rolls the batch back whole; a concurrent projector
waits for the claim and then skips what is already applied. Any process, any
restart, the same rows.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import ApplicationRecorder, Mapper
from sqlalchemy import Connection, Engine, Table, and_, insert, select, update
from sqlalchemy.exc import IntegrityError

from biomeroworker.tracking import tables as t
from biomeroworker.tracking.domain import (
    CANCELLED,
    COMPLETED,
    FAILED,
    RUNNING,
    STARTED,
    Task,
    WorkflowRun,
)

PROJECTION_NAME = "biomero_views"

# Upstream's workflow_progress_view status words and progress per step.
STEP_PROGRESS: dict[str, tuple[str, int]] = {
    "export": ("TRANSFERRING", 5),
    "stage_up": ("TRANSFERRING", 10),
    "convert": ("CONVERTING", 25),
    "job": ("RUNNING", 50),
    "stage_down": ("RETRIEVING", 90),
    "import": ("IMPORTING", 95),
}
JOB_PROGRESS_SPAN = (50, 90)

Handler = Callable[[Connection, Any], None]


def naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def _upsert(conn: Connection, table: Table, key: dict[str, Any], values: dict[str, Any]) -> None:
    """Update the row with ``key`` or insert it; safe because the claim serialises writers."""
    where = and_(*(table.c[name] == value for name, value in key.items()))
    if conn.execute(update(table).where(where).values(**values)).rowcount == 0:
        conn.execute(insert(table).values(**key, **values))


def _update(conn: Connection, table: Table, key: dict[str, Any], values: dict[str, Any]) -> None:
    where = and_(*(table.c[name] == value for name, value in key.items()))
    conn.execute(update(table).where(where).values(**values))


def _slurm_int(job_id: str | None) -> int | None:
    """Upstream keys job views by an integer id; array or het job ids have no row there."""
    if job_id is None or not job_id.isdigit():
        return None
    return int(job_id)


def _percent(value: float) -> str:
    return f"{round(value)}%"


def _job_workflow_progress(task_progress: str | None) -> str:
    low, high = JOB_PROGRESS_SPAN
    try:
        fraction = float((task_progress or "").strip().rstrip("%")) / 100
    except ValueError:
        return _percent(low)
    return _percent(low + max(0.0, min(1.0, fraction)) * (high - low))


class Projector:
    """Applies domain events to the read-model tables (see module docstring)."""

    def __init__(
        self,
        engine: Engine,
        recorder: ApplicationRecorder,
        mapper: Mapper[Any],
        *,
        batch_size: int = 500,
    ) -> None:
        self.engine = engine
        self.recorder = recorder
        self.mapper = mapper
        self.batch_size = batch_size
        self.handlers: dict[type, Handler] = {
            WorkflowRun.Requested: self._run_requested,
            WorkflowRun.TaskAdded: self._run_task_added,
            WorkflowRun.Completed: self._run_completed,
            WorkflowRun.Failed: self._run_failed,
            WorkflowRun.Cancelled: self._run_cancelled,
            Task.Started: self._task_started,
            Task.JobSubmitted: self._job_submitted,
            Task.JobStatusChanged: self._job_status_changed,
            Task.ProgressUpdated: self._progress_updated,
            Task.ResultAdded: self._result_added,
            Task.Completed: self._task_completed,
            Task.Failed: self._task_failed,
        }

    # --- position handling -------------------------------------------------

    def create_tables(self) -> None:
        t.metadata.create_all(self.engine)
        try:
            with self.engine.begin() as conn:
                row = conn.execute(
                    select(t.positions.c.position).where(t.positions.c.name == PROJECTION_NAME)
                ).first()
                if row is None:
                    conn.execute(insert(t.positions).values(name=PROJECTION_NAME, position=0))
        except IntegrityError:
            pass  # another process inserted the row first

    def position(self) -> int:
        with self.engine.connect() as conn:
            value = conn.execute(
                select(t.positions.c.position).where(t.positions.c.name == PROJECTION_NAME)
            ).scalar_one()
        return int(value)

    def _claim(self, conn: Connection) -> int:
        """Lock the position row for this transaction and return the position."""
        touch = update(t.positions).where(t.positions.c.name == PROJECTION_NAME)
        conn.execute(touch.values(position=t.positions.c.position))
        return int(
            conn.execute(
                select(t.positions.c.position).where(t.positions.c.name == PROJECTION_NAME)
            ).scalar_one()
        )

    def _move(self, conn: Connection, position: int) -> None:
        touch = update(t.positions).where(t.positions.c.name == PROJECTION_NAME)
        conn.execute(touch.values(position=position))

    # --- processing --------------------------------------------------------

    def catch_up(self) -> int:
        """Apply every event recorded since the last position; return how many."""
        latest = self.recorder.max_notification_id() or 0
        if latest <= self.position():
            return 0
        done = 0
        while True:
            with self.engine.begin() as conn:
                applied, _ = self._apply_next(conn, self._claim(conn))
            done += applied
            if applied < self.batch_size:
                return done

    def rebuild(self) -> int:
        """Drop and recreate the view tables and replay every event, in one transaction."""
        self.create_tables()
        with self.engine.begin() as conn:
            self._claim(conn)
            for table in reversed(t.VIEW_TABLES):
                table.drop(conn, checkfirst=True)
            for table in t.VIEW_TABLES:
                table.create(conn)
            self._move(conn, 0)
            position, done = 0, 0
            while True:
                applied, position = self._apply_next(conn, position)
                done += applied
                if applied < self.batch_size:
                    return done

    def _apply_next(self, conn: Connection, position: int) -> tuple[int, int]:
        """Apply up to a batch after ``position``; return (how many, new position)."""
        notifications = self.recorder.select_notifications(
            start=position, limit=self.batch_size, inclusive_of_start=False
        )
        for notification in notifications:
            self.apply(conn, self.mapper.to_domain_event(notification))
        if not notifications:
            return 0, position
        self._move(conn, notifications[-1].id)
        return len(notifications), notifications[-1].id

    def apply(self, conn: Connection, domain_event: DomainEventProtocol[Any]) -> None:
        handler = self.handlers.get(type(domain_event))
        if handler is not None:
            handler(conn, domain_event)

    # --- lookups inside the projection's own transaction --------------------

    @staticmethod
    def _run_row(conn: Connection, run_id: str) -> Any:
        return conn.execute(select(t.runs).where(t.runs.c.run_id == run_id)).one()

    @staticmethod
    def _task_row(conn: Connection, task_id: str) -> Any:
        return conn.execute(select(t.tasks).where(t.tasks.c.task_id == task_id)).one()

    def _touch_run(self, conn: Connection, run_id: str, when: datetime, **values: Any) -> None:
        _update(conn, t.runs, {"run_id": run_id}, {"updated_at": naive_utc(when), **values})

    def _workflow_progress(self, conn: Connection, run_id: str, **values: Any) -> None:
        _update(conn, t.workflow_progress_view, {"workflow_id": UUID(run_id)}, values)

    # --- run events ----------------------------------------------------------

    def _run_requested(self, conn: Connection, e: WorkflowRun.Requested) -> None:
        when = naive_utc(e.timestamp)
        conn.execute(
            insert(t.runs).values(
                run_id=str(e.originator_id),
                workflow=e.workflow,
                version=e.workflow_version,
                user_name=e.user_name,
                omero_user_id=e.omero_user_id,
                omero_group_id=e.omero_group_id,
                state="REQUESTED",
                step=None,
                inputs=json.dumps(e.inputs, sort_keys=True),
                parameters=json.dumps(e.parameters, sort_keys=True),
                created_at=when,
                updated_at=when,
                slurm_job_ids="",
            )
        )
        conn.execute(
            insert(t.workflow_progress_view).values(
                workflow_id=e.originator_id,
                status="INITIALIZING",
                progress="0%",
                user=e.omero_user_id,
                group=e.omero_group_id,
                name=e.workflow,
                task=None,
                main_task_name=None,
                start_time=when,
            )
        )

    def _run_task_added(self, conn: Connection, e: WorkflowRun.TaskAdded) -> None:
        self._touch_run(conn, str(e.originator_id), e.timestamp, state=RUNNING, step=e.kind)

    def _run_completed(self, conn: Connection, e: WorkflowRun.Completed) -> None:
        run_id = str(e.originator_id)
        when = naive_utc(e.timestamp)
        values: dict[str, Any] = {"state": COMPLETED, "ended_at": when}
        if e.result_location is not None:
            values["result_location"] = e.result_location
        self._touch_run(conn, run_id, e.timestamp, **values)
        self._workflow_progress(conn, run_id, status="DONE", progress="100%")

    def _run_failed(self, conn: Connection, e: WorkflowRun.Failed) -> None:
        run_id = str(e.originator_id)
        self._touch_run(
            conn,
            run_id,
            e.timestamp,
            state=FAILED,
            ended_at=naive_utc(e.timestamp),
            error_type=e.error_type,
            error=e.message,
        )
        self._workflow_progress(conn, run_id, status="FAILED")

    def _run_cancelled(self, conn: Connection, e: WorkflowRun.Cancelled) -> None:
        run_id = str(e.originator_id)
        self._touch_run(
            conn,
            run_id,
            e.timestamp,
            state=CANCELLED,
            ended_at=naive_utc(e.timestamp),
            error_type="Cancelled",
            error=e.reason,
        )
        self._workflow_progress(conn, run_id, status=CANCELLED)

    # --- task events ---------------------------------------------------------

    def _task_started(self, conn: Connection, e: Task.Started) -> None:
        run = self._run_row(conn, str(e.run_id))
        when = naive_utc(e.timestamp)
        conn.execute(
            insert(t.tasks).values(
                task_id=str(e.originator_id),
                run_id=str(e.run_id),
                kind=e.kind,
                name=e.name,
                version=e.task_version,
                state=STARTED,
                result_locations="[]",
                started_at=when,
            )
        )
        conn.execute(
            insert(t.task_execution).values(
                task_id=e.originator_id,
                task_name=e.name,
                task_version=e.task_version,
                user_id=run.omero_user_id,
                group_id=run.omero_group_id,
                status=STARTED,
                start_time=when,
            )
        )
        status, progress = STEP_PROGRESS.get(e.kind, (RUNNING, 50))
        values: dict[str, Any] = {"status": status, "progress": _percent(progress), "task": e.name}
        if e.kind == "job":
            values["main_task_name"] = e.name
        self._workflow_progress(conn, str(e.run_id), **values)

    def _job_submitted(self, conn: Connection, e: Task.JobSubmitted) -> None:
        task = self._task_row(conn, str(e.originator_id))
        run = self._run_row(conn, task.run_id)
        _update(
            conn,
            t.tasks,
            {"task_id": task.task_id},
            {"slurm_job_id": e.job_id, "cluster": e.cluster, "job_state": None},
        )
        job_ids = [j for j in run.slurm_job_ids.split(",") if j]
        if e.job_id not in job_ids:
            job_ids.append(e.job_id)
        self._touch_run(
            conn, run.run_id, e.timestamp, slurm_job_ids=",".join(job_ids), cluster=e.cluster
        )
        number = _slurm_int(e.job_id)
        if number is not None:
            _upsert(
                conn,
                t.job_view,
                {"slurm_job_id": number},
                {
                    "user": run.omero_user_id,
                    "group": run.omero_group_id,
                    "task_id": e.originator_id,
                },
            )

    def _job_status_changed(self, conn: Connection, e: Task.JobStatusChanged) -> None:
        task = self._task_row(conn, str(e.originator_id))
        _update(
            conn,
            t.tasks,
            {"task_id": task.task_id},
            {
                "job_state": e.state,
                "exit_code": e.exit_code,
                "elapsed_s": e.elapsed_s,
                "max_rss_bytes": e.max_rss_bytes,
            },
        )
        _update(conn, t.task_execution, {"task_id": e.originator_id}, {"status": e.state})
        number = _slurm_int(task.slurm_job_id)
        if number is not None:
            _upsert(conn, t.job_progress_view, {"slurm_job_id": number}, {"status": e.state})
        self._touch_run(conn, task.run_id, e.timestamp)
        if task.kind == "job":
            self._workflow_progress(
                conn,
                task.run_id,
                status=f"JOB_{e.state}",
                progress=_job_workflow_progress(task.progress),
            )

    def _progress_updated(self, conn: Connection, e: Task.ProgressUpdated) -> None:
        task = self._task_row(conn, str(e.originator_id))
        _update(conn, t.tasks, {"task_id": task.task_id}, {"progress": e.progress})
        number = _slurm_int(task.slurm_job_id)
        if number is not None:
            _upsert(
                conn,
                t.job_progress_view,
                {"slurm_job_id": number},
                {"status": task.job_state or "UNKNOWN", "progress": e.progress},
            )
        if task.kind == "job":
            self._workflow_progress(conn, task.run_id, progress=_job_workflow_progress(e.progress))

    def _result_added(self, conn: Connection, e: Task.ResultAdded) -> None:
        task = self._task_row(conn, str(e.originator_id))
        locations = [*json.loads(task.result_locations), e.location]
        _update(
            conn, t.tasks, {"task_id": task.task_id}, {"result_locations": json.dumps(locations)}
        )
        self._touch_run(conn, task.run_id, e.timestamp)

    def _task_completed(self, conn: Connection, e: Task.Completed) -> None:
        self._task_finished(conn, e, COMPLETED, None, None)

    def _task_failed(self, conn: Connection, e: Task.Failed) -> None:
        self._task_finished(conn, e, FAILED, e.error_type, e.message)

    def _task_finished(
        self,
        conn: Connection,
        e: Any,
        state: str,
        error_type: str | None,
        message: str | None,
    ) -> None:
        task = self._task_row(conn, str(e.originator_id))
        when = naive_utc(e.timestamp)
        _update(
            conn,
            t.tasks,
            {"task_id": task.task_id},
            {"state": state, "ended_at": when, "error_type": error_type, "error": message},
        )
        _update(
            conn,
            t.task_execution,
            {"task_id": e.originator_id},
            {"status": state, "end_time": when, "error_type": error_type},
        )
        self._touch_run(conn, task.run_id, e.timestamp)
