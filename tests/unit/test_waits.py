"""From a poll to a run: every job shape, every order in which a poll can first see it.

The sacct and squeue lines are real output of localslurm (Slurm 22.05.8), recorded on
2026-11-29 for: 109 an array of ONE element, 110 a plain job, 111 an array of three
whose element 2 exits 1 — each submitted held, then released. Between "running" and
"done" accounting had not yet listed elements 111_1 and 111_2 (they got raw ids 114
and 115 when they started): that lag is one of the orders tested below.

The engine half drives ``RunEngine.advance`` over a real tracking store (SQLite) with
fresh engines in between, as a supervisor restart would, and a clock moved by hand.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from biomeroworker.runs import RunEngine, RunFailed, Step, next_step
from biomeroworker.slurm.parse import JobStatus, answer, parse_sacct, parse_squeue
from biomeroworker.slurm.states import JobState
from biomeroworker.waits import view_of

SACCT_HELD = """\
110|110|PENDING|0:0|00:00:00|Unknown|Unknown||None assigned||JobHeldUser
109_[1]|109|PENDING|0:0|00:00:00|Unknown|Unknown||None assigned||JobHeldUser
111_[1-3]|111|PENDING|0:0|00:00:00|Unknown|Unknown||None assigned||JobHeldUser
"""
SQUEUE_HELD = """\
111_1|111|111|1|PENDING|0:00|N/A|N/A||JobHeldUser
111_2|111|111|2|PENDING|0:00|N/A|N/A||JobHeldUser
111_3|111|111|3|PENDING|0:00|N/A|N/A||JobHeldUser
110|110|110|N/A|PENDING|0:00|N/A|N/A||JobHeldUser
109_1|109|109|1|PENDING|0:00|N/A|N/A||JobHeldUser
"""
SACCT_RUNNING = """\
110|110|RUNNING|0:0|00:00:01|2026-11-29T20:27:08|Unknown||vm|billing=1,cpu=1,mem=256M,node=1|JobHeldUser
110.batch|110.batch|RUNNING|0:0|00:00:01|2026-11-29T20:27:08|Unknown||vm|cpu=1,mem=256M,node=1|
109_1|109|RUNNING|0:0|00:00:01|2026-11-29T20:27:08|Unknown||vm|billing=1,cpu=1,mem=256M,node=1|JobHeldUser
109_1.batch|109.batch|RUNNING|0:0|00:00:01|2026-11-29T20:27:08|Unknown||vm|cpu=1,mem=256M,node=1|
111_3|111|RUNNING|0:0|00:00:01|2026-11-29T20:27:08|Unknown||vm|billing=1,cpu=1,mem=256M,node=1|JobHeldUser
111_3.batch|111.batch|RUNNING|0:0|00:00:01|2026-11-29T20:27:08|Unknown||vm|cpu=1,mem=256M,node=1|
"""
SQUEUE_RUNNING = """\
109_1|109|109|1|RUNNING|0:01|2026-11-29T20:27:08|2026-11-29T22:27:08|vm|None
110|110|110|N/A|RUNNING|0:01|2026-11-29T20:27:08|2026-11-29T22:27:08|vm|None
111_1|114|111|1|RUNNING|0:01|2026-11-29T20:27:08|2026-11-29T22:27:08|vm|None
111_2|115|111|2|RUNNING|0:01|2026-11-29T20:27:08|2026-11-29T22:27:08|vm|None
111_3|111|111|3|RUNNING|0:01|2026-11-29T20:27:08|2026-11-29T22:27:08|vm|None
"""
SACCT_DONE = """\
110|110|COMPLETED|0:0|00:00:04|2026-11-29T20:27:08|2026-11-29T20:27:12||vm|billing=1,cpu=1,mem=256M,node=1|JobHeldUser
110.batch|110.batch|COMPLETED|0:0|00:00:04|2026-11-29T20:27:08|2026-11-29T20:27:12|2708K|vm|cpu=1,mem=256M,node=1|
109_1|109|COMPLETED|0:0|00:00:04|2026-11-29T20:27:08|2026-11-29T20:27:12||vm|billing=1,cpu=1,mem=256M,node=1|JobHeldUser
109_1.batch|109.batch|COMPLETED|0:0|00:00:04|2026-11-29T20:27:08|2026-11-29T20:27:12|2784K|vm|cpu=1,mem=256M,node=1|
111_1|114|COMPLETED|0:0|00:00:04|2026-11-29T20:27:08|2026-11-29T20:27:12||vm|billing=1,cpu=1,mem=256M,node=1|JobHeldUser
111_1.batch|114.batch|COMPLETED|0:0|00:00:04|2026-11-29T20:27:08|2026-11-29T20:27:12|2624K|vm|cpu=1,mem=256M,node=1|
111_2|115|FAILED|1:0|00:00:04|2026-11-29T20:27:08|2026-11-29T20:27:12||vm|billing=1,cpu=1,mem=256M,node=1|JobHeldUser
111_2.batch|115.batch|FAILED|1:0|00:00:04|2026-11-29T20:27:08|2026-11-29T20:27:12|3000K|vm|cpu=1,mem=256M,node=1|
111_3|111|COMPLETED|0:0|00:00:04|2026-11-29T20:27:08|2026-11-29T20:27:12||vm|billing=1,cpu=1,mem=256M,node=1|JobHeldUser
111_3.batch|111.batch|COMPLETED|0:0|00:00:04|2026-11-29T20:27:08|2026-11-29T20:27:12|2604K|vm|cpu=1,mem=256M,node=1|
"""
# After the jobs ended squeue lists none of them (and exits 0).
SQUEUE_DONE = ""
# Accounting before slurmdbd has heard of the jobs (seconds after sbatch): no lines.
SACCT_NOT_YET = ""
# The plain job requeued (scontrol requeue) and an element held again after a requeue.
SACCT_REQUEUED = """\
110|110|REQUEUED|0:0|00:00:02|2026-11-29T20:27:08|2026-11-29T20:27:10||vm|billing=1,cpu=1,mem=256M,node=1|None
109_1|109|REQUEUE_HOLD|0:0|00:00:02|2026-11-29T20:27:08|2026-11-29T20:27:10||vm|billing=1,cpu=1,mem=256M,node=1|JobHeldAdmin
"""

POLLS = {
    ("sacct", "held"): SACCT_HELD,
    ("squeue", "held"): SQUEUE_HELD,
    ("sacct", "running"): SACCT_RUNNING,
    ("squeue", "running"): SQUEUE_RUNNING,
    ("sacct", "done"): SACCT_DONE,
    ("squeue", "done"): SQUEUE_DONE,
    ("sacct", "not yet"): SACCT_NOT_YET,
    ("sacct", "requeued"): SACCT_REQUEUED,
}

# shape -> (job id, array?, expected elements)
SHAPES = {
    "plain": ("110", False, 1),
    "array of one": ("109", True, 1),
    "array of three": ("111", True, 3),
}


def polled(source: str, moment: str, job_id: str) -> dict[str, JobStatus]:
    """What SlurmClient.poll returns for ``job_id`` when ``source`` answered at ``moment``."""
    text = POLLS[(source, moment)]
    found = parse_sacct(text) if source == "sacct" else parse_squeue(text)
    return answer([job_id], found, listed_by=source)


# (shape, source, moment) -> (summary state, elements the poll did not list, final)
EXPECTED = {
    ("plain", "sacct", "not yet"): ("UNKNOWN", 1, False),
    ("plain", "sacct", "held"): ("PENDING", 0, False),
    ("plain", "squeue", "held"): ("PENDING", 0, False),
    ("plain", "sacct", "running"): ("RUNNING", 0, False),
    ("plain", "squeue", "running"): ("RUNNING", 0, False),
    ("plain", "sacct", "done"): ("COMPLETED", 0, True),
    ("plain", "squeue", "done"): ("UNKNOWN", 1, False),
    ("plain", "sacct", "requeued"): ("REQUEUED", 0, False),
    ("array of one", "sacct", "not yet"): ("UNKNOWN", 1, False),
    ("array of one", "sacct", "held"): ("PENDING", 0, False),
    ("array of one", "squeue", "held"): ("PENDING", 0, False),
    ("array of one", "sacct", "running"): ("RUNNING", 0, False),
    ("array of one", "squeue", "running"): ("RUNNING", 0, False),
    # issue 18: the finished element is listed only as "109_1"
    ("array of one", "sacct", "done"): ("COMPLETED", 0, True),
    ("array of one", "squeue", "done"): ("UNKNOWN", 1, False),
    ("array of one", "sacct", "requeued"): ("REQUEUE_HOLD", 0, False),
    ("array of three", "sacct", "not yet"): ("UNKNOWN", 3, False),
    ("array of three", "sacct", "held"): ("PENDING", 0, False),
    ("array of three", "squeue", "held"): ("PENDING", 0, False),
    # accounting late: only 111_3 is listed yet; the run must keep waiting
    ("array of three", "sacct", "running"): ("RUNNING", 2, False),
    ("array of three", "squeue", "running"): ("RUNNING", 0, False),
    ("array of three", "sacct", "done"): ("FAILED", 0, True),
    ("array of three", "squeue", "done"): ("UNKNOWN", 3, False),
    ("array of three", "sacct", "requeued"): ("UNKNOWN", 3, False),
}


@pytest.mark.parametrize(("shape", "source", "moment"), list(EXPECTED))
def test_a_poll_seen_first_at_any_moment_gives_the_jobs_own_state(
    shape: str, source: str, moment: str
) -> None:
    job_id, array, expected = SHAPES[shape]
    view = view_of(polled(source, moment, job_id), job_id, array=array, expected=expected)
    state, missing, final = EXPECTED[(shape, source, moment)]
    assert (view.summary().state.name, view.missing, view.final) == (state, missing, final)


def test_an_array_never_takes_another_jobs_plain_entry() -> None:
    both = {**polled("sacct", "done", "110"), **polled("sacct", "done", "109")}
    view = view_of(both, "109", array=True, expected=1)
    assert list(view.elements) == ["109_1"]
    assert view_of(both, "110", array=False, expected=1).elements.keys() == {"110"}


def test_a_failed_element_is_the_summary_and_names_its_exit_code() -> None:
    view = view_of(polled("sacct", "done", "111"), "111", array=True, expected=3)
    summary = view.summary()
    assert (summary.job_id, summary.exit_code) == ("111_2", 1)


def test_silence_counts_as_accountings_only_when_sacct_answered() -> None:
    assert view_of(
        polled("sacct", "not yet", "110"), "110", array=False, expected=1
    ).accounting_silent
    assert not view_of(
        polled("squeue", "done", "110"), "110", array=False, expected=1
    ).accounting_silent
    nobody = answer(["110"], {}, listed_by="none")
    assert not view_of(nobody, "110", array=False, expected=1).accounting_silent


def test_missing_elements_are_named() -> None:
    view = view_of(polled("sacct", "running", "111"), "111", array=True, expected=3)
    assert view.describe_missing() == "element(s) 1, 2 of job array 111"


# -- through the engine: what a run does with each order of polls ------------------------


class Clock:
    def __init__(self) -> None:
        import time

        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    import biomeroworker.runs as runs

    fake = Clock()
    monkeypatch.setattr(runs.time, "time", fake)
    return fake


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    from biomeroworker.config import load_settings
    from biomeroworker.tracking.application import Tracker
    from biomeroworker.transport.local import LocalTransport

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    config = tmp_path / "slurm-config.ini"
    config.write_text(
        "[SSH]\nhost = nowhere\n[SLURM]\nslurm_data_path = d\nslurm_images_path = i\n"
        "slurm_converters_path = c\nslurm_script_path = s\n"
        "[WORKER]\njob_unseen_limit_s = 600\n"
    )
    settings = load_settings([config], env={})
    with Tracker(f"sqlite:///{tmp_path / 't.sqlite'}") as tracker:

        def engine() -> RunEngine:
            """A fresh engine: what a restarted supervisor has (nothing in memory)."""
            return RunEngine(settings, LocalTransport(home=tmp_path), tracker)

        yield tracker, engine


def _waiting_run(tracker, shape: str) -> str:  # type: ignore[no-untyped-def]
    """A run that staged its inputs and submitted the job of ``shape``."""
    job_id, array, expected = SHAPES[shape]
    files = [f"/in/img{i}.ome.zarr" for i in range(expected)] if array else ["/in/a.tif"]
    run_id = tracker.record_run_requested(
        workflow="nuclei", version="1", user_name="u", inputs={"files": files}
    )
    up = tracker.start_task(run_id, "stage_up")
    tracker.complete_task(up)
    task = tracker.start_task(run_id, "convert" if array else "job")
    tracker.record_job_submitted(task, job_id, "slurm")
    return run_id


def _advance(tracker, engine: RunEngine, run_id: str, source: str, moment: str) -> Step:  # type: ignore[no-untyped-def]
    run = tracker.run_record(run_id)
    waiting = engine.waiting_on(run)
    assert waiting is not None
    job_id, _elements = waiting
    engine.advance(run, polled(source, moment, job_id))
    return next_step(tracker.run_record(run_id))


ORDERS = [
    # (polls, in order, each by a fresh engine when marked "restart")
    [("sacct", "held"), ("sacct", "running"), ("sacct", "done")],
    [("sacct", "not yet"), ("sacct", "done")],
    [("sacct", "done")],
    [("squeue", "running"), ("restart", ""), ("sacct", "done")],
    [("sacct", "running"), ("squeue", "done"), ("restart", ""), ("sacct", "done")],
    [("squeue", "held"), ("sacct", "requeued"), ("sacct", "done")],
]


@pytest.mark.parametrize("shape", ["plain", "array of one"])
@pytest.mark.parametrize("order", ORDERS, ids=lambda o: " > ".join(f"{s} {m}" for s, m in o))
def test_a_successful_job_moves_the_run_on_whatever_the_order_of_polls(
    world, clock: Clock, shape: str, order: list[tuple[str, str]]
) -> None:  # type: ignore[no-untyped-def]
    tracker, new_engine = world
    run_id = _waiting_run(tracker, shape)
    engine = new_engine()
    waiting = Step.WAIT_CONVERT if SHAPES[shape][1] else Step.WAIT_JOB
    for source, moment in order[:-1]:
        if source == "restart":
            engine = new_engine()
            continue
        assert _advance(tracker, engine, run_id, source, moment) is waiting
        clock.now += 30
    assert _advance(tracker, engine, run_id, *order[-1]) is not waiting
    kind = "convert" if SHAPES[shape][1] else "job"
    (task,) = [t for t in tracker.get_run(run_id)["tasks"] if t["kind"] == kind]
    assert (task["state"], task["job_state"]) == ("COMPLETED", "COMPLETED")


def test_an_array_with_a_failed_element_fails_the_run_once_all_are_listed(
    world, clock: Clock
) -> None:  # type: ignore[no-untyped-def]
    tracker, new_engine = world
    run_id = _waiting_run(tracker, "array of three")
    engine = new_engine()
    assert _advance(tracker, engine, run_id, "sacct", "running") is Step.WAIT_CONVERT
    with pytest.raises(RunFailed, match="1 of 3 image"):
        engine.advance(tracker.run_record(run_id), polled("sacct", "done", "111"))
    assert tracker.get_run(run_id)["state"] == "FAILED"


def test_accounting_late_for_some_elements_keeps_the_run_waiting(world, clock: Clock) -> None:  # type: ignore[no-untyped-def]
    tracker, new_engine = world
    run_id = _waiting_run(tracker, "array of three")
    engine = new_engine()
    for _ in range(3):
        assert _advance(tracker, engine, run_id, "sacct", "running") is Step.WAIT_CONVERT
        clock.now += 60
    assert tracker.get_run(run_id)["tasks"][-1]["progress"] == "0/3"


def test_a_job_accounting_never_lists_fails_the_run_after_the_limit_even_across_restarts(
    world, clock: Clock
) -> None:  # type: ignore[no-untyped-def]
    tracker, new_engine = world
    run_id = _waiting_run(tracker, "array of one")
    assert _advance(tracker, new_engine(), run_id, "sacct", "not yet") is Step.WAIT_CONVERT
    clock.now += 400
    # a restart does not reset the clock of a job never listed: it counts from submission
    assert _advance(tracker, new_engine(), run_id, "sacct", "not yet") is Step.WAIT_CONVERT
    clock.now += 400
    with pytest.raises(RunFailed, match="job 109 not listed"):
        new_engine().advance(tracker.run_record(run_id), polled("sacct", "not yet", "109"))
    run = tracker.get_run(run_id)
    assert run["state"] == "FAILED"
    assert run["error_type"] == "JobLost"
    assert "job_unseen_limit_s" in run["error"]


def test_a_job_that_vanishes_from_accounting_fails_only_after_the_limit_from_then(
    world, clock: Clock
) -> None:  # type: ignore[no-untyped-def]
    tracker, new_engine = world
    run_id = _waiting_run(tracker, "plain")
    engine = new_engine()
    assert _advance(tracker, engine, run_id, "sacct", "running") is Step.WAIT_JOB
    clock.now += 5000  # a long job: it was listed all along
    assert _advance(tracker, engine, run_id, "sacct", "not yet") is Step.WAIT_JOB
    clock.now += 599
    assert _advance(tracker, engine, run_id, "sacct", "not yet") is Step.WAIT_JOB
    clock.now += 2
    with pytest.raises(RunFailed, match="job 110 not listed"):
        engine.advance(tracker.run_record(run_id), polled("sacct", "not yet", "110"))


def test_without_accounting_a_job_nobody_lists_is_reported_never_failed(
    world, clock: Clock
) -> None:  # type: ignore[no-untyped-def]
    tracker, new_engine = world
    run_id = _waiting_run(tracker, "plain")
    engine = new_engine()
    assert _advance(tracker, engine, run_id, "sacct", "running") is Step.WAIT_JOB
    assert _advance(tracker, engine, run_id, "squeue", "done") is Step.WAIT_JOB
    clock.now += 10_000
    assert _advance(tracker, engine, run_id, "squeue", "done") is Step.WAIT_JOB
    (message,) = [m for _, m in engine.stalled.values()]
    assert "job 110: no status for" in message and "squeue answered" in message
    run = tracker.get_run(run_id)
    assert run["state"] == "RUNNING"
    assert run["tasks"][-1]["job_state"] == "UNKNOWN"
    # accounting back: the run finishes and the report is gone
    assert _advance(tracker, engine, run_id, "sacct", "done") is Step.STAGE_DOWN
    assert engine.stalled == {}


def test_polls_stay_fast_only_while_accounting_may_still_be_catching_up(
    world, clock: Clock
) -> None:  # type: ignore[no-untyped-def]
    tracker, new_engine = world
    run_id = _waiting_run(tracker, "plain")
    engine = new_engine()
    not_yet = polled("sacct", "not yet", "110")
    assert engine.poll_news(tracker.run_record(run_id), not_yet)
    clock.now += 120
    assert not engine.poll_news(tracker.run_record(run_id), not_yet)
    running = polled("sacct", "running", "110")
    assert engine.poll_news(tracker.run_record(run_id), running)  # a state not yet recorded
    engine.advance(tracker.run_record(run_id), running)
    assert not engine.poll_news(tracker.run_record(run_id), running)  # nothing new
    assert engine.poll_news(tracker.run_record(run_id), polled("sacct", "done", "110"))


def test_a_resubmitted_job_is_watched_under_its_new_id_only(world, clock: Clock) -> None:  # type: ignore[no-untyped-def]
    tracker, new_engine = world
    run_id = _waiting_run(tracker, "plain")
    first = tracker.get_run(run_id)["tasks"][-1]["task_id"]
    tracker.fail_task(first, "TIMEOUT", "ran out of time")
    again = tracker.start_task(run_id, "job")
    tracker.record_job_submitted(again, "109", "slurm")  # any other id
    engine = new_engine()
    # the old id finishing says nothing about the new attempt
    old_done = polled("sacct", "done", "110")
    engine.advance(tracker.run_record(run_id), old_done)
    assert next_step(tracker.run_record(run_id)) is Step.WAIT_JOB
    assert tracker.get_run(run_id)["tasks"][-1]["job_state"] is None
    assert JobState.UNKNOWN.name not in {t["job_state"] for t in tracker.get_run(run_id)["tasks"]}


def test_an_array_of_one_listed_under_its_plain_id_is_still_its_element() -> None:
    """Seen once in ssh mode (issue 21's notes): one poll keyed an array of one as "355"."""
    line = "355|355|COMPLETED|0:0|00:00:04|2026-11-29T20:27:08|2026-11-29T20:27:12||vm|cpu=1|None\n"
    view = view_of(
        answer(["355"], parse_sacct(line), listed_by="sacct"), "355", array=True, expected=1
    )
    assert (view.final, view.summary().state) == (True, JobState.COMPLETED)
    three = view_of(
        answer(["355"], parse_sacct(line), listed_by="sacct"), "355", array=True, expected=3
    )
    assert three.missing == 3  # a plain line never stands in for an array of several


def test_a_just_submitted_job_is_polled_fast_even_while_it_only_waits(world, clock: Clock) -> None:  # type: ignore[no-untyped-def]
    # Slurm tries to start a job when it is submitted: backing off from the first
    # PENDING would add seconds to every short job.
    from biomeroworker.runs import FRESH_JOB_S

    tracker, new_engine = world
    run_id = _waiting_run(tracker, "plain")
    engine = new_engine()
    held = polled("squeue", "held", "110")
    engine.advance(tracker.run_record(run_id), held)  # PENDING recorded: no longer news
    assert engine.poll_news(tracker.run_record(run_id), held)
    clock.now += FRESH_JOB_S + 1
    assert not engine.poll_news(tracker.run_record(run_id), held)
