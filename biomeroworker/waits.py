"""What one poll says about one run's job: which entries are its own, whether it is
over, and whether Slurm lists it at all. Pure functions over ``SlurmClient.poll``
answers, so every order in which a poll can first see a job is a table test.

A workflow job is a plain job ("372"). A conversion is a job array even for one image,
and Slurm lists its elements as "372_1", "372_2"..., never under "372" once they run:
entries are matched by identity (array job id and task id), never by how many
elements are expected.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from biomeroworker.slurm.parse import JobStatus
from biomeroworker.slurm.states import JobState

# Queries whose silence about a job means "Slurm's accounting does not know it".
# The controller (squeue, slurmrestd's job list) forgets finished jobs within minutes,
# so its silence proves nothing.
ACCOUNTING = frozenset({"sacct", "slurmdbd"})


@dataclass(frozen=True)
class JobView:
    """One job (or job array) as one poll saw it."""

    job_id: str
    expected: int
    elements: Mapping[str, JobStatus]
    listed_by: str

    @property
    def missing(self) -> int:
        """Elements (or the job itself) the poll did not list."""
        return max(0, self.expected - len(self.elements))

    @property
    def done(self) -> int:
        return sum(1 for s in self.elements.values() if s.state.terminal)

    @property
    def final(self) -> bool:
        """Every expected element is listed and has ended."""
        return self.missing == 0 and self.done >= self.expected

    @property
    def accounting_silent(self) -> bool:
        """Slurm's accounting answered this poll and did not list all of the job."""
        return self.missing > 0 and self.listed_by in ACCOUNTING

    def summary(self) -> JobStatus:
        """One status for the job: the first failure, else the least advanced element;
        UNKNOWN while any element is unlisted and none is live or failed."""
        values = list(self.elements.values())
        failed = [s for s in values if s.state.terminal and not s.state.ok]
        if failed:
            return failed[0]
        live = [s for s in values if not s.state.terminal]
        if live:
            return live[0]
        if self.missing or not values:
            return JobStatus(job_id=self.job_id, state=JobState.UNKNOWN, source=self.listed_by)
        return values[0]

    def describe_missing(self) -> str:
        if self.expected == 1:
            return f"job {self.job_id}"
        listed = sorted(s.array_task_id or 0 for s in self.elements.values())
        absent = [str(i) for i in range(1, self.expected + 1) if i not in listed]
        shown = ", ".join(absent[:10]) + (", ..." if len(absent) > 10 else "")
        return f"element(s) {shown} of job array {self.job_id}"


class Polled(dict[str, JobStatus]):
    """One poll's answer, indexed once by the job each listed entry can belong to.

    A supervisor cycle looks up every waiting run's job in the same answer; with the
    index each lookup costs the entries of that job, not the whole answer (which made a
    cycle runs x jobs). Built after the poll and not changed afterwards.
    """

    def __init__(self, answer: Mapping[str, JobStatus]) -> None:
        super().__init__(answer)
        self.by_job: dict[str, list[tuple[str, JobStatus]]] = {}
        for key, status in self.items():
            if status.state is JobState.UNKNOWN:
                continue
            if status.array_task_id is not None:
                ids = {status.array_job_id}
            else:
                ids = {key, status.job_id, status.job_id_raw}
            for job_id in ids:
                if job_id is not None:
                    self.by_job.setdefault(job_id, []).append((key, status))


def indexed(polled: Mapping[str, JobStatus]) -> Polled:
    """``polled`` with its index (itself when it has one)."""
    return polled if isinstance(polled, Polled) else Polled(polled)


def view_of(polled: Mapping[str, JobStatus], job_id: str, *, array: bool, expected: int) -> JobView:
    """The entries of ``polled`` that belong to ``job_id``.

    For an array: its elements (array job id and task id set). For a plain job: the
    entry whose id or raw id is ``job_id``. UNKNOWN placeholders never count as seen.
    Pass a ``Polled`` when looking up many jobs in one answer: a plain mapping is
    indexed again on every call.
    """
    mine: dict[str, JobStatus] = {}
    for key, status in indexed(polled).by_job.get(job_id, ()):
        if array:
            belongs = status.array_task_id is not None and status.array_job_id == job_id
            # An array of one has been seen listed under its plain id: that is its element.
            belongs |= expected == 1 and status.array_task_id is None and key == job_id
        else:
            belongs = status.array_task_id is None and job_id in (
                key,
                status.job_id,
                status.job_id_raw,
            )
        if belongs:
            mine[key] = status
    return JobView(job_id, expected, mine, _listed_by(polled, job_id, mine))


def _listed_by(polled: Mapping[str, JobStatus], job_id: str, mine: Mapping[str, JobStatus]) -> str:
    """Which query answered for this job: a listed entry's source, else the placeholder's."""
    for status in mine.values():
        return status.source
    placeholder = polled.get(job_id)
    return placeholder.source if placeholder is not None else "none"
