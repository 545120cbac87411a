"""`biomero check` against the real local cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from biomeroworker.cli import main


def _config(tmp_path: Path, cluster, **replace: str) -> Path:  # type: ignore[no-untyped-def]
    text = cluster.config_path.read_text()
    for old, new in replace.items():
        text = text.replace(old, new)
    path = tmp_path / "slurm-config.ini"
    path.write_text(text)
    return path


def test_check_passes_against_the_local_cluster(cluster, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["--config", str(cluster.config_path), "check"]) == 0
    out = capsys.readouterr().out
    for name in ("config", "connect", "sinfo", "folder slurm_data_path", "squeue", "sacct"):
        assert f"PASS  {name}" in out


def test_check_fails_on_a_partition_sinfo_does_not_list(cluster, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    config = _config(
        tmp_path,
        cluster,
        **{"slurm_default_partition = cpu-short": "slurm_default_partition = gpu-huge"},
    )
    assert main(["--config", str(config), "check"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  sinfo" in out
    assert "slurm_default_partition=gpu-huge" in out
    assert "hint:" in out


def test_check_reports_an_unwritable_folder(cluster, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    config = _config(
        tmp_path, cluster, **{"slurm_data_path = data": "slurm_data_path = /proc/biomero"}
    )
    assert main(["--config", str(config), "check"]) == 1
    assert "FAIL  folder slurm_data_path" in capsys.readouterr().out


def test_check_stops_after_a_failed_connection(cluster, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    config = _config(tmp_path, cluster, **{"host = localslurm": "host = no-such-alias.invalid"})
    assert main(["--config", str(config), "check"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  connect" in out
    assert "sinfo" not in out


@pytest.mark.parametrize("flag", ["--offline"])
def test_offline_check_does_not_connect(cluster, tmp_path, capsys, flag) -> None:  # type: ignore[no-untyped-def]
    config = _config(tmp_path, cluster, **{"host = localslurm": "host = no-such-alias.invalid"})
    assert main(["--config", str(config), "check", flag]) == 0
    assert "connect" not in capsys.readouterr().out
