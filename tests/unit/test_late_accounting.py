"""A job seen ending by the controller gets its accounting (memory use) a few seconds
later, in one query for all jobs due; jobs accounting already described are not owed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from biomeroworker.late_accounting import LateAccounting
from biomeroworker.slurm.parse import JobStatus, answer, parse_sacct, parse_squeue
from biomeroworker.waits import view_of

SQ_DONE = "{0}|{0}|{0}|N/A|COMPLETED|0:04|2026-11-29T20:27:08|2026-11-29T20:27:12|vm|None\n"
SA_DONE = (
    "{0}|{0}|COMPLETED|0:0|00:00:04|2026-11-29T20:27:08|2026-11-29T20:27:12||vm|cpu=1,mem=256M|None\n"
    "{0}.batch|{0}.batch|COMPLETED|0:0|00:00:04|2026-11-29T20:27:08|2026-11-29T20:27:12|2708K|vm|cpu=1|\n"
)
SA_RUNNING = "{0}|{0}|RUNNING|0:0|00:00:01|2026-11-29T20:27:08|Unknown||vm|cpu=1,mem=256M|None\n"


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Accounting:
    """Answers like SlurmClient.accounting from sacct lines; counts its queries."""

    lines: dict[str, str]
    down: bool = False
    queries: list[list[str]] = field(default_factory=list)

    def accounting(self, job_ids: list[str]) -> Mapping[str, JobStatus] | None:
        self.queries.append(list(job_ids))
        if self.down:
            return None
        text = "".join(self.lines.get(j, "").format(j) for j in job_ids)
        return answer(job_ids, parse_sacct(text), listed_by="sacct")


@dataclass
class Recorder:
    calls: list[tuple] = field(default_factory=list)

    def record_job_status(self, task_id: str, state: str, *values: object) -> bool:
        self.calls.append((task_id, state, *values))
        return True


def ended(job_id: str, source: str = "squeue") -> object:
    text = SQ_DONE.format(job_id) if source == "squeue" else SA_DONE.format(job_id)
    found = parse_squeue(text) if source == "squeue" else parse_sacct(text)
    return view_of(answer([job_id], found, listed_by=source), job_id, array=False, expected=1)


def test_ends_seen_by_the_controller_are_settled_in_one_query_once_due() -> None:
    clock = Clock()
    late = LateAccounting(settle_after_s=2.0, clock=clock)
    late.note("t1", ended("110"), array=False)  # type: ignore[arg-type]
    late.note("t2", ended("111"), array=False)  # type: ignore[arg-type]
    slurm, tracker = Accounting({"110": SA_DONE, "111": SA_DONE}), Recorder()
    assert late.settle(slurm, tracker) == 0 and slurm.queries == []  # not due yet
    clock.now += 2.0
    assert late.settle(slurm, tracker) == 2
    assert slurm.queries == [["110", "111"]]
    assert ("t1", "COMPLETED", 0, 4, 2708 * 1024) in tracker.calls
    assert late.owed == {}


def test_an_end_accounting_already_reported_is_not_owed() -> None:
    late = LateAccounting()
    late.note("t1", ended("110", source="sacct"), array=False)  # type: ignore[arg-type]
    assert late.owed == {}


def test_accounting_that_has_not_closed_the_job_is_asked_again_later() -> None:
    clock = Clock()
    late = LateAccounting(settle_after_s=2.0, clock=clock)
    late.note("t1", ended("110"), array=False)  # type: ignore[arg-type]
    clock.now += 2.0
    slurm, tracker = Accounting({"110": SA_RUNNING}), Recorder()
    assert late.settle(slurm, tracker) == 0
    slurm.lines["110"] = SA_DONE
    clock.now += 1.0
    assert late.settle(slurm, tracker) == 1
    assert len(slurm.queries) == 2 and len(tracker.calls) == 1


def test_accounting_down_keeps_the_debt_until_it_gives_up() -> None:
    clock = Clock()
    late = LateAccounting(settle_after_s=2.0, give_up_after_s=60.0, clock=clock)
    late.note("t1", ended("110"), array=False)  # type: ignore[arg-type]
    slurm, tracker = Accounting({}, down=True), Recorder()
    clock.now += 30.0
    late.settle(slurm, tracker)
    assert "t1" in late.owed
    clock.now += 31.0
    late.settle(slurm, tracker)
    assert late.owed == {} and tracker.calls == []
