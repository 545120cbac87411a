"""OmeroSide against a real OMERO server: opt-in, skipped unless one is configured.

Set OMERO_HOST (OMERO_PORT), OMERO_USER / OMERO_PASSWORD (an admin with the Sudo
privilege) and OMERO_TEST_USER (an ordinary user to act for, with a default group).
The test creates small images as that user, exports three of them at once with the
real image_to_zarr (one session per export thread) and checks each kept its own pixels,
imports results twice and checks one set exists, then deletes what it made.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from biomeroworker.run_record import RunRecord

NEEDED = ("OMERO_HOST", "OMERO_USER", "OMERO_PASSWORD", "OMERO_TEST_USER")
pytestmark = pytest.mark.skipif(
    any(not os.environ.get(n) for n in NEEDED),
    reason="no OMERO server configured (set " + ", ".join(NEEDED) + ")",
)

LABELS = np.zeros((32, 40), dtype=np.uint16)
LABELS[2:8, 3:9] = 1
LABELS[15:25, 20:30] = 2


@pytest.fixture(scope="module")
def side() -> Iterator[Any]:
    from biomeroworker.omero.side import OmeroSide

    opened = OmeroSide.from_env()
    yield opened
    opened.close()


def pixels_of(n: int) -> np.ndarray:
    return (np.arange(32 * 40, dtype=np.uint16).reshape(32, 40) + 1000 * n).astype(np.uint16)


@pytest.fixture
def sources(side: Any) -> Iterator[tuple[list[int], int]]:
    """Three fresh images of the test user: (image ids, group id); deleted afterwards."""
    user = os.environ["OMERO_TEST_USER"]
    made: list[int] = []
    with side.connect(user, None) as conn:
        group_id = conn.getEventContext().groupId
        for n in range(3):
            planes = iter([pixels_of(n)])
            image = conn.createImageFromNumpySeq(planes, f"biomero test source {n}", 1, 1, 1)
            made.append(image.getId())
    yield made, group_id
    with side.connect(user, group_id) as conn:
        conn.deleteObjects("Image", made, deleteAnns=True, deleteChildren=True, wait=True)


@pytest.fixture
def source(sources: tuple[list[int], int]) -> tuple[int, int]:
    return sources[0][0], sources[1]


def run_for(image_id: int | list[int], group_id: int, exported: list[Path]) -> RunRecord:
    return RunRecord.from_row(
        {
            "run_id": str(uuid.uuid4()),
            "workflow": "nuclei",
            "version": "test",
            "state": "RUNNING",
            "user": os.environ["OMERO_TEST_USER"],
            "omero_group_id": group_id,
            "parameters": {"sigma": 1.0},
            "inputs": {
                "source": "omero",
                "data_type": "Image",
                "ids": image_id if isinstance(image_id, list) else [image_id],
                "outputs": {
                    "new_dataset": "biomero test results",
                    "rois_from_labels": True,
                    "csv_as_table": True,
                },
            },
            "tasks": [
                {
                    "task_id": "e",
                    "kind": "export",
                    "state": "COMPLETED",
                    "result_locations": [str(p) for p in exported],
                },
            ],
        }
    )


def test_export_of_several_images_at_once_keeps_each_images_pixels(
    side: Any, sources: tuple[list[int], int], tmp_path: Path
) -> None:
    import zarr

    image_ids, group_id = sources
    side.export_workers = 3
    paths = side.export(run_for(image_ids, group_id, []), tmp_path / "in")
    for n, (image_id, path) in enumerate(zip(image_ids, paths, strict=True)):
        assert path.name == f"image{image_id}.ome.zarr"
        assert (path / "zarr.json").is_file() or (path / ".zattrs").is_file()
        written = np.asarray(zarr.open_array(str(path / "0"), mode="r")[...])
        assert np.array_equal(written, pixels_of(n))


def test_importing_twice_on_a_real_server_leaves_one_set(
    side: Any, source: tuple[int, int], tmp_path: Path
) -> None:
    from biomeroworker.omero.importer import run_annotations

    image_id, group_id = source
    exported = side.export(run_for(image_id, group_id, []), tmp_path / "in")
    results = tmp_path / "out"
    results.mkdir()
    tifffile.imwrite(results / f"image{image_id}_labels.tif", LABELS)
    (results / f"image{image_id}_objects.csv").write_text("label,area\n1,36\n2,100\n")
    run = run_for(image_id, group_id, exported)
    first = side.import_results(run, results)
    second = side.import_results(run, results)
    try:
        assert len(first["images"]) == 1 and first["rois"] == 2 and first["tables"] == 1
        assert second["images"] == [] and second["dataset_id"] == first["dataset_id"]
        with side.connect(run.user, group_id) as conn:
            kinds = sorted(a["kind"] for a in run_annotations(conn, run.run_id))
        assert kinds == ["dataset", "image", "rois", "run", "table"]
    finally:
        with side.connect(run.user, group_id) as conn:
            conn.deleteObjects(
                "Dataset", [first["dataset_id"]], deleteAnns=True, deleteChildren=True, wait=True
            )
