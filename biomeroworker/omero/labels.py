"""Label images to ROIs: one ROI per label value, as Polygon outlines or Masks.

The import of a run's results uses ``label_roi`` for "6a) Create ROIs from label images";
the ``Labels2Rois.py`` script uses ``labels_to_rois`` for label images already in OMERO.
(The OMERO.biomero web plugin offers ROI creation only when a script of that name is
installed.) The shapes come from ``results``: ``polygon_shapes`` and ``mask_shapes``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from biomeroworker.errors import BiomeroError
from biomeroworker.omero.results import LABEL_WORDS, labels_in, mask_shapes, polygon_shapes

log = logging.getLogger(__name__)

SHAPES = ("Polygon", "Mask")
_EXTENSIONS = (".ome.tiff", ".ome.tif", ".ome.zarr", ".tiff", ".tif", ".png", ".zarr")
_SEPARATORS = "_-. "


def label_roi(labels: np.ndarray, label: int, image_id: int, *, name: str, shape: str) -> Any:
    """One ROI on Image ``image_id`` for ``label`` of ``labels`` (Z, Y, X): a shape per
    Z plane where the label occurs; a single-plane label image outlines every plane."""
    from omero.model import ImageI, MaskI, PolygonI, RoiI
    from omero.rtypes import rdouble, rint, rstring

    if shape not in SHAPES:
        raise BiomeroError(f"ROI shape must be one of {', '.join(SHAPES)}, not {shape!r}")
    roi = RoiI()
    roi.setImage(ImageI(image_id, False))
    roi.setName(rstring(name))
    one_plane = labels.shape[0] == 1

    def place(item: Any, z: int) -> None:
        item.setTextValue(rstring(str(label)))
        if not one_plane:
            item.setTheZ(rint(z))

    if shape == "Mask":
        for m in mask_shapes(labels, label):
            mask = MaskI()
            mask.setX(rdouble(m.x))
            mask.setY(rdouble(m.y))
            mask.setWidth(rdouble(m.width))
            mask.setHeight(rdouble(m.height))
            mask.setBytes(m.bits)
            place(mask, m.z)
            roi.addShape(mask)
    else:
        for p in polygon_shapes(labels, label):
            polygon = PolygonI()
            polygon.setPoints(rstring(p.points))
            place(polygon, p.z)
            roi.addShape(polygon)
    return roi


# -- the Labels2Rois script -------------------------------------------------------------


def stem(name: str) -> str:
    lower = name.lower()
    for ext in _EXTENSIONS:
        if lower.endswith(ext):
            return name[: -len(ext)]
    return name.rsplit(".", 1)[0] if "." in name else name


def is_label(name: str) -> bool:
    return any(word in stem(name).lower() for word in LABEL_WORDS)


def source_for(label_name: str, candidates: dict[int, str]) -> int | None:
    """The image a label image outlines: the one whose name stem starts the label's stem
    followed by a separator (cells.tif for cells_labels.tif or cells_cp_masks.tif);
    the longest such stem wins, and a tie is no answer."""
    label_stem = stem(label_name)
    fits = [
        (len(stem(name)), image_id)
        for image_id, name in candidates.items()
        if not is_label(name)
        and len(label_stem) > len(stem(name))
        and label_stem.startswith(stem(name))
        and label_stem[len(stem(name))] in _SEPARATORS
    ]
    if not fits:
        return None
    best = max(length for length, _ in fits)
    winners = [image_id for length, image_id in fits if length == best]
    return winners[0] if len(winners) == 1 else None


def read_labels(image: Any) -> np.ndarray:
    """A label image in OMERO as (Z, Y, X) integers: channel 0, timepoint 0."""
    if image.getSizeC() != 1:
        raise BiomeroError(f"Image {image.getId()}: a label image has one channel")
    pixels = image.getPrimaryPixels()
    planes = [pixels.getPlane(z, 0, 0) for z in range(image.getSizeZ())]
    return np.stack(planes)


@dataclass(frozen=True)
class Pair:
    label_id: int
    target_id: int


def pairs_in_datasets(conn: Any, dataset_ids: Sequence[int]) -> tuple[list[Pair], list[str]]:
    """Label images of the datasets with the image each outlines, matched by name."""
    pairs, problems = [], []
    for dataset_id in dataset_ids:
        if conn.getObject("Dataset", dataset_id) is None:
            problems.append(f"Dataset {dataset_id} not found, or not readable in this group")
            continue
        names = {
            int(i.getId()): str(i.getName())
            for i in conn.getObjects("Image", opts={"dataset": dataset_id})
        }
        for image_id, name in sorted(names.items()):
            if not is_label(name):
                continue
            target = source_for(name, names)
            if target is None:
                problems.append(
                    f"{name} (Image {image_id}): no single image in Dataset {dataset_id} "
                    "it belongs to (name it <source>_labels.<ext>, or give Target_Image_IDs)"
                )
            else:
                pairs.append(Pair(image_id, target))
    return pairs, problems


def labels_to_rois(
    conn: Any,
    pairs: Sequence[Pair],
    *,
    shape: str = "Polygon",
    delete_labels: bool = False,
    read: Callable[[Any], np.ndarray] = read_labels,
) -> list[str]:
    """For each pair, one ROI per label on the target image, saved in one call per label
    image; the label image is deleted afterwards if asked. Returns a line per pair."""
    lines = []
    for pair in pairs:
        label_image = conn.getObject("Image", pair.label_id)
        target = conn.getObject("Image", pair.target_id)
        if label_image is None or target is None:
            missing = pair.label_id if label_image is None else pair.target_id
            lines.append(f"Image {missing} not found, or not readable in this group")
            continue
        try:
            labels = read(label_image)
        except BiomeroError as exc:
            lines.append(str(exc))
            continue
        size = (labels.shape[-1], labels.shape[-2])
        if size != (target.getSizeX(), target.getSizeY()):
            lines.append(
                f"Image {pair.label_id} ({size[0]}x{size[1]}) does not fit Image "
                f"{pair.target_id} ({target.getSizeX()}x{target.getSizeY()}); no ROIs made"
            )
            continue
        name = str(label_image.getName())
        rois = [
            label_roi(
                labels, label, pair.target_id, name=f"{stem(name)} label {label}", shape=shape
            )
            for label in labels_in(labels)
        ]
        if rois:
            conn.getUpdateService().saveAndReturnArray(rois, conn.SERVICE_OPTS)
        line = f"{len(rois)} ROI(s) from Image {pair.label_id} on Image {pair.target_id}"
        if delete_labels and rois:
            conn.deleteObjects("Image", [pair.label_id], deleteAnns=True, wait=True)
            line += f"; Image {pair.label_id} deleted"
        log.info(line)
        lines.append(line)
    return lines


def pairs_from_inputs(conn: Any, inputs: Any) -> tuple[list[Pair], list[str]]:
    """The Labels2Rois form's answers as (label image, target image) pairs."""
    ids = [int(i) for i in inputs.get("IDs") or []]
    targets = [int(i) for i in inputs.get("Target_Image_IDs") or []]
    if not ids:
        raise BiomeroError("select at least one label image or dataset (IDs)")
    if inputs.get("Data_Type") == "Dataset":
        if targets:
            raise BiomeroError("Target_Image_IDs go with Data_Type Image, not Dataset")
        return pairs_in_datasets(conn, ids)
    if len(targets) != len(ids):
        raise BiomeroError(
            f"give one Target_Image_IDs entry per label image ({len(ids)}), "
            "or select their dataset to match them by name"
        )
    return [Pair(label, target) for label, target in zip(ids, targets, strict=True)], []
