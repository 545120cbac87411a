"""A minimal OME-Zarr reader and writer over zarr-python, for 0.4 (Zarr v2) and 0.5 (Zarr v3).

Only what the worker needs: the full-resolution level with its axes, and a writer
for test and sample data (multiscale by 2x mean in Y and X).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr

from biomeroworker.errors import BiomeroError

AXIS_ORDER = "tczyx"
AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
OmeZarrVersion = Literal["0.4", "0.5"]


class OmeZarrError(BiomeroError):
    """A folder is not an OME-Zarr image this package can read."""


@dataclass(frozen=True)
class FullResolution:
    """The first dataset of the first multiscale, with its axis names (e.g. ``"tczyx"``)."""

    data: np.ndarray
    axes: str
    version: str


def check_axes(axes: str) -> str:
    """Return ``axes`` lower-cased if it is an ordered subset of TCZYX ending in YX."""
    low = axes.lower()
    positions = [AXIS_ORDER.find(a) for a in low]
    ordered = all(p >= 0 for p in positions) and positions == sorted(set(positions))
    if not ordered or not low.endswith("yx"):
        raise OmeZarrError(f"axes {axes!r}: need an ordered subset of TCZYX ending in YX")
    return low


def write_ome_zarr(
    path: Path,
    data: np.ndarray,
    axes: str,
    *,
    version: OmeZarrVersion = "0.5",
    levels: int = 2,
    name: str = "image",
) -> None:
    """Write ``data`` as an OME-Zarr image with ``levels`` resolution levels."""
    axes = check_axes(axes)
    if data.ndim != len(axes):
        raise ValueError(f"data has {data.ndim} dimensions, axes {axes!r} has {len(axes)}")
    zarr_format = 2 if version == "0.4" else 3
    group = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    datasets = []
    level = data
    for index in range(levels):
        _write_level(group, str(index), level, axes, zarr_format)
        datasets.append(_dataset_entry(str(index), axes, 2**index))
        level = _downsample_yx(level)
    multiscale = {"name": name, "axes": _axes_entries(axes), "datasets": datasets}
    if version == "0.4":
        group.attrs["multiscales"] = [{"version": "0.4", **multiscale}]
    else:
        group.attrs["ome"] = {"version": "0.5", "multiscales": [multiscale]}


def _write_level(group: Any, key: str, data: np.ndarray, axes: str, zarr_format: int) -> None:
    chunks = tuple(min(n, 64) if a in "yx" else 1 for a, n in zip(axes, data.shape, strict=True))
    options: dict[str, Any] = {}
    if zarr_format == 3:
        options["dimension_names"] = list(axes)
    else:
        options["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
    array = group.create_array(key, shape=data.shape, dtype=data.dtype, chunks=chunks, **options)
    array[...] = data


def _axes_entries(axes: str) -> list[dict[str, str]]:
    entries = []
    for a in axes:
        entry = {"name": a, "type": AXIS_TYPES[a]}
        if AXIS_TYPES[a] == "space":
            entry["unit"] = "micrometer"
        entries.append(entry)
    return entries


def _dataset_entry(path: str, axes: str, factor: int) -> dict[str, Any]:
    scale = [float(factor) if a in "yx" else 1.0 for a in axes]
    return {"path": path, "coordinateTransformations": [{"type": "scale", "scale": scale}]}


def _downsample_yx(data: np.ndarray) -> np.ndarray:
    """Halve Y and X by averaging 2x2 blocks (odd edges dropped), keeping the dtype."""
    ny, nx = (data.shape[-2] // 2) * 2, (data.shape[-1] // 2) * 2
    if ny == 0 or nx == 0:
        raise ValueError(f"image of {data.shape[-2:]} is too small for another level")
    cropped = data[..., :ny, :nx].astype(np.float64)
    blocks = cropped.reshape(*data.shape[:-2], ny // 2, 2, nx // 2, 2)
    mean = blocks.mean(axis=(-3, -1))
    if np.issubdtype(data.dtype, np.integer):
        mean = np.rint(mean)
    return mean.astype(data.dtype)


def read_full_resolution(path: Path) -> FullResolution:
    """Read the full-resolution level of an OME-Zarr 0.4 or 0.5 image."""
    try:
        group = zarr.open_group(str(path), mode="r")
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise OmeZarrError(f"{path}: not a Zarr group ({exc})") from exc
    version, multiscale = _first_multiscale(path, dict(group.attrs))
    axes = check_axes("".join(_axis_name(a) for a in multiscale.get("axes", [])))
    datasets = multiscale.get("datasets") or []
    if not datasets or "path" not in datasets[0]:
        raise OmeZarrError(f"{path}: multiscales has no datasets")
    array = group[datasets[0]["path"]]
    if array.ndim != len(axes):
        raise OmeZarrError(f"{path}: level 0 has {array.ndim} dimensions, axes are {axes!r}")
    return FullResolution(data=np.asarray(array[...]), axes=axes, version=version)


def _first_multiscale(path: Path, attrs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    if "ome" in attrs:
        ome = attrs["ome"]
        multiscales = ome.get("multiscales") or []
        version = str(ome.get("version", "0.5"))
    else:
        multiscales = attrs.get("multiscales") or []
        version = str(multiscales[0].get("version", "?")) if multiscales else "?"
    if not multiscales:
        raise OmeZarrError(f"{path}: no OME 'multiscales' metadata (is it an OME-Zarr image?)")
    return version, multiscales[0]


def _axis_name(axis: Any) -> str:
    return str(axis["name"] if isinstance(axis, dict) else axis)
