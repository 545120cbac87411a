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
