"""startup/65-biomero-check.sh: the config check gate before the node starts.

The hook is run with a stand-in `biomero` (FakeBiomero below) that records its
argv and exits with a chosen status; the real `biomero check --offline` is also
run against a broken config when it is importable.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HOOK = ROOT / "startup" / "65-biomero-check.sh"

FAKE_BIOMERO = """#!/usr/bin/env bash
printf '%s\\n' "$@" > "$FAKE_BIOMERO_ARGV"
echo "slurm-config.ini [SSH] host: missing" >&2
exit "${FAKE_BIOMERO_EXIT:-0}"
"""


@pytest.fixture
def base_config(tmp_path: Path) -> Path:
    path = tmp_path / "slurm-config.ini"
    path.write_text("[SSH]\nhost=cluster\n")
    return path


@pytest.fixture
def fake_biomero(tmp_path: Path) -> Path:
    path = tmp_path / "bin" / "biomero"
    path.parent.mkdir()
    path.write_text(FAKE_BIOMERO)
    path.chmod(0o755)
    return path


def run_hook(base: Path, biomero: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ["PATH"],
        "BIOMERO_BASE_CONFIG": str(base),
        "BIOMERO_BIN": str(biomero),
        "FAKE_BIOMERO_ARGV": str(biomero.parent / "argv"),
        **extra,
    }
    return subprocess.run([str(HOOK)], env=env, capture_output=True, text=True, check=False)


def recorded_argv(biomero: Path) -> list[str]:
    return (biomero.parent / "argv").read_text().splitlines()


def test_runs_the_offline_check(base_config: Path, fake_biomero: Path) -> None:
    assert run_hook(base_config, fake_biomero).returncode == 0
    assert recorded_argv(fake_biomero) == ["check", "--offline"]


def test_passes_the_override_file_to_the_check(
    base_config: Path, fake_biomero: Path, tmp_path: Path
) -> None:
    override = tmp_path / "override.ini"
    override.write_text("[SLURM]\n")

    assert run_hook(base_config, fake_biomero, BIOMERO_CONFIG=str(override)).returncode == 0
    assert recorded_argv(fake_biomero) == ["--config", str(override), "check", "--offline"]


def test_a_failed_check_stops_the_start_and_keeps_its_messages(
    base_config: Path, fake_biomero: Path
) -> None:
    result = run_hook(base_config, fake_biomero, FAKE_BIOMERO_EXIT="2")

    assert result.returncode != 0
    assert "[SSH] host: missing" in result.stderr
    assert "slurm-config.ini is not valid" in result.stderr


def test_a_missing_override_file_is_refused(base_config: Path, fake_biomero: Path) -> None:
    result = run_hook(base_config, fake_biomero, BIOMERO_CONFIG="/nonexistent/override.ini")

    assert result.returncode != 0
    assert "/nonexistent/override.ini" in result.stderr
    assert not (fake_biomero.parent / "argv").exists()


def test_a_missing_base_config_is_refused(tmp_path: Path, fake_biomero: Path) -> None:
    result = run_hook(tmp_path / "absent.ini", fake_biomero)

    assert result.returncode != 0
    assert "absent.ini is missing" in result.stderr


def test_the_real_check_refuses_a_broken_config(tmp_path: Path) -> None:
    if importlib.util.find_spec("biomeroworker.cli.check") is None:
        pytest.skip("biomeroworker.cli.check is not written yet")
    broken = tmp_path / "slurm-config.ini"
    broken.write_text("[SSH]\n[SLURM]\nslurm_data_path=\n[MODELS]\ncellpose_jbo=x\n")
    real = Path(sys.executable).with_name("biomero")

    result = run_hook(broken, real, BIOMERO_CONFIG=str(broken))

    assert result.returncode != 0
    assert "slurm-config.ini is not valid" in result.stderr


def test_checks_the_shared_file_alone_when_biomero_slurm_config_file_names_it(
    base_config: Path, fake_biomero: Path, tmp_path: Path
) -> None:
    shared = tmp_path / "volume" / "slurm-config.ini"
    shared.parent.mkdir()
    shared.write_text("[SSH]\nhost=cluster\n")

    result = run_hook(base_config, fake_biomero, BIOMERO_SLURM_CONFIG_FILE=str(shared))

    assert result.returncode == 0, result.stderr
    # No --config: biomero itself reads BIOMERO_SLURM_CONFIG_FILE, as the worker will.
    assert (fake_biomero.parent / "argv").read_text().split() == ["check", "--offline"]
    assert f"checking {shared}" in result.stderr


def test_a_missing_shared_file_says_who_creates_it(base_config: Path, fake_biomero: Path) -> None:
    result = run_hook(
        base_config, fake_biomero, BIOMERO_SLURM_CONFIG_FILE="/nonexistent/slurm-config.ini"
    )

    assert result.returncode != 0
    assert "OMERO.web seeds it on its first start" in result.stderr
    assert not (fake_biomero.parent / "argv").exists()
