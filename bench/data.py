"""Benchmark inputs: OME-Zarr-shaped folders of many chunk files, one-file blobs, small TIFFs.

Chunk bytes are random, like compressed Zarr chunks (zip and 7z cannot shrink them).
A folder that already holds the expected files is reused.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

CHUNKS_PER_FOLDER = 500


@dataclass(frozen=True)
class Dataset:
    label: str
    total_bytes: int
    files: int

    @property
    def chunk_bytes(self) -> int:
        return self.total_bytes // self.files

    @property
    def name(self) -> str:
        return f"bench_{self.label}.ome.zarr"


def _manifest(root: Path) -> tuple[int, int]:
    files = size = 0
    for folder, _dirs, names in os.walk(root):
        for name in names:
            files += 1
            size += (Path(folder) / name).stat().st_size
    return files, size


def make_zarr(parent: Path, dataset: Dataset) -> Path:
    """``<parent>/<name>``: OME-Zarr 0.4 metadata plus ``files - 2`` chunk files."""
    root = parent / dataset.name
    chunks = dataset.files - 2
    expected_bytes = chunks * dataset.chunk_bytes
    if root.is_dir():
        files, size = _manifest(root)
        if files == dataset.files and size - _metadata_bytes(root) == expected_bytes:
            return root
        shutil.rmtree(root)
    level = root / "0"
    level.mkdir(parents=True)
    attrs = {"multiscales": [{"version": "0.4", "axes": ["y", "x"], "datasets": [{"path": "0"}]}]}
    (root / ".zattrs").write_text(json.dumps(attrs))
    array = {"zarr_format": 2, "chunks": [256, 256], "dtype": "|u1", "compressor": None}
    (level / ".zarray").write_text(json.dumps(array))
    for n in range(chunks):
        folder = level / str(n // CHUNKS_PER_FOLDER)
        folder.mkdir(exist_ok=True)
        (folder / str(n % CHUNKS_PER_FOLDER)).write_bytes(os.urandom(dataset.chunk_bytes))
    return root


def _metadata_bytes(root: Path) -> int:
    paths = (root / ".zattrs", root / "0" / ".zarray")
    return sum(p.stat().st_size for p in paths if p.exists())


def make_blob(parent: Path, name: str, size: int) -> Path:
    """One file of ``size`` random bytes (the single-stream limit moves this)."""
    path = parent / name
    if path.is_file() and path.stat().st_size == size:
        return path
    parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        left = size
        while left:
            step = min(left, 16 << 20)
            fh.write(os.urandom(step))
            left -= step
    return path


# A classic little-endian TIFF header whose first directory is at byte 8: enough for the
# request-time check (biomeroworker.inputs); the no-op workflow never decodes the pixels.
TIFF_HEADER = b"II*\x00\x08\x00\x00\x00"


def make_images(parent: Path, count: int, size: int = 64 << 10) -> list[Path]:
    """``count`` small files with a TIFF header (the no-op workflow only copies them)."""
    parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in range(count):
        path = parent / f"img_{n:03d}.tif"
        fresh = path.is_file() and path.stat().st_size == size
        if not (fresh and path.read_bytes()[:8] == TIFF_HEADER):
            path.write_bytes(TIFF_HEADER + os.urandom(size - len(TIFF_HEADER)))
        paths.append(path)
    return paths
