"""Local folders the worker makes for a run, and the only ones it may delete.

A run's local folder (``<user data>/biomero/results/<run id>``: OMERO exports, TIFFs
converted here, default results) is made with a marker naming the run inside it, in
one rename, so the folder either does not exist or carries its owner. A step writes
into it only when the marker names its run, and the run's end deletes it only then:
a folder someone else made, even with the same name, is never written into or removed.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import uuid
from pathlib import Path

from biomeroworker.errors import BiomeroError

log = logging.getLogger(__name__)

MARKER = ".biomero-run"


class FolderTakenError(BiomeroError):
    """The folder a run needs exists and was not made by that run."""


def owner_of(folder: Path) -> str | None:
    """The run id in ``folder``'s marker; None when it is not a real folder with one."""
    try:
        if not stat.S_ISDIR(os.lstat(folder).st_mode):
            return None
        return (folder / MARKER).read_text().strip() or None
    except (FileNotFoundError, NotADirectoryError):
        return None


def claim(folder: Path, run_id: str) -> Path:
    """``folder``, made for ``run_id`` now or earlier; FolderTakenError if not ours.

    The folder is built under a temporary name with its marker and renamed into place,
    which succeeds only where nothing (or an empty folder) stands.
    """
    if owner_of(folder) == run_id:
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    new = folder.with_name(f".{folder.name}.new-{uuid.uuid4().hex[:8]}")
    new.mkdir()
    try:
        (new / MARKER).write_text(f"{run_id}\n")
        new.rename(folder)
    except OSError as exc:
        shutil.rmtree(new, ignore_errors=True)  # made just above, by this call
        if owner_of(folder) == run_id:  # another process of this run was quicker
            return folder
        raise FolderTakenError(
            f"{folder} already exists and was not made by run {run_id}; the worker never "
            f"writes into or deletes a folder it did not make. Move it away and retry"
        ) from exc
    return folder


def adopt(folder: Path, run_id: str) -> None:
    """Mark an existing folder without a marker as ``run_id``'s. Only for a folder the
    run's own tracked records show it wrote into (made before markers existed)."""
    if owner_of(folder) is None and folder.is_dir() and not folder.is_symlink():
        (folder / MARKER).write_text(f"{run_id}\n")


def release(folder: Path, run_id: str) -> bool:
    """Delete ``folder`` if its marker names ``run_id``; True if it was deleted."""
    owner = owner_of(folder)
    if owner != run_id:
        if os.path.lexists(folder):
            log.warning("kept %s: it was not made by run %s", folder, run_id)
        return False
    shutil.rmtree(folder)
    return True
