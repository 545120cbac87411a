# ruff: noqa: E501  (the tables are real sacct lines, kept whole)
"""Parsers over output recorded from the localslurm cluster (Slurm 22.05.8).

Every table below is real output of the commands in biomeroworker.slurm.commands,
run as the service account over SSH on 2026-11-21; nothing was edited by hand.
"""

from __future__ import annotations

from datetime import datetime

import pytest

from biomeroworker.errors import SlurmError
from biomeroworker.slurm.parse import (
    JobStatus,
    Partition,
    answer,
    array_parents,
    parse_sacct,
    parse_sbatch_job_id,
    parse_sinfo,
    parse_squeue,
)
from biomeroworker.slurm.states import JobState

# sacct for: 1 completed, 2 array 1-3 with task 2 doing `exit 3`, 3 python holding
# 300 MB under --mem=50M (killed by OverMemoryKill), 4 `sleep 300` under --time=1,
# 5 held array 1-5,9%2 with 5_2 cancelled, 6 cancelled by user 1001, 7 --mem=4GB.
SACCT_REAL = """\
1|1|COMPLETED|0:0|00:00:02|2026-11-21T05:07:19|2026-11-21T05:07:21||vm|billing=1,cpu=1,mem=256M,node=1|None
1.batch|1.batch|COMPLETED|0:0|00:00:02|2026-11-21T05:07:19|2026-11-21T05:07:21|4208K|vm|cpu=1,mem=256M,node=1|
3|3|FAILED|0:9|00:00:01|2026-11-21T05:07:19|2026-11-21T05:07:20||vm|billing=1,cpu=1,mem=50M,node=1|None
3.batch|3.batch|CANCELLED by 0|0:9|00:00:01|2026-11-21T05:07:19|2026-11-21T05:07:20|318072K|vm|cpu=1,mem=50M,node=1|
4|4|TIMEOUT|0:0|00:01:16|2026-11-21T05:07:19|2026-11-21T05:08:35||vm|billing=1,cpu=1,mem=256M,node=1|None
4.batch|4.batch|CANCELLED|0:15|00:01:16|2026-11-21T05:07:19|2026-11-21T05:08:35|4104K|vm|cpu=1,mem=256M,node=1|
6|6|CANCELLED by 1001|0:0|00:00:28|2026-11-21T05:07:19|2026-11-21T05:07:47||vm|billing=1,cpu=1,mem=256M,node=1|None
6.batch|6.batch|CANCELLED|0:15|00:00:28|2026-11-21T05:07:19|2026-11-21T05:07:47|4092K|vm|cpu=1,mem=256M,node=1|
7|7|COMPLETED|0:0|00:00:02|2026-11-21T05:07:19|2026-11-21T05:07:21||vm|billing=1,cpu=1,mem=4G,node=1|None
7.batch|7.batch|COMPLETED|0:0|00:00:02|2026-11-21T05:07:19|2026-11-21T05:07:21|4268K|vm|cpu=1,mem=4G,node=1|
2_1|8|COMPLETED|0:0|00:00:00|2026-11-21T05:07:19|2026-11-21T05:07:19||vm|billing=1,cpu=1,mem=256M,node=1|None
2_1.batch|8.batch|COMPLETED|0:0|00:00:00|2026-11-21T05:07:19|2026-11-21T05:07:19||vm|cpu=1,mem=256M,node=1|
2_2|9|FAILED|3:0|00:00:00|2026-11-21T05:07:19|2026-11-21T05:07:19||vm|billing=1,cpu=1,mem=256M,node=1|None
2_2.batch|9.batch|FAILED|3:0|00:00:00|2026-11-21T05:07:19|2026-11-21T05:07:19||vm|cpu=1,mem=256M,node=1|
2_3|2|COMPLETED|0:0|00:00:00|2026-11-21T05:07:19|2026-11-21T05:07:19||vm|billing=1,cpu=1,mem=256M,node=1|None
2_3.batch|2.batch|COMPLETED|0:0|00:00:00|2026-11-21T05:07:19|2026-11-21T05:07:19||vm|cpu=1,mem=256M,node=1|
5_[1,3-5,9%2]|5|PENDING|0:0|00:00:00|Unknown|Unknown||None assigned||JobHeldUser
"""

# Two seconds after submitting job 10: slurmdbd already had the step, not yet the start.
SACCT_STEP_AHEAD_OF_JOB = """\
10|10|PENDING|0:0|00:00:02|2026-11-21T05:09:05|Unknown||vm||None
10.batch|10.batch|RUNNING|0:0|00:00:02|2026-11-21T05:09:05|Unknown||vm|cpu=1,mem=256M,node=1|
"""

SQUEUE_REAL = """\
1|1|1|N/A|COMPLETED|0:02|2026-11-21T05:07:19|2026-11-21T05:07:21|vm|None
2_1|8|2|1|COMPLETED|0:00|2026-11-21T05:07:19|2026-11-21T05:07:19|vm|None
2_3|2|2|3|COMPLETED|0:00|2026-11-21T05:07:19|2026-11-21T05:07:19|vm|None
7|7|7|N/A|COMPLETED|0:02|2026-11-21T05:07:19|2026-11-21T05:07:21|vm|None
2_2|9|2|2|FAILED|0:00|2026-11-21T05:07:19|2026-11-21T05:07:19|vm|NonZeroExitCode
3|3|3|N/A|FAILED|0:01|2026-11-21T05:07:19|2026-11-21T05:07:20|vm|JobLaunchFailure
5_1|5|5|1|PENDING|0:00|N/A|N/A||JobHeldUser
5_9|5|5|9|PENDING|0:00|N/A|N/A||JobHeldUser
4|4|4|N/A|RUNNING|0:11|2026-11-21T05:07:19|2026-11-21T05:08:19|vm|None
"""

SINFO_REAL = """\
cpu-short*|up|2:00:00|1|1/7/0/8
cpu-long|up|7-00:00:00|1|1/7/0/8
"""


@pytest.fixture(scope="module")
def sacct() -> dict[str, JobStatus]:
    return parse_sacct(SACCT_REAL)


# (job id, state, exit code, signal): the job line's verdict, steps merged in.
@pytest.mark.parametrize(
    ("job_id", "state", "exit_code", "signal"),
    [
        ("1", JobState.COMPLETED, 0, 0),
        ("2_1", JobState.COMPLETED, 0, 0),
        ("2_2", JobState.FAILED, 3, 0),
        ("2_3", JobState.COMPLETED, 0, 0),
        ("3", JobState.OUT_OF_MEMORY, 0, 9),
        ("4", JobState.TIMEOUT, 0, 0),
        ("6", JobState.CANCELLED, 0, 0),
        ("7", JobState.COMPLETED, 0, 0),
        ("5_1", JobState.PENDING, 0, 0),
        ("5_9", JobState.PENDING, 0, 0),
    ],
)
def test_sacct_job_state_and_exit(
    sacct: dict[str, JobStatus], job_id: str, state: JobState, exit_code: int, signal: int
) -> None:
    status = sacct[job_id]
    assert (status.state, status.exit_code, status.signal) == (state, exit_code, signal)


def test_sacct_keys_are_jobs_and_array_elements_never_steps(sacct: dict[str, JobStatus]) -> None:
    assert set(sacct) == {"1", "2_1", "2_2", "2_3", "3", "4", "6", "7"} | {
        f"5_{task}" for task in (1, 3, 4, 5, 9)
    }


def test_sacct_array_element_knows_its_array_and_raw_id(sacct: dict[str, JobStatus]) -> None:
    element = sacct["2_2"]
    assert (element.array_job_id, element.array_task_id, element.job_id_raw) == ("2", 2, "9")


def test_sacct_plain_job_has_no_array_fields(sacct: dict[str, JobStatus]) -> None:
    assert (sacct["1"].array_job_id, sacct["1"].array_task_id) == (None, None)


def test_sacct_pending_range_becomes_pending_elements_without_times(
    sacct: dict[str, JobStatus],
) -> None:
    element = sacct["5_4"]
    assert (element.array_job_id, element.array_task_id) == ("5", 4)
    assert (element.start, element.end, element.node_list) == (None, None, None)
    assert element.reason == "JobHeldUser"


def test_sacct_max_rss_comes_from_the_batch_step(sacct: dict[str, JobStatus]) -> None:
    assert sacct["1"].max_rss_bytes == 4208 * 1024
    assert sacct["3"].max_rss_bytes == 318072 * 1024


def test_sacct_job_without_step_rss_has_none(sacct: dict[str, JobStatus]) -> None:
    assert sacct["2_1"].max_rss_bytes is None


def test_sacct_times_and_nodes(sacct: dict[str, JobStatus]) -> None:
    status = sacct["4"]
    assert status.elapsed_s == 76
    assert status.start == datetime(2026, 11, 21, 5, 7, 19)
    assert status.end == datetime(2026, 11, 21, 5, 8, 35)
    assert status.node_list == "vm"
    assert status.reason is None


def test_sacct_step_running_before_job_line_reports_running() -> None:
    assert parse_sacct(SACCT_STEP_AHEAD_OF_JOB)["10"].state is JobState.RUNNING


def test_sacct_killed_step_within_its_memory_is_not_out_of_memory() -> None:
    # Job 3's lines with the step's MaxRSS below its 50M allocation: a plain kill.
    lines = SACCT_REAL.splitlines()[2:4]
    lines[1] = lines[1].replace("318072K", "20000K")
    assert parse_sacct("\n".join(lines))["3"].state is JobState.FAILED


def test_sacct_empty_output_is_no_jobs() -> None:
    assert parse_sacct("") == {}


@pytest.mark.parametrize(
    "line",
    [
        "1|1|COMPLETED|0:0",  # too few fields
        "x1|1|COMPLETED|0:0|00:00:02|Unknown|Unknown||vm||None",  # bad id
        "1|1|COMPLETED|zero|00:00:02|Unknown|Unknown||vm||None",  # bad exit code
        "sacct: error: Problem talking to the database: Connection refused",
    ],
)
def test_sacct_unreadable_line_raises(line: str) -> None:
    with pytest.raises(SlurmError):
        parse_sacct(line)


def test_sacct_pipe_inside_reason_stays_in_reason() -> None:
    line = "1|1|PENDING|0:0|00:00:00|Unknown|Unknown||None assigned||odd|reason"
    assert parse_sacct(line)["1"].reason == "odd|reason"


@pytest.mark.parametrize(
    ("job_id", "state", "array_task_id", "reason"),
    [
        ("1", JobState.COMPLETED, None, None),
        ("2_2", JobState.FAILED, 2, "NonZeroExitCode"),
        ("3", JobState.FAILED, None, "JobLaunchFailure"),
        ("5_9", JobState.PENDING, 9, "JobHeldUser"),
        ("4", JobState.RUNNING, None, None),
    ],
)
def test_squeue_lines(job_id: str, state: JobState, array_task_id: int | None, reason: str) -> None:
    status = parse_squeue(SQUEUE_REAL)[job_id]
    assert (status.state, status.array_task_id, status.reason) == (state, array_task_id, reason)


def test_squeue_knows_no_exit_code_or_memory() -> None:
    status = parse_squeue(SQUEUE_REAL)["2_2"]
    assert (status.exit_code, status.max_rss_bytes, status.source) == (None, None, "squeue")


def test_squeue_running_job_has_elapsed_and_start() -> None:
    status = parse_squeue(SQUEUE_REAL)["4"]
    assert (status.elapsed_s, status.start) == (11, datetime(2026, 11, 21, 5, 7, 19))


@pytest.mark.parametrize(
    ("stdout", "job_id"),
    [
        ("1\n", "1"),  # real
        ("10\n", "10"),  # real
        ("4242;localslurm\n", "4242"),  # multi-cluster form from sbatch(1)
    ],
)
def test_sbatch_parsable_job_id(stdout: str, job_id: str) -> None:
    assert parse_sbatch_job_id(stdout) == job_id


@pytest.mark.parametrize("stdout", ["", "\n", "Submitted batch job 12\n", "12 13\n", "1;\n"])
def test_sbatch_output_without_job_id_raises(stdout: str) -> None:
    with pytest.raises(SlurmError, match="no job id"):
        parse_sbatch_job_id(stdout)


def test_sinfo_partitions() -> None:
    assert parse_sinfo(SINFO_REAL) == [
        Partition("cpu-short", True, 7200, 1, 8, True),
        Partition("cpu-long", True, 604800, 1, 8, False),
    ]


def test_sinfo_down_partition_without_limit() -> None:
    (partition,) = parse_sinfo("gpu|down|infinite|2|0/0/16/16\n")
    assert (partition.available, partition.time_limit_s, partition.cpus) == (False, None, 16)


def test_array_parents_adds_the_array_job_of_each_element() -> None:
    assert array_parents(["12", "45_3", "45_4", "45"]) == ["12", "45_3", "45_4", "45"]
    assert array_parents(["45_3"]) == ["45_3", "45"]


def test_answer_keeps_only_what_was_asked(sacct: dict[str, JobStatus]) -> None:
    assert set(answer(["5_3", "1"], sacct)) == {"5_3", "1"}


def test_answer_for_an_array_job_gives_every_element(sacct: dict[str, JobStatus]) -> None:
    assert set(answer(["2"], sacct)) == {"2_1", "2_2", "2_3"}


def test_answer_by_raw_id_finds_the_element(sacct: dict[str, JobStatus]) -> None:
    assert set(answer(["9"], sacct)) == {"2_2"}


def test_answer_marks_ids_nobody_reported_unknown(sacct: dict[str, JobStatus]) -> None:
    result = answer(["1", "99"], sacct)
    assert result["99"].state is JobState.UNKNOWN
    assert result["99"].source == "none"
