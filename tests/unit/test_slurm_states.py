from __future__ import annotations

import pytest

from biomeroworker.slurm.states import JobState, parse_state

# (what sacct/squeue print, state, terminal, ok). Long names from sacct --parsable2 and
# squeue %T, short codes from squeue %t; "CANCELLED by 1001" is real sacct output.
STATE_TABLE = [
    ("PENDING", JobState.PENDING, False, False),
    ("PD", JobState.PENDING, False, False),
    ("CONFIGURING", JobState.CONFIGURING, False, False),
    ("CF", JobState.CONFIGURING, False, False),
    ("RUNNING", JobState.RUNNING, False, False),
    ("R", JobState.RUNNING, False, False),
    ("COMPLETING", JobState.COMPLETING, False, False),
    ("CG", JobState.COMPLETING, False, False),
    ("SUSPENDED", JobState.SUSPENDED, False, False),
    ("S", JobState.SUSPENDED, False, False),
    ("STOPPED", JobState.STOPPED, False, False),
    ("ST", JobState.STOPPED, False, False),
    ("RESIZING", JobState.RESIZING, False, False),
    ("RS", JobState.RESIZING, False, False),
    ("SIGNALING", JobState.SIGNALING, False, False),
    ("SI", JobState.SIGNALING, False, False),
    ("STAGE_OUT", JobState.STAGE_OUT, False, False),
    ("SO", JobState.STAGE_OUT, False, False),
    ("REQUEUED", JobState.REQUEUED, False, False),
    ("RQ", JobState.REQUEUED, False, False),
    ("REQUEUE_HOLD", JobState.REQUEUE_HOLD, False, False),
    ("RH", JobState.REQUEUE_HOLD, False, False),
    ("REQUEUE_FED", JobState.REQUEUE_FED, False, False),
    ("RF", JobState.REQUEUE_FED, False, False),
    ("RESV_DEL_HOLD", JobState.RESV_DEL_HOLD, False, False),
    ("RD", JobState.RESV_DEL_HOLD, False, False),
    ("SPECIAL_EXIT", JobState.SPECIAL_EXIT, False, False),
    ("SE", JobState.SPECIAL_EXIT, False, False),
    ("COMPLETED", JobState.COMPLETED, True, True),
    ("CD", JobState.COMPLETED, True, True),
    ("FAILED", JobState.FAILED, True, False),
    ("F", JobState.FAILED, True, False),
    ("CANCELLED", JobState.CANCELLED, True, False),
    ("CANCELLED by 1001", JobState.CANCELLED, True, False),
    ("CANCELLED by 0", JobState.CANCELLED, True, False),
    ("CA", JobState.CANCELLED, True, False),
    ("TIMEOUT", JobState.TIMEOUT, True, False),
    ("TO", JobState.TIMEOUT, True, False),
    ("OUT_OF_MEMORY", JobState.OUT_OF_MEMORY, True, False),
    ("OOM", JobState.OUT_OF_MEMORY, True, False),
    ("NODE_FAIL", JobState.NODE_FAIL, True, False),
    ("NF", JobState.NODE_FAIL, True, False),
    ("PREEMPTED", JobState.PREEMPTED, True, False),
    ("PR", JobState.PREEMPTED, True, False),
    ("BOOT_FAIL", JobState.BOOT_FAIL, True, False),
    ("BF", JobState.BOOT_FAIL, True, False),
    ("DEADLINE", JobState.DEADLINE, True, False),
    ("DL", JobState.DEADLINE, True, False),
    ("REVOKED", JobState.REVOKED, True, False),
    ("RV", JobState.REVOKED, True, False),
]


@pytest.mark.parametrize(("text", "state", "terminal", "ok"), STATE_TABLE)
def test_state_text_maps_to_state_with_flags(
    text: str, state: JobState, terminal: bool, ok: bool
) -> None:
    parsed = parse_state(text)
    assert (parsed, parsed.terminal, parsed.ok) == (state, terminal, ok)


def test_every_slurm_state_is_in_the_table() -> None:
    covered = {row[1] for row in STATE_TABLE}
    assert covered == set(JobState) - {JobState.UNKNOWN}


@pytest.mark.parametrize("text", ["", "WEIRD_NEW_STATE", "  ", "unknown"])
def test_unrecognised_state_is_unknown_and_never_terminal(text: str) -> None:
    state = parse_state(text)
    assert state is JobState.UNKNOWN
    assert not state.terminal
    assert not state.ok


def test_surrounding_whitespace_and_lower_case_are_accepted() -> None:
    assert parse_state("  completed \n") is JobState.COMPLETED
