"""SlurmClient against the real Slurm 22.05 (with slurmdbd) from localslurm/.

The job lifecycle cases (array failures, OUT_OF_MEMORY, TIMEOUT, cancel, polling many)
run in all three modes in test_slurm_modes.py, which reuses JobBench from here; this
module keeps what only the command-line client does.
"""

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
