"""Result files before OMERO: kinds, links to sources, CSV typing, label shapes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from biomeroworker.omero.results import (
    ExportedImage,
    ResultsError,
    display_name,
    labels_in,
    mask_shapes,
    match_source,
    omero_dtype,
    polygon_shapes,
    read_csv,
    result_kind,
    scan_results,
    to_tczyx,
)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("image3_labels.tif", "label"),
        ("image3_cp_masks.TIFF", "label"),
        ("image3.ome.tif", "image"),
        ("image3_objects.csv", "csv"),
        ("model.pt", "file"),
    ],
)
def test_result_files_are_sorted_by_kind(name: str, kind: str) -> None:
    assert result_kind(Path(name)) == kind


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("image12_labels.tif", 12),
        ("run1_image12_objects.csv", 12),
        ("image1_labels.tif", None),  # 1 was not exported
        ("image12_vs_image13.csv", None),  # two sources: no single match
        ("image123_labels.tif", None),  # 12 is not 123
        ("summary.csv", None),
    ],
)
def test_a_result_links_to_its_source_only_when_exactly_one_fits(
    name: str, expected: int | None
) -> None:
    assert match_source(name, {12, 13}) == expected


def test_hidden_and_partial_files_are_not_results(tmp_path: Path) -> None:
    (tmp_path / "image1_labels.tif").write_bytes(b"x")
    (tmp_path / ".nfs0001").write_bytes(b"x")
    (tmp_path / "big.csv.partial").write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "notes.txt").write_text("x")
    found = scan_results(tmp_path, {1})
    assert [(f.relpath, f.kind, f.source_id) for f in found] == [
        ("image1_labels.tif", "label", 1),
        ("sub/notes.txt", "file", None),
    ]


def test_csv_columns_get_the_narrowest_type_that_fits(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("id,area,name,ratio\n1,2.5,a,\n2,3,b,0.5\n")
    columns = read_csv(path)
    assert [(c.name, c.kind) for c in columns] == [
        ("id", "long"),
        ("area", "double"),
        ("name", "string"),
        ("ratio", "double"),
    ]
    assert math.isnan(columns[3].values[0])


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "no header row"),
        ("a,,c\n1,2,3\n", "column names must be present and unique"),
        ("a,a\n1,2\n", "column names must be present and unique"),
        ("a,b\n1,2,3\n", "do not have 2 columns"),
    ],
)
def test_a_malformed_csv_says_what_is_wrong(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ResultsError, match=problem):
        read_csv(path)


def test_arrays_are_reordered_to_tczyx() -> None:
    data = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)  # Z C Y X
    out = to_tczyx(data, "ZCYX")
    assert out.shape == (1, 3, 2, 4, 5)
    assert out[0, 1, 0, 2, 3] == data[0, 1, 2, 3]


def test_masks_cover_exactly_the_labelled_pixels() -> None:
    labels = np.zeros((1, 8, 10), dtype=np.uint16)
    labels[0, 2:5, 3:7] = 4
    labels[0, 3, 4] = 9
    (mask,) = mask_shapes(labels, 4)
    assert (mask.x, mask.y, mask.width, mask.height) == (3, 2, 4, 3)
    bits = np.unpackbits(np.frombuffer(mask.bits, dtype=np.uint8))[: 4 * 3].reshape(3, 4)
    assert bits.sum() == 11 and bits[1, 1] == 0
    assert labels_in(labels) == [4, 9]


def test_a_polygon_outlines_the_label() -> None:
    labels = np.zeros((1, 10, 10), dtype=np.uint8)
    labels[0, 2:6, 3:8] = 1
    (polygon,) = polygon_shapes(labels, 1)
    points = [tuple(map(float, p.split(","))) for p in polygon.points.split()]
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    assert (min(xs), max(xs), min(ys), max(ys)) == (2.5, 7.5, 1.5, 5.5)


def test_64_bit_labels_become_a_type_omero_stores() -> None:
    assert omero_dtype(np.array([0, 70000], dtype=np.int64)).dtype == np.uint32
    with pytest.raises(ResultsError, match="do not fit"):
        omero_dtype(np.array([-1, 2**40], dtype=np.int64))


def test_imported_images_are_named_after_their_source() -> None:
    source = ExportedImage(12, "cells day 1.ome.tiff", "image12.ome.zarr")
    assert display_name("image12_labels.tif", source) == "cells day 1_labels.tif"
    assert display_name("summary.tif", None) == "summary.tif"


# -- reading results plane by plane ------------------------------------------------------


def test_a_z_stack_is_read_one_plane_at_a_time(tmp_path: Path) -> None:
    import tifffile

    from biomeroworker.omero.results import ImageFile

    data = np.arange(3 * 2 * 4 * 5, dtype=np.uint16).reshape(3, 2, 4, 5)  # Z C Y X
    tifffile.imwrite(tmp_path / "s.tif", data, imagej=True, metadata={"axes": "ZCYX"})
    with ImageFile.open(tmp_path / "s.tif") as image:
        assert image.shape == (1, 2, 3, 4, 5)
        assert np.array_equal(image.plane(0, 1, 2), data[2, 1])


def test_rgb_samples_become_channels(tmp_path: Path) -> None:
    import tifffile

    from biomeroworker.omero.results import ImageFile

    rgb = np.zeros((6, 7, 3), dtype=np.uint8)
    rgb[..., 2] = 9
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    with ImageFile.open(tmp_path / "rgb.tif") as image:
        assert image.shape == (1, 3, 1, 6, 7)
        assert image.plane(0, 2, 0).max() == 9 and image.plane(0, 0, 0).max() == 0


def test_a_small_compressed_file_declaring_a_huge_plane_is_refused_unread(tmp_path: Path) -> None:
    import tifffile

    from biomeroworker.omero.results import ImageFile

    tifffile.imwrite(tmp_path / "bomb.tif", np.zeros((4096, 4096), np.uint8), compression="zlib")
    assert (tmp_path / "bomb.tif").stat().st_size < 200_000
    with pytest.raises(ResultsError, match="one plane is 16 MiB, over the 1 MiB limit"):
        ImageFile.open(tmp_path / "bomb.tif", max_plane_bytes=1 << 20)


@pytest.mark.parametrize(
    ("dtype", "stored"),
    [("float16", "float32"), ("bool", "uint8"), ("uint16", "uint16"), ("float64", "float64")],
)
def test_pixel_types_without_an_omero_type_are_widened(dtype: str, stored: str) -> None:
    from biomeroworker.omero.results import storage_dtype

    assert storage_dtype(np.dtype(dtype)) == np.dtype(stored)


def test_a_csv_streams_in_chunks_with_types_from_the_whole_file(tmp_path: Path) -> None:
    from biomeroworker.omero.results import csv_chunks, scan_csv

    path = tmp_path / "t.csv"
    path.write_text("n,x\n" + "".join(f"{i},{i}\n" for i in range(5)) + "5,5.5\n")
    schema = scan_csv(path)
    assert schema.kinds == ["long", "double"] and schema.rows == 6
    chunks = list(csv_chunks(schema, rows_per_chunk=4))
    assert [len(c[0].values) for c in chunks] == [4, 2]
    assert chunks[0][1].values[0] == 0.0 and chunks[1][1].values[1] == 5.5
