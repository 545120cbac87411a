"""The node config 70-biomero-ice-node.sh writes, accepted by a real IceGrid registry.

Debian's Ice 3.7.8 (zeroc-icegrid, zeroc-ice-utils; tools/install-container-tools)
stands in for OMERO's 3.6 registry on loopback. As `omero node start` does, the node
runs with etc/internal.cfg (the Locator line, here taken from the generated
ice.config) followed by etc/<worker>.cfg. A 3.7 registry keeps its state under
IceGrid.Registry.LMDB.Path.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
HOOK = ROOT / "startup" / "70-biomero-ice-node.sh"
WAIT_S = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int) -> None:
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"registry never listened on {port}"
            time.sleep(0.1)


def need(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed: run tools/install-container-tools")
    return found


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    lmdb = tmp_path / "registry-db"
    lmdb.mkdir()
    config = tmp_path / "registry.cfg"
    config.write_text(
        "IceGrid.InstanceName=IceGrid\n"
        f"IceGrid.Registry.Client.Endpoints=tcp -h 127.0.0.1 -p {port}\n"
        "IceGrid.Registry.Server.Endpoints=tcp -h 127.0.0.1\n"
        "IceGrid.Registry.Internal.Endpoints=tcp -h 127.0.0.1\n"
        f"IceGrid.Registry.LMDB.Path={lmdb}\n"
        "IceGrid.Registry.LMDB.MapSize=16\n"
        "IceGrid.Registry.AdminPermissionsVerifier=IceGrid/NullPermissionsVerifier\n"
    )
    log = (tmp_path / "registry.log").open("w")
    proc = subprocess.Popen(
        [need("icegridregistry"), f"--Ice.Config={config}"], stdout=log, stderr=log
    )
    wait_for_port(port)
    yield port
    proc.terminate()
    proc.wait(timeout=WAIT_S)
    log.close()


@pytest.fixture
def start_node(tmp_path: Path) -> Iterator:
    procs: list[subprocess.Popen[bytes]] = []

    def _start(omerodir: Path, worker: str) -> None:
        etc = omerodir / "etc"
        locator = [ln for ln in (etc / "ice.config").read_text().splitlines() if "Locator" in ln]
        (etc / "internal.cfg").write_text("\n".join(locator) + "\n")
        config = f"--Ice.Config={etc / 'internal.cfg'},{etc / f'{worker}.cfg'}"
        procs.append(subprocess.Popen([need("icegridnode"), config], cwd=omerodir))

    yield _start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=WAIT_S)


def write_node_config(omerodir: Path, registry_port: int, **extra: str) -> None:
    (omerodir / "etc" / "templates").mkdir(parents=True)
    env = {
        "PATH": os.environ["PATH"],
        "OMERODIR": str(omerodir),
        "OMERO_WORKER_NAME": "biomeroworker",
        "CONFIG_omero_master_host": "localhost",
        "OMERO_WORKER_HOST": "localhost",
        "OMERO_MASTER_REGISTRY_PORT": str(registry_port),
        **extra,
    }
    subprocess.run([str(HOOK)], env=env, check=True, capture_output=True)


def ping(registry_port: int, node: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            need("icegridadmin"),
            f"--Ice.Default.Locator=IceGrid/Locator:tcp -h 127.0.0.1 -p {registry_port}",
            "-u",
            "admin",
            "-p",
            "any",
            "-e",
            f"node ping {node}",
        ],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=False,
    )


def wait_until_node_answers(registry_port: int, node: str) -> subprocess.CompletedProcess[str]:
    deadline = time.monotonic() + WAIT_S
    while True:
        result = ping(registry_port, node)
        if result.returncode == 0 or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


def test_registry_accepts_an_internal_worker_node(
    registry: int, start_node, tmp_path: Path
) -> None:
    omerodir = tmp_path / "OMERO.server"
    write_node_config(omerodir, registry)

    start_node(omerodir, "biomeroworker")

    result = wait_until_node_answers(registry, "biomeroworker")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "node is up" in result.stdout


def test_registry_reaches_an_external_worker_on_its_published_port(
    registry: int, start_node, tmp_path: Path
) -> None:
    omerodir = tmp_path / "OMERO.server"
    port = free_port()
    write_node_config(
        omerodir, registry, OMERO_WORKER_EXTERNAL="127.0.0.1", OMERO_WORKER_PORT=str(port)
    )

    start_node(omerodir, "biomeroworker")

    result = wait_until_node_answers(registry, "biomeroworker")
    assert result.returncode == 0, result.stdout + result.stderr
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass


def test_registry_does_not_know_a_node_that_never_started(registry: int) -> None:
    result = ping(registry, "biomeroworker")

    assert result.returncode != 0
    assert "couldn't find node" in result.stderr
