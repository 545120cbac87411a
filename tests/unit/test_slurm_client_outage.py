"""Finding a lost job while accounting is down is a wait, never a guess and never a
failed attempt: squeue and sacct stand-ins on PATH, run by the real local transport."""

from __future__ import annotations

from pathlib import Path

import pytest

from biomeroworker.errors import AccountingUnavailable
from biomeroworker.slurm.client import SlurmClient
from biomeroworker.supervisor.loop import transient
from biomeroworker.transport.local import LocalTransport


def _stand_in(folder: Path, name: str, text: str) -> None:
    path = folder / name
    path.write_text("#!/bin/bash\n" + text)
    path.chmod(0o755)


def test_a_lost_job_cannot_be_searched_while_slurmdbd_is_down_and_that_is_transient(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _stand_in(bin_dir, "squeue", "exit 0\n")  # the controller no longer lists it
    _stand_in(
        bin_dir,
        "sacct",
        'echo "sacct: error: slurm_persist_conn_open_without_init: failed to open '
        'persistent connection to host:localhost:6819: Connection refused" >&2\nexit 1\n',
    )
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    client = SlurmClient(LocalTransport(home=tmp_path))
    with pytest.raises(AccountingUnavailable, match="Connection refused") as caught:
        client.find_by_name("biomero-job-r1")
    assert transient(caught.value)
