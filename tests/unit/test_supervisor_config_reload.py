"""The supervisor picks up an edited slurm-config.ini without a restart; a bad edit
keeps the last good config running and is reported until fixed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from biomeroworker.config import load_settings
from biomeroworker.runs import RunEngine
from biomeroworker.supervisor.leases import LeaseStore
from biomeroworker.supervisor.loop import Supervisor
from biomeroworker.tracking.application import Tracker
from biomeroworker.transport.local import LocalTransport

BASE = (
    "[SSH]\nhost = nowhere\n[SLURM]\nslurm_data_path = d\nslurm_images_path = i\n"
    "slurm_converters_path = c\nslurm_script_path = s\n[WORKER]\n"
)


def _edit(config: Path, text: str) -> None:
    config.write_text(text)
    stat = config.stat()  # a new mtime even within the file system's time resolution
    os.utime(config, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


@pytest.fixture
def supervisor(tmp_path: Path):  # type: ignore[no-untyped-def]
    config = tmp_path / "slurm-config.ini"
    config.write_text(BASE + "poll_max_s = 60\n")
    transport = LocalTransport(home=tmp_path)

    def reload():  # type: ignore[no-untyped-def]
        return load_settings([config], env={}), transport

    with Tracker(f"sqlite:///{tmp_path / 't.sqlite'}") as tracker:
        engine = RunEngine(load_settings([config], env={}), transport, tracker)
        leases = LeaseStore(tracker.engine, "test-holder", ttl_s=30)
        sup = Supervisor(engine, leases, workers=1, status_dir=tmp_path / "run", reload=reload)
        yield sup, config, tmp_path / "run"
        sup.shutdown()


def test_an_edited_config_is_used_from_the_next_cycle(supervisor) -> None:  # type: ignore[no-untyped-def]
    sup, config, _ = supervisor
    sup.cycle()
    assert sup.engine.settings.worker.poll_max_s == 60
    _edit(config, BASE + "poll_max_s = 7\n")
    sup.cycle()
    assert sup.engine.settings.worker.poll_max_s == 7
    assert sup.slow_s == 7


def test_a_bad_edit_keeps_the_last_good_config_and_is_reported_until_fixed(supervisor) -> None:  # type: ignore[no-untyped-def]
    sup, config, status = supervisor
    _edit(config, BASE + "poll_max_s = 7\npoll_max_z = 1\n")
    sup.cycle()
    assert sup.engine.settings.worker.poll_max_s == 60  # still the last good one
    assert "poll_max_z: unknown key" in (status / "config").read_text()
    _edit(config, BASE + "poll_max_s = 9\n")
    sup.cycle()
    assert sup.engine.settings.worker.poll_max_s == 9
    assert (status / "config").read_text() == ""
