from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from biomeroworker.convert.omezarr import OmeZarrError, read_full_resolution, write_ome_zarr
from biomeroworker.convert.zarr_to_tiff import convert, main

AXES = ["yx", "cyx", "zyx", "tyx", "czyx", "tcyx", "tzyx", "tczyx"]
SIZES = {"t": 2, "c": 3, "z": 4, "y": 33, "x": 20}


def source_array(axes: str, dtype: str = "uint16") -> np.ndarray:
    shape = [SIZES[a] for a in axes]
    values = np.random.default_rng(len(axes)).integers(0, 4000, size=shape)
    return values.astype(dtype)


def read_tiff(path: Path) -> tuple[np.ndarray, str]:
    with tifffile.TiffFile(path) as tif:
        return tif.series[0].asarray(), tif.series[0].axes


@pytest.mark.parametrize("version", ["0.4", "0.5"])
@pytest.mark.parametrize("axes", AXES)
def test_tiff_equals_the_full_resolution_level_pixel_for_pixel(
    tmp_path: Path, version: str, axes: str
) -> None:
    data = source_array(axes)
    write_ome_zarr(tmp_path / "in.zarr", data, axes, version=version)  # type: ignore[arg-type]
    convert(tmp_path / "in.zarr", tmp_path / "out.tif")
    pixels, tiff_axes = read_tiff(tmp_path / "out.tif")
    assert tiff_axes == axes.upper()
    assert pixels.dtype == data.dtype
    np.testing.assert_array_equal(pixels, data)


@pytest.mark.parametrize("dtype", ["uint8", "int16", "float32"])
def test_pixel_type_is_kept(tmp_path: Path, dtype: str) -> None:
    data = source_array("cyx", dtype)
    write_ome_zarr(tmp_path / "in.zarr", data, "cyx", version="0.5")
    convert(tmp_path / "in.zarr", tmp_path / "out.tif")
    np.testing.assert_array_equal(read_tiff(tmp_path / "out.tif")[0], data)


def test_channel_order_is_kept(tmp_path: Path) -> None:
    data = np.stack([np.full((8, 8), value, dtype=np.uint8) for value in (10, 20, 30)])
    write_ome_zarr(tmp_path / "in.zarr", data, "cyx", version="0.4")
    convert(tmp_path / "in.zarr", tmp_path / "out.tif")
    pixels, _axes = read_tiff(tmp_path / "out.tif")
    assert [int(plane[0, 0]) for plane in pixels] == [10, 20, 30]


def test_v2_writer_metadata_is_ome_zarr_0_4(tmp_path: Path) -> None:
    write_ome_zarr(tmp_path / "a.zarr", source_array("czyx"), "czyx", version="0.4", levels=3)
    attrs = json.loads((tmp_path / "a.zarr" / ".zattrs").read_text())
    multiscale = attrs["multiscales"][0]
    assert multiscale["version"] == "0.4"
    assert [a["name"] for a in multiscale["axes"]] == ["c", "z", "y", "x"]
    scales = [d["coordinateTransformations"][0]["scale"] for d in multiscale["datasets"]]
    assert scales == [[1, 1, 1, 1], [1, 1, 2, 2], [1, 1, 4, 4]]
    assert json.loads((tmp_path / "a.zarr" / "1" / ".zarray").read_text())["shape"] == [
        3,
        4,
        16,
        10,
    ]


def test_v3_writer_metadata_is_ome_zarr_0_5(tmp_path: Path) -> None:
    write_ome_zarr(tmp_path / "a.zarr", source_array("tczyx"), "tczyx", version="0.5")
    group = json.loads((tmp_path / "a.zarr" / "zarr.json").read_text())
    assert group["zarr_format"] == 3
    ome = group["attributes"]["ome"]
    assert ome["version"] == "0.5"
    assert [d["path"] for d in ome["multiscales"][0]["datasets"]] == ["0", "1"]
    level1 = json.loads((tmp_path / "a.zarr" / "1" / "zarr.json").read_text())
    assert level1["dimension_names"] == ["t", "c", "z", "y", "x"]
    assert level1["shape"] == [2, 3, 4, 16, 10]


def test_second_level_is_the_2x2_mean(tmp_path: Path) -> None:
    data = np.arange(16, dtype=np.uint16).reshape(4, 4)
    write_ome_zarr(tmp_path / "a.zarr", data, "yx", version="0.5")
    level1 = zarr.open_array(str(tmp_path / "a.zarr" / "1"), mode="r")[...]
    np.testing.assert_array_equal(level1, [[2, 4], [10, 12]])  # rint of 2.5 / 4.5 / ...


def test_folder_without_multiscales_is_refused(tmp_path: Path) -> None:
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    with pytest.raises(OmeZarrError, match="no OME 'multiscales'"):
        read_full_resolution(tmp_path / "plain.zarr")


def write_batch(tmp_path: Path) -> Path:
    lines = []
    for index, version in enumerate(["0.4", "0.5"]):
        path = tmp_path / "in" / f"img{index}.ome.zarr"
        write_ome_zarr(path, source_array("cyx") + index, "cyx", version=version)  # type: ignore[arg-type]
        lines.append(str(path))
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    return tmp_path / "list.txt"


def test_batch_element_converts_only_its_own_line(tmp_path: Path) -> None:
    listing = write_batch(tmp_path)
    assert main(["--list", str(listing), "--index", "2", "--outdir", str(tmp_path / "o")]) == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["img1.tif"]
    np.testing.assert_array_equal(
        read_tiff(tmp_path / "o" / "img1.tif")[0], source_array("cyx") + 1
    )


def test_batch_output_defaults_to_the_input_folder(tmp_path: Path) -> None:
    listing = write_batch(tmp_path)
    assert main(["--list", str(listing), "--index", "1"]) == 0
    assert (tmp_path / "in" / "img0.tif").is_file()


@pytest.mark.parametrize("index", ["0", "3"])
def test_batch_index_outside_the_list_fails_with_a_message(
    tmp_path: Path, index: str, capsys: pytest.CaptureFixture[str]
) -> None:
    listing = write_batch(tmp_path)
    assert main(["--list", str(listing), "--index", index]) == 1
    assert "outside 1..2" in capsys.readouterr().err


def test_cli_converts_one_image_and_fails_clearly_on_a_non_zarr(tmp_path: Path) -> None:
    write_ome_zarr(tmp_path / "in.zarr", source_array("zyx"), "zyx", version="0.4")
    ok = subprocess.run(
        [sys.executable, "-m", "biomeroworker.convert.zarr_to_tiff",
         str(tmp_path / "in.zarr"), str(tmp_path / "out.tif")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    np.testing.assert_array_equal(read_tiff(tmp_path / "out.tif")[0], source_array("zyx"))
    bad = subprocess.run(
        [sys.executable, "-m", "biomeroworker.convert.zarr_to_tiff",
         str(tmp_path / "missing.zarr"), str(tmp_path / "x.tif")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert bad.returncode == 1
    assert "missing.zarr" in bad.stderr
    assert not (tmp_path / "x.tif").exists()
