"""The supervisor tells a run's DataSide when a run it held has finished (an OMERO run's
E-mail goes out from there), once, and never for a run that merely left its hands."""

from __future__ import annotations

import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from biomeroworker.errors import BiomeroError
from biomeroworker.run_record import RunRecord
from biomeroworker.supervisor.leases import LeaseStore
from biomeroworker.supervisor.loop import Supervisor
from biomeroworker.tracking.application import Tracker


class Side:
    def __init__(self, fail: bool = False) -> None:
        self.ended: list[str] = []
        self.fail = fail

    def run_ended(self, run: RunRecord) -> None:
        self.ended.append(run.run_id)
        if self.fail:
            raise BiomeroError("mail server down")


@pytest.fixture
def tracker(tmp_path: Path) -> Iterator[Tracker]:
    with Tracker(f"sqlite:///{tmp_path / 'tracking.sqlite'}") as opened:
        yield opened


def supervisor(tracker: Tracker, side: Side) -> tuple[Supervisor, LeaseStore]:
    """A real supervisor and lease store over the tracker's database; the engine is a
    stand-in holding only what releasing runs uses."""
    worker = types.SimpleNamespace(poll_min_s=1.0, poll_max_s=5.0)
    engine = types.SimpleNamespace(
        settings=types.SimpleNamespace(worker=worker, sources=()),
        tracker=tracker,
        data_sides={"omero": side},
        cleanup_remote=lambda run: None,
    )
    leases = LeaseStore(tracker.engine, "test", ttl_s=60)
    return Supervisor(engine, leases), leases  # type: ignore[arg-type]


def hold(sup: Supervisor, leases: LeaseStore, *run_ids: str) -> None:
    for run_id in run_ids:
        assert leases.claim(run_id)
    sup.held = set(run_ids)


def held_by_anyone(leases: LeaseStore, run_ids: list[str]) -> set[str]:
    return {r for r in run_ids if leases.holder_of(r) is not None}


def record(tracker: Tracker, source: str = "omero") -> str:
    return tracker.record_run_requested(
        workflow="seg", version="v1", user_name="alice", inputs={"source": source}
    )


def test_finished_runs_reach_their_data_side_once_when_they_leave(tracker: Tracker) -> None:
    side = Side()
    sup, leases = supervisor(tracker, side)
    done, failed, cancelled, active = (record(tracker) for _ in range(4))
    local = record(tracker, "local")
    tracker.complete_run(done, "/results")
    tracker.fail_run(failed, "JobFailed", "exit 1")
    tracker.cancel_run(cancelled, "by alice")
    tracker.complete_run(local, "/results")
    hold(sup, leases, done, failed, cancelled, active, local)
    sup._release_finished(current={active})
    assert sorted(side.ended) == sorted([done, failed, cancelled])
    assert held_by_anyone(leases, [done, failed, cancelled, active, local]) == {active}
    sup._release_finished(current={active})  # nothing held any more: nothing again
    assert len(side.ended) == 3


def test_a_run_still_active_but_no_longer_held_is_not_called_finished(tracker: Tracker) -> None:
    side = Side()
    sup, _ = supervisor(tracker, side)
    lost = record(tracker)
    sup.held = {lost}
    sup._release_finished(current=set())  # e.g. another supervisor took its lease
    assert side.ended == []


def test_a_failing_notice_does_not_stop_the_supervisor(tracker: Tracker) -> None:
    side = Side(fail=True)
    sup, leases = supervisor(tracker, side)
    done = record(tracker)
    tracker.complete_run(done, "/results")
    hold(sup, leases, done)
    sup._release_finished(current=set())
    assert side.ended == [done] and held_by_anyone(leases, [done]) == set()
