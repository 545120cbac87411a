"""slurmrestd answers per API version -> JobStatus (request bodies: test_slurm_rest_request).

v0.0.38 answers are trimmed recordings from this machine's slurmrestd (Slurm 22.05.8).
v0.0.40/v0.0.41 answers follow the shapes of Slurm's published OpenAPI descriptions
(job_state and state.current as flag lists, exit_code as {status, return_code, signal},
numbers as {set, infinite, number}); no such server runs here.
"""

from __future__ import annotations

from datetime import datetime

import pytest

from biomeroworker.errors import SlurmError
from biomeroworker.slurm import JobState
from biomeroworker.slurm.rest import shapes
from biomeroworker.slurm.rest.errors import RestUnavailable
from biomeroworker.slurm.rest.shapes import SHAPES

V38, V39, V40, V41 = (SHAPES[f"v0.0.{n}"] for n in (38, 39, 40, 41))
NOW = datetime(2026, 11, 21, 12, 0, 0)
T0 = 1795238638  # a recorded start_time


def wrapped(n: int) -> dict[str, object]:
    return {"set": True, "infinite": False, "number": n}


UNSET = {"set": False, "infinite": False, "number": 0}


def test_every_known_version_is_in_the_table_and_unknown_ones_are_named() -> None:
    assert list(SHAPES) == [f"v0.0.{n}" for n in range(36, 45)]
    with pytest.raises(SlurmError, match=r"v0\.0\.99"):
        shapes.shape_for("v0.0.99")


# ---------------------------------------------------------------- submit answers


def test_submit_answer_gives_the_job_id_even_with_a_held_note() -> None:
    recorded = {
        "errors": [
            {"error_code": 2042, "error": "Job is in held state, pending scheduler release"}
        ],
        "job_id": 76,
        "step_id": "BATCH",
    }
    assert shapes.submitted_job_id(recorded) == "76"


def test_v041_submit_answer_with_result_object_gives_the_job_id() -> None:
    assert shapes.submitted_job_id({"result": {"job_id": 812, "step_id": "batch"}}) == "812"


def test_refused_submission_says_why() -> None:
    recorded = {"errors": [{"error": "environment must be set", "error_code": 2127}]}
    with pytest.raises(SlurmError, match="environment must be set"):
        shapes.submitted_job_id(recorded)


def test_submission_cut_between_slurmrestd_and_slurmctld_is_unknown_not_refused() -> None:
    """Recorded from slurmrestd 22.05 (v0.0.38) with a token slurmctld refuses: the job
    may or may not be queued, so the engine must look for it by name, not fail the run."""
    recorded = {
        "errors": [{"error_code": 5005, "error": "Zero Bytes were transmitted or received"}]
    }
    with pytest.raises(RestUnavailable, match="looked for by name"):
        shapes.submitted_job_id(recorded)


# ---------------------------------------------------------------- controller answers

V38_JOBS = {
    "jobs": [
        {"job_id": 71, "array_job_id": 0, "array_task_id": None, "array_task_string": "",
         "job_state": "FAILED", "exit_code": 768, "state_reason": "NonZeroExitCode",
         "start_time": T0, "end_time": T0 + 4, "nodes": "vm"},
        {"job_id": 73, "array_job_id": 72, "array_task_id": 1, "array_task_string": "",
         "job_state": "COMPLETED", "exit_code": 0, "state_reason": "None",
         "start_time": T0, "end_time": T0, "nodes": "vm"},
        {"job_id": 75, "array_job_id": 0, "array_task_id": None, "array_task_string": "",
         "job_state": "FAILED", "exit_code": 9, "state_reason": "JobLaunchFailure",
         "start_time": T0, "end_time": T0 + 1, "nodes": "vm"},
        {"job_id": 76, "array_job_id": 76, "array_task_id": None,
         "array_task_string": "1-3,7%1", "job_state": "PENDING", "exit_code": 0,
         "state_reason": "JobHeldUser", "start_time": 0, "end_time": 0, "nodes": ""},
    ]
}  # fmt: skip


def test_v038_raw_exit_status_splits_into_code_and_signal() -> None:
    found = shapes.ctld_jobs(V38, V38_JOBS, now=NOW)
    assert (found["71"].state, found["71"].exit_code, found["71"].signal) == (
        JobState.FAILED,
        3,
        0,
    )
    assert (found["75"].exit_code, found["75"].signal) == (0, 9)
    assert found["71"].elapsed_s == 4 and found["71"].reason == "NonZeroExitCode"


def test_v038_array_element_is_keyed_by_array_and_task() -> None:
    element = shapes.ctld_jobs(V38, V38_JOBS, now=NOW)["72_1"]
    assert (element.array_job_id, element.array_task_id, element.job_id_raw) == ("72", 1, "73")


def test_pending_array_remainder_becomes_one_entry_per_element() -> None:
    found = shapes.ctld_jobs(V38, V38_JOBS, now=NOW)
    pending = {k: v.state for k, v in found.items() if k.startswith("76_")}
    assert pending == {f"76_{t}": JobState.PENDING for t in (1, 2, 3, 7)}
    assert found["76_7"].start is None and found["76_7"].node_list is None


V40_JOBS = {
    "jobs": [
        {"job_id": 501, "array_job_id": wrapped(500), "array_task_id": wrapped(2),
         "array_task_string": "", "job_state": ["FAILED"],
         "exit_code": {"status": ["EXITED"], "return_code": wrapped(3),
                       "signal": {"id": UNSET, "name": ""}},
         "state_reason": "NonZeroExitCode", "start_time": wrapped(T0),
         "end_time": wrapped(T0 + 2), "nodes": "n1"},
        {"job_id": 510, "array_job_id": wrapped(0), "array_task_id": UNSET,
         "array_task_string": "", "job_state": ["RUNNING", "COMPLETING"],
         "exit_code": {"status": ["PENDING"], "return_code": UNSET,
                       "signal": {"id": UNSET, "name": ""}},
         "state_reason": "None", "start_time": wrapped(T0), "end_time": UNSET, "nodes": "n1"},
        {"job_id": 520, "array_job_id": wrapped(0), "array_task_id": UNSET,
         "array_task_string": "", "job_state": ["CANCELLED"],
         "exit_code": {"status": ["SIGNALED"], "return_code": UNSET,
                       "signal": {"id": wrapped(9), "name": "KILL"}},
         "state_reason": "None", "start_time": wrapped(T0), "end_time": wrapped(T0 + 9),
         "nodes": "n1"},
    ]
}  # fmt: skip


def test_v040_flag_list_state_and_verbose_exit_code_are_read() -> None:
    found = shapes.ctld_jobs(V40, V40_JOBS, now=NOW)
    failed = found["500_2"]
    assert (failed.state, failed.exit_code, failed.signal, failed.job_id_raw) == (
        JobState.FAILED,
        3,
        0,
        "501",
    )
    assert found["510"].state is JobState.RUNNING and found["510"].end is None
    assert (found["520"].state, found["520"].exit_code, found["520"].signal) == (
        JobState.CANCELLED,
        0,
        9,
    )


# ---------------------------------------------------------------- accounting answers


def _db_job(job_id: int, state: object, steps: list[dict[str, object]], **extra: object):
    record: dict[str, object] = {
        "job_id": job_id,
        "array": {"job_id": 0, "task": None, "task_id": None},
        "state": {"current": state, "reason": "None"},
        "exit_code": {"status": "SUCCESS", "return_code": 0},
        "time": {"start": T0, "end": T0 + 1, "elapsed": 1},
        "nodes": "vm",
        "steps": steps,
    }
    record.update(extra)
    return record


def _step(state: object, rss_bytes: int, alloc_mb: int, signal: int | None):
    exit_code: dict[str, object] = {"status": "SUCCESS", "return_code": 0}
    if signal:
        exit_code = {"status": "SIGNALED", "return_code": None,
                     "signal": {"signal_id": signal, "name": "Killed"}}  # fmt: skip
    return {
        "state": state,
        "exit_code": exit_code,
        "step": {"id": "batch"},
        "tres": {
            "requested": {"max": [{"type": "mem", "id": 2, "count": rss_bytes}]},
            "allocated": [{"type": "cpu", "count": 1}, {"type": "mem", "count": alloc_mb}],
        },
    }


def test_v038_memory_kill_without_cgroups_reads_as_out_of_memory() -> None:
    # Recorded: 50 MB job killed by OverMemoryKill at 116584448 bytes.
    body = {"jobs": [_db_job(75, "FAILED", [_step("CANCELLED", 116584448, 50, 9)])]}
    status = shapes.db_jobs(V38, body, now=NOW)["75"]
    assert (status.state, status.max_rss_bytes, status.source) == (
        JobState.OUT_OF_MEMORY,
        116584448,
        "slurmdbd",
    )


def test_signal_nine_within_the_allocation_stays_failed() -> None:
    body = {"jobs": [_db_job(80, "FAILED", [_step("CANCELLED", 10 * 1024**2, 50, 9)])]}
    assert shapes.db_jobs(V38, body, now=NOW)["80"].state is JobState.FAILED


def test_v040_state_lists_are_read_in_accounting_records() -> None:
    body = {"jobs": [_db_job(81, ["OUT_OF_MEMORY"], [_step(["OUT_OF_MEMORY"], 1, 50, None)])]}
    assert shapes.db_jobs(V40, body, now=NOW)["81"].state is JobState.OUT_OF_MEMORY


def test_v038_pending_array_hex_bitmap_becomes_elements() -> None:
    # Recorded: array "1-3,7" held, stored by slurmdbd as the bitmap 0x8E.
    held = _db_job(76, "PENDING", [], array={"job_id": 76, "task": "0x8E", "task_id": None})
    found = shapes.db_jobs(V38, {"jobs": [held]}, now=NOW)
    assert sorted(found) == ["76_1", "76_2", "76_3", "76_7"]


def test_v040_pending_array_range_text_becomes_elements() -> None:
    held = _db_job(90, ["PENDING"], [], array={"job_id": 90, "task": "1-2", "task_id": UNSET})
    assert sorted(shapes.db_jobs(V40, {"jobs": [held]}, now=NOW)) == ["90_1", "90_2"]


# ---------------------------------------------------------------- partitions


def test_v038_partitions_are_read() -> None:
    body = {"partitions": [
        {"name": "cpu-short", "flags": ["default"], "state": "UP", "max_time_limit": 120,
         "total_nodes": 1, "total_cpus": 8},
        {"name": "cpu-long", "flags": [], "state": "UP", "max_time_limit": 10080,
         "total_nodes": 1, "total_cpus": 8},
    ]}  # fmt: skip
    short, long = shapes.partitions(V38, body)
    assert (short.name, short.default, short.time_limit_s, short.cpus) == (
        "cpu-short",
        True,
        7200,
        8,
    )
    assert (long.default, long.time_limit_s) == (False, 7 * 24 * 3600)


def test_partitions_of_unmapped_versions_are_refused_with_the_version() -> None:
    with pytest.raises(SlurmError, match=r"v0\.0\.40"):
        shapes.partitions(V40, {"partitions": []})


# ---------------------------------------------------------------- finding jobs by name


def test_jobs_are_found_by_exact_name_in_controller_and_accounting_lists() -> None:
    ctld = {
        "jobs": [
            {"job_id": 91, "name": "biomero-convert-r1", "array_job_id": 90},
            {"job_id": 90, "name": "biomero-convert-r1", "array_job_id": 90},
            {"job_id": 95, "name": "biomero-job-r1", "array_job_id": 0},
            {"job_id": 96, "name": "biomero-job-r1x", "array_job_id": 0},
            {"job_id": 97, "name": "BIOMERO-JOB-R1", "array_job_id": 0},
        ]
    }
    assert shapes.ids_named(ctld, "biomero-convert-r1") == ["90"]
    assert shapes.ids_named(ctld, "biomero-job-r1") == ["95"]
    db = {
        "jobs": [
            {"job_id": 105, "name": "n", "array": {"job_id": 104, "task_id": 1}},
            {"job_id": 104, "name": "n", "array": {"job_id": 104, "task_id": 2}},
            {"job_id": 12, "name": "n", "array": {"job_id": 0, "task_id": None}},
        ]
    }
    assert shapes.ids_named(db, "n") == ["12", "104"]
    assert shapes.ids_named({"jobs": []}, "n") == []
