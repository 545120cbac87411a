"""Export a run's selected images from OMERO as OME-Zarr, in process, a few at a time.

Each image is written by omero-cli-zarr's ``image_to_zarr`` through a session of the
run's user (no JVM) into a private folder, then renamed into place as
``image<id>.ome.zarr``: an image whose final folder exists is complete and is not
exported again when the step is retried. Plates are exported image by image, so each
result can be linked back to the image it came from. ``biomero-export.json`` beside
the exports records each image's id, name, size and where it was selected from.

Images exported at the same time never share a connection: omero-py's
``PixelsWrapper.getTiles`` reads through its connection's one cached raw pixels store
(``setPixelsId`` then ``getTile``), so two threads on one connection read each other's
tiles. Each export thread opens its own session and keeps it for the images it takes.

The files a run's file parameters name (OMERO file annotations, ``download_attachments``)
are streamed into ``<run>/files/<param>`` under their made-safe names, never more bytes
than the file's recorded size, which is bounded.
"""

from __future__ import annotations

import argparse
import logging
import queue
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from biomeroworker.omero.connect import OmeroError, omero_errors
from biomeroworker.omero.results import ExportedImage, export_name, write_index
from biomeroworker.workflows.attachments import (
    MAX_ATTACHMENT_BYTES,
    AttachmentError,
    safe_file_name,
)

log = logging.getLogger(__name__)

DATA_TYPES = ("Dataset", "Image", "Plate")
ZARR_FORMATS = ("0.4", "0.5")
PLATE_IMAGES_HQL = (
    "select ws.image.id from WellSample ws join ws.well w "
    "where w.plate.id = :pid order by w.row, w.column, ws.id"
)

ExportFn = Callable[[Any, argparse.Namespace], None]
# Opens one more session of the run's user; each export thread holds its own.
Session = Callable[[], AbstractContextManager[Any]]


def zarr_exporter() -> ExportFn:
    from omero_zarr.raw_pixels import image_to_zarr

    return image_to_zarr


def _one(conn: Any, kind: str, object_id: int) -> Any:
    obj = conn.getObject(kind, int(object_id))
    if obj is None:
        raise OmeroError(f"{kind} {object_id} does not exist or you may not read it")
    return obj


def selected_images(conn: Any, data_type: str, ids: list[int]) -> list[tuple[Any, str | None]]:
    """The images a selection means, each with the container it was selected through."""
    if data_type not in DATA_TYPES:
        raise OmeroError(f"data type must be one of {', '.join(DATA_TYPES)}, not {data_type!r}")
    if not ids:
        raise OmeroError(f"no {data_type} ids given")
    found: list[tuple[Any, str | None]] = []
    with omero_errors(f"reading the selected {data_type}s"):
        for object_id in ids:
            if data_type == "Image":
                found.append((_one(conn, "Image", object_id), None))
                continue
            _one(conn, data_type, object_id)
            container = f"{data_type}:{int(object_id)}"
            for image in _children(conn, data_type, int(object_id)):
                found.append((image, container))
    unique: dict[int, tuple[Any, str | None]] = {}
    for image, container in found:
        unique.setdefault(int(image.getId()), (image, container))
    if not unique:
        raise OmeroError(f"the selected {data_type}(s) {ids} hold no images")
    return [unique[k] for k in sorted(unique)]


def _children(conn: Any, data_type: str, object_id: int) -> list[Any]:
    if data_type == "Dataset":
        return list(conn.getObjects("Image", opts={"dataset": object_id}))
    from omero.sys import ParametersI

    params = ParametersI()
    params.addLong("pid", object_id)
    rows = conn.getQueryService().projection(PLATE_IMAGES_HQL, params, conn.SERVICE_OPTS)
    image_ids = [row[0].val for row in rows]
    return list(conn.getObjects("Image", image_ids)) if image_ids else []


def export_args(output: Path, zarr_format: str) -> argparse.Namespace:
    """The namespace image_to_zarr reads (omero-cli-zarr 0.9.0: output, name_by, format,
    tile_width, tile_height)."""
    return argparse.Namespace(
        output=str(output),
        name_by="id",
        format=zarr_format,
        tile_width=None,
        tile_height=None,
    )


def export_one(image: Any, dest: Path, export_fn: ExportFn, zarr_format: str) -> Path:
    image_id = int(image.getId())
    final = dest / export_name(image_id)
    if final.is_dir():
        return final
    work = dest / ".partial" / str(image_id)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    with omero_errors(f"exporting Image {image_id}"):
        export_fn(image, export_args(work, zarr_format))
    written = work / f"{image_id}.ome.zarr"
    if not written.is_dir():
        raise OmeroError(f"exporting Image {image_id} wrote no {written.name}")
    written.rename(final)
    shutil.rmtree(work, ignore_errors=True)
    return final


def export_selection(
    session: Session,
    data_type: str,
    ids: list[int],
    dest: Path,
    *,
    export_fn: ExportFn,
    workers: int = 2,
    zarr_format: str = "0.4",
) -> list[Path]:
    """Export every selected image to ``dest``; return the .ome.zarr folders in id order.

    ``session()`` opens a session of the run's user: one to find the images, and one
    per export thread (never shared between threads)."""
    if zarr_format not in ZARR_FORMATS:
        raise OmeroError(f"OME-Zarr format must be one of {ZARR_FORMATS}, not {zarr_format!r}")
    with session() as conn:
        selected = selected_images(conn, data_type, ids)
        entries = [
            ExportedImage(
                int(image.getId()),
                str(image.getName()),
                export_name(int(image.getId())),
                container,
                int(image.getSizeX()),
                int(image.getSizeY()),
            )
            for image, container in selected
        ]
    dest.mkdir(parents=True, exist_ok=True)
    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    pending = [e.image_id for e in entries if not (dest / e.zarr).is_dir()]
    for image_id in pending:
        todo.put(image_id)

    failures: list[BaseException] = []

    def worker() -> None:
        if todo.empty():
            return
        with session() as conn:
            while True:
                try:
                    image_id = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    with omero_errors(f"reading Image {image_id}"):
                        image = _one(conn, "Image", image_id)
                    export_one(image, dest, export_fn, zarr_format)
                except Exception as exc:  # the other images still export; raised below
                    failures.append(exc)

    threads = max(1, min(workers, len(pending)))
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="omero-export") as pool:
        for future in [pool.submit(worker) for _ in range(threads)]:
            future.result()
    if failures:
        raise failures[0]
    shutil.rmtree(dest / ".partial", ignore_errors=True)
    write_index(dest, entries)
    paths = [dest / e.zarr for e in entries]
    log.info("exported %d image(s) to %s", len(paths), dest)
    return paths


DOWNLOAD_CHUNK = 1 << 20


@dataclass(frozen=True)
class AttachedFile:
    annotation_id: int
    name: str  # made safe (workflows.attachments.safe_file_name)
    size: int


def attached_file(conn: Any, annotation_id: int, limit: int = MAX_ATTACHMENT_BYTES) -> AttachedFile:
    """A file annotation the session may read, with a usable name and size."""
    with omero_errors(f"reading FileAnnotation {annotation_id}"):
        ann = conn.getObject("FileAnnotation", int(annotation_id))
        if ann is None:
            raise OmeroError(
                f"FileAnnotation {annotation_id} does not exist or you may not read it"
            )
        file = ann.getFile()
        raw_name = file.getName() if file is not None else None
        size = file.getSize() if file is not None else None
    if raw_name is None or size is None:
        raise OmeroError(f"FileAnnotation {annotation_id} holds no file")
    try:
        name = safe_file_name(str(raw_name))
    except AttachmentError as exc:
        raise OmeroError(f"FileAnnotation {annotation_id}: {exc}") from exc
    if int(size) > limit:
        raise OmeroError(
            f"FileAnnotation {annotation_id} ({name}) is {int(size)} bytes; at most "
            f"{limit} are staged"
        )
    return AttachedFile(int(annotation_id), name, int(size))


def check_attachments(conn: Any, attachments: dict[str, list[int]]) -> None:
    """Every named file annotation is readable, usable and its names distinct per
    parameter (checked when the run is requested, so nothing is recorded otherwise)."""
    for pid, ids in attachments.items():
        names = [attached_file(conn, i).name for i in ids]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise OmeroError(f"{pid}: two of its files are named {twice[0]!r}")


def download_attachments(
    conn: Any,
    attachments: dict[str, list[int]],
    dest: Path,
    *,
    limit: int = MAX_ATTACHMENT_BYTES,
) -> dict[str, list[Path]]:
    """Each parameter's file annotations into ``dest/<param>/<name>``, streamed in
    chunks. A file already there with its size is kept (a retried step); a download
    that brings more or fewer bytes than the file's recorded size is refused."""
    out: dict[str, list[Path]] = {}
    for pid, ids in attachments.items():
        if not pid.isidentifier():
            raise OmeroError(f"file parameter {pid!r} is not a parameter name")
        folder = dest / pid
        folder.mkdir(parents=True, exist_ok=True)
        paths: list[Path] = []
        for annotation_id in ids:
            info = attached_file(conn, annotation_id, limit)
            target = folder / info.name
            if target in paths:
                raise OmeroError(f"{pid}: two of its files are named {info.name!r}")
            if not (target.is_file() and target.stat().st_size == info.size):
                _stream(conn, info, folder, target)
            paths.append(target)
        out[pid] = paths
    return out


def _stream(conn: Any, info: AttachedFile, folder: Path, target: Path) -> None:
    partial = folder / f".partial-{info.annotation_id}"
    written = 0
    try:
        with omero_errors(f"downloading FileAnnotation {info.annotation_id}"):
            ann = conn.getObject("FileAnnotation", info.annotation_id)
            with partial.open("wb") as out:
                for chunk in ann.getFileInChunks(buf=DOWNLOAD_CHUNK):
                    written += len(chunk)
                    if written > info.size:
                        raise OmeroError(
                            f"FileAnnotation {info.annotation_id} sent more than its "
                            f"{info.size} bytes"
                        )
                    out.write(chunk)
        if written != info.size:
            raise OmeroError(
                f"FileAnnotation {info.annotation_id}: {written} of {info.size} bytes arrived"
            )
        partial.rename(target)
    finally:
        partial.unlink(missing_ok=True)
