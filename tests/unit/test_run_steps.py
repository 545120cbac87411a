"""next_step: what a run needs next, decided from its tracked tasks alone."""

from __future__ import annotations

from dataclasses import replace

import pytest

from biomeroworker.run_record import RunInputs, RunRecord, TaskRecord
from biomeroworker.runs import Step, input_files, next_step


def _task(kind: str, state: str, job: str | None = None, *results: str) -> TaskRecord:
    return TaskRecord(
        task_id=f"t-{kind}", kind=kind, state=state, slurm_job_id=job, result_locations=results
    )


def _run(
    tasks: list[tuple[str, str, str | None]],
    *,
    source: str = "local",
    files: tuple[str, ...] = ("/data/a.ome.zarr",),
    state: str = "RUNNING",
) -> RunRecord:
    return RunRecord(
        run_id="r1",
        workflow="wf",
        version="1",
        user="alice",
        state=state,
        inputs=RunInputs({"files": list(files), "source": source}),
        tasks=tuple(_task(kind, st, job) for kind, st, job in tasks),
    )


DONE = "COMPLETED"


@pytest.mark.parametrize(
    ("tasks", "expected"),
    [
        ([], Step.STAGE_UP),
        ([("stage_up", "STARTED", None)], Step.STAGE_UP),
        ([("stage_up", DONE, None)], Step.SUBMIT_CONVERT),
        ([("stage_up", DONE, None), ("convert", "STARTED", None)], Step.SUBMIT_CONVERT),
        ([("stage_up", DONE, None), ("convert", "STARTED", "7")], Step.WAIT_CONVERT),
        ([("stage_up", DONE, None), ("convert", DONE, "7")], Step.SUBMIT_JOB),
        (
            [("stage_up", DONE, None), ("convert", DONE, "7"), ("job", "STARTED", "8")],
            Step.WAIT_JOB,
        ),
        ([("stage_up", DONE, None), ("convert", DONE, "7"), ("job", DONE, "8")], Step.STAGE_DOWN),
        (
            [
                ("stage_up", DONE, None),
                ("convert", DONE, "7"),
                ("job", DONE, "8"),
                ("stage_down", DONE, None),
            ],
            Step.COMPLETE,
        ),
    ],
)
def test_local_run_steps_follow_the_tasks(tasks, expected) -> None:  # type: ignore[no-untyped-def]
    assert next_step(_run(tasks)) is expected


def test_tiff_inputs_skip_conversion() -> None:
    run = _run([("stage_up", DONE, None)], files=("/data/a.tif",))
    assert next_step(run) is Step.SUBMIT_JOB


def test_a_finished_run_needs_nothing() -> None:
    assert next_step(_run([], state="CANCELLED")) is Step.NONE


def test_omero_runs_export_first_and_import_last() -> None:
    assert next_step(_run([], source="omero", files=())) is Step.EXPORT
    finished = [
        ("export", DONE, None),
        ("stage_up", DONE, None),
        ("job", DONE, "8"),
        ("stage_down", DONE, None),
    ]
    run = _run(finished, source="omero", files=())
    run = replace(run, tasks=(_task("export", DONE, None, "/w/in/1.tif"), *run.tasks[1:]))
    assert next_step(run) is Step.IMPORT
    run = replace(run, tasks=(*run.tasks, _task("import", DONE)))
    assert next_step(run) is Step.COMPLETE


def test_omero_inputs_are_what_the_export_wrote() -> None:
    run = _run([], source="omero", files=())
    run = replace(run, tasks=(_task("export", DONE, None, "/w/in/1.ome.zarr", "/w/in/2.ome.zarr"),))
    assert [p.name for p in input_files(run)] == ["1.ome.zarr", "2.ome.zarr"]
    assert next_step(run) is Step.STAGE_UP


def test_a_workflow_that_reads_ome_zarr_skips_the_conversion() -> None:
    """Upstream's Use_ZARR_Format: the OME-Zarr export goes to the workflow as it is."""
    run = _run([("stage_up", DONE, None)])
    assert next_step(run) is Step.SUBMIT_CONVERT
    run = replace(run, inputs=RunInputs({**run.inputs.recorded, "reads_zarr": True}))
    assert next_step(run) is Step.SUBMIT_JOB
