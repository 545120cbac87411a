"""The tracked things: a workflow run and its tasks, as event-sourced aggregates.

The events are biomero 2.x's own (``biomero.eventsourcing:WorkflowRun.WorkflowInitiated``,
``...:Task.StatusUpdated``...): every class below declares upstream's topic as its
``TOPIC``, carries upstream's fields with upstream's meaning, and adds ours beside them.
So one ``workflowtracker_events`` table holds biomero's history and our runs; biomero's
own tracker (after a rollback) reads ours as its own, and upstream's stored events load
into these classes (fields we add are then absent: read them with ``getattr``).
docs/tracking.md has the field-by-field mapping.

Command methods compare before they trigger: a command that would change nothing
returns False and records nothing, so a poll that sees no news writes no event.
This module knows nothing of SSH, Slurm commands or the database.
"""

from __future__ import annotations

import re
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.utils import get_topic

from biomeroworker import __version__
from biomeroworker.tracking.errors import (
    NoJobSubmittedError,
    RunFinishedError,
    TaskFinishedError,
)

TASK_KINDS: tuple[str, ...] = ("export", "stage_up", "convert", "job", "stage_down", "import")

UPSTREAM = "biomero.eventsourcing"
RECORDED_BY = "biomeroworker"

# Upstream's own value for "no OMERO user/group" (biomero's SlurmClient.run_workflow
# initiates library runs with user=-1, group=-1). biomero_job_view.user/group are NOT NULL.
NO_OMERO_ID = -1

# The dashboard name of each step: the workflow for the job (its version beside it), and
# for the others the script upstream runs for that step, so the dashboards' cards that
# leave infrastructure out (their NOT IN list) leave ours out too.
STEP_TASK_NAMES: dict[str, str] = {
    "export": "_SLURM_Image_Transfer.py",
    "stage_up": "_SLURM_Image_Transfer.py",
    "convert": "CONVERT_ZARR_TO_TIFF",
    "stage_down": "SLURM_Get_Results.py",
    "import": "SLURM_Get_Results.py",
}

# Run states
REQUESTED = "REQUESTED"
RUNNING = "RUNNING"
COMPLETED = "COMPLETED"
FAILED = "FAILED"
CANCELLED = "CANCELLED"
RUN_FINISHED = frozenset({COMPLETED, FAILED, CANCELLED})

# Task states (the Slurm job state is kept apart, in ``job_state``)
STARTED = "STARTED"
TASK_FINISHED = frozenset({COMPLETED, FAILED})

# Slurm states after which sacct's accounting (Elapsed, MaxRSS) no longer grows.
# https://slurm.schedmd.com/sacct.html#SECTION_JOB-STATE-CODES
SLURM_FINAL_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "TIMEOUT",
    }
)

_PERCENT = re.compile(r"\d{1,3}%")
_FRACTION = re.compile(r"(\d+)/(\d+)")
_JOB_NUMBER = re.compile(r"\d+")


def dashboard_progress(text: str | None) -> str | None:
    """The ``NN%`` upstream's views expect (they parse it with int()), or None.

    "3/4" becomes "75%"; any other text (a note) has no percentage.
    """
    if text is None:
        return None
    text = text.strip()
    if _PERCENT.fullmatch(text):
        return text
    fraction = _FRACTION.fullmatch(text)
    if fraction and int(fraction.group(2)) > 0:
        done, total = int(fraction.group(1)), int(fraction.group(2))
        return f"{min(100, round(100 * done / total))}%"
    return None


def job_number(job_id: str) -> int:
    """The integer upstream records for a job id: "123" and "123_4" (array) give 123."""
    found = _JOB_NUMBER.match(job_id.strip())
    return int(found.group()) if found else NO_OMERO_ID


class WorkflowRun(Aggregate):
    """One request to run a workflow on some inputs, from request to result."""

    class WorkflowInitiated(Aggregate.Created):
        TOPIC = f"{UPSTREAM}:WorkflowRun.WorkflowInitiated"
        # upstream: what biomero's views show
        name: str
        description: str
        user: int
        group: int
        # ours
        workflow: str
        workflow_version: str
        user_name: str
        omero_user_id: int | None
        omero_group_id: int | None
        inputs: dict[str, Any]
        parameters: dict[str, Any]
        recorded_by: str

    class TaskAdded(Aggregate.Event):
        TOPIC = f"{UPSTREAM}:WorkflowRun.TaskAdded"
        task_id: UUID
        kind: str

        def apply(self, run: WorkflowRun) -> None:
            run.task_ids.append(self.task_id)
            run.step = self.kind
            run.state = RUNNING

    class WorkflowCompleted(Aggregate.Event):
        TOPIC = f"{UPSTREAM}:WorkflowRun.WorkflowCompleted"
        result_location: str | None

        def apply(self, run: WorkflowRun) -> None:
            run.state = COMPLETED
            run.result_location = self.result_location

    class WorkflowFailed(Aggregate.Event):
        """Failed or cancelled (upstream has no cancel; biomero shows it as FAILED)."""

        TOPIC = f"{UPSTREAM}:WorkflowRun.WorkflowFailed"
        error_message: str
        error_type: str
        cancelled: bool

        def apply(self, run: WorkflowRun) -> None:
            run.state = CANCELLED if self.cancelled else FAILED
            run.error_type = self.error_type
            run.error_message = self.error_message

    def __init__(
        self,
        *,
        workflow: str,
        workflow_version: str,
        user_name: str,
        omero_user_id: int | None,
        omero_group_id: int | None,
        inputs: dict[str, Any],
        parameters: dict[str, Any],
        **_upstream: Any,
    ) -> None:
        self.workflow = workflow
        self.workflow_version = workflow_version
        self.user_name = user_name
        self.omero_user_id = omero_user_id
        self.omero_group_id = omero_group_id
        self.inputs = inputs
        self.parameters = parameters
        self.state = REQUESTED
        self.step: str | None = None
        self.task_ids: list[UUID] = []
        self.error_type: str | None = None
        self.error_message: str | None = None
        self.result_location: str | None = None

    @classmethod
    def request(
        cls,
        *,
        workflow: str,
        workflow_version: str,
        user_name: str,
        omero_user_id: int | None,
        omero_group_id: int | None,
        inputs: dict[str, Any],
        parameters: dict[str, Any],
        run_id: UUID | None = None,
    ) -> WorkflowRun:
        return cls._create(
            cls.WorkflowInitiated,
            id=run_id,
            name=workflow,
            description=f"{workflow} {workflow_version} (biomero worker {__version__})",
            user=NO_OMERO_ID if omero_user_id is None else omero_user_id,
            group=NO_OMERO_ID if omero_group_id is None else omero_group_id,
            workflow=workflow,
            workflow_version=workflow_version,
            user_name=user_name,
            omero_user_id=omero_user_id,
            omero_group_id=omero_group_id,
            inputs=inputs,
            parameters=parameters,
            recorded_by=RECORDED_BY,
        )

    def check_active(self) -> None:
        if self.state in RUN_FINISHED:
            raise RunFinishedError(f"run {self.id} is {self.state.lower()} and cannot change")

    def add_task(self, task_id: UUID, kind: str) -> None:
        self.check_active()
        self.trigger_event(self.TaskAdded, task_id=task_id, kind=kind)

    def complete(self, result_location: str | None) -> bool:
        if self.state == COMPLETED and result_location in (None, self.result_location):
            return False
        self.check_active()
        self.trigger_event(self.WorkflowCompleted, result_location=result_location)
        return True

    def fail(self, error_type: str, message: str) -> bool:
        if self.state == FAILED and (error_type, message) == (self.error_type, self.error_message):
            return False
        self.check_active()
        self.trigger_event(
            self.WorkflowFailed, error_message=message, error_type=error_type, cancelled=False
        )
        return True

    def cancel(self, reason: str) -> bool:
        if self.state == CANCELLED:
            return False
        self.check_active()
        self.trigger_event(
            self.WorkflowFailed, error_message=reason, error_type="Cancelled", cancelled=True
        )
        return True


class Task(Aggregate):
    """One step of a run (export, stage up, convert, job, stage down, import)."""

    class TaskCreated(Aggregate.Created):
        TOPIC = f"{UPSTREAM}:Task.TaskCreated"
        workflow_id: UUID
        task_name: str
        task_version: str | None
        input_data: Any
        params: dict[str, Any]
        kind: str

    class JobIdAdded(Aggregate.Event):
        TOPIC = f"{UPSTREAM}:Task.JobIdAdded"
        job_id: int  # upstream's integer (its views key on it); the whole id is below
        slurm_job_ref: str
        cluster: str

        def apply(self, task: Task) -> None:
            task.job_ids.append(self.slurm_job_ref)
            task.cluster = self.cluster
            task.job_state = None
            task.exit_code = None

    class StatusUpdated(Aggregate.Event):
        TOPIC = f"{UPSTREAM}:Task.StatusUpdated"
        status: str  # the Slurm job state
        exit_code: int | None
        elapsed_s: float | None
        max_rss_bytes: int | None

        def apply(self, task: Task) -> None:
            task.job_state = self.status
            task.exit_code = self.exit_code
            task.elapsed_s = self.elapsed_s
            task.max_rss_bytes = self.max_rss_bytes

    class ProgressUpdated(Aggregate.Event):
        TOPIC = f"{UPSTREAM}:Task.ProgressUpdated"
        progress: str | None  # "NN%" or None: upstream's views parse it
        note: str  # what we were told ("3/4", "resubmission 1/2 ...")

        def apply(self, task: Task) -> None:
            task.progress = self.note

    class ResultAdded(Aggregate.Event):
        TOPIC = f"{UPSTREAM}:Task.ResultAdded"
        result: dict[str, Any]  # upstream: a command's output; ours: {"location": ...}

        def apply(self, task: Task) -> None:
            task.result_locations.append(self.result["location"])

    class TaskCompleted(Aggregate.Event):
        TOPIC = f"{UPSTREAM}:Task.TaskCompleted"
        result: str

        def apply(self, task: Task) -> None:
            task.state = COMPLETED

    class TaskFailed(Aggregate.Event):
        TOPIC = f"{UPSTREAM}:Task.TaskFailed"
        error_message: str  # biomero shows it as task_execution.error_type
        error_type: str

        def apply(self, task: Task) -> None:
            task.state = FAILED
            task.error_type = self.error_type
            task.error_message = self.error_message

    def __init__(
        self,
        *,
        workflow_id: UUID,
        task_name: str,
        task_version: str | None,
        kind: str,
        **_upstream: Any,
    ) -> None:
        self.run_id = workflow_id
        self.kind = kind
        self.name = task_name
        self.task_version = task_version
        self.state = STARTED
        self.job_ids: list[str] = []
        self.cluster: str | None = None
        self.job_state: str | None = None
        self.exit_code: int | None = None
        self.elapsed_s: float | None = None
        self.max_rss_bytes: int | None = None
        self.progress: str | None = None
        self.result_locations: list[str] = []
        self.error_type: str | None = None
        self.error_message: str | None = None

    @classmethod
    def start(
        cls,
        *,
        run_id: UUID,
        kind: str,
        name: str,
        version: str | None,
        task_id: UUID | None = None,
    ) -> Task:
        return cls._create(
            cls.TaskCreated,
            id=task_id,
            workflow_id=run_id,
            task_name=name,
            task_version=version,
            input_data=None,
            params={},
            kind=kind,
        )

    def check_not_finished(self) -> None:
        if self.state in TASK_FINISHED:
            raise TaskFinishedError(f"task {self.id} ({self.kind}) is {self.state.lower()}")

    def check_job_submitted(self) -> None:
        if not self.job_ids:
            raise NoJobSubmittedError(f"task {self.id} ({self.kind}) has no Slurm job")

    def submit_job(self, job_id: str, cluster: str) -> bool:
        if self.job_ids and self.job_ids[-1] == job_id and self.cluster == cluster:
            return False
        self.check_not_finished()
        self.trigger_event(
            self.JobIdAdded, job_id=job_number(job_id), slurm_job_ref=job_id, cluster=cluster
        )
        return True

    def update_job_status(
        self,
        state: str,
        exit_code: int | None,
        elapsed_s: float | None,
        max_rss_bytes: int | None,
    ) -> bool:
        self.check_job_submitted()
        if not self._is_news(state, exit_code, elapsed_s, max_rss_bytes):
            return False
        self.trigger_event(
            self.StatusUpdated,
            status=state,
            exit_code=exit_code if exit_code is not None else self.exit_code,
            elapsed_s=elapsed_s if elapsed_s is not None else self.elapsed_s,
            max_rss_bytes=max_rss_bytes if max_rss_bytes is not None else self.max_rss_bytes,
        )
        return True

    def _is_news(
        self,
        state: str,
        exit_code: int | None,
        elapsed_s: float | None,
        max_rss_bytes: int | None,
    ) -> bool:
        """A new state or exit code is news; growing accounting of a live job is not."""
        if state != self.job_state:
            return True
        if exit_code is not None and exit_code != self.exit_code:
            return True
        if state not in SLURM_FINAL_STATES:
            return False
        return (elapsed_s is not None and elapsed_s != self.elapsed_s) or (
            max_rss_bytes is not None and max_rss_bytes != self.max_rss_bytes
        )

    def update_progress(self, progress: str) -> bool:
        if progress == self.progress:
            return False
        self.check_not_finished()
        self.trigger_event(
            self.ProgressUpdated, progress=dashboard_progress(progress), note=progress
        )
        return True

    def add_result(self, location: str) -> bool:
        if location in self.result_locations:
            return False
        self.trigger_event(self.ResultAdded, result={"location": location})
        return True

    def complete(self) -> bool:
        if self.state == COMPLETED:
            return False
        self.check_not_finished()
        self.trigger_event(self.TaskCompleted, result=f"{self.kind} completed")
        return True

    def fail(self, error_type: str, message: str) -> bool:
        if self.state == FAILED and (error_type, message) == (self.error_type, self.error_message):
            return False
        self.check_not_finished()
        self.trigger_event(self.TaskFailed, error_message=message, error_type=error_type)
        return True


# Upstream's events that we never write but read from biomero's history.
class _UpstreamOnly:
    class WorkflowStarted(Aggregate.Event):
        TOPIC = f"{UPSTREAM}:WorkflowRun.WorkflowStarted"

    class TaskStarted(Aggregate.Event):
        TOPIC = f"{UPSTREAM}:Task.TaskStarted"


WorkflowStarted = _UpstreamOnly.WorkflowStarted
TaskStarted = _UpstreamOnly.TaskStarted

# Every upstream topic biomero 2.8 writes, resolved to these classes (get_topic registers
# each class under its TOPIC). The aggregates' own topics stay ours: upstream's aggregates
# are never loaded here (their runs are read-only history).
EVENT_CLASSES: tuple[type, ...] = (
    WorkflowRun.WorkflowInitiated,
    WorkflowRun.TaskAdded,
    WorkflowStarted,
    WorkflowRun.WorkflowCompleted,
    WorkflowRun.WorkflowFailed,
    Task.TaskCreated,
    Task.JobIdAdded,
    Task.StatusUpdated,
    Task.ProgressUpdated,
    Task.ResultAdded,
    TaskStarted,
    Task.TaskCompleted,
    Task.TaskFailed,
)
KNOWN_TOPICS: frozenset[str] = frozenset(get_topic(cls) for cls in EVENT_CLASSES)
if {cls.TOPIC for cls in EVENT_CLASSES} != KNOWN_TOPICS:  # type: ignore[attr-defined]
    raise ImportError(  # an eventsourcing without TOPIC would write topics biomero cannot read
        "biomeroworker.tracking needs eventsourcing >= 9.5 (event classes' TOPIC)"
    )
