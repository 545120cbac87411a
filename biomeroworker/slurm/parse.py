"""Readers for sbatch, sacct, squeue and sinfo machine output. Pure functions."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime

from biomeroworker.errors import SlurmError
from biomeroworker.slurm.commands import SACCT_FIELDS
from biomeroworker.slurm.states import JobState, parse_state
from biomeroworker.slurm.values import (
    expand_task_ids,
    parse_duration_s,
    parse_exit_code,
    parse_size_bytes,
    parse_timestamp,
)

_PARSABLE_ID = re.compile(r"^(?P<id>\d+)(?:;\S+)?$")
# "45", "45_3", "45_[1-3%2]", "45+1" followed by an optional ".step".
_SACCT_ID = re.compile(
    r"^(?P<job>\d+)(?:_(?P<task>\d+)|_\[(?P<pending>[^\]]+)\]|\+(?P<het>\d+))?"
    r"(?:\.(?P<step>.+))?$"
)
_SQUEUE_FIELDS = 10
_SINFO_FIELDS = 5


@dataclass(frozen=True)
class JobStatus:
    """What we know about one job or one array element.

    ``job_id`` is "123" for a plain job and "45_3" for an array element; ``job_id_raw``
    is Slurm's own number for the element. Fields Slurm did not report are None.
    """

    job_id: str
    state: JobState
    array_job_id: str | None = None
    array_task_id: int | None = None
    job_id_raw: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    elapsed_s: int | None = None
    start: datetime | None = None
    end: datetime | None = None
    max_rss_bytes: int | None = None
    node_list: str | None = None
    reason: str | None = None
    source: str = "sacct"


@dataclass(frozen=True)
class Partition:
    name: str
    available: bool
    time_limit_s: int | None
    nodes: int
    cpus: int
    default: bool


def parse_sbatch_job_id(stdout: str) -> str:
    """The job id from ``sbatch --parsable`` output: "123" or "123;cluster"."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    match = _PARSABLE_ID.fullmatch(lines[-1]) if lines else None
    if match is None:
        raise SlurmError(f"sbatch printed no job id: {stdout.strip()[:200]!r}")
    return match["id"]


def _split(line: str, count: int, what: str) -> list[str]:
    fields = line.split("|", count - 1)
    if len(fields) != count:
        raise SlurmError(f"{what}: expected {count} fields, got {len(fields)}: {line[:200]!r}")
    return fields


def _text(value: str) -> str | None:
    value = value.strip()
    return None if value in ("", "None", "None assigned", "(null)", "N/A") else value


def parse_sacct(stdout: str) -> dict[str, JobStatus]:
    """Read ``sacct --parsable2 --noheader --format=<SACCT_FIELDS>`` output.

    Job lines become JobStatus entries; step lines ("123.batch", "45_3.0") only add
    their MaxRSS (the job keeps the largest) and tell whether a step ran out of
    memory. A pending array range "45_[1-3]" becomes one PENDING entry per element.
    """
    jobs: dict[str, JobStatus] = {}
    steps: list[tuple[str, dict[str, str]]] = []
    for line in stdout.splitlines():
        if not line.strip():
            continue
        row = dict(zip(SACCT_FIELDS, _split(line, len(SACCT_FIELDS), "sacct"), strict=True))
        match = _SACCT_ID.fullmatch(row["JobID"].strip())
        if match is None:
            raise SlurmError(f"sacct: cannot read job id {row['JobID']!r}")
        if match["step"] is not None:
            steps.append((row["JobID"].strip().rsplit(".", 1)[0], row))
        elif match["pending"] is not None:
            for task in expand_task_ids(match["pending"]):
                status = _sacct_job(f"{match['job']}_{task}", match["job"], task, row)
                jobs[status.job_id] = status
        else:
            task = int(match["task"]) if match["task"] else None
            array_job = match["job"] if task is not None else None
            jobs[row["JobID"].strip()] = _sacct_job(row["JobID"].strip(), array_job, task, row)
    for owner, row in steps:
        if owner in jobs:
            jobs[owner] = _merge_step(jobs[owner], row)
    return jobs


def _sacct_job(
    job_id: str, array_job: str | None, task: int | None, row: dict[str, str]
) -> JobStatus:
    exit_code, signal = parse_exit_code(row["ExitCode"])
    return JobStatus(
        job_id=job_id,
        state=parse_state(row["State"]),
        array_job_id=array_job,
        array_task_id=task,
        job_id_raw=row["JobIDRaw"].strip() or None,
        exit_code=exit_code,
        signal=signal,
        elapsed_s=parse_duration_s(row["Elapsed"]),
        start=parse_timestamp(row["Start"]),
        end=parse_timestamp(row["End"]),
        max_rss_bytes=parse_size_bytes(row["MaxRSS"]),
        node_list=_text(row["NodeList"]),
        reason=_text(row["Reason"]),
    )


def _merge_step(job: JobStatus, row: dict[str, str]) -> JobStatus:
    rss = parse_size_bytes(row["MaxRSS"])
    if rss is not None and (job.max_rss_bytes is None or rss > job.max_rss_bytes):
        job = replace(job, max_rss_bytes=rss)
    if job.state in (JobState.FAILED, JobState.CANCELLED) and _step_out_of_memory(row, rss):
        job = replace(job, state=JobState.OUT_OF_MEMORY)
    # slurmdbd can record a step starting before it records the job leaving PENDING.
    if job.state is JobState.PENDING and parse_state(row["State"]) is JobState.RUNNING:
        job = replace(job, state=JobState.RUNNING)
    return job


def _step_out_of_memory(row: dict[str, str], rss: int | None) -> bool:
    """Whether a step was killed for using more memory than it was given.

    With cgroup enforcement Slurm says OUT_OF_MEMORY itself. With
    ``JobAcctGatherParams=OverMemoryKill`` (no cgroups) Slurm 22.05 records the step as
    "CANCELLED by 0" with signal 9 and the job as FAILED; the step's MaxRSS above its
    allocated memory is then the only trace, and we read it as OUT_OF_MEMORY.
    """
    if parse_state(row["State"]) is JobState.OUT_OF_MEMORY:
        return True
    limit = _tres_mem_bytes(row["AllocTRES"])
    _, signal = parse_exit_code(row["ExitCode"])
    return signal == 9 and rss is not None and limit is not None and rss > limit


def _tres_mem_bytes(tres: str) -> int | None:
    for item in tres.split(","):
        name, _, value = item.partition("=")
        if name.strip() == "mem":
            return parse_size_bytes(value)
    return None


def parse_squeue(stdout: str) -> dict[str, JobStatus]:
    """Read ``squeue --noheader --array --format=<SQUEUE_FORMAT>`` output.

    squeue prints no exit codes or memory use, so those stay None; but COMPLETED means
    every process exited 0 (squeue(1), JOB STATE CODES), so that is recorded.
    """
    jobs: dict[str, JobStatus] = {}
    for line in stdout.splitlines():
        if not line.strip():
            continue
        job_id, raw, array_job, task, state, used, start, end, nodes, reason = _split(
            line, _SQUEUE_FIELDS, "squeue"
        )
        is_element = task.strip().isdigit()
        job_state = parse_state(state)
        clean = job_state is JobState.COMPLETED
        jobs[job_id.strip()] = JobStatus(
            job_id=job_id.strip(),
            state=job_state,
            exit_code=0 if clean else None,
            signal=0 if clean else None,
            array_job_id=array_job.strip() if is_element else None,
            array_task_id=int(task) if is_element else None,
            job_id_raw=raw.strip() or None,
            elapsed_s=parse_duration_s(used),
            start=parse_timestamp(start),
            end=parse_timestamp(end),
            node_list=_text(nodes),
            reason=_text(reason),
            source="squeue",
        )
    return jobs


def array_parents(job_ids: Iterable[str]) -> list[str]:
    """``job_ids`` plus the array job of each element: sacct lists a pending element
    only under its array job ("45_[1-3]"), never under "45_2"."""
    parents = [job_id.split("_", 1)[0] for job_id in job_ids if "_" in job_id]
    return list(dict.fromkeys([*job_ids, *parents]))


def answer(
    requested: Iterable[str], found: dict[str, JobStatus], *, listed_by: str = "none"
) -> dict[str, JobStatus]:
    """The entries of ``found`` that answer a requested id, plus UNKNOWN for the rest.

    An entry answers an id equal to its job id, its raw id or its array job id, so
    asking for "45" returns every element of array 45. ``listed_by`` names the query
    that produced ``found`` ("sacct", "squeue", "slurmrestd", "slurmdbd"; "none" when no
    query answered):
    an UNKNOWN entry carries it as its source, so a caller can tell "accounting does
    not list this job" from "nobody could be asked".
    """
    wanted = list(requested)
    wanted_set = set(wanted)  # a list here made every poll entries x ids
    result: dict[str, JobStatus] = {}
    answered: set[str] = set()
    for key, status in found.items():
        names = {status.job_id, status.job_id_raw, status.array_job_id}
        hits = names & wanted_set
        if hits:
            result[key] = status
            answered.update(hits)
    for job_id in wanted:
        if job_id not in answered:
            result[job_id] = JobStatus(job_id=job_id, state=JobState.UNKNOWN, source=listed_by)
    return result


def parse_sinfo(stdout: str) -> list[Partition]:
    """Read ``sinfo --noheader --format=<SINFO_FORMAT>`` output, one line per partition."""
    partitions = []
    for line in stdout.splitlines():
        if not line.strip():
            continue
        name, avail, limit, nodes, cpus = _split(line, _SINFO_FIELDS, "sinfo")
        name = name.strip()
        total = cpus.strip().rsplit("/", 1)[-1]
        if not nodes.strip().isdigit() or not total.isdigit():
            raise SlurmError(f"sinfo: cannot read node or CPU count: {line[:200]!r}")
        partitions.append(
            Partition(
                name=name.rstrip("*"),
                available=avail.strip() == "up",
                time_limit_s=parse_duration_s(limit),
                nodes=int(nodes),
                cpus=int(total),
                default=name.endswith("*"),
            )
        )
    return partitions
