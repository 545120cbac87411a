"""Synthetic nuclei images with a known number of nuclei, for tests and demos.

Each image is a dark, noisy background with round-ish bright nuclei: some alone and
some in touching pairs that only a watershed split separates. Everything follows
from ``seed``, so the same call always gives the same pixels and the same count.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from biomeroworker.convert.omezarr import OmeZarrVersion, check_axes, write_ome_zarr

RADIUS_RANGE = (7.0, 10.0)
PAIR_OVERLAP = 0.35
"""Touching pairs sit (2 - PAIR_OVERLAP) * radius apart: overlapping, with a clear neck."""


@dataclass(frozen=True)
class Sample:
    name: str
    data: np.ndarray
    axes: str
    nuclei: int


@dataclass(frozen=True)
class _Disc:
    y: float
    x: float
    r: float


def nuclei_plane(
    seed: int, *, size: int = 160, singles: int = 6, pairs: int = 2
) -> tuple[np.ndarray, int]:
    """One YX uint16 plane and its nucleus count (``singles + 2 * pairs``)."""
    rng = np.random.default_rng(seed)
    discs = _place(rng, size, singles, pairs)
    yy, xx = np.mgrid[0:size, 0:size]
    signal = np.zeros((size, size))
    for disc in discs:
        brightness = rng.uniform(0.7, 1.0)
        dist = np.hypot(yy - disc.y, xx - disc.x)
        edge = np.clip(disc.r + 0.5 - dist, 0.0, 1.0)  # one-pixel soft edge
        signal = np.maximum(signal, brightness * edge)
    noise = rng.normal(0.0, 0.03, signal.shape)
    plane = 400 + 2400 * signal + 400 * noise
    return np.clip(plane, 0, 65535).astype(np.uint16), len(discs)


def _place(rng: np.random.Generator, size: int, singles: int, pairs: int) -> list[_Disc]:
    """Place the nuclei: pairs first, then singles, keeping groups well apart."""
    groups: list[list[_Disc]] = []
    for want_pair in [True] * pairs + [False] * singles:
        for _attempt in range(1000):
            group = _pair(rng, size) if want_pair else [_single(rng, size)]
            if all(_apart(group, other) for other in groups):
                groups.append(group)
                break
        else:
            raise ValueError(f"cannot fit {singles} singles and {pairs} pairs in {size}x{size}")
    return [disc for group in groups for disc in group]


def _single(rng: np.random.Generator, size: int) -> _Disc:
    r = rng.uniform(*RADIUS_RANGE)
    margin = r + 3
    return _Disc(rng.uniform(margin, size - margin), rng.uniform(margin, size - margin), r)


def _pair(rng: np.random.Generator, size: int) -> list[_Disc]:
    r = rng.uniform(*RADIUS_RANGE)
    angle = rng.uniform(0, np.pi)
    half = (2 - PAIR_OVERLAP) * r / 2
    dy, dx = half * np.sin(angle), half * np.cos(angle)
    margin = r + half + 3
    cy, cx = rng.uniform(margin, size - margin), rng.uniform(margin, size - margin)
    return [_Disc(cy - dy, cx - dx, r), _Disc(cy + dy, cx + dx, r)]


def _apart(group: list[_Disc], other: list[_Disc], gap: float = 6.0) -> bool:
    return all(np.hypot(a.y - b.y, a.x - b.x) > a.r + b.r + gap for a in group for b in other)


def make_sample(seed: int, axes: str = "yx", *, size: int = 160) -> Sample:
    """A sample with the given axes (T=2, C=2, Z=3 where present).

    Channel 0 holds the nuclei in every T and Z (dimmer away from the middle Z);
    channel 1 holds a different, nucleus-free pattern, so channel order matters.
    """
    axes = check_axes(axes)
    singles, pairs = 4 + seed % 4, 1 + seed % 3
    plane, count = nuclei_plane(seed, size=size, singles=singles, pairs=pairs)
    sizes = {"t": 2, "c": 2, "z": 3}
    shape = tuple(sizes.get(a, size) for a in axes)
    data = np.empty(shape, dtype=np.uint16)
    other = _other_channel(seed, size)
    for index in np.ndindex(*shape[:-2]):
        where = dict(zip(axes[:-2], index, strict=True))
        if where.get("c", 0) == 1:
            data[index] = other
        else:
            data[index] = _dim(plane, 1.0 - 0.2 * abs(where.get("z", 1) - 1))
    return Sample(name=f"nuclei_s{seed}_{axes}", data=data, axes=axes, nuclei=count)


def _other_channel(seed: int, size: int) -> np.ndarray:
    rng = np.random.default_rng(seed + 10_000)
    ramp = np.linspace(100, 900, size)[None, :] + np.zeros((size, 1))
    return (ramp + rng.normal(0, 20, (size, size))).clip(0, 65535).astype(np.uint16)


def _dim(plane: np.ndarray, factor: float) -> np.ndarray:
    return (plane.astype(np.float64) * factor).astype(np.uint16)


def write_sample(
    sample: Sample, folder: Path, fmt: str, *, version: OmeZarrVersion = "0.5"
) -> Path:
    """Write ``sample`` into ``folder`` as ``tiff`` (OME-TIFF) or ``zarr``; return the path."""
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "tiff":
        path = folder / f"{sample.name}.ome.tif"
        tifffile.imwrite(path, sample.data, ome=True, metadata={"axes": sample.axes.upper()})
    elif fmt == "zarr":
        path = folder / f"{sample.name}.ome.zarr"
        write_ome_zarr(path, sample.data, sample.axes, version=version, name=sample.name)
    else:
        raise ValueError(f"unknown sample format {fmt!r} (tiff or zarr)")
    return path
