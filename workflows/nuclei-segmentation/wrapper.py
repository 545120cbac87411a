"""Nuclei segmentation, BIAFLOWS style: images in --infolder, labels and CSVs out.

Called as BIAFLOWS containers are:

    python wrapper.py --infolder IN --outfolder OUT --gtfolder GT --local -nmc \
        [--sigma 2.0] [--threshold_method otsu] ... [--params-file params.json]

``--params-file`` names a JSON object of parameter values ({"sigma": 1.5, ...}). The
BIOMERO worker always passes values this way, never on the command line; flags given
explicitly win over the file. Inputs are TIFF (.tif/.tiff, OME-TIFF too) and OME-Zarr
(.zarr folders, 0.4 or 0.5). Each image is reduced to one YX plane (first timepoint,
the chosen channel, maximum over Z), smoothed, thresholded, split by a
distance-transform watershed and filtered by size. For each input ``<name>`` it writes
``<prefix><name>_labels.tif`` and ``<prefix><name>_objects.csv``.

Exit codes: 0 done, 1 bad input data, 2 bad arguments or parameters.
This file stands alone (numpy, scipy, scikit-image, tifffile, zarr), so it runs in a
container or a plain virtualenv on the cluster.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import zarr
from scipy import ndimage as ndi
from skimage import filters, measure, segmentation
from skimage.feature import peak_local_max

THRESHOLDS = {
    "otsu": filters.threshold_otsu,
    "li": filters.threshold_li,
    "triangle": filters.threshold_triangle,
    "yen": filters.threshold_yen,
}
# id -> (type, default); kept equal to descriptor.json by a unit test.
PARAMETERS: dict[str, tuple[type, Any]] = {
    "sigma": (float, 2.0),
    "threshold_method": (str, "otsu"),
    "min_size": (int, 30),
    "min_distance": (int, 5),
    "channel": (int, 0),
    "output_prefix": (str, ""),
}
SERVER_SET = ("cytomine_host", "cytomine_public_key", "cytomine_private_key")
SERVER_SET_IDS = ("cytomine_id_project", "cytomine_id_software")
CSV_COLUMNS = ("image", "label", "area", "centroid_y", "centroid_x", "mean_intensity")


class UsageError(Exception):
    """Bad arguments or parameter values (exit 2)."""


class InputError(Exception):
    """Bad or unreadable input data (exit 1)."""


@dataclass(frozen=True)
class Image:
    name: str
    axes: str
    data: np.ndarray


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Segment nuclei in TIFF and OME-Zarr images.")
    parser.add_argument("--infolder", required=True, type=Path)
    parser.add_argument("--outfolder", required=True, type=Path)
    parser.add_argument("--gtfolder", type=Path)
    parser.add_argument("--local", action="store_true", help="BIAFLOWS: no Cytomine server")
    parser.add_argument("-nmc", "--no_metric_computation", action="store_true")
    parser.add_argument("--params-file", type=Path, help="JSON object of parameter values")
    for name in (*SERVER_SET, *SERVER_SET_IDS):
        parser.add_argument(f"--{name}", help=argparse.SUPPRESS)
    for name in PARAMETERS:
        parser.add_argument(f"--{name}", default=None)
    return parser


def resolve_params(args: argparse.Namespace) -> dict[str, Any]:
    """Defaults, then the params file, then explicit flags; each value checked."""
    given: dict[str, Any] = {}
    if args.params_file is not None:
        given.update(_read_params_file(args.params_file))
    for name in PARAMETERS:
        if getattr(args, name) is not None:
            given[name] = getattr(args, name)
    values = {name: default for name, (_kind, default) in PARAMETERS.items()}
    values.update({name: _coerce(name, value) for name, value in given.items()})
    return _check_ranges(values)


def _read_params_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read params file {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise UsageError(f"params file {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise UsageError(f"params file {path} must hold a JSON object")
    unknown = sorted(set(data) - set(PARAMETERS))
    if unknown:
        raise UsageError(
            f"unknown parameter(s) {', '.join(unknown)}; known: {', '.join(PARAMETERS)}"
        )
    return data


def _coerce(name: str, value: Any) -> Any:
    kind = PARAMETERS[name][0]
    if isinstance(value, bool) or (kind is str and not isinstance(value, str)):
        raise UsageError(f"{name}: expected {kind.__name__}, got {value!r}")
    try:
        result = kind(value)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{name}: expected {kind.__name__}, got {value!r}") from exc
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise UsageError(f"{name}: expected a whole number, got {value!r}")
    return result


def _check_ranges(values: dict[str, Any]) -> dict[str, Any]:
    if values["threshold_method"] not in THRESHOLDS:
        raise UsageError(f"threshold_method: must be one of {', '.join(THRESHOLDS)}")
    if not 0 <= values["sigma"] <= 50:
        raise UsageError("sigma: must be between 0 and 50")
    for name, lowest in (("min_size", 0), ("min_distance", 1), ("channel", 0)):
        if values[name] < lowest:
            raise UsageError(f"{name}: must be at least {lowest}, got {values[name]}")
    prefix = values["output_prefix"]
    if "/" in prefix or "\\" in prefix or "\x00" in prefix or prefix in {".", ".."}:
        raise UsageError("output_prefix: must not contain '/', '\\' or NUL, nor be '.' or '..'")
    return values


def find_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise InputError(f"input folder {folder} does not exist")
    found = sorted(p for p in folder.iterdir() if _image_kind(p))
    if not found:
        raise InputError(f"no .tif/.tiff files or .zarr folders in {folder}")
    return found


def _image_kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix in {".tif", ".tiff"} and path.is_file():
        return "tiff"
    if suffix == ".zarr" and path.is_dir():
        return "zarr"
    return None


def image_name(path: Path) -> str:
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif", ".ome.zarr", ".tiff", ".tif", ".zarr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_image(path: Path) -> Image:
    try:
        if _image_kind(path) == "zarr":
            data, axes = _read_zarr(path)
        else:
            data, axes = _read_tiff(path)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"cannot read {path.name}: {exc}") from exc
    return Image(name=image_name(path), axes=axes, data=data)


def _read_tiff(path: Path) -> tuple[np.ndarray, str]:
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        return series.asarray(), series.axes.lower().replace("s", "c")


def _read_zarr(path: Path) -> tuple[np.ndarray, str]:
    group = zarr.open_group(str(path), mode="r")
    attrs = dict(group.attrs)
    multiscales = attrs.get("ome", attrs).get("multiscales")
    if not multiscales:
        raise InputError(f"{path.name}: no OME-Zarr multiscales metadata")
    first = multiscales[0]
    axes = "".join(a["name"] if isinstance(a, dict) else a for a in first["axes"]).lower()
    return np.asarray(group[first["datasets"][0]["path"]][...]), axes


def to_plane(image: Image, channel: int) -> np.ndarray:
    """First timepoint, the given channel, maximum over Z: one YX float plane."""
    data, axes = image.data, image.axes
    if data.ndim != len(axes) or not axes.endswith("yx") or set(axes) - set("tczyx"):
        raise InputError(f"{image.name}: unsupported axes {axes!r} for shape {data.shape}")
    if "t" in axes:
        data, axes = data.take(0, axis=axes.index("t")), axes.replace("t", "")
    if "c" in axes:
        channels = data.shape[axes.index("c")]
        if channel >= channels:
            raise InputError(f"{image.name}: channel {channel} requested, image has {channels}")
        data, axes = data.take(channel, axis=axes.index("c")), axes.replace("c", "")
    elif channel != 0:
        raise InputError(f"{image.name}: channel {channel} requested, image has one channel")
    if "z" in axes:
        data = data.max(axis=axes.index("z"))
    return data.astype(np.float64)


def segment(plane: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """Label image of nuclei: smooth, threshold, split touching nuclei, drop small ones."""
    smooth = filters.gaussian(plane, sigma=params["sigma"], preserve_range=True)
    if np.ptp(smooth) == 0:
        return np.zeros(plane.shape, dtype=np.int32)
    mask = smooth > THRESHOLDS[params["threshold_method"]](smooth)
    mask = ndi.binary_fill_holes(drop_small(ndi.label(mask)[0], params["min_size"]) > 0)
    distance = ndi.distance_transform_edt(mask)
    blobs, _count = ndi.label(mask)
    peaks = peak_local_max(
        distance, min_distance=params["min_distance"], labels=blobs, exclude_border=False
    )
    markers = np.zeros(plane.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = segmentation.watershed(-distance, markers, mask=mask)
    labels = drop_small(labels, params["min_size"])
    relabelled, _fw, _inv = segmentation.relabel_sequential(labels)
    return relabelled.astype(np.int32)


def drop_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Zero every labelled object with fewer than ``min_size`` pixels."""
    sizes = np.bincount(labels.ravel())
    small = sizes < min_size
    small[0] = False
    out = labels.copy()
    out[small[labels]] = 0
    return out


def object_rows(name: str, labels: np.ndarray, plane: np.ndarray) -> list[dict[str, Any]]:
    rows = []
    for region in measure.regionprops(labels, intensity_image=plane):
        cy, cx = region.centroid
        rows.append(
            {
                "image": name,
                "label": region.label,
                "area": int(region.area),
                "centroid_y": round(float(cy), 3),
                "centroid_x": round(float(cx), 3),
                "mean_intensity": round(float(region.intensity_mean), 3),
            }
        )
    return rows


def write_outputs(out: Path, prefix: str, name: str, labels: np.ndarray, rows: list) -> None:
    tifffile.imwrite(out / f"{prefix}{name}_labels.tif", labels, photometric="minisblack")
    with (out / f"{prefix}{name}_objects.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def run(args: argparse.Namespace) -> int:
    params = resolve_params(args)
    images = find_images(args.infolder)
    args.outfolder.mkdir(parents=True, exist_ok=True)
    for path in images:
        image = read_image(path)
        plane = to_plane(image, params["channel"])
        labels = segment(plane, params)
        rows = object_rows(image.name, labels, plane)
        write_outputs(args.outfolder, params["output_prefix"], image.name, labels, rows)
        print(f"{path.name}: {len(rows)} nuclei")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    try:
        return run(args)
    except UsageError as exc:
        print(f"wrapper.py: error: {exc}", file=sys.stderr)
        return 2
    except InputError as exc:
        print(f"wrapper.py: input error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
