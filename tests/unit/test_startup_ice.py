"""startup/70-biomero-ice-node.sh against a temporary tree shaped like OMERO.server."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

HOOK = Path(__file__).resolve().parents[2] / "startup" / "70-biomero-ice-node.sh"


@pytest.fixture
def omerodir(tmp_path: Path) -> Path:
    (tmp_path / "etc" / "templates").mkdir(parents=True)
    return tmp_path


def run_hook(omerodir: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ["PATH"],
        "OMERODIR": str(omerodir),
        "OMERO_WORKER_NAME": "biomeroworker",
        "CONFIG_omero_master_host": "localhost",
        "OMERO_WORKER_HOST": "localhost",
        **extra,
    }
    return subprocess.run([str(HOOK)], env=env, capture_output=True, text=True, check=False)


def properties(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    pairs = (line.split("=", 1) for line in lines if line and not line.startswith("#"))
    return {key: value for key, value in pairs}


def test_internal_worker_listens_on_its_resolved_address(omerodir: Path) -> None:
    assert run_hook(omerodir).returncode == 0

    node = properties(omerodir / "etc" / "biomeroworker.cfg")
    assert node == {
        "IceGrid.Node.Name": "biomeroworker",
        "IceGrid.Node.Endpoints": "tcp -h 127.0.0.1",
        "IceGrid.Node.Data": "var/biomeroworker",
        "IceGrid.Node.Output": "var/log",
        "Ice.StdOut": "var/log/biomeroworker.out",
        "Ice.StdErr": "var/log/biomeroworker.err",
    }


def test_client_config_routes_through_glacier2_and_the_registry_of_the_master(
    omerodir: Path,
) -> None:
    assert run_hook(omerodir, OMERO_MASTER_REGISTRY_PORT="14061").returncode == 0

    client = properties(omerodir / "etc" / "ice.config")
    assert client == {
        "Ice.Default.Router": "OMERO.Glacier2/router:tcp -p 4063 -h 127.0.0.1",
        "Ice.Default.Locator": "IceGrid/Locator:tcp -p 14061 -h 127.0.0.1",
    }


def test_external_worker_pins_its_port_and_publishes_its_external_name(omerodir: Path) -> None:
    result = run_hook(omerodir, OMERO_WORKER_EXTERNAL="127.0.0.2", OMERO_WORKER_PORT="4070")

    assert result.returncode == 0, result.stderr
    node = properties(omerodir / "etc" / "biomeroworker.cfg")
    assert node["IceGrid.Node.Endpoints"] == "tcp -h 127.0.0.1 -p 4070"
    assert node["IceGrid.Node.PublishedEndpoints"] == "tcp -h 127.0.0.2 -p 4070"


def test_templates_get_the_same_files_so_omero_rewrite_keeps_them(omerodir: Path) -> None:
    assert run_hook(omerodir).returncode == 0

    for name in ("biomeroworker.cfg", "ice.config"):
        etc, template = omerodir / "etc" / name, omerodir / "etc" / "templates" / name
        assert template.read_text() == etc.read_text()


def test_creates_the_node_data_and_log_directories(omerodir: Path) -> None:
    assert run_hook(omerodir).returncode == 0

    assert (omerodir / "var" / "biomeroworker").is_dir()
    assert (omerodir / "var" / "log").is_dir()


def test_external_worker_without_a_port_is_refused(omerodir: Path) -> None:
    result = run_hook(omerodir, OMERO_WORKER_EXTERNAL="127.0.0.2")

    assert result.returncode != 0
    assert "OMERO_WORKER_PORT must be too" in result.stderr


def test_unresolvable_master_is_named_in_the_error(omerodir: Path) -> None:
    result = run_hook(omerodir, CONFIG_omero_master_host="no-such-master.invalid")

    assert result.returncode != 0
    assert "master 'no-such-master.invalid' does not resolve" in result.stderr
    assert not (omerodir / "etc" / "ice.config").exists()


def test_unresolvable_worker_is_named_in_the_error(omerodir: Path) -> None:
    result = run_hook(omerodir, OMERO_WORKER_HOST="no-such-worker.invalid")

    assert result.returncode != 0
    assert "worker host 'no-such-worker.invalid' does not resolve" in result.stderr


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OMERO_WORKER_NAME", ""),
        ("OMERO_WORKER_NAME", "bad name;rm"),
        ("CONFIG_omero_master_host", ""),
        ("OMERO_WORKER_PORT", "70000"),
        ("OMERO_MASTER_REGISTRY_PORT", "x"),
    ],
)
def test_bad_settings_stop_the_start_with_the_variable_named(
    omerodir: Path, variable: str, value: str
) -> None:
    result = run_hook(omerodir, **{variable: value})

    assert result.returncode != 0
    assert variable in result.stderr
    assert not (omerodir / "etc" / "biomeroworker.cfg").exists()
