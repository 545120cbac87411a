"""RunRecord: the typed, read-only run every step, the supervisor and OMERO side act on."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from biomeroworker.run_record import RunInputs, RunRecord, TaskRecord
from biomeroworker.tracking import Tracker


@pytest.fixture
def tracker(tmp_path: Path) -> Iterator[Tracker]:
    with Tracker(f"sqlite:///{tmp_path / 'tracking.sqlite'}") as opened:
        yield opened


def _recorded_run(tracker: Tracker, **inputs: object) -> str:
    run_id = tracker.record_run_requested(
        workflow="cellpose",
        version="v1.2.7",
        user_name="alice",
        inputs={"files": ["/data/a.tif"], "output_dir": None, **inputs},
        parameters={"diameter": 30, "channels": [1, 2]},
        omero_user_id=3,
    )
    stage_up = tracker.start_task(run_id, "stage_up")
    tracker.record_result(stage_up, "/remote/in")
    tracker.complete_task(stage_up)
    job = tracker.start_task(run_id, "job")
    tracker.record_job_submitted(job, "4242", "localslurm")
    tracker.record_job_status(job, "COMPLETED", 0, 61.0, 2**20)
    return run_id


def _run(**fields: object) -> RunRecord:
    values: dict[str, object] = {
        "run_id": "r1",
        "workflow": "wf",
        "version": "1",
        "user": "alice",
        "state": "RUNNING",
    }
    return RunRecord(**{**values, **fields})  # type: ignore[arg-type]


def test_a_stored_row_round_trips_through_the_record(tracker: Tracker) -> None:
    run_id = _recorded_run(tracker)
    row = tracker.get_run(run_id)
    record = RunRecord.from_row(row)
    assert record.to_row() == row
    assert json.dumps(record.to_row()) == json.dumps(row)  # same keys, same order
    assert tracker.run_record(run_id) == record


def test_the_record_reads_typed_fields_from_the_row(tracker: Tracker) -> None:
    record = tracker.run_record(_recorded_run(tracker, output_dir="/results"))
    assert record.omero_user_id == 3
    assert isinstance(record.created_at, datetime) and record.created_at.tzinfo is not None
    assert record.inputs.files == (Path("/data/a.tif"),)
    assert record.inputs.output_dir == Path("/results")
    assert record.inputs.source == "local"
    job = record.latest_task("job")
    assert job is not None
    assert (job.slurm_job_id, job.job_state, job.exit_code) == ("4242", "COMPLETED", 0)
    assert record.job_ids() == ["4242"]
    assert record.latest_task("stage_up").result_locations == ("/remote/in",)  # type: ignore[union-attr]


def test_active_and_listed_runs_come_as_records(tracker: Tracker) -> None:
    run_id = _recorded_run(tracker)
    (active,) = tracker.active_run_records()
    assert active.run_id == run_id and len(active.tasks) == 2
    (listed,) = tracker.run_records(user="alice")
    assert listed.run_id == run_id and listed.tasks == ()


def test_a_record_cannot_be_changed() -> None:
    run = _run(inputs={"outputs": {"new_dataset": "x"}, "ids": [1]}, parameters={"n": [1]})
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.state = "FAILED"  # type: ignore[misc]
    with pytest.raises(TypeError):
        run.parameters["n"] = 2  # type: ignore[index]
    with pytest.raises(TypeError):
        run.inputs.outputs["new_dataset"] = "y"  # type: ignore[index]
    assert run.parameters["n"] == (1,)  # lists become tuples: nothing inside changes either
    assert run.inputs.ids == (1,)


def test_a_change_makes_a_new_record() -> None:
    run = _run()
    failed = dataclasses.replace(run, state="FAILED", error="boom")
    assert (run.state, run.error) == ("RUNNING", None)
    assert (failed.state, failed.error, failed.finished) == ("FAILED", "boom", True)


def test_a_misspelt_field_fails_where_it_is_read() -> None:
    run = _run(tasks=[TaskRecord(task_id="t", kind="job", state="STARTED")])
    with pytest.raises(AttributeError):
        run.stat  # type: ignore[attr-defined]  # noqa: B018
    with pytest.raises(AttributeError):
        run.tasks[0].slurm_jobid  # type: ignore[attr-defined]  # noqa: B018
    with pytest.raises(AttributeError):
        run.inputs.output_folder  # type: ignore[attr-defined]  # noqa: B018


def test_a_misspelt_field_fails_where_a_record_is_made() -> None:
    with pytest.raises(TypeError, match="stat"):
        _run(stat="RUNNING")
    with pytest.raises(TypeError, match="slurm_jobid"):
        TaskRecord(task_id="t", kind="job", state="STARTED", slurm_jobid="1")  # type: ignore[call-arg]


def test_an_unknown_column_in_a_row_is_refused(tracker: Tracker) -> None:
    row = tracker.get_run(_recorded_run(tracker))
    with pytest.raises(TypeError, match="'colour'"):
        RunRecord.from_row({**row, "colour": "blue"})
    row["tasks"][0]["colour"] = "blue"
    with pytest.raises(TypeError, match=r"TaskRecord.*'colour'"):
        RunRecord.from_row(row)


def test_tasks_must_be_task_records() -> None:
    with pytest.raises(TypeError, match="TaskRecord"):
        _run(tasks=[{"task_id": "t", "kind": "job", "state": "STARTED"}])


def test_unknown_request_keys_are_kept_read_only(tracker: Tracker) -> None:
    """Inputs are free-form (an OMERO form, an older or newer worker): nothing is lost."""
    run_id = _recorded_run(tracker, from_a_newer_worker={"hint": [1, 2]})
    row = tracker.get_run(run_id)
    record = RunRecord.from_row(row)
    assert record.inputs.recorded["from_a_newer_worker"]["hint"] == (1, 2)
    assert record.to_row()["inputs"] == row["inputs"]
    with pytest.raises(TypeError):
        record.inputs.recorded["files"] = []  # type: ignore[index]


def test_inputs_read_with_their_defaults() -> None:
    """A request that recorded little reads as the worker always read it."""
    empty = RunInputs()
    assert empty.source == "local"
    assert empty.files == () and empty.ids == ()
    assert empty.output_dir is None and empty.partition is None
    assert not empty.reads_zarr and dict(empty.outputs) == {}
    omero = RunInputs({"source": "omero", "ids": ["7"], "partition": "", "output_dir": ""})
    assert omero.source == "omero" and omero.ids == (7,)
    assert omero.partition is None and omero.output_dir is None
