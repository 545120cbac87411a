"""The tracked things: a workflow run and its tasks, as event-sourced aggregates.

Command methods compare before they trigger: a command that would change nothing
returns False and records nothing, so a poll that sees no news writes no event.
The event classes' topics (``biomeroworker.tracking.domain:Task.Started``) are
stored with every event; moving a class means registering its old topic.
This module knows nothing of SSH, Slurm commands or the database.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from biomeroworker.tracking.errors import (
    NoJobSubmittedError,
    RunFinishedError,
    TaskFinishedError,
)

TASK_KINDS: tuple[str, ...] = ("export", "stage_up", "convert", "job", "stage_down", "import")

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


class WorkflowRun(Aggregate):
    """One request to run a workflow on some inputs, from request to result."""

    @event("Requested")
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

    def check_active(self) -> None:
        if self.state in RUN_FINISHED:
            raise RunFinishedError(f"run {self.id} is {self.state.lower()} and cannot change")

    def add_task(self, task_id: UUID, kind: str) -> None:
        self.check_active()
        self._task_added(task_id=task_id, kind=kind)

    @event("TaskAdded")
    def _task_added(self, task_id: UUID, kind: str) -> None:
        self.task_ids.append(task_id)
        self.step = kind
        self.state = RUNNING

    def complete(self, result_location: str | None) -> bool:
        if self.state == COMPLETED and result_location in (None, self.result_location):
            return False
        self.check_active()
        self._completed(result_location=result_location)
        return True

    @event("Completed")
    def _completed(self, result_location: str | None) -> None:
        self.state = COMPLETED
        self.result_location = result_location

    def fail(self, error_type: str, message: str) -> bool:
        if self.state == FAILED and (error_type, message) == (self.error_type, self.error_message):
            return False
        self.check_active()
        self._failed(error_type=error_type, message=message)
        return True

    @event("Failed")
    def _failed(self, error_type: str, message: str) -> None:
        self.state = FAILED
        self.error_type = error_type
        self.error_message = message

    def cancel(self, reason: str) -> bool:
        if self.state == CANCELLED:
            return False
        self.check_active()
        self._cancelled(reason=reason)
        return True

    @event("Cancelled")
    def _cancelled(self, reason: str) -> None:
        self.state = CANCELLED
        self.error_type = "Cancelled"
        self.error_message = reason


class Task(Aggregate):
    """One step of a run (export, stage up, convert, job, stage down, import)."""

    @event("Started")
    def __init__(self, *, run_id: UUID, kind: str, name: str, task_version: str | None) -> None:
        self.run_id = run_id
        self.kind = kind
        self.name = name
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
        self._job_submitted(job_id=job_id, cluster=cluster)
        return True

    @event("JobSubmitted")
    def _job_submitted(self, job_id: str, cluster: str) -> None:
        self.job_ids.append(job_id)
        self.cluster = cluster
        self.job_state = None
        self.exit_code = None

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
        self._job_status_changed(
            state=state,
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

    @event("JobStatusChanged")
    def _job_status_changed(
        self,
        state: str,
        exit_code: int | None,
        elapsed_s: float | None,
        max_rss_bytes: int | None,
    ) -> None:
        self.job_state = state
        self.exit_code = exit_code
        self.elapsed_s = elapsed_s
        self.max_rss_bytes = max_rss_bytes

    def update_progress(self, progress: str) -> bool:
        if progress == self.progress:
            return False
        self.check_not_finished()
        self._progress_updated(progress=progress)
        return True

    @event("ProgressUpdated")
    def _progress_updated(self, progress: str) -> None:
        self.progress = progress

    def add_result(self, location: str) -> bool:
        if location in self.result_locations:
            return False
        self._result_added(location=location)
        return True

    @event("ResultAdded")
    def _result_added(self, location: str) -> None:
        self.result_locations.append(location)

    def complete(self) -> bool:
        if self.state == COMPLETED:
            return False
        self.check_not_finished()
        self._completed()
        return True

    @event("Completed")
    def _completed(self) -> None:
        self.state = COMPLETED

    def fail(self, error_type: str, message: str) -> bool:
        if self.state == FAILED and (error_type, message) == (self.error_type, self.error_message):
            return False
        self.check_not_finished()
        self._failed(error_type=error_type, message=message)
        return True

    @event("Failed")
    def _failed(self, error_type: str, message: str) -> None:
        self.state = FAILED
        self.error_type = error_type
        self.error_message = message
