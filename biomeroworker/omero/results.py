"""What a run produced, before anything touches OMERO: pure functions, no omero import.

Result files are sorted into kinds, matched to the exported image they came from,
CSVs are typed column by column, and label images are cut into one shape per label.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterator
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
        str(i.image_id): {
            "name": i.name,
            "zarr": i.zarr,
            "container": i.container,
            "size_x": i.size_x,
            "size_y": i.size_y,
        }
        for i in images
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

# The largest plane read into memory at once; a bigger one is refused for that file.
# (A few MB of compressed TIFF can declare GiBs of pixels: the size is checked from the
# header before anything is decoded.)
DEFAULT_MAX_PLANE_BYTES = 1 << 30
# OMERO's pixel types for numpy's: float16 has none and is stored as float (32-bit).
PIXEL_TYPES = {
    "int8": "int8",
    "uint8": "uint8",
    "int16": "int16",
    "uint16": "uint16",
    "int32": "int32",
    "uint32": "uint32",
    "float32": "float",
    "float64": "double",
}


def storage_dtype(dtype: np.dtype, low: int = 0, high: int = 0) -> np.dtype:
    """The numpy type a result is stored as in OMERO (see PIXEL_TYPES).

    Booleans become uint8, float16 becomes float32, 64-bit integers the 32-bit type
    their values (``low``..``high``) fit."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return np.dtype(np.uint8)
    if dtype == np.float16:
        return np.dtype(np.float32)
    if dtype.kind in "iu" and dtype.itemsize == 8:
        if low >= 0 and high < 2**32:
            return np.dtype(np.uint32)
        if low >= -(2**31) and high < 2**31:
            return np.dtype(np.int32)
        raise ResultsError("64-bit pixel values do not fit OMERO's 32-bit integer types")
    if dtype.name not in PIXEL_TYPES:
        raise ResultsError(f"pixel type {dtype.name} cannot be stored in OMERO")
    return dtype


def omero_dtype(data: np.ndarray) -> np.ndarray:
    """Pixels in a type OMERO stores (no 64-bit integers, no booleans, no float16)."""
    low, high = (0, 0)
    if data.dtype.kind in "iu" and data.dtype.itemsize == 8 and data.size:
        low, high = int(data.min()), int(data.max())
    target = storage_dtype(data.dtype, low, high)
    return data if data.dtype == target else data.astype(target)


class ImageFile:
    """A result image read one plane at a time (T, C, Z index -> one YX array).

    Use as a context manager: ``with ImageFile.open(path) as image: image.plane(0, 0, 0)``.
    Only TIFF is read. A plane larger than ``max_plane_bytes`` is refused before it is
    decoded."""

    def __init__(self, path: Path, max_plane_bytes: int = DEFAULT_MAX_PLANE_BYTES) -> None:
        import tifffile

        self.path = path
        self.name = path.name
        if not path.name.lower().endswith((".tif", ".tiff")):
            raise ResultsError(f"{path.name}: only TIFF result images can be imported")
        try:
            self._tif = tifffile.TiffFile(path)
            series = self._tif.series[0]
            self._axes = series.axes.upper()
            self._shape = tuple(int(n) for n in series.shape)
            self._source_dtype = np.dtype(series.dtype)
            self._pages = len(series.pages)
        except (OSError, ValueError, IndexError, TypeError) as exc:
            self.close()
            raise ResultsError(f"{path.name}: not a readable TIFF ({exc})") from exc
        try:
            self._layout(max_plane_bytes)
        except ResultsError:
            self.close()
            raise
        self.dtype = self._storage_type()

    @classmethod
    def open(cls, path: Path, max_plane_bytes: int = DEFAULT_MAX_PLANE_BYTES) -> ImageFile:
        return cls(path, max_plane_bytes)

    def __enter__(self) -> ImageFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        tif = getattr(self, "_tif", None)
        if tif is not None:
            tif.close()
            self._tif = None

    # -- the layout of the file -----------------------------------------------------

    def _layout(self, limit: int) -> None:
        axes, shape = self._axes, self._shape
        samples = 1
        if axes.endswith("YXS"):
            samples = shape[-1]
            axes, shape = axes[:-1], shape[:-1]
        if not axes.endswith("YX"):
            raise ResultsError(f"{self.name}: image has no Y and X axes last (axes {axes!r})")
        size_y, size_x = shape[-2], shape[-1]
        plane_bytes = size_y * size_x * samples * self._source_dtype.itemsize
        if plane_bytes > limit:
            raise ResultsError(
                f"{self.name}: one plane is {plane_bytes / 2**20:.0f} MiB, over the "
                f"{limit / 2**20:.0f} MiB limit for a result plane"
            )
        lead_axes, lead_shape = axes[:-2], shape[:-2]
        for axis, size in zip(lead_axes, lead_shape, strict=True):
            if axis not in "TCZ" and size != 1:
                raise ResultsError(f"{self.name}: image axis {axis!r} is not supported")
        if samples > 1 and "C" in lead_axes and lead_shape[lead_axes.index("C")] > 1:
            raise ResultsError(f"{self.name}: both channels and samples per pixel")
        if len(set(lead_axes)) != len(lead_axes):
            raise ResultsError(f"{self.name}: repeated axes {lead_axes!r}")
        pages = int(np.prod(lead_shape)) if lead_shape else 1
        if pages != self._pages:
            raise ResultsError(
                f"{self.name}: {self._pages} TIFF page(s) for {pages} plane(s); only "
                "TIFFs with one plane per page can be imported"
            )
        self._lead_axes, self._lead_shape, self._samples = lead_axes, lead_shape, samples
        self.size_y, self.size_x = int(size_y), int(size_x)
        sizes = dict(zip(lead_axes, lead_shape, strict=True))
        self.size_t = int(sizes.get("T", 1))
        self.size_z = int(sizes.get("Z", 1))
        self.size_c = int(sizes.get("C", 1)) * samples

    def _storage_type(self) -> np.dtype:
        dtype = self._source_dtype
        if dtype.kind in "iu" and dtype.itemsize == 8:
            low, high = 0, 0
            for t in range(self.size_t):
                for c in range(self.size_c):
                    for z in range(self.size_z):
                        raw = self._raw(t, c, z)
                        if raw.size:
                            low, high = min(low, int(raw.min())), max(high, int(raw.max()))
            return storage_dtype(dtype, low, high)
        return storage_dtype(dtype)

    def _raw(self, t: int, c: int, z: int) -> np.ndarray:
        channel, sample = divmod(c, self._samples)
        index = {"T": t, "C": channel, "Z": z}
        where = tuple(index.get(axis, 0) for axis in self._lead_axes)
        page = int(np.ravel_multi_index(where, self._lead_shape)) if self._lead_shape else 0
        try:
            data = self._tif.series[0].asarray(key=page)
        except (OSError, ValueError, IndexError) as exc:
            raise ResultsError(f"{self.name}: plane {page} unreadable ({exc})") from exc
        data = np.asarray(data)
        if self._samples > 1:
            data = data[..., sample]
        return data.reshape(self.size_y, self.size_x)

    # -- planes ------------------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        """TCZYX."""
        return (self.size_t, self.size_c, self.size_z, self.size_y, self.size_x)

    @property
    def pixel_type(self) -> str:
        """The OMERO PixelsType value the image is stored as."""
        return PIXEL_TYPES[self.dtype.name]

    def plane(self, t: int, c: int, z: int) -> np.ndarray:
        """One YX plane, in the type OMERO stores (``dtype``)."""
        raw = self._raw(t, c, z)
        return raw if raw.dtype == self.dtype else raw.astype(self.dtype)


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


def read_image(path: Path, max_plane_bytes: int = DEFAULT_MAX_PLANE_BYTES) -> Planes:
    """The whole image in memory (small images and tests); import reads plane by plane."""
    with ImageFile.open(path, max_plane_bytes) as image:
        data = np.empty(image.shape, dtype=image.dtype)
        for t in range(image.size_t):
            for c in range(image.size_c):
                for z in range(image.size_z):
                    data[t, c, z] = image.plane(t, c, z)
    return Planes(data=data, name=path.name)


def label_plane(plane: np.ndarray, name: str) -> np.ndarray:
    """One plane of a label image as integers."""
    if not np.issubdtype(plane.dtype, np.integer):
        if not np.all(np.equal(np.mod(plane, 1), 0)):
            raise ResultsError(f"{name}: label values must be whole numbers")
        plane = plane.astype(np.int64)
    return plane


def label_planes(planes: Planes) -> np.ndarray:
    """A label image as ZYX integers (first timepoint, one channel)."""
    if planes.size_c != 1:
        raise ResultsError(f"{planes.name}: a label image has one channel, not {planes.size_c}")
    return np.stack([label_plane(p, planes.name) for p in planes.data[0, 0]])


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


CSV_CHUNK_ROWS = 10_000


@dataclass(frozen=True)
class CsvSchema:
    """A CSV's columns, their types and sizes, found in one pass without keeping rows."""

    path: Path
    names: list[str]
    kinds: list[Literal["long", "double", "string"]]
    string_sizes: list[int]  # the longest value in bytes, per column
    rows: int


def _rows(path: Path) -> Iterator[list[str]]:
    """The CSV's rows after the header, blank rows skipped, each checked for width."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            yield [h.strip() for h in header] if header else []
            for number, row in enumerate(reader, start=2):
                if any(cell.strip() for cell in row):
                    yield [*row, str(number)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ResultsError(f"{path.name}: not a readable CSV ({exc})") from exc


def scan_csv(path: Path) -> CsvSchema:
    """Column names and types (whole numbers -> long, numbers -> double, else string)."""
    rows = _rows(path)
    header = next(rows)
    if not header or not any(header):
        raise ResultsError(f"{path.name}: no header row")
    if any(not h for h in header) or len(set(header)) != len(header):
        raise ResultsError(f"{path.name}: column names must be present and unique: {header}")
    width = len(header)
    ints = [True] * width
    floats = [True] * width
    filled = [0] * width
    sizes = [1] * width
    count = 0
    bad: list[int] = []
    for row in rows:
        cells, number = row[:-1], int(row[-1])
        if len(cells) != width:
            bad.append(number)
            continue
        count += 1
        for i, cell in enumerate(cells):
            sizes[i] = max(sizes[i], len(cell.encode("utf-8")))
            if cell.strip():
                filled[i] += 1
                ints[i] = ints[i] and _is_int(cell)
                floats[i] = floats[i] and _is_float(cell)
            else:
                ints[i] = False
    if bad:
        raise ResultsError(f"{path.name}: rows {bad[:5]} do not have {width} columns")
    kinds: list[Literal["long", "double", "string"]] = []
    for i in range(width):
        if filled[i] and ints[i]:
            kinds.append("long")
        elif filled[i] and floats[i]:
            kinds.append("double")
        else:
            kinds.append("string")
    return CsvSchema(path, header, kinds, sizes, count)


def csv_chunks(schema: CsvSchema, rows_per_chunk: int = CSV_CHUNK_ROWS) -> Iterator[list[Column]]:
    """The CSV's values as typed columns, ``rows_per_chunk`` rows at a time."""
    chunk: list[list[str]] = []
    rows = _rows(schema.path)
    next(rows)
    for row in rows:
        chunk.append(row[:-1])
        if len(chunk) == rows_per_chunk:
            yield _typed(schema, chunk)
            chunk = []
    if chunk:
        yield _typed(schema, chunk)


def _typed(schema: CsvSchema, rows: list[list[str]]) -> list[Column]:
    columns = []
    for i, (name, kind) in enumerate(zip(schema.names, schema.kinds, strict=True)):
        cells = [r[i] for r in rows]
        if kind == "long":
            columns.append(Column(name, kind, [int(c) for c in cells]))
        elif kind == "double":
            columns.append(Column(name, kind, [float(c) if c.strip() else math.nan for c in cells]))
        else:
            columns.append(Column(name, kind, list(cells)))
    return columns


def read_csv(path: Path) -> list[Column]:
    """The whole CSV as typed columns (import streams it with scan_csv and csv_chunks)."""
    schema = scan_csv(path)
    columns = [Column(n, k, []) for n, k in zip(schema.names, schema.kinds, strict=True)]
    for chunk in csv_chunks(schema):
        for whole, part in zip(columns, chunk, strict=True):
            whole.values.extend(part.values)
    return columns
