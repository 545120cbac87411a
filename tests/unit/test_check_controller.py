"""`biomero check` asks the controller too: polls ask squeue first. Stand-ins for squeue
on PATH, run by the real local transport."""

from __future__ import annotations

from pathlib import Path

from biomeroworker.checks import _squeue
from biomeroworker.transport.local import LocalTransport


def _squeue_stand_in(folder: Path, body: str) -> None:
    path = folder / "squeue"
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)


def test_a_controller_that_answers_passes(stand_ins: Path, tmp_path: Path) -> None:
    _squeue_stand_in(stand_ins, "exit 0\n")
    check = _squeue(LocalTransport(home=tmp_path))
    assert (check.name, check.ok) == ("squeue", True)


def test_a_controller_that_cannot_be_reached_fails_with_a_hint(
    stand_ins: Path, tmp_path: Path
) -> None:
    _squeue_stand_in(
        stand_ins,
        'echo "squeue: error: Unable to contact slurm controller (connect failure)" >&2\nexit 1\n',
    )
    check = _squeue(LocalTransport(home=tmp_path))
    assert not check.ok
    assert "Unable to contact slurm controller" in check.detail
    assert check.hint and "squeue" in check.hint
