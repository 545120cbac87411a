"""`biomero check` on bad configuration: one clear line per problem, non-zero exit."""

from __future__ import annotations

from pathlib import Path

from biomeroworker.cli import main


def test_offline_check_names_file_section_and_key_of_a_typo(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "slurm-config.ini"
    config.write_text(
        "[SSH]\nhost = somewhere\n[SLURM]\nslurm_data_pth = data\nslurm_images_path = i\n"
        "slurm_converters_path = c\nslurm_script_path = s\n"
    )
    assert main(["--config", str(config), "check", "--offline"]) == 1
    err = capsys.readouterr().err
    assert f"{config} [SLURM] slurm_data_pth" in err
    assert "slurm_data_path" in err


def test_missing_config_file_is_an_error_naming_it(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    missing = tmp_path / "nope.ini"
    assert main(["--config", str(missing), "check", "--offline"]) == 1
    assert str(missing) in capsys.readouterr().err
