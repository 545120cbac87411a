"""One poll answer from two sources: the controller for what it still holds, Slurm's
accounting for the rest.

slurmctld knows a job's state the moment it changes; slurmdbd hears of it about a second
later (0.9 s on localslurm) and then remembers it for good, with exit codes and memory
use. So a poll asks the controller first (``squeue``, or slurmrestd's job list) and
accounting only about the jobs that answer does not settle:

- a job the controller does not list: it ended more than MinJobAge ago, the controller
  restarted, or it never existed;
- an array with fewer elements listed than the run expects: early elements age out of
  the controller while later ones still run;
- a job the controller says ended badly when only accounting can say why (``confirm``):
  a kill by signal 9 may be a memory kill (OUT_OF_MEMORY, which may be resubmitted), and
  squeue prints no exit codes at all.

In the usual cycle (jobs pending, running or just completed) that is one query. Pure
functions over parsed answers, so every order in which the two sources can disagree is
a table test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace

from biomeroworker.slurm.parse import JobStatus, answer
from biomeroworker.slurm.states import JobState

Confirm = Callable[[JobStatus], bool]


def ended_badly(status: JobStatus) -> bool:
    """squeue's terminal failures: it knows neither exit code nor signal, so whether
    FAILED was really OUT_OF_MEMORY, and with which code it failed, is accounting's."""
    return status.state.terminal and not status.state.ok


def _entries(ids: Iterable[str], known: Mapping[str, JobStatus]) -> dict[str, list[str]]:
    """For each requested id, the keys of the listed (not UNKNOWN) entries answering it."""
    index: dict[str, list[str]] = {job_id: [] for job_id in ids}
    for key, status in known.items():
        if status.state is JobState.UNKNOWN:
            continue
        for name in {status.job_id, status.job_id_raw, status.array_job_id}:
            if name in index:
                index[name].append(key)
    return index


def unsettled(
    ids: Iterable[str],
    known: Mapping[str, JobStatus],
    expected: Mapping[str, int],
    confirm: Confirm,
) -> list[str]:
    """The requested ids the controller's answer ``known`` does not settle (see above).
    ``expected`` gives an array's element count; a job not in it counts as one."""
    index = _entries(ids, known)
    return [
        job_id
        for job_id, keys in index.items()
        if len(keys) < expected.get(job_id, 1) or any(confirm(known[k]) for k in keys)
    ]


def combine(
    known: Mapping[str, JobStatus],
    asked: list[str],
    accounting: Mapping[str, JobStatus] | None,
    *,
    accounting_name: str,
    confirm: Confirm,
) -> dict[str, JobStatus]:
    """The controller's answer ``known`` with accounting's ``accounting`` (None: it
    could not be asked) merged in for the ``asked`` ids.

    - Entries only accounting lists are added; the controller's placeholders for ids
      accounting answered are dropped.
    - A ``confirm`` entry takes accounting's word once accounting has it ended; until
      then it is COMPLETING (not over): calling it FAILED now could be wrong a second
      later, and FAILED is final. So it waits while accounting cannot be asked, too.
    - Any other entry the controller lists stays as the controller says (it is the
      fresher of the two), unless both say it ended: accounting's then, which carries
      the exit code and memory use.
    - The entries of an asked job carry ``accounting_name`` as their source once
      accounting answered, so its silence about an element counts as accounting's.
    """
    result = dict(known)
    index = _entries(asked, known)
    acc = None if accounting is None else answer(asked, dict(accounting), listed_by=accounting_name)
    for job_id, keys in index.items():
        if acc is not None and not keys:
            result.pop(job_id, None)  # the controller's placeholder
        for key in keys:
            mine = known[key]
            theirs = acc.get(key) if acc is not None else None
            if theirs is not None and theirs.state is JobState.UNKNOWN:
                theirs = None
            if confirm(mine) and (theirs is None or not theirs.state.terminal):
                result[key] = replace(
                    mine, state=JobState.COMPLETING, reason="waiting for accounting"
                )
            elif theirs is not None and theirs.state.terminal and mine.state.terminal:
                result[key] = theirs
            elif acc is not None:
                result[key] = replace(mine, source=accounting_name)
    if acc is None:
        return result
    for key, status in acc.items():
        if key in result:
            continue
        if status.state is not JobState.UNKNOWN or not index.get(key):
            result[key] = status
    return result
