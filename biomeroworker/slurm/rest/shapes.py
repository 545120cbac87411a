"""slurmrestd answers -> JobStatus, and the table of API versions. Pure.

The request side (SubmitRequest -> submit body) is slurm.rest.request.

Every difference between API versions that this module knows is one column of
``SHAPES``. Checked against a live slurmrestd (Slurm 22.05.8): v0.0.36, v0.0.37,
v0.0.38. Newer rows follow Slurm's published OpenAPI descriptions (Slurm 23.02 serves
v0.0.39, 23.11 v0.0.40, 24.05 v0.0.41, 24.11 v0.0.42) and are unit-tested only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from biomeroworker.errors import SlurmError
from biomeroworker.slurm.parse import JobStatus, Partition
from biomeroworker.slurm.rest.errors import RestUnavailable
from biomeroworker.slurm.states import JobState, parse_state
from biomeroworker.slurm.values import expand_task_ids

Json = dict[str, Any]


@dataclass(frozen=True)
class ApiShape:
    """How one OpenAPI version spells what we send and read."""

    version: str
    # the N of v0.0.N: request field names change with it (slurm.rest.request)
    minor: int
    # job.environment: ["NAME=value", ...] (True) or {"NAME": "value"} (False)
    environment_as_list: bool
    # time and memory limits as {"set": true, "infinite": false, "number": n}
    numbers_wrapped: bool
    # the batch script inside "job" (True) or at the top of the body (False)
    script_in_job: bool
    # job_state / state.current: a list of flags (True) or one word (False)
    state_as_list: bool
    # slurmctld exit_code: the raw wait status int (True) or {status, return_code, signal}
    ctld_exit_code_raw: bool
    # slurmdbd pending array tasks: a hex bitmap "0x8E" (True) or "1-3,7" (False)
    db_array_tasks_hex: bool
    # GET /slurm/<v>/partitions answers the flat v0.0.36-38 shape
    flat_partitions: bool


def _shape(version: str, *, minor: int) -> ApiShape:
    return ApiShape(
        version=version,
        minor=minor,
        environment_as_list=minor >= 39,
        numbers_wrapped=minor >= 39,
        script_in_job=minor >= 41,
        state_as_list=minor >= 40,
        ctld_exit_code_raw=minor <= 38,
        db_array_tasks_hex=minor <= 38,
        flat_partitions=minor <= 38,
    )


SHAPES: Mapping[str, ApiShape] = {
    f"v0.0.{minor}": _shape(f"v0.0.{minor}", minor=minor) for minor in range(36, 45)
}
# Slurm's errno for a broken link between slurmrestd and slurmctld: connection, send,
# receive and shutdown errors (1001-1004) and the socket errors 5000-5005 (zero-length
# receive ... "Zero Bytes were transmitted or received", which a refused token also gives).
LINK_ERRORS = frozenset({1001, 1002, 1003, 1004, *range(5000, 5006)})
TESTED_LIVE = ("v0.0.36", "v0.0.37", "v0.0.38")


def shape_for(version: str) -> ApiShape:
    try:
        return SHAPES[version]
    except KeyError:
        known = ", ".join(SHAPES)
        raise SlurmError(f"[REST] api_version {version!r} is not known; known: {known}") from None


# ---------------------------------------------------------------- answers


def error_text(body: Mapping[str, Any]) -> str:
    """The errors slurmrestd listed, one line."""
    items = body.get("errors") or []
    words = []
    for item in items:
        if isinstance(item, dict):
            words.append(str(item.get("description") or item.get("error") or item))
    return " | ".join(words) or "no error text"


def error_numbers(body: Mapping[str, Any]) -> set[int]:
    numbers = set()
    for item in body.get("errors") or []:
        if isinstance(item, dict):
            value = item.get("error_number", item.get("error_code"))
            if isinstance(value, int):
                numbers.add(value)
    return numbers


def submitted_job_id(body: Mapping[str, Any]) -> str:
    """The job id from a submit answer: top-level ``job_id`` or ``result.job_id``.

    A held job comes back with its id *and* an error entry ("Job is in held state"),
    so the id decides success, not the error list.
    """
    job_id = body.get("job_id")
    if not job_id and isinstance(body.get("result"), dict):
        job_id = body["result"].get("job_id")
    job_id = number(job_id)
    if not job_id:
        if error_numbers(body) & LINK_ERRORS:
            # slurmrestd lost its link to slurmctld (a token slurmctld refuses ends the
            # same way): whether the job was queued is unknown, so this is not a refusal.
            raise RestUnavailable(
                "slurmrestd could not complete the submission with slurmctld "
                f"({error_text(body)}); the job is looked for by name before it is "
                "submitted again"
            )
        raise SlurmError(f"slurmrestd refused the job: {error_text(body)}")
    return str(job_id)


def number(value: Any) -> int | None:
    """A plain int, or the number of a {"set", "infinite", "number"} wrapper; None when
    unset or infinite."""
    if isinstance(value, dict):
        if not value.get("set", True) or value.get("infinite"):
            return None
        value = value.get("number")
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def state_of(shape: ApiShape, value: Any) -> JobState:
    """``job_state`` / ``state.current`` to a JobState. A list holds the base state
    plus flags such as COMPLETING or REQUEUED; the first known base state wins."""
    words = value if isinstance(value, list) else [value]
    for word in words:
        if isinstance(word, str):
            state = parse_state(word)
            if state is not JobState.UNKNOWN:
                return state
    return JobState.UNKNOWN


def exit_pair(shape: ApiShape, value: Any, *, raw: bool) -> tuple[int | None, int | None]:
    """(exit code, signal) from a raw wait status or a {status, return_code, signal}."""
    if raw:
        status = number(value)
        if status is None:
            return None, None
        if status & 0x7F:
            return 0, status & 0x7F
        return (status >> 8) & 0xFF, 0
    if not isinstance(value, dict):
        return None, None
    signal_info = value.get("signal") or {}
    signal = number(signal_info.get("id", signal_info.get("signal_id")))
    code = number(value.get("return_code"))
    if signal:
        return code or 0, signal
    return code, 0 if code is not None else None


def _time(value: Any) -> datetime | None:
    seconds = number(value)
    return datetime.fromtimestamp(seconds) if seconds else None  # naive local, like sacct


def _text(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.strip()
    return None if value in ("", "None", "None assigned", "(null)") else value


def _elapsed(start: datetime | None, end: datetime | None, now: datetime) -> int | None:
    if start is None:
        return None
    return max(0, int(((end or now) - start).total_seconds()))


def _keys(array_job: int, task: int | None, pending: Iterable[int], job_id: int) -> list[str]:
    if array_job and task is not None:
        return [f"{array_job}_{task}"]
    if array_job:
        return [f"{array_job}_{t}" for t in pending]
    return [str(job_id)]


def ctld_jobs(shape: ApiShape, body: Mapping[str, Any], *, now: datetime) -> dict[str, JobStatus]:
    """GET /slurm/<v>/jobs: every job slurmctld remembers, array elements one by one.

    The controller knows exit codes and states but not memory use (MaxRSS).
    """
    found: dict[str, JobStatus] = {}
    for job in body.get("jobs") or []:
        job_id = number(job.get("job_id"))
        if job_id is None:
            continue
        array_job = number(job.get("array_job_id")) or 0
        task = number(job.get("array_task_id"))
        pending = job.get("array_task_string") or ""
        tasks = expand_task_ids(pending) if array_job and task is None and pending else []
        code, signal = exit_pair(shape, job.get("exit_code"), raw=shape.ctld_exit_code_raw)
        start, end = _time(job.get("start_time")), _time(job.get("end_time"))
        state = state_of(shape, job.get("job_state"))
        found.update(
            _statuses(
                _keys(array_job, task, tasks, job_id),
                array_job,
                state=state,
                job_id_raw=str(job_id),
                exit_code=code,
                signal=signal,
                elapsed_s=_elapsed(start, end, now),
                start=start,
                end=end,
                node_list=_text(job.get("nodes")),
                reason=_text(job.get("state_reason")),
                source="slurmrestd",
            )
        )
    return found


def _statuses(keys: list[str], array_job: int, **fields: Any) -> dict[str, JobStatus]:
    """One JobStatus per key ("45" or "45_3"), the same fields for each element."""
    return {
        key: JobStatus(
            job_id=key,
            array_job_id=str(array_job) if array_job else None,
            array_task_id=int(key.split("_")[1]) if "_" in key else None,
            **fields,
        )
        for key in keys
    }


def _db_pending_tasks(shape: ApiShape, text: Any) -> list[int]:
    if not isinstance(text, str) or not text:
        return []
    if text.startswith("0x"):
        bits = int(text, 16)
        return [i for i in range(bits.bit_length()) if bits >> i & 1]
    return expand_task_ids(text)


def _tres(items: Any, kind: str) -> int | None:
    for item in items or []:
        if isinstance(item, dict) and item.get("type") == kind:
            return number(item.get("count"))
    return None


def _step_rss_bytes(step: Mapping[str, Any]) -> int | None:
    tres = step.get("tres") or {}
    return _tres((tres.get("requested") or {}).get("max"), "mem")


def _step_over_memory(shape: ApiShape, step: Mapping[str, Any]) -> bool:
    """The step ran out of memory: Slurm says so (cgroups), or, with
    ``JobAcctGatherParams=OverMemoryKill``, it was killed by signal 9 while its
    peak RSS exceeded its allocation (the same reading as parse_sacct's)."""
    if state_of(shape, step.get("state")) is JobState.OUT_OF_MEMORY:
        return True
    _, signal = exit_pair(shape, step.get("exit_code"), raw=False)
    rss = _step_rss_bytes(step)
    limit_mb = _tres((step.get("tres") or {}).get("allocated"), "mem")
    return signal == 9 and rss is not None and limit_mb is not None and rss > limit_mb * 1024**2


def db_jobs(shape: ApiShape, body: Mapping[str, Any], *, now: datetime) -> dict[str, JobStatus]:
    """GET /slurmdb/<v>/jobs: accounting records, with MaxRSS from the steps.

    Slurm 22.05's dbv0.0.38 reports exit_code SUCCESS/0 for a job that exited non-zero
    (only signals come through), so the controller is asked first while it remembers.
    """
    found: dict[str, JobStatus] = {}
    for job in body.get("jobs") or []:
        job_id = number(job.get("job_id"))
        if job_id is None:
            continue
        array = job.get("array") or {}
        array_job = number(array.get("job_id")) or 0
        task = number(array.get("task_id"))
        tasks = _db_pending_tasks(shape, array.get("task")) if array_job and task is None else []
        state_info = job.get("state") or {}
        state = state_of(shape, state_info.get("current"))
        steps = job.get("steps") or []
        rss = [r for r in (_step_rss_bytes(s) for s in steps) if r is not None]
        if state in (JobState.FAILED, JobState.CANCELLED) and any(
            _step_over_memory(shape, s) for s in steps
        ):
            state = JobState.OUT_OF_MEMORY
        times = job.get("time") or {}
        start, end = _time(times.get("start")), _time(times.get("end"))
        code, signal = exit_pair(shape, job.get("exit_code"), raw=False)
        found.update(
            _statuses(
                _keys(array_job, task, tasks, job_id),
                array_job,
                state=state,
                job_id_raw=str(job_id),
                exit_code=code,
                signal=signal,
                elapsed_s=_elapsed(start, end, now),
                start=start,
                end=end,
                max_rss_bytes=max(rss) if rss else None,
                node_list=_text(job.get("nodes")),
                reason=_text(state_info.get("reason")),
                source="slurmdbd",
            )
        )
    return found


def ids_named(body: Mapping[str, Any], name: str) -> list[str]:
    """Job ids (an array's parent id once for all its elements) of the jobs called
    exactly ``name`` in a controller or accounting job list, oldest first."""
    ids = set()
    for job in body.get("jobs") or []:
        if not isinstance(job, dict) or job.get("name") != name:
            continue
        array = job.get("array") if isinstance(job.get("array"), dict) else {}
        parent = number(job.get("array_job_id")) or number(array.get("job_id"))
        job_id = parent or number(job.get("job_id"))
        if job_id:
            ids.add(job_id)
    return [str(i) for i in sorted(ids)]


def partitions(shape: ApiShape, body: Mapping[str, Any]) -> list[Partition]:
    if not shape.flat_partitions:
        raise SlurmError(f"partitions over REST: the {shape.version} answer shape is not mapped")
    result = []
    for item in body.get("partitions") or []:
        limit = number(item.get("max_time_limit"))
        result.append(
            Partition(
                name=str(item.get("name")),
                available=str(item.get("state", "")).upper() == "UP",
                time_limit_s=limit * 60 if limit is not None else None,
                nodes=number(item.get("total_nodes")) or 0,
                cpus=number(item.get("total_cpus")) or 0,
                default="default" in (item.get("flags") or []),
            )
        )
    return result
