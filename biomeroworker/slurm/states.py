"""Slurm job states as one enum, with what the supervisor needs to know about each.

Names and short codes are those of the squeue(1) and sacct(1) manuals ("JOB STATE
CODES"). ``UNKNOWN`` is ours: it means "we could not tell", never "failed".
"""

from __future__ import annotations

from enum import Enum


class JobState(Enum):
    """A job's state. ``terminal``: Slurm will not change it again. ``ok``: it succeeded."""

    # value = (long name, short code, terminal, ok)
    PENDING = ("PENDING", "PD", False, False)
    CONFIGURING = ("CONFIGURING", "CF", False, False)
    RUNNING = ("RUNNING", "R", False, False)
    COMPLETING = ("COMPLETING", "CG", False, False)
    SUSPENDED = ("SUSPENDED", "S", False, False)
    STOPPED = ("STOPPED", "ST", False, False)
    RESIZING = ("RESIZING", "RS", False, False)
    SIGNALING = ("SIGNALING", "SI", False, False)
    STAGE_OUT = ("STAGE_OUT", "SO", False, False)
    REQUEUED = ("REQUEUED", "RQ", False, False)
    REQUEUE_HOLD = ("REQUEUE_HOLD", "RH", False, False)
    REQUEUE_FED = ("REQUEUE_FED", "RF", False, False)
    RESV_DEL_HOLD = ("RESV_DEL_HOLD", "RD", False, False)
    # SPECIAL_EXIT is a held, requeued job waiting for an administrator: not over yet.
    SPECIAL_EXIT = ("SPECIAL_EXIT", "SE", False, False)
    COMPLETED = ("COMPLETED", "CD", True, True)
    FAILED = ("FAILED", "F", True, False)
    CANCELLED = ("CANCELLED", "CA", True, False)
    TIMEOUT = ("TIMEOUT", "TO", True, False)
    OUT_OF_MEMORY = ("OUT_OF_MEMORY", "OOM", True, False)
    NODE_FAIL = ("NODE_FAIL", "NF", True, False)
    PREEMPTED = ("PREEMPTED", "PR", True, False)
    BOOT_FAIL = ("BOOT_FAIL", "BF", True, False)
    DEADLINE = ("DEADLINE", "DL", True, False)
    # A federated sibling removed because another cluster started the job.
    REVOKED = ("REVOKED", "RV", True, False)
    UNKNOWN = ("UNKNOWN", "", False, False)

    def __init__(self, long_name: str, code: str, terminal: bool, ok: bool) -> None:
        self.long_name = long_name
        self.code = code
        self.terminal = terminal
        self.ok = ok


_BY_NAME = {state.long_name: state for state in JobState if state is not JobState.UNKNOWN}
_BY_CODE = {state.code: state for state in JobState if state.code}


def parse_state(text: str) -> JobState:
    """Map what sacct or squeue prints to a JobState.

    Accepts long names, short codes, "CANCELLED by 1000" and squeue's "+" suffix on
    requeued array states. Anything unrecognised is UNKNOWN, not an error: a newer
    Slurm may add states, and guessing "failed" would be worse.
    """
    word = text.strip().split(" ", 1)[0].rstrip("+").upper()
    return _BY_NAME.get(word) or _BY_CODE.get(word) or JobState.UNKNOWN
