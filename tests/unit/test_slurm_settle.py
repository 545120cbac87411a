"""A poll asks the controller first and accounting only for what that does not settle:
every order in which squeue and sacct can disagree, as table tests over real lines of
localslurm (Slurm 22.05.8), and the client doing it with stand-ins for both on PATH,
run by the real local transport."""

from __future__ import annotations

from pathlib import Path

import pytest

from biomeroworker.slurm.client import SlurmClient
from biomeroworker.slurm.parse import JobStatus, answer, parse_sacct, parse_squeue
from biomeroworker.slurm.settle import combine, ended_badly, unsettled
from biomeroworker.slurm.states import JobState
from biomeroworker.transport.local import LocalTransport
from biomeroworker.waits import view_of

SQ_RUNNING = "110|110|110|N/A|RUNNING|0:01|2026-11-29T20:27:08|2026-11-29T22:27:08|vm|None\n"
SQ_DONE = "110|110|110|N/A|COMPLETED|0:04|2026-11-29T20:27:08|2026-11-29T20:27:12|vm|None\n"
SQ_FAILED = (
    "110|110|110|N/A|FAILED|0:04|2026-11-29T20:27:08|2026-11-29T20:27:12|vm|NonZeroExitCode\n"
)
SA_RUNNING = """\
110|110|RUNNING|0:0|00:00:01|2026-11-29T20:27:08|Unknown||vm|billing=1,cpu=1,mem=50M,node=1|None
"""
SA_DONE = (
    "110|110|COMPLETED|0:0|00:00:04|2026-11-29T20:27:08|2026-11-29T20:27:12||vm|billing=1,cpu=1,mem=256M,node=1|None\n"
    "110.batch|110.batch|COMPLETED|0:0|00:00:04|2026-11-29T20:27:08|2026-11-29T20:27:12|2708K|vm|cpu=1,mem=256M,node=1|\n"
)
# Slurm 22.05 with OverMemoryKill: the job FAILED, its step killed by signal 9 over its memory.
SA_OOM = (
    """\
110|110|FAILED|0:9|00:00:02|2026-11-29T20:27:08|2026-11-29T20:27:10||vm|billing=1,cpu=1,mem=50M,node=1|None
110.batch|110.batch|CANCELLED by 0|0:9|00:00:02|2026-11-29T20:27:08|2026-11-29T20:27:10|"""
    """307200K|vm|cpu=1,mem=50M,node=1|
"""
)
# Array 111 of three: element 1 ended long ago (the controller forgot it), 2 and 3 run.
SQ_ARRAY_LATE = (
    "111_2|115|111|2|RUNNING|0:01|2026-11-29T20:27:08|2026-11-29T22:27:08|vm|None\n"
    "111_3|111|111|3|RUNNING|0:01|2026-11-29T20:27:08|2026-11-29T22:27:08|vm|None\n"
)
SA_ARRAY = (
    "111_1|114|COMPLETED|0:0|00:00:04|2026-11-29T20:20:08|2026-11-29T20:20:12||vm|billing=1,cpu=1,mem=256M,node=1|None\n"
    "111_2|115|RUNNING|0:0|00:00:01|2026-11-29T20:27:08|Unknown||vm|billing=1,cpu=1,mem=256M,node=1|None\n"
    "111_3|111|RUNNING|0:0|00:00:01|2026-11-29T20:27:08|Unknown||vm|billing=1,cpu=1,mem=256M,node=1|None\n"
)


def poll(
    live: str, accounting: str | None, job_id: str = "110", expected: int = 1
) -> tuple[dict[str, JobStatus], list[str]]:
    """What SlurmClient.poll makes of these answers, and which ids it asked sacct about."""
    known = answer([job_id], parse_squeue(live), listed_by="squeue")
    asked = unsettled([job_id], known, {job_id: expected}, ended_badly)
    if not asked:
        return known, asked
    found = None if accounting is None else parse_sacct(accounting)
    return combine(known, asked, found, accounting_name="sacct", confirm=ended_badly), asked


def test_a_running_job_is_settled_by_the_controller_alone() -> None:
    statuses, asked = poll(SQ_RUNNING, SA_RUNNING)
    assert asked == []
    assert (statuses["110"].state, statuses["110"].source) == (JobState.RUNNING, "squeue")


def test_a_completed_job_is_over_the_moment_the_controller_says_so_with_exit_zero() -> None:
    # Accounting still says RUNNING here (it hears of the end about a second later).
    statuses, asked = poll(SQ_DONE, SA_RUNNING)
    assert asked == []
    done = statuses["110"]
    assert (done.state, done.exit_code, done.signal, done.max_rss_bytes) == (
        JobState.COMPLETED,
        0,
        0,
        None,
    )


def test_a_job_the_controller_forgot_is_asked_of_accounting() -> None:
    statuses, asked = poll("", SA_DONE)
    assert asked == ["110"]
    done = statuses["110"]
    assert (done.state, done.source, done.max_rss_bytes) == (
        JobState.COMPLETED,
        "sacct",
        2708 * 1024,
    )


def test_a_job_neither_lists_is_accountings_silence() -> None:
    statuses, _ = poll("", "")
    assert (statuses["110"].state, statuses["110"].source) == (JobState.UNKNOWN, "sacct")
    assert view_of(statuses, "110", array=False, expected=1).accounting_silent


def test_a_forgotten_job_while_accounting_is_down_is_nobodys_silence() -> None:
    statuses, _ = poll("", None)
    assert (statuses["110"].state, statuses["110"].source) == (JobState.UNKNOWN, "squeue")
    assert not view_of(statuses, "110", array=False, expected=1).accounting_silent


@pytest.mark.parametrize(
    ("accounting", "state", "exit_code"),
    [
        (SA_RUNNING, JobState.COMPLETING, None),  # accounting has not heard of the end yet
        (None, JobState.COMPLETING, None),  # accounting cannot be asked: wait for it
        (SA_OOM, JobState.OUT_OF_MEMORY, 0),  # only accounting knows it was memory
    ],
)
def test_a_failure_waits_for_accountings_word(
    accounting: str | None, state: JobState, exit_code: int | None
) -> None:
    statuses, asked = poll(SQ_FAILED, accounting)
    assert asked == ["110"]
    assert (statuses["110"].state, statuses["110"].exit_code) == (state, exit_code)
    assert statuses["110"].state.terminal == (state is JobState.OUT_OF_MEMORY)


def test_an_array_whose_first_element_aged_out_is_completed_from_accounting() -> None:
    statuses, asked = poll(SQ_ARRAY_LATE, SA_ARRAY, job_id="111", expected=3)
    assert asked == ["111"]
    view = view_of(statuses, "111", array=True, expected=3)
    assert view.missing == 0
    assert {k: s.state for k, s in view.elements.items()} == {
        "111_1": JobState.COMPLETED,
        "111_2": JobState.RUNNING,
        "111_3": JobState.RUNNING,
    }


def test_an_array_fully_listed_by_the_controller_needs_no_accounting() -> None:
    live = SQ_ARRAY_LATE + SQ_ARRAY_LATE.replace("111_2|115", "111_1|114").replace("|2|", "|1|")
    _, asked = poll(live, SA_ARRAY, job_id="111", expected=3)
    assert asked == []


def test_without_expected_counts_one_listed_element_settles_an_array() -> None:
    # Callers that do not know an array's size keep the old reading (tests, benches).
    _, asked = poll(SQ_ARRAY_LATE, SA_ARRAY, job_id="111", expected=1)
    assert asked == []


# -- the client, with stand-ins on PATH ----------------------------------------------


def _stand_in(folder: Path, name: str, output: str, status: int = 0) -> None:
    path = folder / name
    log = folder / "calls"
    path.write_text(
        f"#!/bin/bash\necho {name} >> \"{log}\"\ncat <<'EOF'\n{output}EOF\nexit {status}\n"
    )
    path.chmod(0o755)


def calls(folder: Path) -> list[str]:
    log = folder / "calls"
    return log.read_text().split() if log.exists() else []


def test_client_polls_a_just_completed_job_with_squeue_only(
    stand_ins: Path, tmp_path: Path
) -> None:
    _stand_in(stand_ins, "squeue", SQ_DONE)
    _stand_in(stand_ins, "sacct", SA_RUNNING)
    statuses = SlurmClient(LocalTransport(home=tmp_path)).poll(["110"])
    assert statuses["110"].state is JobState.COMPLETED
    assert calls(stand_ins) == ["squeue"]


def test_client_asks_sacct_when_squeue_cannot_answer(stand_ins: Path, tmp_path: Path) -> None:
    _stand_in(stand_ins, "squeue", "", status=1)
    _stand_in(stand_ins, "sacct", SA_DONE)
    statuses = SlurmClient(LocalTransport(home=tmp_path)).poll(["110"])
    assert (statuses["110"].state, statuses["110"].source) == (JobState.COMPLETED, "sacct")
    assert calls(stand_ins) == ["squeue", "sacct"]


def test_client_asks_sacct_only_for_the_elements_squeue_forgot(
    stand_ins: Path, tmp_path: Path
) -> None:
    _stand_in(stand_ins, "squeue", SQ_ARRAY_LATE + SQ_RUNNING)
    _stand_in(stand_ins, "sacct", SA_ARRAY)
    client = SlurmClient(LocalTransport(home=tmp_path))
    statuses = client.poll(["110", "111"], {"111": 3})
    assert statuses["111_1"].state is JobState.COMPLETED
    assert statuses["110"].state is JobState.RUNNING
    assert calls(stand_ins) == ["squeue", "sacct"]


def test_client_accounting_reads_sacct_alone(stand_ins: Path, tmp_path: Path) -> None:
    _stand_in(stand_ins, "squeue", SQ_DONE)
    _stand_in(stand_ins, "sacct", SA_DONE)
    found = SlurmClient(LocalTransport(home=tmp_path)).accounting(["110"])
    assert found is not None and found["110"].max_rss_bytes == 2708 * 1024
    assert calls(stand_ins) == ["sacct"]


def test_client_asks_squeue_about_array_parents_only(stand_ins: Path, tmp_path: Path) -> None:
    # squeue 22.05 given "--jobs=45_7,45" lists element 7 alone (seen on localslurm).
    args = tmp_path / "args"
    script = stand_ins / "squeue"
    script.write_text(f'#!/bin/bash\nprintf "%s\\n" "$@" > "{args}"\n')
    script.chmod(0o755)
    _stand_in(stand_ins, "sacct", "")
    SlurmClient(LocalTransport(home=tmp_path)).poll(["45_7", "45", "46_1"])
    assert "--jobs=45,46" in args.read_text().splitlines()
