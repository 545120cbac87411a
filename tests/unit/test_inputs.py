"""Inputs checked at request time: real TIFFs and OME-Zarrs pass, everything else is
refused by name, all problems at once (biomeroworker.inputs)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from biomeroworker.inputs import (
    InputError,
    check_images,
    check_request,
    human_size,
    job_flag_values,
    tiff_problem,
)
from biomeroworker.slurm.parse import Partition
from biomeroworker.workflows.samples import make_sample, write_sample

HOSTILE = 'it\'s "$(touch biomero-pwned-inputs)" `id`;\nnext'


@pytest.fixture(scope="module")
def sample():  # type: ignore[no-untyped-def]
    return make_sample(0, "yx")


def tiff(folder: Path, name: str = "a.tif", *, bigtiff: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    tifffile.imwrite(path, np.zeros((8, 8), np.uint8), bigtiff=bigtiff)
    return path


def refused(paths: list[Path]) -> list[str]:
    with pytest.raises(InputError) as caught:
        check_images(paths)
    return caught.value.problems


# -- what passes ---------------------------------------------------------------------


@pytest.mark.parametrize("bigtiff", [False, True])
def test_a_tiff_passes_classic_and_bigtiff(tmp_path: Path, bigtiff: bool) -> None:
    path = tiff(tmp_path, bigtiff=bigtiff)
    checked = check_images([path])
    assert checked.files == (path,)
    assert checked.bytes == path.stat().st_size and checked.file_count == 1


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_an_ome_zarr_passes_v2_and_v3(tmp_path: Path, sample, version: str) -> None:  # type: ignore[no-untyped-def]
    path = write_sample(sample, tmp_path, "zarr", version=version)  # type: ignore[arg-type]
    checked = check_images([path])
    assert checked.files == (path,)
    assert checked.file_count == sum(1 for p in path.rglob("*") if p.is_file())
    assert checked.bytes == sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def test_a_folder_of_images_is_expanded_into_them_and_says_so(tmp_path: Path, sample) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "images"
    a, b = tiff(folder, "a.tif"), tiff(folder, "b.TIFF")
    z = write_sample(sample, folder, "zarr", version="0.4")
    (folder / ".DS_Store").write_text("hidden files are skipped")
    checked = check_images([folder])
    assert checked.files == tuple(sorted([a, b, z]))
    assert checked.expanded == ((str(folder), 3),)
    assert "expanded into its 3 image(s)" in checked.summary()


def test_size_is_shown_in_readable_units() -> None:
    assert human_size(999) == "999 bytes"
    assert human_size(12_345_678) == "12.3 MB"


# -- what is refused -------------------------------------------------------------------


def test_a_text_file_is_refused_as_not_an_image(tmp_path: Path) -> None:
    (problem,) = refused([Path("/etc/passwd")])
    assert problem.startswith("/etc/passwd: is not an image")


def test_a_text_file_named_tif_is_refused_as_not_a_tiff(tmp_path: Path) -> None:
    fake = tmp_path / "fake.tif"
    fake.write_text("root:x:0:0:root:/root:/bin/bash\n")
    (problem,) = refused([fake])
    assert problem == f"{fake}: is not a TIFF (it does not start with a TIFF header)"


def test_an_empty_tiff_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.tif"
    empty.touch()
    assert refused([empty]) == [f"{empty}: is empty"]


def test_a_truncated_tiff_is_refused(tmp_path: Path) -> None:
    whole = tiff(tmp_path)
    cut = tmp_path / "cut.tif"
    data = whole.read_bytes()
    first = int.from_bytes(data[4:8], "little")
    cut.write_bytes(data[: first + 1])
    (problem,) = refused([cut])
    assert "truncated or damaged TIFF" in problem


def test_tiff_header_rules() -> None:
    assert tiff_problem(b"II*\x00\x08\x00\x00\x00", 100) is None
    assert tiff_problem(b"MM\x00*\x00\x00\x00\x08", 100) is None
    assert tiff_problem(b"II+\x00\x08\x00\x00\x00" + (16).to_bytes(8, "little"), 100) is None
    assert "BigTIFF" in str(tiff_problem(b"II+\x00\x04\x00\x00\x00" + bytes(8), 100))
    assert "first directory" in str(tiff_problem(b"II*\x00\x00\x00\x00\x00", 100))
    assert "not a TIFF" in str(tiff_problem(b"\x89PNG\r\n\x1a\n", 100))


def test_a_tiff_not_named_tif_is_refused_with_a_rename_hint(tmp_path: Path) -> None:
    path = tiff(tmp_path, "image.dat")
    (problem,) = refused([path])
    assert "is a TIFF but not named .tif" in problem


def test_a_folder_of_folders_is_refused_with_what_is_in_it(tmp_path: Path, sample) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "samples"
    tiff(root / "tiff")
    write_sample(sample, root / "zarr-0.4", "zarr", version="0.4")
    (root / "counts.json").write_text("{}")
    (problem,) = refused([root])
    assert problem.startswith(f"{root}: is a folder, not an image, and not a folder of images")
    for name in ("counts.json is not an image", "tiff is a folder", "zarr-0.4 is a folder"):
        assert name in problem


def test_a_refused_folder_lists_five_and_counts_the_rest(tmp_path: Path) -> None:
    for n in range(8):
        (tmp_path / f"notes{n}.txt").write_text("x")
    (problem,) = refused([tmp_path])
    assert problem.count("is not an image") == 5 and problem.endswith("and 3 more")


def test_an_empty_folder_is_refused(tmp_path: Path) -> None:
    assert refused([tmp_path]) == [f"{tmp_path}: is an empty folder"]


def test_a_zarr_folder_without_ome_metadata_is_refused(tmp_path: Path) -> None:
    bare = tmp_path / "bare.zarr"
    bare.mkdir()
    (bare / "chunk").write_bytes(b"x")
    (problem,) = refused([bare])
    assert "has no OME-Zarr metadata" in problem


def test_a_zarr_v2_group_without_multiscales_is_refused(tmp_path: Path) -> None:
    group = tmp_path / "plain.zarr"
    group.mkdir()
    (group / ".zgroup").write_text('{"zarr_format": 2}')
    (group / ".zattrs").write_text('{"something": 1}')
    (problem,) = refused([group])
    assert "without OME image metadata (multiscales)" in problem


def test_a_zarr_v3_group_without_ome_attributes_is_refused(tmp_path: Path) -> None:
    group = tmp_path / "plain.zarr"
    group.mkdir()
    (group / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group"}')
    (problem,) = refused([group])
    assert "attributes.ome.multiscales" in problem


def test_an_ome_zarr_missing_its_first_level_is_refused(tmp_path: Path, sample) -> None:  # type: ignore[no-untyped-def]
    path = write_sample(sample, tmp_path, "zarr", version="0.5")
    shutil.rmtree(path / "0")
    (problem,) = refused([path])
    assert "misses its first resolution level (0/zarr.json)" in problem


def test_ome_zarr_metadata_pointing_outside_the_folder_is_refused(tmp_path: Path, sample) -> None:  # type: ignore[no-untyped-def]
    path = write_sample(sample, tmp_path, "zarr", version="0.4")
    attrs = json.loads((path / ".zattrs").read_text())
    attrs["multiscales"][0]["datasets"][0]["path"] = "../../etc"
    (path / ".zattrs").write_text(json.dumps(attrs))
    (problem,) = refused([path])
    assert "not a relative path" in problem


def test_an_ome_zarr_with_broken_json_is_refused(tmp_path: Path, sample) -> None:  # type: ignore[no-untyped-def]
    path = write_sample(sample, tmp_path, "zarr", version="0.4")
    (path / ".zattrs").write_text("{not json")
    (problem,) = refused([path])
    assert ".zattrs is not valid JSON" in problem


def test_an_ome_zarr_not_named_zarr_is_refused_with_a_rename_hint(tmp_path: Path, sample) -> None:  # type: ignore[no-untyped-def]
    path = write_sample(sample, tmp_path, "zarr", version="0.4")
    renamed = path.rename(tmp_path / "image-folder")
    (problem,) = refused([renamed])
    assert "its name does not end in .zarr" in problem


def test_a_symlink_inside_an_ome_zarr_is_refused(tmp_path: Path, sample) -> None:  # type: ignore[no-untyped-def]
    path = write_sample(sample, tmp_path, "zarr", version="0.4")
    (path / "link").symlink_to("/etc/passwd")
    (problem,) = refused([path])
    assert problem == f"{path / 'link'}: is a symlink; copy the real file there"


def test_an_unreadable_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tiff(tmp_path)
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == path else real(p, mode))
    (problem,) = refused([path])
    assert problem == f"{path}: cannot be read (permission denied)"


def test_a_missing_input_is_refused(tmp_path: Path) -> None:
    assert refused([tmp_path / "gone.tif"]) == [f"{tmp_path / 'gone.tif'}: not found"]


def test_no_inputs_is_refused() -> None:
    assert "at least one input" in refused([])[0]


def test_two_inputs_with_one_name_are_refused(tmp_path: Path) -> None:
    a, b = tiff(tmp_path / "x"), tiff(tmp_path / "y")
    (problem,) = refused([a, b])
    assert problem.startswith("a.tif: two inputs share this name")


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    empty = tmp_path / "empty.tif"
    empty.touch()
    problems = refused([Path("/etc/passwd"), empty, tmp_path / "gone.tif"])
    assert len(problems) == 3


def test_hostile_names_pass_when_they_are_images_and_are_quoted_when_refused(
    tmp_path: Path,
) -> None:
    good = tiff(tmp_path, f"{HOSTILE}.tif")
    assert check_images([good]).files == (good,)
    bad = tmp_path / f"{HOSTILE}.txt"
    bad.write_text("x")
    (problem,) = refused([bad])
    assert "\n" not in problem and repr(str(bad)) in problem
    assert not list(Path.cwd().glob("biomero-pwned-*"))


# -- the request: images and sbatch values together ------------------------------------

PARTITIONS = [
    Partition("cpu-short", True, 7200, 1, 4, True),
    Partition("cpu-long", True, 7 * 86400, 1, 4, False),
]


def _settings(tmp_path: Path, extra: str = "", slurm: str = ""):  # type: ignore[no-untyped-def]
    from biomeroworker.config import load_settings

    repo = tmp_path / "wf"
    repo.mkdir(exist_ok=True)
    config = tmp_path / "slurm-config.ini"
    config.write_text(
        "[SSH]\nhost = c\n[SLURM]\nslurm_data_path = d\nslurm_images_path = i\n"
        "slurm_converters_path = v\nslurm_script_path = s\nslurm_default_partition = cpu-short\n"
        f"{slurm}[WORKFLOWS]\nseg = seg\nseg_repo = {repo}\n{extra}"
    )
    return load_settings([config], env={})


def test_an_unknown_partition_is_refused_with_the_valid_ones(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    with pytest.raises(InputError) as caught:
        check_request(
            settings, "seg", lambda: PARTITIONS, files=[tiff(tmp_path)], partition="nosuchpart"
        )
    (problem,) = caught.value.problems
    assert problem == (
        "--partition: partition 'nosuchpart' does not exist on the cluster; "
        "partitions: cpu-short, cpu-long"
    )


def test_a_configured_workflow_partition_is_refused_naming_its_key(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "seg_job_partition = gpu-huge\n")
    with pytest.raises(InputError, match=r"\[WORKFLOWS\] seg_job_partition: partition 'gpu-huge'"):
        check_request(settings, "seg", lambda: PARTITIONS, files=[tiff(tmp_path)])


def test_a_gpu_partition_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path, "seg_use_gpu = true\n", "gpu_partition = gpu\ngpu_gres = gpu:x:y:z\n"
    )
    with pytest.raises(InputError) as caught:
        check_request(settings, "seg", lambda: PARTITIONS, files=[tiff(tmp_path)])
    text = "\n".join(caught.value.problems)
    assert "[SLURM] gpu_partition: partition 'gpu' does not exist" in text
    assert "[SLURM] gpu_gres: 'gpu:x:y:z' is not usable" in text


def test_a_time_above_the_partition_limit_is_refused(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "seg_job_time = 3:00:00\n")
    with pytest.raises(InputError) as caught:
        check_request(settings, "seg", lambda: PARTITIONS, files=[tiff(tmp_path)])
    assert caught.value.problems == [
        "[WORKFLOWS] seg_job_time: time 3:00:00 is above the 02:00:00 that partition "
        "cpu-short allows"
    ]
    # the same time on the long partition is fine
    check_request(settings, "seg", lambda: PARTITIONS, files=[tiff(tmp_path)], partition="cpu-long")


def test_a_badly_written_memory_is_refused(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "seg_job_mem = 1.5G\n")
    with pytest.raises(InputError, match=r"seg_job_mem: '1.5G' is not usable: expected a whole"):
        check_request(settings, "seg", lambda: PARTITIONS, files=[tiff(tmp_path)])


def test_bad_images_and_a_bad_partition_are_reported_together(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    with pytest.raises(InputError) as caught:
        check_request(
            settings, "seg", lambda: PARTITIONS, files=[Path("/etc/passwd")], partition="nope"
        )
    assert len(caught.value.problems) == 2
    assert str(caught.value).startswith("nothing was recorded; fix these first:\n  /etc/passwd")


def test_an_ome_zarr_input_checks_the_conversion_partition_too(tmp_path: Path, sample) -> None:  # type: ignore[no-untyped-def]
    settings = _settings(tmp_path, "", "slurm_conversion_partition = convert\n")
    zarr = write_sample(sample, tmp_path / "z", "zarr", version="0.4")
    with pytest.raises(InputError, match=r"slurm_conversion_partition \(conversion job\)"):
        check_request(settings, "seg", lambda: PARTITIONS, files=[zarr])
    check_request(settings, "seg", lambda: PARTITIONS, files=[tiff(tmp_path)])  # no conversion


def test_an_unreachable_cluster_records_with_a_warning(tmp_path: Path) -> None:
    from biomeroworker.errors import ConnectError

    def down() -> list[Partition]:
        raise ConnectError("connection refused")

    settings = _settings(tmp_path)
    checked = check_request(settings, "seg", down, files=[tiff(tmp_path)], partition="anything")
    assert "not checked" in checked.summary() and "connection refused" in checked.summary()
    assert checked.record()["unchecked"]


def test_flag_origins_name_the_key_that_set_each_value(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "seg_job_mem = 4G\n")
    origins = {v.flag: v.origin for v in job_flag_values(settings, "seg", None)}
    assert origins == {
        "mem": "[WORKFLOWS] seg_job_mem",
        "partition": "[SLURM] slurm_default_partition",
    }


# -- the export step: what a DataSide wrote meets the same rules -----------------------


class _StubSide:
    """A DataSide that 'exports' a fixed set of folders (thin stand-in for OMERO)."""

    def __init__(self, write: object) -> None:
        self.write = write

    def export(self, run, dest: Path) -> list[Path]:  # type: ignore[no-untyped-def]
        return self.write(dest)  # type: ignore[operator]

    def import_results(self, run, results: Path) -> dict:  # type: ignore[no-untyped-def,type-arg]
        return {}


def _export_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write: object):  # type: ignore[no-untyped-def]
    from biomeroworker.runs import RunEngine, RunFailed
    from biomeroworker.tracking.application import Tracker
    from biomeroworker.transport.local import LocalTransport

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    tracker = Tracker(f"sqlite:///{tmp_path / 't.sqlite'}")
    run_id = tracker.record_run_requested(
        workflow="seg", version="local", user_name="alice", inputs={"source": "omero"}
    )
    engine = RunEngine(
        _settings(tmp_path),
        LocalTransport(home=tmp_path),
        tracker,
        data_sides={"omero": _StubSide(write)},  # type: ignore[dict-item]
    )
    with contextlib.suppress(RunFailed):
        engine.advance(tracker.run_record(run_id))
    run = tracker.get_run(run_id)
    tracker.close()
    return run


def test_an_export_without_ome_zarr_metadata_fails_the_export_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def write(dest: Path) -> list[Path]:
        folder = dest / "image1.ome.zarr"
        folder.mkdir()
        (folder / "zarr.json").write_text("{}")
        return [folder]

    run = _export_run(tmp_path, monkeypatch, write)
    assert run["state"] == "FAILED" and run["error_type"] == "ExportError"
    assert "image1.ome.zarr: has zarr.json but no OME image metadata" in run["error"]


def test_a_good_export_records_its_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sample
) -> None:  # type: ignore[no-untyped-def]
    def write(dest: Path) -> list[Path]:
        return [write_sample(sample, dest, "zarr", version="0.4")]

    run = _export_run(tmp_path, monkeypatch, write)
    (export,) = run["tasks"]
    assert export["state"] == "COMPLETED"
    assert export["progress"].startswith("1 image(s), ")
