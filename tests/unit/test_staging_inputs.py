"""Staging without services: input checks, the tar command line, manifests, progress.

The transport here is the real LocalTransport rooted in a temporary home.
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from biomeroworker.staging import (
    Manifest,
    StagingError,
    local_manifest,
    stage_up,
    tar_create_argv,
)
from biomeroworker.transport.local import LocalTransport


@pytest.fixture
def transport(tmp_path: Path) -> LocalTransport:
    home = tmp_path / "home"
    home.mkdir()
    return LocalTransport(home=home)


def _file(path: Path, size: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path


def test_tar_names_each_source_as_dot_slash_after_its_own_folder(tmp_path: Path) -> None:
    a = _file(tmp_path / "one" / "-rf")
    b = _file(tmp_path / "two" / "img.tif")
    argv = tar_create_argv([a, b])
    assert argv == [
        "tar", "-c", "-f", "-",
        "-C", str(tmp_path / "one"), "./-rf",
        "-C", str(tmp_path / "two"), "./img.tif",
    ]  # fmt: skip


def test_local_tar_packs_option_like_and_odd_names_literally(tmp_path: Path) -> None:
    names = ["-rf", "--to-command=touch pwned", "*", "a\nb", "it's", "back\\slash"]
    sources = [_file(tmp_path / name, 10) for name in names]
    packed = subprocess.run(tar_create_argv(sources), capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(packed)) as tar:
        assert [m.name for m in tar.getmembers()] == [f"./{n}" for n in names]
    assert not (tmp_path / "pwned").exists()


def test_duplicate_input_names_are_rejected_before_anything_runs(
    tmp_path: Path, transport: LocalTransport
) -> None:
    a = _file(tmp_path / "a" / "img.tif")
    b = _file(tmp_path / "b" / "img.tif")
    with pytest.raises(StagingError, match=r"share the name 'img\.tif'"):
        stage_up(transport, [a, b], "in")
    assert transport.commands_run == 0


def test_missing_input_is_rejected_with_its_path(tmp_path: Path, transport: LocalTransport) -> None:
    with pytest.raises(StagingError, match=r"input not found: .*gone\.tif"):
        stage_up(transport, [tmp_path / "gone.tif"], "in")
    assert transport.commands_run == 0


def test_symlinked_input_is_rejected_with_a_hint(tmp_path: Path, transport: LocalTransport) -> None:
    real = _file(tmp_path / "real" / "img.tif")
    folder = tmp_path / "img.ome.zarr"
    folder.mkdir()
    (folder / "link.tif").symlink_to(real)
    with pytest.raises(StagingError, match=r"link\.tif is a symlink or special file"):
        stage_up(transport, [folder], "in")
    assert transport.commands_run == 0


def test_manifest_counts_regular_files_and_not_links(tmp_path: Path) -> None:
    _file(tmp_path / "z" / "0" / "0", 10)
    _file(tmp_path / "z" / "0" / "1", 20)
    (tmp_path / "z" / "alias").symlink_to(tmp_path / "z" / "0" / "1")
    assert local_manifest([tmp_path / "z"]) == Manifest(2, 30)


def test_progress_reports_every_byte_of_the_stream(
    tmp_path: Path, transport: LocalTransport
) -> None:
    src = tmp_path / "img.ome.zarr"
    for n in range(30):
        _file(src / "0" / str(n), 5_000 + n)
    moved: list[int] = []
    stage_up(transport, [src], "in", progress=moved.append)
    packed = subprocess.run(tar_create_argv([src]), capture_output=True, check=True).stdout
    assert sum(moved) == len(packed)
