"""The arithmetic behind `biomero stats`, on hand-made rows."""

from __future__ import annotations

from datetime import datetime, timedelta
from types import SimpleNamespace

import pytest

from biomeroworker.tracking.analytics import (
    failures_by_cause,
    percentile,
    period_key,
    runs_per_workflow,
    slurm_use,
    step_durations,
)

T0 = datetime(2025, 3, 31, 12, 0)


def test_p95_of_twenty_values_is_the_nineteenth_smallest() -> None:
    assert percentile([float(v) for v in range(20, 0, -1)], 0.95) == 19.0


def test_p95_of_one_value_is_that_value() -> None:
    assert percentile([7.5], 0.95) == 7.5


@pytest.mark.parametrize(
    ("period", "key"), [("day", "2025-03-31"), ("week", "2025-W14"), ("month", "2025-03")]
)
def test_periods_group_by_calendar_unit(period: str, key: str) -> None:
    assert period_key(T0, period) == key


def test_an_unknown_period_is_refused() -> None:
    with pytest.raises(ValueError, match="period"):
        period_key(T0, "fortnight")


def run(workflow: str, user: str, state: str, **extra: object) -> SimpleNamespace:
    fields = {"error_type": None, "step": None, "created_at": T0, **extra}
    return SimpleNamespace(workflow=workflow, user_name=user, state=state, **fields)


def test_runs_are_counted_per_period_workflow_and_user() -> None:
    rows = [
        run("cellpose", "alice", "COMPLETED"),
        run("cellpose", "alice", "FAILED"),
        run("stardist", "alice", "COMPLETED"),
        run("cellpose", "bob", "RUNNING"),
    ]
    table = runs_per_workflow(rows, "month")
    assert table[0] == {
        "period": "2025-03",
        "workflow": "cellpose",
        "user": "alice",
        "runs": 2,
        "completed": 1,
        "failed": 1,
    }
    assert len(table) == 3


def task(kind: str, seconds: float, state: str = "COMPLETED") -> SimpleNamespace:
    return SimpleNamespace(
        kind=kind, state=state, started_at=T0, ended_at=T0 + timedelta(seconds=seconds)
    )


def test_step_durations_give_mean_and_p95_of_completed_tasks_only() -> None:
    rows = [task("job", s) for s in (10, 20, 30, 40)] + [task("job", 999, "FAILED")]
    (job,) = step_durations(rows)
    assert (job["count"], job["mean_s"], job["p95_s"]) == (4, 25.0, 40.0)


def test_failures_are_ranked_by_how_many_runs_they_ended() -> None:
    rows = [
        run("c", "a", "FAILED", error_type="SlurmError", step="job"),
        run("c", "a", "FAILED", error_type="TransportError", step="stage_up"),
        run("c", "b", "FAILED", error_type="SlurmError", step="job"),
        run("c", "b", "COMPLETED"),
    ]
    assert failures_by_cause(rows)[0] == {"error_type": "SlurmError", "step": "job", "runs": 2}


def test_slurm_use_sums_elapsed_and_keeps_the_largest_maxrss_per_user() -> None:
    def job(user: str, elapsed: float | None, rss: int | None) -> SimpleNamespace:
        return SimpleNamespace(
            user_name=user, slurm_job_id="1", elapsed_s=elapsed, max_rss_bytes=rss
        )

    rows = [job("alice", 10.0, 100), job("alice", 30.0, 300), job("bob", None, None)]
    alice, bob = slurm_use(rows)
    assert (alice["jobs"], alice["elapsed_s"], alice["max_rss_bytes"]) == (2, 40.0, 300)
    assert (bob["jobs"], bob["max_rss_bytes"]) == (1, None)
