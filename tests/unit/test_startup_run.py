"""startup/99-run.sh and startup/biomero-healthcheck with stand-in commands.

`biomero supervise` and `omero node` cannot run here, so both are played by FakeLongRunner, a
script that writes its pid and, on SIGTERM, a "stopped" marker.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "startup" / "99-run.sh"
HEALTHCHECK = ROOT / "startup" / "biomero-healthcheck"
WAIT_S = 20.0

FAKE_LONG_RUNNER = """#!/usr/bin/env bash
name="$1"
trap 'echo stopped > "$MARKS/$name.stopped"; exit 0' TERM
echo $$ > "$MARKS/$name.started"
if [[ "${EXIT_AT_ONCE:-}" == "$name" ]]; then
    # Die only once the other stand-in has set its trap, or bash's TERM could land first.
    while [[ -n "${EXIT_AFTER:-}" && ! -e "$MARKS/$EXIT_AFTER" ]]; do sleep 0.05; done
    exit 3
fi
while true; do sleep 0.1; done
"""


@pytest.fixture
def marks(tmp_path: Path) -> Path:
    path = tmp_path / "marks"
    path.mkdir()
    return path


@pytest.fixture
def start(tmp_path: Path, marks: Path) -> Iterator:
    fake_runner = tmp_path / "fake-long-runner"
    fake_runner.write_text(FAKE_LONG_RUNNER)
    fake_runner.chmod(0o755)
    procs: list[subprocess.Popen[str]] = []

    def _start(**extra: str) -> subprocess.Popen[str]:
        env = {
            "PATH": os.environ["PATH"],
            "MARKS": str(marks),
            "OMERO_WORKER_NAME": "biomeroworker",
            "OMERO_NODE_CMD": f"{fake_runner} node",
            "BIOMERO_SUPERVISOR_CMD": f"{fake_runner} supervisor",
            "BIOMERO_RUN_DIR": str(tmp_path / "run"),
            "OMERO_SERVER_HOME": str(tmp_path),
            **extra,
        }
        proc = subprocess.Popen(
            [str(RUN)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # so cleanup can reach the children too
        )
        procs.append(proc)
        return proc

    yield _start
    for proc in procs:
        # The stand-ins outlive a killed wrapper: end the whole process group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wait_for(path: Path) -> None:
    deadline = time.monotonic() + WAIT_S
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.05)


def healthcheck(run_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "BIOMERO_RUN_DIR": str(run_dir)}
    return subprocess.run([str(HEALTHCHECK)], env=env, capture_output=True, text=True, check=False)


def test_sigterm_stops_both_the_supervisor_and_the_node(start, marks: Path) -> None:
    proc = start()
    wait_for(marks / "supervisor.started")
    wait_for(marks / "node.started")

    proc.send_signal(signal.SIGTERM)

    assert proc.wait(timeout=WAIT_S) == 0
    assert (marks / "supervisor.stopped").exists()
    assert (marks / "node.stopped").exists()


def test_records_the_supervisor_pid(start, marks: Path, tmp_path: Path) -> None:
    start()
    wait_for(marks / "supervisor.started")
    wait_for(tmp_path / "run" / "supervisor.pid")

    recorded = (tmp_path / "run" / "supervisor.pid").read_text().strip()
    assert recorded == (marks / "supervisor.started").read_text().strip()


def test_a_dying_supervisor_stops_the_node_and_fails_the_container(start, marks: Path) -> None:
    proc = start(EXIT_AT_ONCE="supervisor", EXIT_AFTER="node.started")

    assert proc.wait(timeout=WAIT_S) == 3
    assert (marks / "node.stopped").exists()


def test_healthcheck_passes_while_both_run_and_fails_after(
    start, marks: Path, tmp_path: Path
) -> None:
    proc = start()
    wait_for(marks / "node.started")
    wait_for(tmp_path / "run" / "node.pid")
    healthy = healthcheck(tmp_path / "run")

    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=WAIT_S)

    assert healthy.returncode == 0, healthy.stdout
    assert healthcheck(tmp_path / "run").returncode != 0


def test_refuses_to_start_without_a_worker_name(start) -> None:
    proc = start(OMERO_WORKER_NAME="")

    assert proc.wait(timeout=WAIT_S) != 0
    assert "OMERO_WORKER_NAME" in proc.stderr.read()
