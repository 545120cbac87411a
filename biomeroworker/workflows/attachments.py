"""File parameters: files a workflow takes besides the images (a CellProfiler pipeline,
a model), staged into the run folder and passed to the job as their folder.

As biomero 2.8.3's Run Workflow script does it: the user names OMERO file annotations
(the form's ``<wf>_|_FILE_<param>``, a list of ids), each is put into a folder of its
own for that parameter on the cluster, and the parameter's value is that folder. Here
the folder is ``<run>/data/files/<param>`` (upstream: ``data/in/<param>``, inside the
image folder, where a workflow that lists its in-folder would meet it). From the command
line a file parameter names a local file instead (``--param model=/path/to/model.pt``).

A file keeps its own name on the cluster, made safe first: a name with a path separator
or NUL, or one that is only dots, is refused; other characters outside letters, digits
and ``._+-`` become ``_``, and leading dots and dashes are dropped (no hidden files, no
names read as options).
"""

from __future__ import annotations

import posixpath
import re
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from biomeroworker.errors import BiomeroError
from biomeroworker.workflows.descriptor import Descriptor, Parameter

FILES_DIR = "data/files"
# What one downloaded attachment may weigh: pipelines are kilobytes, models hundreds of
# megabytes; anything past this is refused before a byte is written.
MAX_ATTACHMENT_BYTES = 4 << 30
MAX_FILES = 100  # per file parameter
MAX_NAME_BYTES = 200
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")

Reference = int | str


class AttachmentError(BiomeroError):
    """A file parameter's file cannot be used (missing, unsafe name, too large, ...)."""


def folder(pid: str) -> str:
    """The parameter's folder, relative to the run folder (what the run records)."""
    return f"{FILES_DIR}/{_checked(pid)}"


def _checked(pid: str) -> str:
    """A parameter id is a name (descriptors are checked so); never a path."""
    if not pid.isidentifier():
        raise AttachmentError(f"file parameter {pid!r} is not a parameter name")
    return pid


def safe_file_name(name: str) -> str:
    """``name`` as it may be written on the cluster, or AttachmentError."""
    if not name or "/" in name or "\\" in name or "\x00" in name:
        raise AttachmentError(f"file name {name!r}: path separators and NUL are not allowed")
    cleaned = _UNSAFE.sub("_", name).lstrip(".-")
    if not cleaned.strip("_"):
        raise AttachmentError(f"file name {name!r}: nothing usable is left of it")
    if len(cleaned.encode()) > MAX_NAME_BYTES:
        stem, dot, suffix = cleaned.rpartition(".")
        keep = MAX_NAME_BYTES - len(suffix) - 1 if dot and len(suffix) < 20 else MAX_NAME_BYTES
        cleaned = (stem[:keep] + dot + suffix) if dot and len(suffix) < 20 else cleaned[:keep]
    return cleaned


def references(raw: object) -> list[Reference]:
    """A file parameter's value as given: OMERO file annotation ids (whole numbers) or
    local file paths (texts), one or a list; never both kinds."""
    items = list(raw) if isinstance(raw, list | tuple) else [raw]
    if len(items) > MAX_FILES:
        raise AttachmentError(f"{len(items)} files; a file parameter takes at most {MAX_FILES}")
    if items and all(isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in items):
        return [int(i) for i in items]  # type: ignore[arg-type]
    if items and all(isinstance(i, str | Path) and str(i).strip() for i in items):
        if any("\x00" in str(i) for i in items):
            raise AttachmentError("a file path holds a NUL")
        return [str(i) for i in items]
    raise AttachmentError(
        f"{raw!r} is not allowed, expected OMERO file annotation ids or local file paths"
    )


def requested(descriptor: Descriptor, user_values: Mapping[str, object]) -> dict[str, list[Any]]:
    """The files each file parameter was given (parameters left out are absent)."""
    out: dict[str, list[Any]] = {}
    for param in descriptor.attachments:
        raw = user_values.get(param.id)
        if raw is None or raw == [] or raw == ():
            continue
        out[param.id] = references(raw)
    return out


def local_files(descriptor: Descriptor, user_values: Mapping[str, object]) -> dict[str, list[str]]:
    """The local files of a command-line run's file parameters, checked: each a regular
    file (not a link), with a name usable as is, no two with one name per parameter."""
    out: dict[str, list[str]] = {}
    problems: list[str] = []
    for pid, refs in requested(descriptor, user_values).items():
        paths: list[str] = []
        for ref in refs:
            if isinstance(ref, int):
                problems.append(f"{pid}: {ref} is an OMERO id; a command-line run takes a file")
                continue
            problem = _local_problem(Path(ref))
            if problem:
                problems.append(f"{pid}: {problem}")
            else:
                paths.append(str(Path(ref).absolute()))
        names = [Path(p).name for p in paths]
        problems += [
            f"{pid}: two files are named {n!r}" for n in sorted(set(names)) if names.count(n) > 1
        ]
        out[pid] = paths
    if problems:
        raise AttachmentError("\n".join(problems))
    return out


def _local_problem(path: Path) -> str:
    try:
        info = path.lstat()
    except OSError as exc:
        return f"{path}: {exc.strerror or exc}"
    if not stat.S_ISREG(info.st_mode):
        return f"{path}: not a regular file (links and folders are not sent)"
    try:
        if safe_file_name(path.name) != path.name:
            return f"{path}: rename it to {safe_file_name(path.name)!r} (letters, digits, ._+-)"
    except AttachmentError as exc:
        return str(exc)
    return ""


def job_parameters(
    parameters: Mapping[str, Any], attachments: Mapping[str, Any] | None, remote_run: str
) -> dict[str, Any]:
    """``params.json``: each file parameter's value is its folder in the run folder, in
    the run folder's own terms (as the job script is given it)."""
    out = dict(parameters)
    for pid in attachments or {}:
        out[pid] = posixpath.join(remote_run, folder(_checked(pid)))
    return out


def staging_sources(
    attachments: Mapping[str, Sequence[Any]], local_run: Path
) -> dict[str, list[Path]]:
    """What stage up sends per file parameter (the run's recorded ``attachments``): a
    command-line run's own files, or what the export step downloaded from OMERO into
    ``<local run>/files/<param>``."""
    out: dict[str, list[Path]] = {}
    for pid, refs in attachments.items():
        if refs and all(isinstance(r, int) for r in refs):
            where = local_run / "files" / _checked(pid)
            # a download in progress is a hidden ".partial-<id>"; safe names never start with "."
            listed = sorted(where.iterdir()) if where.is_dir() else []
            found = [p for p in listed if p.is_file() and not p.name.startswith(".")]
            if len(found) != len(refs):
                raise AttachmentError(
                    f"{pid}: {len(found)} of {len(refs)} file(s) downloaded into {where}"
                )
            out[pid] = found
        else:
            out[pid] = [Path(r) for r in refs]
    return out


def describe(param: Parameter) -> str:
    """How a form tells users what a file parameter takes."""
    formats = ", ".join(param.formats) if param.formats else "any"
    text = param.description or param.name
    return f"[file] {text} Accepted formats: {formats}. OMERO file annotation id(s)."
