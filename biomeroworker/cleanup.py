"""`biomero cleanup`: remove remote run folders that failed runs left behind."""

from __future__ import annotations

import posixpath
import re

from biomeroworker.config import Settings
from biomeroworker.errors import BiomeroError
from biomeroworker.tracking.application import Tracker
from biomeroworker.transport.base import Transport

ACTIVE_STATES = frozenset({"REQUESTED", "RUNNING"})
# Run folders are named by run id (a UUID); nothing else in slurm_data_path is touched.
_RUN_FOLDER = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _is_active(tracker: Tracker, name: str) -> bool:
    try:
        return tracker.get_run(name)["state"] in ACTIVE_STATES
    except BiomeroError:
        return False  # not a run we know: a leftover


def remove_old_runs(
    transport: Transport, tracker: Tracker, settings: Settings, days: float, dry_run: bool
) -> list[str]:
    """Folders in slurm_data_path untouched for ``days``, except those of active runs."""
    if days < 0:
        raise BiomeroError("--older-than takes a number of days >= 0")
    data = settings.slurm.slurm_data_path
    minutes = str(int(days * 24 * 60))
    found = transport.run(
        [
            "find",
            data,
            "-mindepth",
            "1",
            "-maxdepth",
            "1",
            "-type",
            "d",
            "-mmin",
            f"+{minutes}",
            "-printf",
            "%f\\0",
        ],
        check=False,
        idempotent=True,
    ).stdout.split("\0")
    names = []
    for name in found:
        if not _RUN_FOLDER.fullmatch(name):
            continue  # not a run folder of ours
        if not _is_active(tracker, name):
            names.append(posixpath.join(data, name))
    if names and not dry_run:
        transport.run(["rm", "-rf", "--", *names], idempotent=True)
    return names
