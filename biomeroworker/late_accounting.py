"""Accounting that arrives after the run has moved on.

A poll takes a job's end from Slurm's controller the moment it happens (``slurm.settle``),
so the run stages its results down about a second before slurmdbd has the job's memory
use and exact elapsed time. Rather than make every run wait for that, the end is noted
here and filled in a few seconds later: one accounting query for all jobs due, recorded
on their (finished) tasks as one more status event each.

Kept in memory: after a restart, the memory use of a job that ended in the few seconds
before it stays unknown (nothing else depends on it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from biomeroworker.slurm.parse import JobStatus
from biomeroworker.waits import ACCOUNTING, JobView, indexed, view_of

log = logging.getLogger(__name__)

# slurmdbd has a job's end about 0.9 s after it happens on localslurm; ask after this.
SETTLE_AFTER_S = 2.0
# Give up on a job accounting still has not closed by then (it may never list it).
GIVE_UP_AFTER_S = 600.0


class Accounting(Protocol):
    def accounting(self, job_ids: list[str]) -> Mapping[str, JobStatus] | None: ...


class StatusRecorder(Protocol):
    def record_job_status(
        self,
        task_id: str,
        state: str,
        exit_code: int | None = None,
        elapsed_s: float | None = None,
        max_rss_bytes: int | None = None,
    ) -> bool: ...


@dataclass(frozen=True)
class Owed:
    task_id: str
    job_id: str
    array: bool
    expected: int
    seen_at: float


class LateAccounting:
    """Tasks whose job ended by the controller's word, waiting for accounting's."""

    def __init__(
        self,
        *,
        settle_after_s: float = SETTLE_AFTER_S,
        give_up_after_s: float = GIVE_UP_AFTER_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settle_after_s = settle_after_s
        self.give_up_after_s = give_up_after_s
        self.clock = clock
        self.owed: dict[str, Owed] = {}

    def note(self, task_id: str, view: JobView, *, array: bool) -> None:
        """Remember an ended job unless accounting itself said so."""
        if all(status.source in ACCOUNTING for status in view.elements.values()):
            return
        if task_id not in self.owed:
            self.owed[task_id] = Owed(task_id, view.job_id, array, view.expected, self.clock())

    def settle(self, slurm: Accounting, tracker: StatusRecorder) -> int:
        """Ask accounting once about every job due; record what it has closed.
        Returns how many tasks were filled in. Transport errors propagate."""
        now = self.clock()
        due = [o for o in self.owed.values() if now - o.seen_at >= self.settle_after_s]
        if not due:
            return 0
        answer = slurm.accounting(sorted({o.job_id for o in due}))
        found = None if answer is None else indexed(answer)
        settled = 0
        for owed in due:
            view = None
            if found is not None:
                view = view_of(found, owed.job_id, array=owed.array, expected=owed.expected)
            if view is not None and view.final:
                self._record(tracker, owed, view)
                settled += 1
            elif now - owed.seen_at > self.give_up_after_s:
                log.info(
                    "job %s: accounting has not closed it %.0f s after it ended; its memory "
                    "use stays unknown",
                    owed.job_id,
                    now - owed.seen_at,
                )
            else:
                continue
            del self.owed[owed.task_id]
        return settled

    @staticmethod
    def _record(tracker: StatusRecorder, owed: Owed, view: JobView) -> None:
        summary = view.summary()
        rss = [s.max_rss_bytes for s in view.elements.values() if s.max_rss_bytes is not None]
        tracker.record_job_status(
            owed.task_id,
            summary.state.name,
            summary.exit_code,
            summary.elapsed_s,
            max(rss) if rss else None,
        )
