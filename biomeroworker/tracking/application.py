"""The tracking service: use cases the supervisor, scripts and CLI call.

Commands load an aggregate, ask it to change, and save. Two processes that change
the same aggregate at once collide on its next version number; the loser reloads
and retries, so no event is lost. After each command the read models catch up
(the projection is idempotent, so any process may run it). Ids cross this API as
strings and answers as plain dicts; the ``*_record(s)`` queries give the same answers
as typed, read-only ``RunRecord``s (biomeroworker.run_record) for code that acts on runs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import RecordConflictError
from eventsourcing.utils import TopicError

from biomeroworker import __version__
from biomeroworker.redaction import redact as redact_secrets
from biomeroworker.run_record import RunRecord
from biomeroworker.tracking import analytics, queries, takeover
from biomeroworker.tracking.domain import STEP_TASK_NAMES, TASK_KINDS, Task, WorkflowRun
from biomeroworker.tracking.errors import (
    TrackingStoreError,
    UnknownRunError,
    UnknownTaskError,
)
from biomeroworker.tracking.projection import ALL_DASHBOARDS, Projector, dashboard_tables
from biomeroworker.tracking.store import (
    parse_url,
    redact,
    remember_url_password,
    resolve_url,
    store_errors,
)

if TYPE_CHECKING:
    from biomeroworker.config import AnalyticsSettings

log = logging.getLogger(__name__)

SNAPSHOT_EVERY = 20
CONFLICT_ATTEMPTS = 20
CONFLICT_BACKOFF_S = 0.005
CACHE_SIZE = 5000  # aggregates kept between batches (_Fresh)
REFRESH_PAGE = 1000
REFRESH_PAGES = 5

A = TypeVar("A", bound=Aggregate)


@dataclass(frozen=True)
class _Step:
    """One command of a batch, kept to run again after a version conflict."""

    kind: type[Aggregate]
    aggregate_id: UUID
    command: Callable[[Any], bool] | None
    before: Callable[[], list[Any]] | None = None


@dataclass
class _Batch:
    """What a batch's commands changed (their aggregates and events, in order), and
    every aggregate it read (changed or not), to keep after it commits."""

    steps: list[_Step] = field(default_factory=list)
    aggregates: dict[UUID, Aggregate] = field(default_factory=dict)
    events: list[Any] = field(default_factory=list)
    read: dict[UUID, Aggregate] = field(default_factory=dict)

    def clear(self) -> None:
        self.steps, self.aggregates, self.events, self.read = [], {}, [], {}


class _Fresh:
    """The aggregates this tracker loaded or saved, kept as fresh as the store.

    Before each batch, ``refresh`` reads the notification log past the last id it saw
    (one query, the same log the projection reads, committed in id order) and forgets
    every kept aggregate that another writer has changed since. So a command works on
    the state the store had when its batch began, as it would after loading the
    aggregate from the store, without two queries per aggregate. A batch takes the
    aggregates it uses out of the cache and puts back only what it saved. Bounded: the
    least recently used go first, and a log that ran far ahead empties the cache."""

    def __init__(self, app: Application[UUID], size: int = CACHE_SIZE) -> None:
        self.app = app
        self.size = size
        self.kept: OrderedDict[UUID, Aggregate] = OrderedDict()
        self.seen: int | None = None
        # The supervisor's step threads and its loop share one tracker.
        self.lock = threading.Lock()

    def refresh(self) -> None:
        with self.lock:
            self._refresh()

    def _refresh(self) -> None:
        recorder = self.app.recorder
        if self.seen is None or not self.kept:
            self.kept.clear()
            self.seen = recorder.max_notification_id() or 0
            return
        if recorder.max_notification_id() == self.seen:
            return  # nobody wrote since: nothing to read
        for _ in range(REFRESH_PAGES):
            notes = recorder.select_notifications(  # type: ignore[attr-defined]
                start=self.seen, limit=REFRESH_PAGE, inclusive_of_start=False
            )
            for note in notes:
                kept = self.kept.get(UUID(str(note.originator_id)))
                if kept is not None and note.originator_version > kept.version:
                    del self.kept[kept.id]
            if notes:
                self.seen = notes[-1].id
            if len(notes) < REFRESH_PAGE:
                return
        self.seen = None  # far behind: start afresh
        self._refresh()

    def saved(self, notification_ids: list[int]) -> None:
        """Our own batch got these ids: when they follow the last id seen without a gap,
        nobody else wrote in between (ids are taken and committed in order under the
        table lock) and there is nothing to read back."""
        with self.lock:
            if self.seen is not None and notification_ids == list(
                range(self.seen + 1, self.seen + 1 + len(notification_ids))
            ):
                self.seen = notification_ids[-1]

    def take(self, aggregate_id: UUID) -> Aggregate | None:
        """The kept aggregate, out of the cache: a batch that fails (an exception, a
        conflict) leaves it out, changed or not; one that commits puts it back."""
        with self.lock:
            return self.kept.pop(aggregate_id, None)

    def keep(self, aggregates: Iterable[Aggregate]) -> None:
        with self.lock:
            for aggregate in aggregates:
                kept = self.kept.get(aggregate.id)
                if kept is not None and kept.version > aggregate.version:
                    continue  # another thread saved a newer one meanwhile
                self.kept[aggregate.id] = aggregate
                self.kept.move_to_end(aggregate.id)
            while len(self.kept) > self.size:
                self.kept.popitem(last=False)

    def forget(self, ids: Iterable[UUID]) -> None:
        with self.lock:
            for aggregate_id in ids:
                self.kept.pop(aggregate_id, None)


class TrackingApp(Application[UUID]):
    """The event store. Its name prefixes the tables: workflowtracker_events (biomero's
    own table, shared with its history) and workflowtracker_snapshots (ours only)."""

    name = "WorkflowTracker"
    snapshotting_intervals = {WorkflowRun: SNAPSHOT_EVERY, Task: SNAPSHOT_EVERY}  # noqa: RUF012


def app_env(url: str) -> dict[str, str]:
    """Environment for TrackingApp; keys also set with the app's prefix so they win."""
    base = {
        "PERSISTENCE_MODULE": "eventsourcing_sqlalchemy",
        "SQLALCHEMY_URL": url,
        "CREATE_TABLE": "y",
    }
    prefix = TrackingApp.name.upper() + "_"
    return {**base, **{prefix + key: value for key, value in base.items()}}


def _uuid(value: str | UUID, error: type[Exception], what: str) -> UUID:
    if isinstance(value, UUID):
        return value
    try:
        return UUID(str(value))
    except ValueError:
        raise error(f"{what} {value!r} is not a valid id") from None


def dashboards_of(analytics: AnalyticsSettings) -> frozenset[str]:
    """The dashboard tables ``[ANALYTICS] enable_*`` leave on (as biomero's listeners)."""
    return dashboard_tables(
        job_accounting=analytics.enable_job_accounting,
        job_progress=analytics.enable_job_progress,
        workflow_analytics=analytics.enable_workflow_analytics,
    )


def rebuild_since(analytics: AnalyticsSettings, now: datetime | None = None) -> datetime | None:
    """biomero's rebuild cutoff: ``analytics_rebuild_days_ago`` days before now, else
    midnight UTC of ``analytics_rebuild_start_time``, else None (the whole history)."""
    if analytics.analytics_rebuild_days_ago is not None:
        now = now or datetime.now(UTC)
        return now - timedelta(days=analytics.analytics_rebuild_days_ago)
    day = analytics.analytics_rebuild_start_time
    if day is not None:
        return datetime(day.year, day.month, day.day, tzinfo=UTC)
    return None


class Tracker:
    """Record what happens to workflow runs; answer what users and admins ask."""

    @classmethod
    def configured(cls, analytics: AnalyticsSettings | None, **kwargs: Any) -> Tracker:
        """The tracker [ANALYTICS] describes (store URL, dashboard switches); None: defaults."""
        if analytics is None:
            return cls(**kwargs)
        return cls(
            settings_url=analytics.sqlalchemy_url, dashboards=dashboards_of(analytics), **kwargs
        )

    def __init__(
        self,
        url: str | None = None,
        *,
        settings_url: str | None = None,
        project: bool = True,
        dashboards: Iterable[str] = ALL_DASHBOARDS,
    ) -> None:
        self.url = resolve_url(url, settings_url=settings_url)
        remember_url_password(self.url)
        parse_url(self.url)
        self.project_after_commands = project
        log.debug("tracking store %s", redact(self.url))
        with store_errors(self.url, "opening the event store"):
            self._app = TrackingApp(env=app_env(self.url))
            engine = self._app.recorder.datastore.engine  # type: ignore[attr-defined]
            reason = takeover.refusal(engine)
            if reason is not None:
                self._app.close()
                engine.dispose()
                raise TrackingStoreError(
                    f"tracking database {redact(self.url)} cannot be shared: {reason}"
                )
            self._projector = Projector(
                engine, self._app.recorder, self._app.mapper, dashboards=dashboards
            )
            self._projector.create_tables()
        self._engine = engine
        self._local = threading.local()  # each thread's open batch
        self._fresh = _Fresh(self._app)

    @property
    def engine(self):  # type: ignore[no-untyped-def]
        """The SQLAlchemy engine of the store, for tables that live beside it (leases)."""
        return self._engine

    @property
    def dashboards(self) -> frozenset[str]:
        """The dashboard tables this tracker writes ([ANALYTICS] enable_*)."""
        return self._projector.dashboards

    def use_dashboards(self, dashboards: Iterable[str]) -> None:
        """Write these dashboard tables from now on (a reloaded config's switches)."""
        self._projector.dashboards = frozenset(dashboards)

    def close(self) -> None:
        self._app.close()
        self._engine.dispose()

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- commands --------------------------------------------------------------

    def record_run_requested(
        self,
        *,
        workflow: str,
        version: str,
        user_name: str,
        inputs: Mapping[str, Any] | None = None,
        parameters: Mapping[str, Any] | None = None,
        omero_user_id: int | None = None,
        omero_group_id: int | None = None,
    ) -> str:
        run_id = uuid4()  # the same id if a conflict runs the batch again

        def request() -> list[Any]:
            return [
                WorkflowRun.request(
                    run_id=run_id,
                    workflow=workflow,
                    workflow_version=version,
                    user_name=user_name,
                    omero_user_id=omero_user_id,
                    omero_group_id=omero_group_id,
                    inputs=dict(inputs or {}),
                    parameters=dict(parameters or {}),
                )
            ]

        self._change(WorkflowRun, run_id, None, before=request)
        return str(run_id)

    def start_task(
        self,
        run_id: str | UUID,
        kind: str,
        *,
        name: str | None = None,
        version: str | None = None,
    ) -> str:
        """Start a step of a run; return the new task's id.

        Its dashboard name and version default to upstream's: the workflow and its version
        for the job, the upstream script of that step for the others (STEP_TASK_NAMES).
        """
        if kind not in TASK_KINDS:
            raise ValueError(f"task kind must be one of {', '.join(TASK_KINDS)}, not {kind!r}")
        run_uuid = _uuid(run_id, UnknownRunError, "run")
        task_id = uuid4()  # the same id if a conflict runs the command again
        created: list[Task] = []

        def add(run: WorkflowRun) -> bool:
            if kind == "job":
                task_name, task_version = run.workflow, run.workflow_version
            else:
                task_name, task_version = STEP_TASK_NAMES[kind], __version__
            task = Task.start(
                task_id=task_id,
                run_id=run.id,
                kind=kind,
                name=name or task_name,
                version=version if version is not None else task_version,
            )
            run.add_task(task.id, kind)
            created[:] = [task]
            return True

        # The task is saved before the run: biomero's views link a task to its run only
        # when the run's TaskAdded follows the task's TaskCreated.
        self._change(WorkflowRun, run_uuid, add, before=lambda: created)
        return str(created[0].id)

    def record_job_submitted(self, task_id: str | UUID, job_id: str, cluster: str) -> bool:
        return self._change_task(task_id, lambda task: task.submit_job(str(job_id), cluster))

    def record_job_status(
        self,
        task_id: str | UUID,
        state: str,
        exit_code: int | None = None,
        elapsed_s: float | None = None,
        max_rss_bytes: int | None = None,
    ) -> bool:
        """Record a poll's view of the job; False (and nothing written) if nothing is new."""
        return self._change_task(
            task_id,
            lambda task: task.update_job_status(state, exit_code, elapsed_s, max_rss_bytes),
        )

    def record_progress(self, task_id: str | UUID, progress: str) -> bool:
        progress = redact_secrets(progress)
        return self._change_task(task_id, lambda task: task.update_progress(progress))

    def record_result(self, task_id: str | UUID, location: str) -> bool:
        return self._change_task(task_id, lambda task: task.add_result(location))

    def complete_task(self, task_id: str | UUID) -> bool:
        return self._change_task(task_id, lambda task: task.complete())

    def fail_task(self, task_id: str | UUID, error_type: str, message: str) -> bool:
        message = redact_secrets(message)
        return self._change_task(task_id, lambda task: task.fail(error_type, message))

    def complete_run(self, run_id: str | UUID, result_location: str | None = None) -> bool:
        return self._change_run(run_id, lambda run: run.complete(result_location))

    def fail_run(self, run_id: str | UUID, error_type: str, message: str) -> bool:
        message = redact_secrets(message)
        return self._change_run(run_id, lambda run: run.fail(error_type, message))

    def cancel_run(self, run_id: str | UUID, reason: str = "") -> bool:
        reason = redact_secrets(reason)
        return self._change_run(run_id, lambda run: run.cancel(reason))

    # --- queries ---------------------------------------------------------------

    def get_run(self, run_ref: str | UUID) -> dict[str, Any]:
        """The run (by id or unique id prefix) with its tasks, as a plain dict."""
        self.project()
        with store_errors(self.url, "reading a run"), self._engine.connect() as conn:
            return queries.get_run(conn, queries.find_run_id(conn, str(run_ref)))

    def list_runs(
        self, user: str | None = None, limit: int | None = None, after: str | None = None
    ) -> list[dict[str, Any]]:
        """Newest first; only ``user``'s runs when given; with ``after`` (a run id, the
        last of the previous page) the page that follows it (``queries.list_runs``)."""
        self.project()
        with store_errors(self.url, "listing runs"), self._engine.connect() as conn:
            return queries.list_runs(conn, user=user, limit=limit, after=after)

    def iter_runs(
        self, user: str | None = None, after: str | None = None, page: int = 1000
    ) -> Iterator[dict[str, Any]]:
        """Every run (after ``after``), newest first, ``page`` runs at a time."""
        while True:
            runs = self.list_runs(user=user, limit=page, after=after)
            yield from runs
            if len(runs) < page:
                return
            after = runs[-1]["run_id"]

    def active_runs(self) -> list[dict[str, Any]]:
        """Runs not yet finished, oldest first (the order the supervisor admits them)."""
        self.project()
        with store_errors(self.url, "listing active runs"), self._engine.connect() as conn:
            return queries.active_runs(conn)

    def run_record(self, run_ref: str | UUID) -> RunRecord:
        """``get_run`` as the typed, read-only record the worker acts on."""
        return RunRecord.from_row(self.get_run(run_ref))

    def run_records(self, user: str | None = None, limit: int | None = None) -> list[RunRecord]:
        """``list_runs`` as records (without their tasks)."""
        return [RunRecord.from_row(row) for row in self.list_runs(user, limit)]

    def active_run_records(self) -> list[RunRecord]:
        """``active_runs`` as records, with their tasks."""
        return [RunRecord.from_row(row) for row in self.active_runs()]

    def count_runs(self, user: str | None = None) -> int:
        self.project()
        with store_errors(self.url, "counting runs"), self._engine.connect() as conn:
            return queries.count_runs(conn, user=user)

    def stats(
        self,
        *,
        user: str | None = None,
        period: str = "month",
        since: datetime | None = None,
    ) -> dict[str, Any]:
        self.project()
        with store_errors(self.url, "computing statistics"), self._engine.connect() as conn:
            return analytics.compute_stats(conn, user=user, period=period, since=since)

    # --- projection --------------------------------------------------------------

    def project(self) -> int:
        """Bring the read models up to date; return how many events were applied."""
        with store_errors(self.url, "updating the read models"):
            return self._projector.catch_up()

    def rebuild(self, since: datetime | None = None) -> int:
        """Recreate the read models from every event; return how many were replayed.
        With ``since``, the dashboard tables get only what biomero's rebuild window
        gives them (``Projector.rebuild``)."""
        with store_errors(self.url, "rebuilding the read models"):
            return self._projector.rebuild(since)

    # --- internals ---------------------------------------------------------------

    def _catch_up_after_commit(self) -> None:
        """The read models' catch-up after a batch committed (when the tracker projects
        after commands). Its events are recorded whatever happens here: a failing
        catch-up is logged, not raised, or the caller would take a recorded batch for a
        lost one and do its work again. Every read catches up first, so the read models
        miss nothing (and a read raises if the database is still failing)."""
        if not self.project_after_commands:
            return
        try:
            self.project()
        except TrackingStoreError as exc:
            log.warning("changes recorded; the read models will catch up on the next read: %s", exc)

    def _change_task(self, task_id: str | UUID, command: Callable[[Task], bool]) -> bool:
        return self._change(Task, _uuid(task_id, UnknownTaskError, "task"), command)

    def _change_run(self, run_id: str | UUID, command: Callable[[WorkflowRun], bool]) -> bool:
        return self._change(WorkflowRun, _uuid(run_id, UnknownRunError, "run"), command)

    @property
    def _batch(self) -> _Batch | None:
        return getattr(self._local, "batch", None)

    @_batch.setter
    def _batch(self, batch: _Batch | None) -> None:
        self._local.batch = batch

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Record the commands run inside as one transaction.

        Every aggregate they change is saved by one ``Application.save`` (one insert
        of all their events, in the order the commands ran, and one commit), and the
        read models catch up once at the end: a poll cycle that records the news of
        many jobs pays for one commit instead of one per job. Commands inside return
        what they would if the batch committed first; a version conflict at the end
        reloads the aggregates and runs the batch's commands again, as a single
        command does. An exception inside discards the whole batch: nothing of it is
        recorded. Batches do not nest: an inner ``batch()`` joins the outer one. Each
        thread has its own: the commands of another thread are not part of it.
        """
        if self._batch is not None:
            yield
            return
        with store_errors(self.url, "reading the notification log"):
            self._fresh.refresh()
        self._batch = _Batch()
        try:
            yield
            batch = self._batch
            self._commit(batch)
        finally:
            self._batch = None
        self._fresh.keep([*batch.read.values(), *batch.aggregates.values()])
        if batch.steps:
            self._catch_up_after_commit()

    def _change(
        self,
        kind: type[A],
        aggregate_id: UUID,
        command: Callable[[A], bool] | None,
        before: Callable[[], list[Any]] | None = None,
    ) -> bool:
        """Load, command, save (at the end of the batch: ``batch``). A command outside
        a batch is a batch of its own, and answers after its commit."""
        if self._batch is None:
            with self.batch():
                self._change(kind, aggregate_id, command, before)
                batch = self._batch
            return bool(batch and batch.steps)
        with store_errors(self.url, f"recording a {kind.__name__} change"):
            return self._step(self._batch, _Step(kind, aggregate_id, command, before))

    def _step(self, batch: _Batch, step: _Step) -> bool:
        """Run one command on the batch's copy of its aggregate; keep its events.
        ``before`` gives aggregates the command created, saved before it (a new run
        without a command)."""
        changed: list[Any] = []
        if step.command is not None:
            aggregate = batch.aggregates.get(step.aggregate_id) or batch.read.get(step.aggregate_id)
            if aggregate is None:
                aggregate = self._fresh.take(step.aggregate_id)
                if aggregate is None:
                    aggregate = self._load(step.kind, step.aggregate_id)
                else:
                    self._check_kind(step.kind, step.aggregate_id, aggregate)
                batch.read[step.aggregate_id] = aggregate
            if not step.command(aggregate):
                return False
            changed.append(aggregate)
        if step.before is not None:
            changed[:0] = step.before()
        for obj in changed:
            batch.aggregates[obj.id] = obj
            batch.events.extend(obj.collect_events())
        batch.steps.append(step)
        return True

    def _commit(self, batch: _Batch) -> None:
        """Save the batch; on a version conflict reload and run its commands again."""
        with store_errors(self.url, "recording changes"):
            for attempt in range(1, CONFLICT_ATTEMPTS + 1):
                if not batch.steps:
                    return
                try:
                    # the events in command order (a new task before its run's
                    # TaskAdded), then the aggregates, for snapshots
                    recordings = self._app.save(*batch.events, *batch.aggregates.values())
                    self._fresh.saved([r.notification.id for r in recordings])
                    return
                except RecordConflictError:
                    log.debug("changed concurrently; retry %d", attempt)
                    if attempt == CONFLICT_ATTEMPTS:
                        raise TrackingStoreError(
                            f"still conflicting after {attempt} attempts; too many "
                            "concurrent writers"
                        ) from None
                    time.sleep(CONFLICT_BACKOFF_S * attempt)
                    self._fresh.forget([*batch.read, *batch.aggregates])
                    steps = batch.steps
                    batch.clear()
                    for step in steps:
                        self._step(batch, step)

    def _load(self, kind: type[A], aggregate_id: UUID) -> A:
        missing = UnknownRunError if kind is WorkflowRun else UnknownTaskError
        try:
            aggregate = self._app.repository.get(aggregate_id)
        except AggregateNotFoundError:
            raise missing(f"no {kind.__name__} with id {aggregate_id}") from None
        except TopicError:
            # Upstream's aggregates (biomero.eventsourcing:WorkflowRun) are not ours to load.
            raise missing(
                f"{kind.__name__} {aggregate_id} was recorded by biomero 2.x: read-only history"
            ) from None
        return self._check_kind(kind, aggregate_id, aggregate)

    @staticmethod
    def _check_kind(kind: type[A], aggregate_id: UUID, aggregate: Any) -> A:
        if not isinstance(aggregate, kind):
            missing = UnknownRunError if kind is WorkflowRun else UnknownTaskError
            raise missing(f"{aggregate_id} is a {type(aggregate).__name__}, not a {kind.__name__}")
        return aggregate
