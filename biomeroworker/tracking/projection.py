"""The projection: events in notification order -> read-model rows, restart-safe.

It keeps nothing in process memory. Each batch runs in one database transaction
that first claims the projection's position row (a row lock on PostgreSQL, the
write lock on SQLite), reads the position, applies the next notifications and
moves the position. A crash rolls the batch back whole; a concurrent projector
waits for the claim and then skips what is already applied.

The four dashboard tables get exactly the rows biomero 2.8's own views
(``biomero/views.py``: JobAccounting, JobProgress, WorkflowProgress,
WorkflowAnalytics) give the same events, for biomero's history and for our runs
alike: what those views keep in memory per run and per task is kept here in
``biomero_run`` / ``biomero_task``. So a rebuild here equals biomero's own rebuild
("Slurm Init"), and biomero's views, after a rollback, write the rows we wrote.
On a database biomero was already using, events up to the takeover position
(the newest event when this worker first met the database) are not re-applied to
the dashboard tables: biomero's rows for them stay as biomero left them.

As biomero's ``[ANALYTICS]`` switches do for its listeners, ``dashboards`` names the
dashboard tables this projector writes (``dashboard_tables``); the others are left
alone. ``biomero_run`` / ``biomero_task`` are always written: the worker runs from them;
so are the running totals `biomero stats` reads (totals.py), from what each batch
changed in those two tables, in the batch's transaction.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import psycopg2
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import ApplicationRecorder, Mapper, Notification
from psycopg2.extras import execute_values
from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Table,
    and_,
    delete,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError

from biomeroworker.tracking import tables as t
from biomeroworker.tracking import totals
from biomeroworker.tracking.domain import (
    CANCELLED,
    COMPLETED,
    FAILED,
    KNOWN_TOPICS,
    NO_OMERO_ID,
    RECORDED_BY,
    REQUESTED,
    RUNNING,
    STARTED,
    Task,
    TaskStarted,
    WorkflowRun,
    WorkflowStarted,
)
from biomeroworker.tracking.errors import TrackingStoreError

PROJECTION_NAME = "biomero_views"
TAKEOVER = "biomero_views.takeover"
SCHEMA = "biomero_views.schema"
# Version of our own read models (biomero_run, biomero_task, the running totals). A
# database marked with a newer one was written by a newer worker and is refused. (3: the
# totals; a worker that does not keep them would let them fall behind.)
SCHEMA_VERSION = 3
# Bump SCHEMA_VERSION too when the worker learns a new event topic: an older worker then
# refuses the database (takeover.refusal reads only the topics past the projection).
LAYOUT = "biomero_views.layout"
# Our tables' indexes: bump when one is added, so create_tables adds it to existing tables.
LAYOUT_VERSION = 1

ORIGIN_BIOMERO = "biomero"
ORIGIN_WORKER = "worker"

Handler = Callable[["_Rows", Any, bool], None]

# biomero's listener -> the dashboard tables it writes (biomero/slurm_client.py,
# initialize_analytics_system): enable_job_progress switches JobProgress and
# WorkflowProgress together.
JOB_ACCOUNTING = frozenset({t.job_view.name})
JOB_PROGRESS = frozenset({t.job_progress_view.name, t.workflow_progress_view.name})
WORKFLOW_ANALYTICS = frozenset({t.task_execution.name})
ALL_DASHBOARDS = JOB_ACCOUNTING | JOB_PROGRESS | WORKFLOW_ANALYTICS
DASHBOARD_NAMES = frozenset(table.name for table in t.DASHBOARD_TABLES)

# Events that name a task (their originator) or a run; read in bulk before a batch.
TASK_EVENTS = (
    Task.TaskCreated,
    Task.JobIdAdded,
    Task.StatusUpdated,
    Task.ProgressUpdated,
    Task.ResultAdded,
    Task.TaskCompleted,
    Task.TaskFailed,
)
RUN_EVENTS = (
    WorkflowRun.WorkflowInitiated,
    WorkflowRun.TaskAdded,
    WorkflowRun.WorkflowCompleted,
    WorkflowRun.WorkflowFailed,
)


def dashboard_tables(
    *, job_accounting: bool = True, job_progress: bool = True, workflow_analytics: bool = True
) -> frozenset[str]:
    """The dashboard tables written under ``[ANALYTICS] enable_*`` switches."""
    tables: set[str] = set()
    for on, names in (
        (job_accounting, JOB_ACCOUNTING),
        (job_progress, JOB_PROGRESS),
        (workflow_analytics, WORKFLOW_ANALYTICS),
    ):
        if on:
            tables |= names
    return frozenset(tables)


def naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def _upsert(conn: Connection, table: Table, key: dict[str, Any], values: dict[str, Any]) -> None:
    """Update the row with ``key`` or insert it; safe because the claim serialises writers."""
    where = and_(*(table.c[name] == value for name, value in key.items()))
    if conn.execute(update(table).where(where).values(**values)).rowcount == 0:
        conn.execute(insert(table).values(**key, **values))


def is_infrastructure(task_name: str | None) -> bool:
    """biomero's rule for tasks that are not the user-facing workflow."""
    name = (task_name or "").lower()
    return name.startswith(("_slurm_", "slurm_", "convert_"))


def upstream_kind(task_name: str) -> str:
    """Our step kind for a task biomero-scripts recorded."""
    name = task_name.lower()
    if name.startswith(("_slurm_image_transfer", "_slurm_file_transfer")):
        return "export"
    if name.startswith(("convert_", "slurm_remote_conversion")):
        return "convert"
    if name.startswith(("slurm_get_result", "slurm_import_results")):
        return "import"
    if name.startswith("slurm_run_workflow"):
        return "batch"  # a batched run's parent task: one per batch, no job of its own
    return "job"


def upstream_user_name(user: int | None) -> str:
    """How a biomero 2.x run's owner shows in `biomero status --all` (it kept only ids)."""
    if user is None or user == NO_OMERO_ID:
        return "biomero"
    return f"omero-user-{user}"


def workflow_status(task_name: str, status: str, task_progress: str | None) -> tuple[str, str]:
    """(status, progress) biomero's WorkflowProgress shows after a task status update."""
    name = task_name.lower()
    if name == "_slurm_image_transfer.py":
        return "TRANSFERRING", "5%"
    if name.startswith("convert_"):
        return "CONVERTING", "25%"
    if name == "slurm_get_results.py":
        if status == "POSTPROCESSING":
            return "POSTPROCESSING", "95%"
        return "RETRIEVING", "90%"
    if name == "slurm_import_results.py":
        return status, "95%" if status == "POSTPROCESSING" else "90%"
    if name == "slurm_run_workflow.py":
        return "RUNNING", "50%"
    progress = "50%"
    if task_progress:
        try:
            current = int(task_progress.strip("%"))
        except ValueError:
            pass  # biomero itself fails here; we keep its baseline
        else:
            progress = f"{50 + ((current / 100) * (90 - 50))}%"
    return "JOB_" + status, progress


class Projector:
    """Applies domain events to the read-model tables (see module docstring)."""

    def __init__(
        self,
        engine: Engine,
        recorder: ApplicationRecorder,
        mapper: Mapper[Any],
        *,
        batch_size: int = 500,
        dashboards: Iterable[str] = ALL_DASHBOARDS,
    ) -> None:
        self.engine = engine
        self.dashboards = frozenset(dashboards)
        self.recorder = recorder
        self.mapper = mapper
        self.batch_size = batch_size
        self.handlers: dict[type, Handler] = {
            WorkflowRun.WorkflowInitiated: self._run_initiated,
            WorkflowRun.TaskAdded: self._run_task_added,
            WorkflowStarted: self._ignore,
            WorkflowRun.WorkflowCompleted: self._run_completed,
            WorkflowRun.WorkflowFailed: self._run_failed,
            Task.TaskCreated: self._task_created,
            Task.JobIdAdded: self._job_id_added,
            Task.StatusUpdated: self._status_updated,
            Task.ProgressUpdated: self._progress_updated,
            Task.ResultAdded: self._result_added,
            TaskStarted: self._ignore,
            Task.TaskCompleted: self._task_completed,
            Task.TaskFailed: self._task_failed,
        }

    # --- tables and positions ------------------------------------------------

    def create_tables(self) -> None:
        """Create what is missing; on first contact with a database, note the takeover."""
        try:
            self._create_tables()
        except IntegrityError:
            self._create_tables()  # another process created the same rows first

    def _ready(self) -> bool:
        """Every table is there and marked current: nothing to create or check (two
        queries, where creating with checks costs a reflection query per table and
        index, and a write, on every open of the store)."""
        with self.engine.connect() as conn:
            existing = set(inspect(conn).get_table_names())
            if not {table.name for table in t.metadata.sorted_tables} <= existing:
                return False
            marks = dict(conn.execute(select(t.positions.c.name, t.positions.c.position)).all())
        return (
            marks.get(SCHEMA) == SCHEMA_VERSION
            and marks.get(LAYOUT) == LAYOUT_VERSION
            and PROJECTION_NAME in marks
            and TAKEOVER in marks
        )

    def _create_tables(self) -> None:
        if self._ready():
            return
        newest = self.recorder.max_notification_id() or 0
        with self.engine.begin() as conn:
            existing = set(inspect(conn).get_table_names())
            had_position = t.positions.name in existing
            t.positions.create(conn, checkfirst=True)
            marked = self._get(conn, SCHEMA)
            if marked is not None and marked > SCHEMA_VERSION:
                raise TrackingStoreError(
                    f"the tracking database was written by a newer biomero worker (read-model "
                    f"schema {marked}; this one knows up to {SCHEMA_VERSION}); upgrade this "
                    "worker or point it at another database"
                )
            if marked is None and had_position:
                # Read models of a worker from before the biomero takeover: rebuilt from events.
                for table in reversed(t.OWN_TABLES):
                    table.drop(conn, checkfirst=True)
                self._set(conn, PROJECTION_NAME, 0)
            t.metadata.create_all(conn)
            for table in t.OWN_TABLES:  # indexes added since the table was made
                for index in table.indexes:
                    index.create(conn, checkfirst=True)
            if self._get(conn, PROJECTION_NAME) is None:
                self._set(conn, PROJECTION_NAME, 0)
            if any(table.name not in existing for table in t.TOTALS_TABLES):
                # Read models from before the running totals: counted once from their
                # rows (not from the events), while no batch is being applied.
                self._claim(conn)
                totals.refill(conn)
            if self._get(conn, TAKEOVER) is None:
                # Events already there were projected by biomero's own views.
                self._set(conn, TAKEOVER, newest)
            self._set(conn, SCHEMA, SCHEMA_VERSION)
            self._set(conn, LAYOUT, LAYOUT_VERSION)

    @staticmethod
    def _get(conn: Connection, name: str) -> int | None:
        value = conn.execute(
            select(t.positions.c.position).where(t.positions.c.name == name)
        ).scalar_one_or_none()
        return None if value is None else int(value)

    def _set(self, conn: Connection, name: str, value: int) -> None:
        _upsert(conn, t.positions, {"name": name}, {"position": value})

    def position(self) -> int:
        with self.engine.connect() as conn:
            return self._get(conn, PROJECTION_NAME) or 0

    def takeover(self) -> int:
        with self.engine.connect() as conn:
            return self._get(conn, TAKEOVER) or 0

    def _claim(self, conn: Connection) -> int:
        """Lock the position row for this transaction and return the position."""
        touch = update(t.positions).where(t.positions.c.name == PROJECTION_NAME)
        conn.execute(touch.values(position=t.positions.c.position))
        return self._get(conn, PROJECTION_NAME) or 0

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
                takeover = self._get(conn, TAKEOVER) or 0
                applied, _ = self._apply_next(conn, self._claim(conn), takeover)
            done += applied
            if applied < self.batch_size:
                return done

    def rebuild(self, since: datetime | None = None) -> int:
        """Refill every read model from every event, in one transaction.

        Our own tables are dropped and recreated; the dashboard tables are emptied and
        refilled (their DDL stays, whoever created it), as biomero's "Slurm Init" does.
        With ``since`` (biomero's ``analytics_rebuild_*`` window), the dashboard tables
        are refilled as biomero's listeners replay from the first event at or after
        ``since``: only runs and tasks created from that event on get dashboard rows.
        Our own tables always get every event.
        """
        self.create_tables()
        window = _Window(since)
        with self.engine.begin() as conn:
            self._claim(conn)
            for table in reversed(t.OWN_TABLES):
                table.drop(conn, checkfirst=True)
            for table in t.OWN_TABLES:
                table.create(conn)
            for table in t.DASHBOARD_TABLES:
                conn.execute(delete(table))
            self._move(conn, 0)
            self._set(conn, TAKEOVER, 0)
            position, done = 0, 0
            while True:
                applied, position = self._apply_next(conn, position, 0, window)
                done += applied
                if applied < self.batch_size:
                    return done

    def _apply_next(
        self, conn: Connection, position: int, takeover: int, window: _Window | None = None
    ) -> tuple[int, int]:
        """Apply up to a batch after ``position``; return (how many, new position).

        The rows the batch's events name are read in a few bulk queries, changed in
        memory event by event, and written back once at the end (``_Rows``), all in
        the caller's transaction."""
        notifications = self.recorder.select_notifications(
            start=position, limit=self.batch_size, inclusive_of_start=False
        )
        if not notifications:
            return 0, position
        events = [(n.id, self._decode(n)) for n in notifications]
        rows = _Rows(conn)
        self._preload(rows, [event for _, event in events])
        for notification_id, event in events:
            dash = notification_id > takeover
            if window is not None:
                dash = dash and window.admits(event)
            self.apply(rows, event, dash)
        changes = self._total_changes(rows)
        rows.flush()
        totals.write(conn, changes)
        self._move(conn, notifications[-1].id)
        return len(notifications), notifications[-1].id

    def _decode(self, notification: Notification) -> DomainEventProtocol[Any]:
        if notification.topic not in KNOWN_TOPICS:
            raise TrackingStoreError(
                f"event {notification.id} has topic {notification.topic!r}, which this worker "
                "does not know (written by a newer biomero?); it will not guess what it means"
            )
        return self.mapper.to_domain_event(notification)

    def _preload(self, rows: _Rows, events: list[Any]) -> None:
        """Read the runs, tasks and job rows these events will need, in bulk."""
        task_ids = {str(e.originator_id) for e in events if isinstance(e, TASK_EVENTS)}
        task_ids |= {str(e.task_id) for e in events if isinstance(e, WorkflowRun.TaskAdded)}
        tasks = rows.load(t.tasks, task_ids)
        run_ids = {str(e.originator_id) for e in events if isinstance(e, RUN_EVENTS)}
        run_ids |= {task.run_id for task in tasks}
        run_ids |= {str(e.workflow_id) for e in events if isinstance(e, Task.TaskCreated)}
        rows.load(t.runs, run_ids)
        # The dashboard rows of these tasks and runs, if there: a row read is updated
        # in place when it changes (_Rows.flush), instead of deleted and inserted again.
        if t.task_execution.name in self.dashboards:
            rows.load(t.task_execution, {UUID(task_id) for task_id in task_ids})
        if t.workflow_progress_view.name in self.dashboards:
            rows.load(t.workflow_progress_view, {UUID(run_id) for run_id in run_ids})
        if t.job_progress_view.name in self.dashboards:
            jobs = {task.job_number for task in tasks if task.job_number is not None}
            jobs |= {int(e.job_id) for e in events if isinstance(e, Task.JobIdAdded)}
            rows.load(t.job_progress_view, jobs)

    def _total_changes(self, rows: _Rows) -> totals.Changes:
        """What the batch's changed runs and tasks change in the running totals (read
        before the rows are written: ``rows.stored`` still holds them as they were)."""
        changes = totals.Changes()
        runs_before = rows.stored[t.runs]
        changed_runs = rows.changed.get(t.runs, {})  # (.get: rows.changed is a defaultdict
        changed_tasks = rows.changed.get(t.tasks, {})  # whose every table is flushed)
        new_runs = [key for key in changed_runs if key not in runs_before]
        for key, run in changed_runs.items():
            changes.move(totals.run_parts(runs_before.get(key)), totals.run_parts(run))
        # tasks recorded before their run (none, as the worker and biomero record) count
        # for their owner from the batch their run comes in
        tasks = set(changed_tasks) | self._stored_tasks_of(rows, new_runs)
        for key in tasks:
            task = rows.rows[t.tasks][key]
            run = rows.get(t.runs, task.run_id)
            before = rows.stored[t.tasks].get(key)
            changes.move(
                totals.task_parts(before, runs_before.get(task.run_id)),
                totals.task_parts(task, run),
            )
        return changes

    @staticmethod
    def _stored_tasks_of(rows: _Rows, run_ids: list[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(run_ids), IN_CHUNK):
            chunk = run_ids[start : start + IN_CHUNK]
            query = select(t.tasks.c.task_id).where(t.tasks.c.run_id.in_(chunk))
            found.update(rows.conn.execute(query).scalars())
        rows.load(t.tasks, found)
        return found

    def apply(self, rows: _Rows, domain_event: DomainEventProtocol[Any], dash: bool) -> None:
        handler = self.handlers.get(type(domain_event))
        if handler is not None:
            handler(rows, domain_event, dash)

    # --- state rows and the dashboard rows derived from them ------------------

    def _touch_run(self, rows: _Rows, run_id: str, when: datetime, **values: Any) -> None:
        rows.update(t.runs, run_id, updated_at=naive_utc(when), **values)

    def _write_workflow_progress(self, rows: _Rows, run_id: str) -> None:
        if t.workflow_progress_view.name not in self.dashboards:
            return
        run = rows.get(t.runs, run_id)
        rows.put(
            t.workflow_progress_view,
            workflow_id=UUID(run_id),
            status=run.dash_status,
            progress=run.dash_progress,
            user=run.dash_user,
            group=run.dash_group,
            name=run.wf_name,
            task=run.current_task,
            main_task_name=run.main_task or run.current_task,
            start_time=run.created_at,
        )

    def _write_task_execution(self, rows: _Rows, task_id: str) -> None:
        if t.task_execution.name not in self.dashboards:
            return
        task = rows.get(t.tasks, task_id)
        run = rows.get(t.runs, task.run_id) if task.linked else None
        rows.put(
            t.task_execution,
            task_id=UUID(task_id),
            task_name=task.name,
            task_version=task.version,
            user_id=run.dash_user if run is not None else None,
            group_id=run.dash_group if run is not None else None,
            status=task.dash_status,
            start_time=task.started_at,
            end_time=task.ended_at,
            error_type=task.error if task.state == FAILED else None,
        )

    def _write_job_progress(
        self, rows: _Rows, job: int, status: str | None, progress: Any = ...
    ) -> None:
        """biomero's JobProgress: one row per job number, status and progress kept apart."""
        if t.job_progress_view.name not in self.dashboards:
            return
        row = rows.get(t.job_progress_view, job)
        rows.put(
            t.job_progress_view,
            slurm_job_id=job,
            status=status if status is not None else (row.status if row else "UNKNOWN"),
            progress=(row.progress if row else None) if progress is ... else progress,
        )

    # --- run events ----------------------------------------------------------

    def _ignore(self, rows: _Rows, e: Any, dash: bool) -> None:
        pass

    def _run_initiated(self, rows: _Rows, e: WorkflowRun.WorkflowInitiated, dash: bool) -> None:
        when = naive_utc(e.timestamp)
        ours = getattr(e, "recorded_by", None) == RECORDED_BY
        user, group = e.user, e.group
        if ours:
            values = {
                "workflow": e.workflow,
                "version": e.workflow_version,
                "user_name": e.user_name,
                "omero_user_id": e.omero_user_id,
                "omero_group_id": e.omero_group_id,
                "inputs": json.dumps(e.inputs, sort_keys=True),
                "parameters": json.dumps(e.parameters, sort_keys=True),
                "origin": ORIGIN_WORKER,
            }
        else:
            known = user is not None and user != NO_OMERO_ID
            values = {
                "workflow": e.name,
                "version": "",
                "user_name": upstream_user_name(user),
                "omero_user_id": user if known else None,
                "omero_group_id": group if known and group != NO_OMERO_ID else None,
                "inputs": json.dumps({"description": e.description}),
                "parameters": "{}",
                "origin": ORIGIN_BIOMERO,
            }
        rows.insert(
            t.runs,
            run_id=str(e.originator_id),
            state=REQUESTED,
            step=None,
            created_at=when,
            updated_at=when,
            slurm_job_ids="",
            wf_name=e.name,
            dash_user=user,
            dash_group=group,
            dash_status="INITIALIZING",
            dash_progress="0%",
            **values,
        )
        if dash:
            self._write_workflow_progress(rows, str(e.originator_id))

    def _run_task_added(self, rows: _Rows, e: WorkflowRun.TaskAdded, dash: bool) -> None:
        run_id = str(e.originator_id)
        run = rows.get(t.runs, run_id)
        task = rows.get(t.tasks, str(e.task_id))
        if run is None:
            return
        values: dict[str, Any] = {"state": RUNNING}
        kind = getattr(e, "kind", None) or (task.kind if task is not None else None)
        if kind is not None:
            values["step"] = kind
        if task is not None:
            rows.update(t.tasks, task.task_id, linked=True)
            values["current_task"] = task.name
            if run.main_task is None and not is_infrastructure(task.name):
                values["main_task"] = task.name
                if run.origin == ORIGIN_BIOMERO:
                    values["workflow"] = task.name
                    values["version"] = task.version or ""
        self._touch_run(rows, run_id, e.timestamp, **values)

    def _run_completed(self, rows: _Rows, e: WorkflowRun.WorkflowCompleted, dash: bool) -> None:
        run_id = str(e.originator_id)
        values: dict[str, Any] = {"state": COMPLETED, "ended_at": naive_utc(e.timestamp)}
        location = getattr(e, "result_location", None)
        if location is not None:
            values["result_location"] = location
        self._touch_run(
            rows, run_id, e.timestamp, dash_status="DONE", dash_progress="100%", **values
        )
        if dash and rows.get(t.runs, run_id) is not None:
            self._write_workflow_progress(rows, run_id)

    def _run_failed(self, rows: _Rows, e: WorkflowRun.WorkflowFailed, dash: bool) -> None:
        run_id = str(e.originator_id)
        self._touch_run(
            rows,
            run_id,
            e.timestamp,
            state=CANCELLED if getattr(e, "cancelled", False) else FAILED,
            ended_at=naive_utc(e.timestamp),
            error_type=getattr(e, "error_type", None),
            error=e.error_message,
            dash_status="FAILED",
        )
        if dash and rows.get(t.runs, run_id) is not None:
            self._write_workflow_progress(rows, run_id)

    # --- task events ---------------------------------------------------------

    def _task_created(self, rows: _Rows, e: Task.TaskCreated, dash: bool) -> None:
        task_id = str(e.originator_id)
        version = e.task_version
        rows.insert(
            t.tasks,
            task_id=task_id,
            run_id=str(e.workflow_id),
            kind=getattr(e, "kind", None) or upstream_kind(e.task_name),
            name=e.task_name,
            version=None if version is None else str(version),
            state=STARTED,
            result_locations="[]",
            started_at=naive_utc(e.timestamp),
            linked=False,
            dash_status="CREATED",
        )
        if dash:
            self._write_task_execution(rows, task_id)

    def _job_id_added(self, rows: _Rows, e: Task.JobIdAdded, dash: bool) -> None:
        task = rows.get(t.tasks, str(e.originator_id))
        if task is None:
            return
        ref = getattr(e, "slurm_job_ref", None) or str(e.job_id)
        number = int(e.job_id)
        cluster = getattr(e, "cluster", None)
        rows.update(
            t.tasks,
            task.task_id,
            slurm_job_id=ref,
            job_number=number,
            cluster=cluster,
            job_state=None,
        )
        run = rows.get(t.runs, task.run_id)
        if run is None:
            return
        job_ids = [j for j in run.slurm_job_ids.split(",") if j]
        if ref not in job_ids:
            job_ids.append(ref)
        values: dict[str, Any] = {"slurm_job_ids": ",".join(job_ids)}
        if cluster is not None:
            values["cluster"] = cluster
        self._touch_run(rows, run.run_id, e.timestamp, **values)
        if (
            dash
            and t.job_view.name in self.dashboards
            and task.linked
            and None not in (run.dash_user, run.dash_group)
        ):
            # (biomero's JobAccounting fails on a NULL user: it writes no row then either)
            rows.put(
                t.job_view,
                slurm_job_id=number,
                user=run.dash_user,
                group=run.dash_group,
                task_id=e.originator_id,
            )

    def _status_updated(self, rows: _Rows, e: Task.StatusUpdated, dash: bool) -> None:
        task = rows.get(t.tasks, str(e.originator_id))
        if task is None:
            return
        rows.update(
            t.tasks,
            task.task_id,
            job_state=e.status,
            exit_code=getattr(e, "exit_code", None),
            elapsed_s=getattr(e, "elapsed_s", None),
            max_rss_bytes=getattr(e, "max_rss_bytes", None),
            dash_status=e.status,
        )
        run = rows.get(t.runs, task.run_id)
        if run is not None and task.linked:
            status, progress = workflow_status(task.name, e.status, run.task_progress)
            self._touch_run(
                rows, run.run_id, e.timestamp, dash_status=status, dash_progress=progress
            )
        if not dash:
            return
        self._write_task_execution(rows, task.task_id)
        if task.job_number is not None:
            self._write_job_progress(rows, task.job_number, e.status)
        if run is not None and task.linked:
            self._write_workflow_progress(rows, run.run_id)

    def _progress_updated(self, rows: _Rows, e: Task.ProgressUpdated, dash: bool) -> None:
        task = rows.get(t.tasks, str(e.originator_id))
        if task is None:
            return
        note = getattr(e, "note", None)
        rows.update(t.tasks, task.task_id, progress=note if note is not None else e.progress)
        run = rows.get(t.runs, task.run_id)
        if run is not None and task.linked:
            self._touch_run(rows, run.run_id, e.timestamp, task_progress=e.progress)
        if not dash:
            return
        if task.job_number is not None:
            self._write_job_progress(rows, task.job_number, None, e.progress)
        if run is not None and task.linked:
            self._write_workflow_progress(rows, run.run_id)

    def _result_added(self, rows: _Rows, e: Task.ResultAdded, dash: bool) -> None:
        task = rows.get(t.tasks, str(e.originator_id))
        location = e.result.get("location") if isinstance(e.result, dict) else None
        if task is None or location is None:
            return  # upstream's results are command outputs, not locations
        locations = [*json.loads(task.result_locations), location]
        rows.update(t.tasks, task.task_id, result_locations=json.dumps(locations))
        self._touch_run(rows, task.run_id, e.timestamp)

    def _task_completed(self, rows: _Rows, e: Task.TaskCompleted, dash: bool) -> None:
        self._task_finished(rows, e, dash, COMPLETED, None, None)

    def _task_failed(self, rows: _Rows, e: Task.TaskFailed, dash: bool) -> None:
        self._task_finished(rows, e, dash, FAILED, getattr(e, "error_type", None), e.error_message)

    def _task_finished(
        self,
        rows: _Rows,
        e: Any,
        dash: bool,
        state: str,
        error_type: str | None,
        message: str | None,
    ) -> None:
        task = rows.get(t.tasks, str(e.originator_id))
        if task is None:
            return
        rows.update(
            t.tasks,
            task.task_id,
            state=state,
            ended_at=naive_utc(e.timestamp),
            error_type=error_type,
            error=message,
        )
        self._touch_run(rows, task.run_id, e.timestamp)
        if dash:
            self._write_task_execution(rows, task.task_id)


class _Row(dict[str, Any]):
    """A read-model row held by a batch; its columns read as attributes."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


IN_CHUNK = 500  # keys per IN (...) list


class _Rows:
    """The read-model rows one batch reads and writes.

    Rows are read once (in bulk by ``load``, else one by one on first use), changed in
    memory event by event, and written back by ``flush``: on PostgreSQL, the rows that
    were read get their changed columns in one UPDATE per set of changed columns, and
    the new rows one multi-row INSERT (a dashboard row that was not read is deleted by
    key first); elsewhere, per table one DELETE of the changed rows that were there and
    one multi-row INSERT of their new contents. So a batch costs a handful of statements
    however many events it holds, and a row that several events of the batch change is
    written once. The result equals applying
    the events one at a time: each table is keyed by one column, every write of a
    dashboard row gives all its columns (biomero's upserts), and an update of a row
    that is not there changes nothing, as an UPDATE would. Inserting a run or task
    that is already stored still fails (the INSERT hits its primary key)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.rows: dict[Table, dict[Any, _Row | None]] = defaultdict(dict)
        # the rows read from the table, as read (their keys: the rows that are there)
        self.stored: dict[Table, dict[Any, dict[str, Any]]] = defaultdict(dict)
        self.changed: dict[Table, dict[Any, _Row]] = defaultdict(dict)
        # PostgreSQL with psycopg2: a stored row is updated in place, its changed columns only
        self.in_place = conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg2"

    @staticmethod
    def _key(table: Table) -> Column[Any]:
        (column,) = table.primary_key.columns
        return column

    def load(self, table: Table, keys: Iterable[Any]) -> list[_Row]:
        """Read the rows with these keys (those not read yet); return the ones found."""
        key = self._key(table)
        known = self.rows[table]
        wanted = [k for k in set(keys) if k not in known]
        for start in range(0, len(wanted), IN_CHUNK):
            chunk = wanted[start : start + IN_CHUNK]
            for found in self.conn.execute(select(table).where(key.in_(chunk))):
                row = _Row(found._mapping)
                known[row[key.name]] = row
                self.stored[table][row[key.name]] = dict(row)
            for k in chunk:
                known.setdefault(k, None)
        return [row for k in set(keys) if (row := known.get(k)) is not None]

    def get(self, table: Table, key: Any) -> _Row | None:
        if key not in self.rows[table]:
            self.load(table, [key])
        return self.rows[table][key]

    def insert(self, table: Table, **values: Any) -> None:
        row = _Row({column.name: None for column in table.columns})
        row.update(values)
        key = row[self._key(table).name]
        self.rows[table][key] = self.changed[table][key] = row

    def update(self, table: Table, key: Any, **values: Any) -> None:
        row = self.get(table, key)
        if row is not None:
            row.update(values)
            self.changed[table][key] = row

    def put(self, table: Table, **values: Any) -> None:
        """Insert or replace the row (every column given: biomero's view upserts)."""
        key = values[self._key(table).name]
        row = self.rows[table].get(key)
        if row is None:
            self.insert(table, **values)
        else:
            row.update(values)
            self.changed[table][key] = row

    def flush(self) -> None:
        for table, changed in self.changed.items():
            key = self._key(table)
            stored = self.stored[table]
            if self.in_place:
                self._update_in_place(table, {k: r for k, r in changed.items() if k in stored})
                changed = {k: r for k, r in changed.items() if k not in stored}
                if not changed:
                    continue
            # A dashboard row may be there without having been read: replace by key.
            if table.name in DASHBOARD_NAMES:
                replaced = list(changed)
            else:
                replaced = [k for k in changed if k in stored]
            for start in range(0, len(replaced), IN_CHUNK):
                chunk = replaced[start : start + IN_CHUNK]
                self.conn.execute(delete(table).where(key.in_(chunk)))
            self.conn.execute(insert(table), [dict(row) for row in changed.values()])
        for table, changed in self.changed.items():
            for k, row in changed.items():
                self.stored[table][k] = dict(row)
        self.changed.clear()

    def _update_in_place(self, table: Table, rows: dict[Any, _Row]) -> None:
        """Write the columns that changed in rows that are stored: per set of changed
        columns, one ``UPDATE ... FROM (VALUES ...)`` a chunk (PostgreSQL). Rewriting the
        whole row (DELETE and INSERT) sends every column of every row and adds an entry
        to each index; a poll's status change touches a few columns of five rows."""
        groups = changed_columns(table, rows, self.stored[table])
        if not groups:
            return
        dialect = self.conn.dialect
        quote = dialect.identifier_preparer.quote
        key = self._key(table)
        cursor = self.conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            for columns, keys in groups.items():
                names = [key.name, *columns]
                processors = [
                    table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
                    for name in names
                ]
                casts = {
                    name: f"CAST(v.{quote(name)} AS {table.c[name].type.compile(dialect)})"
                    for name in names
                }
                # Names and types from our table definitions (quoted), values as parameters.
                statement = (
                    f"UPDATE {dialect.identifier_preparer.format_table(table)} AS t SET "  # noqa: S608
                    + ", ".join(f"{quote(name)} = {casts[name]}" for name in columns)
                    + f" FROM (VALUES %s) AS v ({', '.join(quote(n) for n in names)})"
                    + f" WHERE t.{quote(key.name)} = {casts[key.name]}"
                )
                values = [
                    tuple(
                        value if process is None or value is None else process(value)
                        for process, value in zip(
                            processors, (rows[k][name] for name in names), strict=True
                        )
                    )
                    for k in keys
                ]
                try:
                    execute_values(cursor, statement, values, page_size=IN_CHUNK)
                except psycopg2.Error as exc:  # as SQLAlchemy raises it (store_errors)
                    raise DBAPIError.instance(statement, None, exc, psycopg2.Error) from exc
        finally:
            cursor.close()


def changed_columns(
    table: Table, rows: dict[Any, _Row], stored: dict[Any, dict[str, Any]]
) -> dict[tuple[str, ...], list[Any]]:
    """The keys of ``rows`` by the columns (in table order) that differ from their
    ``stored`` contents; rows with nothing changed are left out."""
    groups: dict[tuple[str, ...], list[Any]] = defaultdict(list)
    names = [column.name for column in table.columns if not column.primary_key]
    for k, row in rows.items():
        before = stored[k]
        columns = tuple(name for name in names if row[name] != before[name])
        if columns:
            groups[columns].append(k)
    return dict(groups)


class _Window:
    """biomero's rebuild window: its listeners replay from the first event at or after
    the cutoff, so runs and tasks created before that event are unknown to them and
    get no dashboard rows (events of theirs inside the window are skipped too)."""

    def __init__(self, since: datetime | None) -> None:
        self.since = None if since is None else naive_utc(since)
        self.open = since is None
        self.known: set[Any] = set()

    def admits(self, event: Any) -> bool:
        if self.since is None:
            return True
        if not self.open and naive_utc(event.timestamp) >= self.since:
            self.open = True
        if not self.open:
            return False
        if isinstance(event, WorkflowRun.WorkflowInitiated | Task.TaskCreated):
            self.known.add(event.originator_id)
        return event.originator_id in self.known
