"""startup/45-biomero-config.sh (OMERO.web image), run for real in temporary folders."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

HOOK = Path(__file__).resolve().parents[2] / "startup" / "45-biomero-config.sh"


def run_hook(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HOOK)],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        check=False,
    )


def test_seeds_the_shared_config_once_and_then_leaves_it_to_the_admin_page(
    tmp_path: Path,
) -> None:
    seed = tmp_path / "seed.ini"
    seed.write_text("[SSH]\nhost = cluster\n")
    shared = tmp_path / "volume" / "slurm-config.ini"
    shared.parent.mkdir()

    first = run_hook(BIOMERO_SLURM_CONFIG_FILE=str(shared), BIOMERO_CONFIG_SEED=str(seed))

    assert first.returncode == 0, first.stderr
    assert shared.read_text() == seed.read_text()
    assert oct(shared.stat().st_mode & 0o777) == "0o644"
    assert "seeded" in first.stderr
    # The admin page saves its own content; a restart must not put the seed back.
    shared.write_text("[SSH]\nhost = edited-on-the-admin-page\n")
    again = run_hook(BIOMERO_SLURM_CONFIG_FILE=str(shared), BIOMERO_CONFIG_SEED=str(seed))
    assert again.returncode == 0, again.stderr
    assert "edited-on-the-admin-page" in shared.read_text()
    assert sorted(p.name for p in shared.parent.iterdir()) == ["slurm-config.ini"]


def test_says_which_volume_is_missing(tmp_path: Path) -> None:
    result = run_hook(BIOMERO_SLURM_CONFIG_FILE=str(tmp_path / "absent" / "slurm-config.ini"))

    assert result.returncode != 0
    assert "mount the biomero-config volume there" in result.stderr


def test_refuses_to_start_without_the_variable() -> None:
    result = run_hook()

    assert result.returncode != 0
    assert "BIOMERO_SLURM_CONFIG_FILE is not set" in result.stderr
