"""SlurmClient against the real Slurm 22.05 (with slurmdbd) from localslurm/."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import pytest

from biomeroworker.errors import SlurmError
from biomeroworker.slurm import JobState, JobStatus, SlurmClient, SubmitRequest
from biomeroworker.transport.base import Transport

pytestmark = pytest.mark.integration

Statuses = dict[str, JobStatus]


class JobBench:
    """Writes job scripts into a scratch folder on the cluster, submits them, and
    cancels whatever is left when the test ends."""

    def __init__(self, transport: Transport, folder: str) -> None:
        self.transport = transport
        self.slurm = SlurmClient(transport)
        self.folder = folder
        self.submitted: list[str] = []

    def submit(self, name: str, body: str, **fields: object) -> str:
        script = f"{self.folder}/{name}.sh"
        self.transport.write_text(script, f"#!/bin/bash\n{body}\n", mode=0o700)
        defaults: dict[str, object] = {
            "job_name": f"biomero-test-{name}",
            "partition": "cpu-short",
            "time_limit": "5",
            "mem": "64M",
            "chdir": self.folder,
            "output_path": f"{self.folder}/{name}-%j.log",
        }
        request = SubmitRequest(script_path=script, **(defaults | fields))  # type: ignore[arg-type]
        job_id = self.slurm.submit(request)
        self.submitted.append(job_id)
        return job_id

    def wait(
        self, job_ids: list[str], until: Callable[[Statuses], bool], *, limit_s: float = 180
    ) -> Statuses:
        """Poll once a second until ``until(statuses)`` holds; fail after ``limit_s``."""
        deadline = time.monotonic() + limit_s
        statuses = self.slurm.poll(job_ids)
        while not until(statuses):
            if time.monotonic() > deadline:
                shown = {key: (s.state.name, s.reason) for key, s in statuses.items()}
                pytest.fail(f"jobs {job_ids} did not get there within {limit_s:g} s: {shown}")
            time.sleep(1)
            statuses = self.slurm.poll(job_ids)
        return statuses


def all_terminal(statuses: Statuses) -> bool:
    return all(status.state.terminal for status in statuses.values())


def _bench(transport: Transport) -> Iterator[JobBench]:
    folder = transport.run(["mktemp", "-d", "-t", "biomero-slurm.XXXXXX"]).stdout.strip()
    bench = JobBench(transport, folder)
    yield bench
    if bench.submitted:
        bench.slurm.cancel(bench.submitted)
    transport.run(["rm", "-rf", "--", folder])


@pytest.fixture
def bench(ssh_transport: Transport) -> Iterator[JobBench]:
    yield from _bench(ssh_transport)


@pytest.fixture
def any_bench(transport: Transport) -> Iterator[JobBench]:
    """A bench over each transport in turn (ssh, local)."""
    yield from _bench(transport)


def test_single_job_completes_with_its_output(any_bench: JobBench) -> None:
    job_id = any_bench.submit("hello", "echo hello from $SLURM_JOB_ID")
    status = any_bench.wait([job_id], all_terminal)[job_id]
    assert (status.state, status.exit_code, status.signal) == (JobState.COMPLETED, 0, 0)
    assert status.start is not None and status.end is not None
    log = any_bench.transport.read_text(f"{any_bench.folder}/hello-{job_id}.log")
    assert log == f"hello from {job_id}\n"


def test_array_failure_shows_on_the_failing_element_only(bench: JobBench) -> None:
    body = 'if [ "$SLURM_ARRAY_TASK_ID" = 2 ]; then exit 3; fi'
    job_id = bench.submit("array", body, array="1-3")
    elements = {f"{job_id}_{task}" for task in (1, 2, 3)}
    statuses = bench.wait([job_id], lambda s: set(s) == elements and all_terminal(s))
    assert {key: (s.state, s.exit_code) for key, s in statuses.items()} == {
        f"{job_id}_1": (JobState.COMPLETED, 0),
        f"{job_id}_2": (JobState.FAILED, 3),
        f"{job_id}_3": (JobState.COMPLETED, 0),
    }
    assert {s.array_job_id for s in statuses.values()} == {job_id}


def test_pending_array_elements_are_reported_one_by_one(bench: JobBench) -> None:
    job_id = bench.submit("held", "true", array="1-3,7", array_throttle=1, extra_flags={"hold": ""})
    statuses = bench.wait([f"{job_id}_7", job_id], lambda s: len(s) == 4)
    assert sorted(statuses) == [f"{job_id}_{task}" for task in (1, 2, 3, 7)]
    assert {s.state for s in statuses.values()} == {JobState.PENDING}
    assert statuses[f"{job_id}_7"].array_task_id == 7


def test_job_over_its_memory_is_out_of_memory(bench: JobBench) -> None:
    hog = "import time; block = bytearray(300 * 1024 * 1024); time.sleep(20)"
    job_id = bench.submit("hog", f'python3 -c "{hog}"', mem="50M")
    status = bench.wait([job_id], all_terminal)[job_id]
    assert status.state is JobState.OUT_OF_MEMORY
    assert status.max_rss_bytes is not None and status.max_rss_bytes > 50 * 1024**2


def test_job_over_its_time_limit_is_timeout(bench: JobBench) -> None:
    # Slurm's smallest limit is one minute; slurmctld notices it within about 30 s more.
    job_id = bench.submit("sleeper", "sleep 600", time_limit="1")
    status = bench.wait([job_id], all_terminal, limit_s=240)[job_id]
    assert status.state is JobState.TIMEOUT


def test_cancelled_running_job_is_cancelled(bench: JobBench) -> None:
    job_id = bench.submit("victim", "sleep 600")
    bench.wait([job_id], lambda s: s[job_id].state is JobState.RUNNING)
    bench.slurm.cancel([job_id])
    status = bench.wait([job_id], all_terminal)[job_id]
    assert status.state is JobState.CANCELLED


def test_twenty_jobs_are_polled_with_one_command_per_cycle(bench: JobBench) -> None:
    job_ids = [bench.submit(f"many{n}", "true") for n in range(20)]
    polls = 0

    def counted(statuses: Statuses) -> bool:
        nonlocal polls
        polls += 1
        return all(s.state is JobState.COMPLETED for s in statuses.values())

    before = bench.transport.commands_run
    statuses = bench.wait(job_ids, counted)
    assert bench.transport.commands_run - before == polls
    assert set(statuses) == set(job_ids)


def test_running_job_stays_running_while_accounting_is_down(
    bench: JobBench, stopped_slurmdbd: Callable[[], contextlib.AbstractContextManager[None]]
) -> None:
    job_id = bench.submit("steady", "sleep 600")
    bench.wait([job_id], lambda s: s[job_id].state is JobState.RUNNING)
    gone = "99999999"
    with stopped_slurmdbd():
        statuses = bench.slurm.poll([job_id, gone])
    assert (statuses[job_id].state, statuses[job_id].source) == (JobState.RUNNING, "squeue")
    assert statuses[gone].state is JobState.UNKNOWN


def test_refused_submission_says_why(bench: JobBench) -> None:
    with pytest.raises(SlurmError, match="invalid partition specified: no-such-partition"):
        bench.submit("nowhere", "true", partition="no-such-partition")


def test_partitions_lists_the_cluster_partitions(any_bench: JobBench) -> None:
    partitions = {p.name: p for p in any_bench.slurm.partitions()}
    short, long = partitions["cpu-short"], partitions["cpu-long"]
    assert (short.default, short.available, short.time_limit_s) == (True, True, 2 * 3600)
    assert (long.default, long.time_limit_s) == (False, 7 * 24 * 3600)
    assert short.nodes >= 1 and short.cpus >= 1
