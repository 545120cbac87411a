"""`Tracker.batch()`: many commands, one save and one catch-up, the same events and rows
as the commands one by one (SQLite file; the PostgreSQL side runs in the bench)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from biomeroworker.tracking import Tracker
from biomeroworker.tracking import tables as t
from tests.tracking_reads import view_row_counts


def topics(url: str) -> list[str]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        found = conn.execute(sa.text("SELECT topic FROM workflowtracker_events ORDER BY id"))
        names = [topic.rsplit(":", 1)[1] for topic in found.scalars()]
    engine.dispose()
    return names


def one_run(tracker: Tracker, user: str, job: str) -> tuple[str, str]:
    run_id = tracker.record_run_requested(
        workflow="cellpose", version="v1", user_name=user, omero_user_id=2, omero_group_id=3
    )
    task = tracker.start_task(run_id, "job")
    tracker.record_job_submitted(task, job, "c")
    tracker.record_job_status(task, "COMPLETED", 0, 5.0, 1024)
    tracker.complete_task(task)
    tracker.complete_run(run_id, "Dataset:1")
    return run_id, task


def test_a_batch_records_the_events_of_its_commands_in_their_order(tmp_path: Path) -> None:
    single, batched = (f"sqlite:///{tmp_path / name}.sqlite" for name in ("one", "batch"))
    with Tracker(single) as tracker:
        for n in range(3):
            one_run(tracker, f"u{n}", str(100 + n))
    with Tracker(batched) as tracker, tracker.batch():
        for n in range(3):
            one_run(tracker, f"u{n}", str(100 + n))
        assert tracker.count_runs() == 0  # nothing saved before the batch ends
    assert topics(batched) == topics(single)
    assert view_row_counts(batched) == view_row_counts(single)
    assert view_row_counts(batched)[t.job_view.name] == 3  # each task was linked before its job
    with Tracker(batched) as tracker:
        assert [r["state"] for r in tracker.list_runs()] == ["COMPLETED"] * 3


def test_an_error_inside_a_batch_records_nothing_of_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tracking.sqlite'}"
    with Tracker(url) as tracker:
        with pytest.raises(RuntimeError), tracker.batch():
            one_run(tracker, "alice", "7")
            raise RuntimeError("the cycle failed")
        assert tracker.count_runs() == 0
        assert topics(url) == []


def test_a_batch_that_lost_a_race_runs_its_commands_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tracking.sqlite'}"
    with Tracker(url) as ours, Tracker(url) as theirs:
        run_id = ours.record_run_requested(workflow="w", version="1", user_name="alice")
        with ours.batch():
            task = ours.start_task(run_id, "job")
            ours.record_job_submitted(task, "55", "c")
            # another writer adds a step to the same run before the batch is saved
            other = theirs.start_task(run_id, "export")
        run: dict[str, Any] = ours.get_run(run_id)
    assert {(t_["task_id"], t_["slurm_job_id"]) for t_ in run["tasks"]} == {
        (task, "55"),
        (other, None),
    }
    assert topics(url).count("WorkflowRun.TaskAdded") == 2


def test_commands_outside_a_batch_answer_whether_they_changed_anything(tmp_path: Path) -> None:
    with Tracker(f"sqlite:///{tmp_path / 'tracking.sqlite'}") as tracker:
        run_id = tracker.record_run_requested(workflow="w", version="1", user_name="alice")
        task = tracker.start_task(run_id, "job")
        tracker.record_job_submitted(task, "9", "c")
        assert tracker.record_job_status(task, "RUNNING") is True
        assert tracker.record_job_status(task, "RUNNING") is False


def test_a_kept_aggregate_another_writer_changed_is_read_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tracking.sqlite'}"
    with Tracker(url) as ours, Tracker(url) as theirs:
        run_id = ours.record_run_requested(workflow="w", version="1", user_name="alice")
        task = ours.start_task(run_id, "job")
        ours.record_job_submitted(task, "9", "c")
        assert ours.record_job_status(task, "RUNNING") is True  # ours keeps the task
        assert theirs.record_job_status(task, "SUSPENDED") is True
        # a kept copy would say RUNNING is no news; the store says SUSPENDED
        assert ours.record_job_status(task, "RUNNING") is True
        states = [t_["job_state"] for t_ in ours.get_run(run_id)["tasks"]]
    assert states == ["RUNNING"]
    assert topics(url).count("Task.StatusUpdated") == 3


def test_threads_sharing_a_tracker_each_record_their_own_commands(tmp_path: Path) -> None:
    """The supervisor's step threads and its loop share one tracker: one thread's batch
    must not take in another thread's commands."""
    url = f"sqlite:///{tmp_path / 'tracking.sqlite'}"
    errors: list[BaseException] = []
    with Tracker(url) as tracker:
        run_id = tracker.record_run_requested(workflow="w", version="1", user_name="alice")

        def batched() -> None:
            try:
                for n in range(5):
                    with tracker.batch():
                        task = tracker.start_task(run_id, "job")
                        tracker.record_job_submitted(task, str(100 + n), "c")
            except BaseException as exc:
                errors.append(exc)

        def single() -> None:
            try:
                for _ in range(5):
                    task = tracker.start_task(run_id, "export")
                    tracker.complete_task(task)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work) for work in (batched, single)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert errors == []
        tasks = tracker.get_run(run_id)["tasks"]
    assert sorted(t_["kind"] for t_ in tasks) == ["export"] * 5 + ["job"] * 5
    assert {t_["slurm_job_id"] for t_ in tasks if t_["kind"] == "job"} == {
        str(100 + n) for n in range(5)
    }
    assert all(t_["state"] == "COMPLETED" for t_ in tasks if t_["kind"] == "export")


def test_a_batch_stays_recorded_when_the_catch_up_after_its_commit_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'tracking.sqlite'}"
    with Tracker(url) as tracker:
        projector = tracker._projector
        catch_up = projector.catch_up
        failed: list[bool] = []

        def fails_once() -> int:
            if not failed:
                failed.append(True)
                raise sa.exc.OperationalError("UPDATE biomero_run", {}, Exception("locked"))
            return catch_up()

        monkeypatch.setattr(projector, "catch_up", fails_once)
        with tracker.batch():
            run_id, _ = one_run(tracker, "alice", "7")  # the batch does not raise

        assert failed
        assert "catch up on the next read" in caplog.text
        assert tracker.get_run(run_id)["state"] == "COMPLETED"  # the next read caught up
    assert topics(url).count("WorkflowRun.WorkflowCompleted") == 1  # recorded once, not redone


def test_a_single_command_answers_changed_when_only_its_catch_up_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'tracking.sqlite'}"
    with Tracker(url) as tracker:
        run_id = tracker.record_run_requested(workflow="cellpose", version="v1", user_name="bob")

        def fails() -> int:
            raise sa.exc.OperationalError("UPDATE biomero_run", {}, Exception("locked"))

        with monkeypatch.context() as patch:
            patch.setattr(tracker._projector, "catch_up", fails)
            assert tracker.cancel_run(run_id, "no longer needed") is True

        assert tracker.get_run(run_id)["state"] == "CANCELLED"
