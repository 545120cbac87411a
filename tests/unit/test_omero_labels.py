"""Labels2Rois: label images in OMERO become ROIs on the images they outline."""

from __future__ import annotations

from typing import Any

import numpy as np
import omero.clients  # noqa: F401  (omero.model needs it loaded first)
import pytest
from omero_standins import StandInServer

from biomeroworker.errors import BiomeroError
from biomeroworker.omero import labels

GROUP = 3


@pytest.fixture
def server() -> StandInServer:
    s = StandInServer()
    s.add_user("alice", GROUP, "lab")
    return s


def label_image(session: Any, name: str, dataset: Any = None) -> int:
    plane = np.zeros((48, 64), dtype=np.uint16)
    plane[5:15, 5:20] = 1
    plane[30:40, 40:60] = 2
    return int(session.createImageFromNumpySeq(iter([plane]), name, dataset=dataset).getId())


def reader(server: StandInServer) -> Any:
    """Planes as the stand-in server stored them (the real reader uses getPrimaryPixels)."""
    return lambda image: server.image_pixels(int(image.getId()))[0, 0]


def rois(server: StandInServer) -> list[Any]:
    return server.of_type("RoiI")


@pytest.mark.parametrize(
    ("name", "candidates", "expected"),
    [
        ("cells_labels.tif", {1: "cells.tif", 2: "cells_labels.tif"}, 1),
        ("cells_cp_masks.tif", {1: "cells.ome.tiff", 3: "cell.tif"}, 1),
        ("cells_labels.tif", {1: "cell.tif"}, None),  # "cell" does not end at a separator
        ("a_labels.tif", {1: "a.tif", 2: "a.png"}, None),  # two equal candidates: no answer
        ("a_b_labels.tif", {1: "a.tif", 2: "a_b.tif"}, 2),  # the longest name wins
    ],
)
def test_a_label_image_goes_with_the_image_whose_name_it_starts_with(
    name: str, candidates: dict[int, str], expected: int | None
) -> None:
    assert labels.source_for(name, candidates) == expected


def test_labels_in_a_dataset_become_rois_on_their_sources(server: StandInServer) -> None:
    session = server.session_as("alice", "lab")
    source = server.add_image("alice", GROUP, "cells.tif")
    dataset_id = server.add_dataset("alice", GROUP, "d", [source])
    label = label_image(session, "cells_labels.tif", session.getObject("Dataset", dataset_id))
    answers = {"Data_Type": "Dataset", "IDs": [dataset_id]}
    pairs, problems = labels.pairs_from_inputs(session, answers)
    assert problems == [] and pairs == [labels.Pair(label, source)]
    lines = labels.labels_to_rois(session, pairs, shape="Polygon", read=reader(server))
    assert lines == [f"2 ROI(s) from Image {label} on Image {source}"]
    made = rois(server)
    assert len(made) == 2 and {r.getImage().getId().getValue() for r in made} == {source}
    names = [r.getName().getValue() for r in made]
    assert names == ["cells_labels label 1", "cells_labels label 2"]


def test_explicit_targets_masks_and_deleting_the_label_image(server: StandInServer) -> None:
    session = server.session_as("alice", "lab")
    source = server.add_image("alice", GROUP, "whatever.tif")
    label = label_image(session, "segmentation.tif")
    inputs = {"Data_Type": "Image", "IDs": [label], "Target_Image_IDs": [source]}
    pairs, _ = labels.pairs_from_inputs(session, inputs)
    lines = labels.labels_to_rois(
        session, pairs, shape="Mask", delete_labels=True, read=reader(server)
    )
    assert lines == [f"2 ROI(s) from Image {label} on Image {source}; Image {label} deleted"]
    assert all(type(s).__name__ == "MaskI" for r in rois(server) for s in r.copyShapes())
    assert session.getObject("Image", label) is None


def test_a_label_image_of_another_size_makes_no_rois(server: StandInServer) -> None:
    session = server.session_as("alice", "lab")
    source = server.add_image("alice", GROUP, "cells.tif", size_x=10, size_y=10)
    label = label_image(session, "cells_labels.tif")
    lines = labels.labels_to_rois(session, [labels.Pair(label, source)], read=reader(server))
    assert "does not fit" in lines[0] and rois(server) == []


@pytest.mark.parametrize(
    ("inputs", "problem"),
    [
        ({"Data_Type": "Image", "IDs": [1]}, "one Target_Image_IDs entry per label image"),
        ({"Data_Type": "Dataset", "IDs": [1], "Target_Image_IDs": [2]}, "go with Data_Type Image"),
        ({"Data_Type": "Image", "IDs": []}, "select at least one"),
    ],
)
def test_unclear_answers_are_refused(
    server: StandInServer, inputs: dict[str, Any], problem: str
) -> None:
    session = server.session_as("alice", "lab")
    with pytest.raises(BiomeroError, match=problem):
        labels.pairs_from_inputs(session, inputs)


def test_a_label_image_without_a_match_is_reported(server: StandInServer) -> None:
    session = server.session_as("alice", "lab")
    dataset_id = server.add_dataset("alice", GROUP, "d", [])
    label_image(session, "orphan_labels.tif", session.getObject("Dataset", dataset_id))
    pairs, problems = labels.pairs_in_datasets(session, [dataset_id])
    assert pairs == [] and "no single image in Dataset" in problems[0]
