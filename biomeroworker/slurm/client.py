"""SlurmClient: runs the rendered commands through a Transport and parses the answers."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from biomeroworker.errors import AccountingUnavailable, CommandError, SlurmError
from biomeroworker.slurm.commands import (
    DEFAULT_HISTORY,
    SubmitRequest,
    find_by_name_argv,
    find_by_name_sacct_argv,
    sacct_argv,
    sbatch_argv,
    scancel_argv,
    sinfo_argv,
    squeue_argv,
    unique_job_ids,
)
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
from biomeroworker.slurm.settle import combine, ended_badly, unsettled
from biomeroworker.transport.base import Transport

log = logging.getLogger(__name__)


class SlurmClient:
    """sbatch / sacct / squeue / scancel / sinfo over any Transport.

    A query that fails never reports a job as failed: jobs it cannot see come back
    as ``JobState.UNKNOWN``. Transport errors (connection, timeout) propagate.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        command_timeout_s: float = 60.0,
        history_since: str = DEFAULT_HISTORY,
    ) -> None:
        self.transport = transport
        self.command_timeout_s = command_timeout_s
        self.history_since = history_since  # sacct --starttime when searching old jobs

    def submit(self, request: SubmitRequest) -> str:
        """Submit and return the job id. Not retried: a retry could submit twice.

        Raises SlurmError with sbatch's own words when Slurm refuses the job.
        """
        try:
            result = self.transport.run(sbatch_argv(request), timeout_s=self.command_timeout_s)
        except CommandError as exc:
            raise SlurmError(f"sbatch refused the job: {_tail(exc.stderr or exc.stdout)}") from exc
        return parse_sbatch_job_id(result.stdout)

    def poll(
        self, job_ids: Iterable[str], expected: Mapping[str, int] | None = None
    ) -> dict[str, JobStatus]:
        """Status of every job and array element of ``job_ids``: one squeue, and one
        sacct only for the jobs squeue's answer does not settle (``slurm.settle``: not
        listed, fewer elements than ``expected`` gives, or ended badly). If squeue
        cannot answer, sacct answers for all. Keys are job ids, array elements as
        "45_3"; ids nobody lists are UNKNOWN, carrying the query that did not list them.
        """
        ids = unique_job_ids(job_ids)
        if not ids:
            return {}
        # Parents only: squeue 22.05 given "45_7,45" lists element 7 alone, and the
        # parent lists every element anyway (answer() keeps those asked about).
        live = self._squeue(list(dict.fromkeys(job_id.split("_", 1)[0] for job_id in ids)))
        if live is None:
            found = self._sacct(array_parents(ids))
            return answer(ids, found or {}, listed_by="none" if found is None else "sacct")
        known = answer(ids, live, listed_by="squeue")
        asked = unsettled(ids, known, expected or {}, ended_badly)
        if not asked:
            return known
        found = self._sacct(array_parents(asked))
        return combine(known, asked, found, accounting_name="sacct", confirm=ended_badly)

    def accounting(self, job_ids: Iterable[str]) -> dict[str, JobStatus] | None:
        """What sacct alone says about ``job_ids`` (exit codes, memory use), or None when
        it cannot answer. For filling in a job the controller already saw end."""
        ids = unique_job_ids(job_ids)
        if not ids:
            return {}
        found = self._sacct(array_parents(ids))
        return None if found is None else answer(ids, found, listed_by="sacct")

    def _sacct(self, ids: list[str]) -> dict[str, JobStatus] | None:
        result = self.transport.run(
            sacct_argv(ids), timeout_s=self.command_timeout_s, check=False, idempotent=True
        )
        if not result.ok:
            log.warning("sacct failed: %s", _tail(result.stderr))
            return None
        try:
            return parse_sacct(result.stdout)
        except SlurmError as exc:
            log.warning("sacct output unreadable: %s", exc)
            return None

    def _squeue(self, ids: list[str]) -> dict[str, JobStatus] | None:
        """squeue's answer, or None when it could not answer (sacct is asked instead)."""
        result = self.transport.run(
            squeue_argv(ids), timeout_s=self.command_timeout_s, check=False, idempotent=True
        )
        if not result.ok:
            # squeue exits 1 with "Invalid job id specified" when it knows none of them.
            if "invalid job id" in result.stderr.lower():
                return {}
            log.warning("squeue failed (%s), asking sacct", _tail(result.stderr))
            return None
        try:
            return parse_squeue(result.stdout)
        except SlurmError as exc:
            log.warning("squeue output unreadable (%s), asking sacct", exc)
            return None

    def cancel(self, job_ids: Iterable[str]) -> None:
        """Cancel jobs (or array elements) in one scancel; cancelling a finished job is fine."""
        ids = list(job_ids)
        if ids:
            self.transport.run(scancel_argv(ids), timeout_s=self.command_timeout_s, idempotent=True)

    def find_by_name(self, name: str) -> list[str]:
        """Ids of jobs named ``name`` (array parents once), oldest first.

        Used to adopt a job whose id was never recorded (a crash between sbatch and
        the bookkeeping). squeue answers for live and recently ended jobs; sacct for
        older ones. A query that fails raises: "not found" must never be guessed.
        """
        found = self.transport.run(find_by_name_argv(name), idempotent=True).stdout.split()
        if not found:
            argv = find_by_name_sacct_argv(name, self.history_since)
            result = self.transport.run(argv, check=False, idempotent=True)
            if not result.ok:
                # slurmdbd down: a transient outage, never "not found" (that would submit twice)
                raise AccountingUnavailable(
                    f"cannot look for job {name!r} in Slurm's accounting: {_tail(result.stderr)}"
                )
            rows = result.stdout
            found = [line.split("|")[1].split("_")[0] for line in rows.splitlines() if "|" in line]
        unique = sorted({j for j in found if j.isdigit()}, key=int)
        return unique

    def partitions(self) -> list[Partition]:
        result = self.transport.run(sinfo_argv(), timeout_s=self.command_timeout_s, idempotent=True)
        return parse_sinfo(result.stdout)


def _tail(text: str) -> str:
    lines = text.strip().splitlines()
    return " | ".join(lines[-2:]) if lines else "no output"
