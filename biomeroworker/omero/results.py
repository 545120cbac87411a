"""What a run produced, before anything touches OMERO: pure functions, no omero import.

Result files are sorted into kinds, matched to the exported image they came from,
CSVs are typed column by column, and label images are cut into one shape per label.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from biomeroworker.errors import BiomeroError

EXPORT_INDEX = "biomero-export.json"
IMAGE_SUFFIXES = (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".png")
LABEL_WORDS = ("label", "mask")
ResultKind = Literal["label", "image", "csv", "file"]

# Exported images are named image<id>.ome.zarr; workflows keep the stem in their outputs
# (image12_labels.tif, prefix_image12_objects.csv), so the id can be found again.
_EXPORT_STEM = re.compile(r"image(\d+)(?!\d)")


class ResultsError(BiomeroError):
    """A result file cannot be read or turned into OMERO objects."""


def export_stem(image_id: int) -> str:
    return f"image{int(image_id)}"


def export_name(image_id: int) -> str:
    return f"{export_stem(image_id)}.ome.zarr"


@dataclass(frozen=True)
class ExportedImage:
    image_id: int
    name: str
    zarr: str
    container: str | None = None  # "Dataset:3" or "Plate:7": where the image was selected from
    size_x: int | None = None
    size_y: int | None = None


def write_index(dest: Path, images: list[ExportedImage]) -> Path:
    """The id -> name record kept beside the exports, so import can link results back."""
    path = dest / EXPORT_INDEX
    data = {
        str(i.image_id): {"name": i.name, "zarr": i.zarr, "container": i.container} for i in images
    }
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
    partial.replace(path)
    return path


def read_index(path: Path) -> dict[int, ExportedImage]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ResultsError(f"export index {path} unreadable: {exc}") from exc
    return {
        int(key): ExportedImage(
            int(key),
            str(v["name"]),
            str(v["zarr"]),
            v.get("container"),
            v.get("size_x"),
            v.get("size_y"),
        )
        for key, v in data.items()
    }


def index_from_names(paths: list[Path]) -> dict[int, ExportedImage]:
    """The index rebuilt from export file names alone (names of the images unknown)."""
    found: dict[int, ExportedImage] = {}
    for path in paths:
        match = re.fullmatch(r"image(\d+)\.ome\.zarr", path.name)
        if match:
            image_id = int(match.group(1))
            found[image_id] = ExportedImage(image_id, path.name, path.name)
    return found


@dataclass(frozen=True)
class ResultFile:
    path: Path
    relpath: str
    kind: ResultKind
    source_id: int | None


def result_kind(path: Path) -> ResultKind:
    name = path.name.lower()
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(IMAGE_SUFFIXES):
        return "label" if any(word in name for word in LABEL_WORDS) else "image"
    return "file"


def match_source(name: str, known: set[int]) -> int | None:
    """The exported image a result file name refers to, if exactly one fits."""
    ids = {int(m.group(1)) for m in _EXPORT_STEM.finditer(name)} & known
    return ids.pop() if len(ids) == 1 else None


def scan_results(results: Path, known: set[int]) -> list[ResultFile]:
    """Every result file, sorted by path; hidden files and partial downloads skipped."""
    if not results.is_dir():
        raise ResultsError(f"results folder {results} does not exist")
    found = []
    for path in sorted(results.rglob("*")):
        rel = path.relative_to(results)
        if not path.is_file() or any(part.startswith(".") for part in rel.parts):
            continue
        if path.name.endswith(".partial"):
            continue
        kind = result_kind(path)
        found.append(ResultFile(path, rel.as_posix(), kind, match_source(path.name, known)))
    return found


# -- images ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Planes:
    """An image as OMERO wants it: planes in Z, C, T order and the sizes."""

    data: np.ndarray  # 5D, axes TCZYX
    name: str

    @property
    def size_z(self) -> int:
        return int(self.data.shape[2])

    @property
    def size_c(self) -> int:
        return int(self.data.shape[1])

    @property
    def size_t(self) -> int:
        return int(self.data.shape[0])

    def zct_planes(self) -> list[np.ndarray]:
        """The order BlitzGateway.createImageFromNumpySeq reads: Z outer, then C, then T."""
        return [
            self.data[t, c, z]
            for z in range(self.size_z)
            for c in range(self.size_c)
            for t in range(self.size_t)
        ]


def to_tczyx(array: np.ndarray, axes: str) -> np.ndarray:
    """Reorder ``array`` with tifffile-style ``axes`` to TCZYX, dropping or adding axes."""
    axes = axes.upper().replace("S", "C")
    if len(axes) != array.ndim:
        raise ResultsError(f"axes {axes!r} do not fit an array of {array.ndim} dimensions")
    if "Y" not in axes or "X" not in axes:
        raise ResultsError(f"image has no Y and X axes (axes {axes!r})")
    data = array
    for axis in reversed(range(len(axes))):
        if axes[axis] not in "TCZYX":
            if data.shape[axis] != 1:
                raise ResultsError(f"image axis {axes[axis]!r} is not supported")
            data = np.take(data, 0, axis=axis)
    kept = "".join(a for a in axes if a in "TCZYX")
    for axis in "TCZYX":
        if axis not in kept:
            data = data[np.newaxis, ...]
            kept = axis + kept
    return np.transpose(data, [kept.index(a) for a in "TCZYX"])


def display_name(result_name: str, source: ExportedImage | None) -> str:
    """The result's name with the export stem replaced by the source image's own name."""
    if source is None:
        return result_name
    stem = source.name
    for suffix in (".ome.zarr", ".ome.tiff", ".ome.tif", ".tiff", ".tif", ".zarr"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return result_name.replace(export_stem(source.image_id), stem, 1)


def omero_dtype(data: np.ndarray) -> np.ndarray:
    """Pixels in a type OMERO stores (no 64-bit integers, no booleans)."""
    if data.dtype == np.bool_:
        return data.astype(np.uint8)
    if data.dtype.kind in "iu" and data.dtype.itemsize == 8:
        low, high = (int(data.min()), int(data.max())) if data.size else (0, 0)
        if low >= 0 and high < 2**32:
            return data.astype(np.uint32)
        if low >= -(2**31) and high < 2**31:
            return data.astype(np.int32)
        raise ResultsError("64-bit pixel values do not fit OMERO's 32-bit integer types")
    return data


def read_image(path: Path) -> Planes:
    import tifffile

    if not path.name.lower().endswith((".tif", ".tiff")):
        raise ResultsError(f"{path.name}: only TIFF result images can be imported")
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            data = omero_dtype(to_tczyx(series.asarray(), series.axes))
    except (OSError, ValueError, IndexError) as exc:
        raise ResultsError(f"{path.name}: not a readable TIFF ({exc})") from exc
    return Planes(data=data, name=path.name)


def label_planes(planes: Planes) -> np.ndarray:
    """A label image as ZYX integers (first timepoint, one channel)."""
    if planes.size_c != 1:
        raise ResultsError(f"{planes.name}: a label image has one channel, not {planes.size_c}")
    labels = planes.data[0, 0]
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.equal(np.mod(labels, 1), 0)):
            raise ResultsError(f"{planes.name}: label values must be whole numbers")
        labels = labels.astype(np.int64)
    return labels


# -- ROIs from labels ----------------------------------------------------------------


@dataclass(frozen=True)
class MaskShape:
    z: int
    x: int
    y: int
    width: int
    height: int
    bits: bytes  # row-major, most significant bit first, as OMERO masks store them


@dataclass(frozen=True)
class PolygonShape:
    z: int
    points: str  # "x,y x,y ..." as OMERO polygons store them


def labels_in(labels: np.ndarray) -> list[int]:
    return [int(v) for v in np.unique(labels) if v != 0]


def mask_shapes(labels: np.ndarray, label: int) -> list[MaskShape]:
    """One mask per Z plane where ``label`` occurs, cropped to its bounding box."""
    shapes = []
    for z, plane in enumerate(labels):
        hit = plane == label
        if not hit.any():
            continue
        ys, xs = np.nonzero(hit)
        y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
        crop = hit[y0:y1, x0:x1]
        bits = np.packbits(crop.ravel(), bitorder="big").tobytes()
        shapes.append(MaskShape(z, x0, y0, x1 - x0, y1 - y0, bits))
    return shapes


def polygon_shapes(labels: np.ndarray, label: int) -> list[PolygonShape]:
    """One polygon per Z plane where ``label`` occurs: the outline of its largest part."""
    from skimage import measure

    shapes = []
    for z, plane in enumerate(labels):
        hit = plane == label
        if not hit.any():
            continue
        padded = np.pad(hit.astype(np.uint8), 1)
        contours = measure.find_contours(padded, 0.5)
        outline = max(contours, key=len)
        points = " ".join(f"{x - 1:.1f},{y - 1:.1f}" for y, x in outline[:-1])
        shapes.append(PolygonShape(z, points))
    return shapes


# -- CSV -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    name: str
    kind: Literal["long", "double", "string"]
    values: list[Any]


def _is_int(text: str) -> bool:
    return re.fullmatch(r"[+-]?\d+", text.strip()) is not None and abs(int(text)) < 2**63


def _is_float(text: str) -> bool:
    try:
        return not math.isnan(float(text)) or text.strip().lower() == "nan"
    except ValueError:
        return False


def read_csv(path: Path) -> list[Column]:
    """The CSV as typed columns: whole numbers -> long, numbers -> double (empty = NaN),
    anything else -> string."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ResultsError(f"{path.name}: not a readable CSV ({exc})") from exc
    if not rows or not any(rows[0]):
        raise ResultsError(f"{path.name}: no header row")
    header = [h.strip() for h in rows[0]]
    if any(not h for h in header) or len(set(header)) != len(header):
        raise ResultsError(f"{path.name}: column names must be present and unique: {header}")
    body = [r for r in rows[1:] if any(cell.strip() for cell in r)]
    bad = [i + 2 for i, r in enumerate(body) if len(r) != len(header)]
    if bad:
        raise ResultsError(f"{path.name}: rows {bad[:5]} do not have {len(header)} columns")
    return [_column(name, [r[i] for r in body]) for i, name in enumerate(header)]


def _column(name: str, cells: list[str]) -> Column:
    filled = [c for c in cells if c.strip()]
    if filled and len(filled) == len(cells) and all(_is_int(c) for c in cells):
        return Column(name, "long", [int(c) for c in cells])
    if filled and all(_is_float(c) for c in filled):
        return Column(name, "double", [float(c) if c.strip() else math.nan for c in cells])
    return Column(name, "string", list(cells))
