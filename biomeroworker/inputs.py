"""A run's inputs and sbatch values, checked when the run is requested.

Every problem is found before anything is recorded, staged or submitted, and all of
them are reported at once, each naming the input or the config key it is about.

Images: a TIFF is a file named ``.tif``/``.tiff`` that starts with a TIFF header
(classic or BigTIFF) whose first directory lies inside the file; an OME-Zarr is a folder
named ``.zarr`` with OME-Zarr metadata (Zarr v2 ``.zgroup`` + ``.zattrs`` with
``multiscales``, or Zarr v3 ``zarr.json`` with ``attributes.ome.multiscales``) whose
first resolution level exists. Nothing may be empty, unreadable, a symlink or a special
file. A plain folder whose entries are all images is expanded into those images (the
workflow reads images at the top of its input folder, so a folder of images could not
work otherwise), and the caller is told so; any other folder is refused with a list of
what in it is not an image. The total size is counted as the check walks the files.

Cluster values: the run's partition (``--partition``, ``<wf>_job_partition``,
``gpu_partition``, ``sbatch_partition``, ``slurm_default_partition``) must be one the
cluster lists, and the other sbatch values must fit it (``biomeroworker.slurm.offer``).
``check_request`` is the one entry point: ``RunEngine.request`` (CLI, supervisor) and the
OMERO Run Workflow scripts both call it; the export step checks what OMERO wrote with
``check_images``.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from biomeroworker.errors import BiomeroError, SlurmError, TransportError
from biomeroworker.slurm.offer import (
    ClusterOffer,
    FlagValue,
    cached_partitions,
    check_flags,
    read_offer,
)

if TYPE_CHECKING:
    from biomeroworker.config import Settings
    from biomeroworker.slurm.parse import Partition

TIFF_SUFFIXES = (".tif", ".tiff")
ZARR_SUFFIX = ".zarr"
# Listed per refused folder; the rest is counted.
SHOWN_PER_FOLDER = 5
# Zarr metadata is small; a bigger "metadata" file is not one.
METADATA_MAX_BYTES = 16 * 1024 * 1024

_CLASSIC = {b"II*\x00": "little", b"MM\x00*": "big"}
_BIG = {b"II+\x00": "little", b"MM\x00+": "big"}


class InputError(BiomeroError):
    """Inputs or sbatch values a run cannot use; ``problems`` has one line each."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"nothing was recorded; fix these first:\n{lines}")


class _NotAnImage(ValueError):
    """Why one path is not a usable image (the message names no path)."""


class _PlainFolder(_NotAnImage):
    """A folder that is no image itself (it may hold images)."""


def shown(path: Path | str) -> str:
    """A path for a message: as is, or quoted when it holds newlines or other controls."""
    text = str(path)
    return text if text.isprintable() else repr(text)


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{int(value)} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Inputs:
    """Checked images: what staging sends, how much, and which folders were expanded."""

    files: tuple[Path, ...]
    bytes: int
    file_count: int
    expanded: tuple[tuple[str, int], ...] = ()

    def summary(self) -> str:
        text = f"{len(self.files)} image(s), {human_size(self.bytes)} in {self.file_count} file(s)"
        for folder, count in self.expanded:
            text += f"; folder {shown(folder)} expanded into its {count} image(s)"
        return text

    def record(self) -> dict[str, Any]:
        """What the run's recorded inputs keep of this check."""
        return {
            "files": [str(p) for p in self.files],
            "bytes": self.bytes,
            "expanded": {folder: count for folder, count in self.expanded},
        }


# ---------------------------------------------------------------- one image


def _read_head(path: Path, size: int) -> bytes:
    try:
        with path.open("rb") as fh:
            return fh.read(size)
    except PermissionError:
        raise _NotAnImage("cannot be read (permission denied)") from None
    except OSError as exc:
        raise _NotAnImage(f"cannot be read ({exc.strerror or exc})") from None


def tiff_problem(head: bytes, size: int) -> str | None:
    """Why a file of ``size`` bytes starting with ``head`` (16 bytes or more) is not a
    TIFF, or None. Classic TIFF: 8-byte header, 32-bit offset of the first directory;
    BigTIFF: 16-byte header (offset size 8), 64-bit offset."""
    if size == 0:
        return "is empty"
    magic = head[:4]
    if magic in _CLASSIC:
        if size < 8 + 2:
            return "is a truncated or damaged TIFF (shorter than its header)"
        first = int.from_bytes(head[4:8], _CLASSIC[magic])  # type: ignore[arg-type]
    elif magic in _BIG:
        order = _BIG[magic]
        if size < 16 + 8 or int.from_bytes(head[4:6], order) != 8:  # type: ignore[arg-type]
            return "is a truncated or damaged BigTIFF"
        first = int.from_bytes(head[8:16], order)  # type: ignore[arg-type]
    else:
        return "is not a TIFF (it does not start with a TIFF header)"
    if first < 8 or first + 2 > size:
        return f"is a truncated or damaged TIFF (its first directory at byte {first} is not in it)"
    return None


def _tiff(path: Path, size: int) -> None:
    problem = tiff_problem(_read_head(path, 16), size)
    if problem:
        raise _NotAnImage(problem)


def _json(path: Path) -> Any:
    try:
        info = path.stat()
    except OSError as exc:
        raise _NotAnImage(f"{path.name} cannot be read ({exc.strerror or exc})") from None
    if info.st_size > METADATA_MAX_BYTES:
        raise _NotAnImage(f"{path.name} is {human_size(info.st_size)}, too big for metadata")
    try:
        return json.loads(_read_head(path, METADATA_MAX_BYTES).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise _NotAnImage(f"{path.name} is not valid JSON ({exc.__class__.__name__})") from None


def _multiscales(attrs: Any) -> list[Any] | None:
    if not isinstance(attrs, dict):
        return None
    found = attrs.get("multiscales")
    return found if isinstance(found, list) and found else None


def _first_level(multiscales: list[Any]) -> str:
    first = multiscales[0]
    datasets = first.get("datasets") if isinstance(first, dict) else None
    if not isinstance(datasets, list) or not datasets or not isinstance(datasets[0], dict):
        raise _NotAnImage("has multiscales metadata without datasets")
    level = datasets[0].get("path")
    parts = level.split("/") if isinstance(level, str) else []
    if not parts or any(p in ("", ".", "..") for p in parts) or level.startswith("/"):
        raise _NotAnImage(f"names its first resolution level {level!r}, not a relative path")
    return str(level)


def zarr_version(folder: Path) -> int:
    """2 or 3 for a folder with OME-Zarr image metadata; _NotAnImage otherwise."""
    v3 = folder / "zarr.json"
    if v3.is_file():
        meta = _json(v3)
        attrs = meta.get("attributes") if isinstance(meta, dict) else None
        ome = attrs.get("ome") if isinstance(attrs, dict) else None
        found = _multiscales(ome)
        if found is None:
            raise _NotAnImage(
                "has zarr.json but no OME image metadata (attributes.ome.multiscales)"
            )
        marker = "zarr.json"
        version = 3
    elif (folder / ".zattrs").is_file() or (folder / ".zgroup").is_file():
        if not (folder / ".zgroup").is_file():
            raise _NotAnImage("has .zattrs but no .zgroup (not a Zarr v2 group)")
        if not (folder / ".zattrs").is_file():
            raise _NotAnImage("has .zgroup but no .zattrs (no OME-Zarr metadata)")
        found = _multiscales(_json(folder / ".zattrs"))
        if found is None:
            raise _NotAnImage("has .zattrs without OME image metadata (multiscales)")
        marker = ".zarray"
        version = 2
    else:
        raise _NotAnImage(
            "has no OME-Zarr metadata (.zgroup + .zattrs with multiscales, or zarr.json "
            "with attributes.ome.multiscales)"
        )
    level = _first_level(found)
    if not (folder / level / marker).is_file():
        raise _NotAnImage(f"misses its first resolution level ({level}/{marker})")
    return version


def image_kind(path: Path) -> str:
    """ "tiff" or "zarr" for a usable image; _NotAnImage saying why not otherwise."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        raise _NotAnImage("not found") from None
    except OSError as exc:
        raise _NotAnImage(f"cannot be read ({exc.strerror or exc})") from None
    name = path.name.lower()
    if stat.S_ISLNK(info.st_mode):
        raise _NotAnImage("is a symlink; give the file it points to")
    if stat.S_ISREG(info.st_mode):
        if name.endswith(TIFF_SUFFIXES):
            _tiff(path, info.st_size)
            return "tiff"
        if info.st_size and tiff_problem(_read_head(path, 16), info.st_size) is None:
            raise _NotAnImage("is a TIFF but not named .tif or .tiff; rename it")
        raise _NotAnImage("is not an image (expected a .tif/.tiff file or an OME-Zarr folder)")
    if stat.S_ISDIR(info.st_mode):
        if not os.access(path, os.R_OK | os.X_OK):
            raise _NotAnImage("cannot be read (permission denied)")
        if name.endswith(ZARR_SUFFIX):
            zarr_version(path)
            return "zarr"
        try:
            zarr_version(path)
        except _NotAnImage:
            raise _PlainFolder("is a folder, not an image") from None
        raise _NotAnImage("is an OME-Zarr but its name does not end in .zarr; rename it")
    raise _NotAnImage("is not a regular file or folder")


# ---------------------------------------------------------------- size and readability


@dataclass
class _Walk:
    files: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)


def _walk(root: Path, walk: _Walk) -> None:
    """Count the files below an image, refusing what staging could not send."""
    pending = [root]
    while pending:
        path = pending.pop()
        try:
            info = path.lstat()
            if stat.S_ISREG(info.st_mode):
                if not os.access(path, os.R_OK):
                    raise PermissionError
                walk.files += 1
                walk.bytes += info.st_size
            elif stat.S_ISDIR(info.st_mode):
                pending.extend(Path(entry.path) for entry in os.scandir(path))
            else:
                kind = "a symlink" if stat.S_ISLNK(info.st_mode) else "a special file"
                walk.problems.append(f"{shown(path)}: is {kind}; copy the real file there")
                return
        except PermissionError:
            walk.problems.append(f"{shown(path)}: cannot be read (permission denied)")
            return
        except OSError as exc:
            walk.problems.append(f"{shown(path)}: cannot be read ({exc.strerror or exc})")
            return


def _folder_images(folder: Path, problems: list[str]) -> list[Path]:
    """The images a plain folder holds, or nothing (with a problem) when it holds others."""
    try:
        entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError as exc:
        problems.append(f"{shown(folder)}: cannot be read ({exc.strerror or exc})")
        return []
    if not entries:
        problems.append(f"{shown(folder)}: is an empty folder")
        return []
    refused = []
    for entry in entries:
        try:
            image_kind(entry)
        except _NotAnImage as exc:
            refused.append(f"{shown(entry.name)} {exc}")
    if not refused:
        return entries
    listed = "; ".join(refused[:SHOWN_PER_FOLDER])
    more = len(refused) - SHOWN_PER_FOLDER
    problems.append(
        f"{shown(folder)}: is a folder, not an image, and not a folder of images only "
        f"(give the images, or a folder holding only images): {listed}"
        + (f"; and {more} more" if more > 0 else "")
    )
    return []


def check_images(paths: Iterable[Path], *, expand: bool = True) -> Inputs:
    """Check ``paths`` as images (see the module text); InputError lists every problem."""
    problems: list[str] = []
    images: list[Path] = []
    expanded: list[tuple[str, int]] = []
    given = [Path(p).resolve() for p in paths]  # a symlink given by name counts as its target
    if not given:
        raise InputError(["give at least one input image (a .tif/.tiff or an OME-Zarr folder)"])
    for path in given:
        try:
            image_kind(path)
            images.append(path)
            continue
        except _PlainFolder as exc:
            if not expand:
                problems.append(f"{shown(path)}: {exc}")
                continue
        except _NotAnImage as exc:
            problems.append(f"{shown(path)}: {exc}")
            continue
        found = _folder_images(path, problems)
        if found:
            images += found
            expanded.append((str(path), len(found)))
    walk = _Walk()
    for image in images:
        _walk(image, walk)
    problems += walk.problems
    names = [p.name for p in images]
    for dupe in sorted({n for n in names if names.count(n) > 1}):
        where = ", ".join(shown(p.parent) for p in images if p.name == dupe)
        problems.append(f"{shown(dupe)}: two inputs share this name (in {where}); rename one")
    if problems:
        raise InputError(problems)
    return Inputs(tuple(images), walk.bytes, walk.files, tuple(expanded))


# ---------------------------------------------------------------- sbatch values


def job_flag_values(settings: Settings, workflow: str, partition: str | None) -> list[FlagValue]:
    """The workflow job's sbatch values, each with the key that set it."""
    wf = settings.workflow(workflow)
    slurm = settings.slurm
    flags = settings.sbatch_flags_for(workflow)
    if partition:
        flags["partition"] = partition
    gpu = {"partition": slurm.gpu_partition, "gres": slurm.gpu_gres, "gpus": slurm.gpu_gpus}

    def origin(flag: str) -> str:
        if flag == "partition" and partition:
            return "--partition"
        if flag in wf.job_flags:
            return f"[WORKFLOWS] {workflow}_job_{flag}"
        if wf.use_gpu and gpu.get(flag):
            return f"[SLURM] gpu_{flag}"
        if flag in slurm.sbatch_flags:
            return f"[SLURM] sbatch_{flag}"
        return "[SLURM] slurm_default_partition"

    return [FlagValue(flag, value, origin(flag)) for flag, value in flags.items()]


def conversion_flag_values(settings: Settings) -> list[FlagValue]:
    """The conversion job's sbatch values, each with the key that set it."""
    slurm = settings.slurm

    def origin(flag: str) -> str:
        if flag == "partition" and slurm.slurm_conversion_partition:
            return "[SLURM] slurm_conversion_partition"
        if flag in slurm.sbatch_flags:
            return f"[SLURM] sbatch_{flag}"
        return "[SLURM] slurm_default_partition"

    return [
        FlagValue(flag, value, f"{origin(flag)} (conversion job)")
        for flag, value in settings.sbatch_flags_for_conversion().items()
    ]


def cluster_key(settings: Settings) -> str:
    """Names the cluster a settings object reaches, for the partitions cache."""
    w = settings.worker
    return "|".join(
        (w.transport, settings.ssh.host or "", settings.rest.url or "", w.shared_path or "")
    )


# What the cluster offers: a ClusterOffer (or, from tests, a list of partitions).
PartitionSource = Callable[[], "ClusterOffer | Sequence[Partition]"]


def partitions_of(settings: Settings, slurm: Any) -> PartitionSource:
    """What the cluster ``slurm`` (a Slurm client) talks to offers: one query, cached."""
    return lambda: cached_partitions(cluster_key(settings), lambda: read_offer(slurm))


@dataclass(frozen=True)
class RequestCheck:
    """What passed: the inputs (for local files) and whether the cluster was asked."""

    inputs: Inputs | None
    unchecked: str = ""  # why the sbatch values were not checked against the cluster

    def summary(self) -> str:
        lines = [f"inputs: {self.inputs.summary()}"] if self.inputs else []
        if self.unchecked:
            lines.append(f"warning: {self.unchecked}")
        return "\n".join(lines)

    def record(self) -> dict[str, Any]:
        recorded = self.inputs.record() if self.inputs else {}
        if self.unchecked:
            recorded["unchecked"] = self.unchecked
        return recorded


def check_request(
    settings: Settings,
    workflow: str,
    partitions: PartitionSource,
    *,
    files: Sequence[Path] | None = None,
    partition: str | None = None,
    converts: bool | None = None,
) -> RequestCheck:
    """Check a run request before it is recorded; InputError lists every problem.

    ``files`` are local inputs (None for OMERO runs, whose images are checked after the
    export). ``converts`` says whether the run will need the conversion job; by default
    it does when a local input is an OME-Zarr and conversion happens on the cluster.
    When the cluster cannot be asked (unreachable), the sbatch values are checked for
    format only and the result says so: the run is recorded, and sbatch decides later.
    """
    problems: list[str] = []
    inputs = None
    if files is not None:
        try:
            inputs = check_images(files)
        except InputError as exc:
            problems += exc.problems
    if converts is None:
        zarrs = inputs is not None and any(
            p.name.lower().endswith(ZARR_SUFFIX) for p in inputs.files
        )
        converts = zarrs
    converts = converts and settings.worker.convert_on == "cluster"
    jobs = [job_flag_values(settings, workflow, partition)]
    if converts:
        jobs.append(conversion_flag_values(settings))
    unchecked = ""
    offered: ClusterOffer | Sequence[Partition] | None
    try:
        offered = partitions()
    except (TransportError, SlurmError) as exc:
        offered = None
        unchecked = f"partitions and time limits not checked (the cluster did not answer: {exc})"
    for values in jobs:
        problems += [p for p in check_flags(values, offered) if p not in problems]
    if problems:
        raise InputError(problems)
    return RequestCheck(inputs, unchecked)
