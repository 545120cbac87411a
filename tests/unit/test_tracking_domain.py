"""The aggregates' rules, without any store."""

from __future__ import annotations

from uuid import uuid4

import pytest

from biomeroworker.tracking.domain import Task, WorkflowRun
from biomeroworker.tracking.errors import (
    NoJobSubmittedError,
    RunFinishedError,
    TaskFinishedError,
)


def new_run() -> WorkflowRun:
    return WorkflowRun.request(
        workflow="cellpose",
        workflow_version="v1.2.7",
        user_name="alice",
        omero_user_id=None,
        omero_group_id=None,
        inputs={},
        parameters={},
    )


def job_task() -> Task:
    task = Task.start(run_id=uuid4(), kind="job", name="cellpose", version="v1.2.7")
    task.submit_job("42", "local")
    task.collect_events()
    return task


def test_a_poll_that_sees_the_same_state_records_nothing() -> None:
    task = job_task()
    assert task.update_job_status("RUNNING", None, 5.0, None)
    task.collect_events()
    assert not task.update_job_status("RUNNING", None, 5.0, None)
    assert task.collect_events() == []


def test_growing_elapsed_time_of_a_running_job_is_not_news() -> None:
    task = job_task()
    task.update_job_status("RUNNING", None, 5.0, None)
    task.collect_events()
    assert not task.update_job_status("RUNNING", None, 15.0, 2048)
    assert task.collect_events() == []


def test_final_accounting_arriving_after_completion_is_recorded() -> None:
    task = job_task()
    task.update_job_status("COMPLETED", 0, 20.0, None)
    task.collect_events()
    assert task.update_job_status("COMPLETED", 0, 20.0, 4096)
    (changed,) = task.collect_events()
    assert isinstance(changed, Task.StatusUpdated)
    assert (task.elapsed_s, task.max_rss_bytes) == (20.0, 4096)


def test_job_status_without_a_submitted_job_is_refused() -> None:
    task = Task.start(run_id=uuid4(), kind="job", name="cellpose", version=None)
    with pytest.raises(NoJobSubmittedError):
        task.update_job_status("RUNNING", None, None, None)


def test_resubmitting_the_same_job_records_nothing() -> None:
    task = job_task()
    assert not task.submit_job("42", "local")
    assert task.collect_events() == []


def test_completing_a_completed_task_again_is_a_no_op() -> None:
    task = job_task()
    task.complete()
    task.collect_events()
    assert not task.complete()
    assert task.collect_events() == []


def test_a_completed_task_cannot_fail() -> None:
    task = job_task()
    task.complete()
    with pytest.raises(TaskFinishedError):
        task.fail("OutOfMemory", "killed")


def test_a_finished_run_takes_no_new_task() -> None:
    run = new_run()
    run.cancel("user asked")
    with pytest.raises(RunFinishedError):
        run.add_task(uuid4(), "export")


def test_adding_a_task_moves_the_run_to_that_step() -> None:
    run = new_run()
    run.add_task(uuid4(), "stage_up")
    assert (run.state, run.step) == ("RUNNING", "stage_up")
