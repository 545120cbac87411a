"""Data up to the cluster and results back: tar streams over channels of one connection.

No zip on the worker and no 7z on the login node: a tar stream is written on one side
while the other unpacks it. A transfer of many files goes as several streams at once,
each with a share of the files (``stream_count``, ``split_entries``), so that the
per-file work of one overlaps the others' bytes. Uploads are packed by the system
``tar`` (C, no GIL). Downloads are unpacked here, member by member, by our own code in
a process of its own: the cluster is not trusted, so only regular files and folders
with plain relative names are accepted and anything else (links, devices, FIFOs,
absolute names, ``..``) refuses the whole download, whatever Python's tarfile filters
would allow at its patch level.

A transfer lands in a ``.partial-*`` folder, is checked (file count and bytes) and only
then renamed into place, so a broken transfer never counts as done and a retry starts
clean. A destination that already holds exactly the expected files is adopted, which
makes both directions safe to repeat after a crash. Locally nothing that was already
there is replaced or deleted: results go into a destination that does not exist yet
(or is an empty folder), anything else is refused.

Streams have no time limit of their own: they fail when no byte has moved for
``idle_timeout_s`` ([WORKER] transfer_idle_timeout_s).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import io
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from biomeroworker.errors import BiomeroError, CommandError, TransportError
from biomeroworker.transport.base import Transport

log = logging.getLogger(__name__)

Progress = Callable[[int], None]

# [WORKER] transfer_idle_timeout_s: a stream that moves no byte for this long has stalled.
DEFAULT_IDLE_TIMEOUT_S = 300.0


class StagingError(BiomeroError):
    """A transfer failed or arrived incomplete, after its retries."""


class UnsafeArchiveError(StagingError):
    """The cluster sent something other than plain files and folders; not retried."""


class DestinationError(StagingError):
    """The local destination holds something already; it is left as it is. Not retried."""


@dataclass(frozen=True)
class Manifest:
    files: int
    bytes: int

    def __str__(self) -> str:
        return f"{self.files} files, {self.bytes} bytes"


@dataclass(frozen=True)
class StageReport:
    manifest: Manifest
    seconds: float
    attempts: int
    adopted: bool = False

    @property
    def mb_per_s(self) -> float:
        return self.manifest.bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0


def local_manifest(paths: Iterable[Path]) -> Manifest:
    """Count and size of the regular files at or below ``paths``; links are not followed."""
    return _scan(paths)[0]


def _scan(paths: Iterable[Path], listing: list[Entry] | None = None) -> tuple[Manifest, list[Path]]:
    """The manifest, and every entry that is neither a regular file nor a folder.

    With ``listing``, every file and every empty folder is appended to it, named
    ``./<top>/...`` (``top`` the name of the path given) with the index of its path.
    """
    files = size = 0
    odd: list[Path] = []
    for index, top in enumerate(paths):
        pending = [(str(top), f"./{Path(top).name}")]
        while pending:
            path, name = pending.pop()
            info = os.lstat(path)
            if stat.S_ISREG(info.st_mode):
                files += 1
                size += info.st_size
                if listing is not None:
                    listing.append(Entry(name, info.st_size, index))
            elif stat.S_ISDIR(info.st_mode):
                with os.scandir(path) as found:
                    children = [(entry.path, f"{name}/{entry.name}") for entry in found]
                if not children and listing is not None:
                    listing.append(Entry(name, -1, index))
                pending.extend(children)
            else:
                odd.append(Path(path))
    return Manifest(files, size), odd


@dataclass(frozen=True)
class Entry:
    """One file (``size`` >= 0) or empty folder (``size`` -1) of a transfer."""

    name: str  # relative, starting with "./": never read as an option by tar
    size: int
    root: int = 0  # which of the sources it belongs to (uploads)


# Streams: a transfer of many files goes as up to this many tar streams at once, each
# over its own channel of the one connection and each with a share of the files, so
# that one side's per-file work (creating files) overlaps the others' transfer.
MAX_STREAMS = 4
# A stream is worth its channel and its two tar processes from this many files on.
_FILES_PER_STREAM = 250
# A file costs about as much as this many bytes on the wire (creating it, its header);
# shares are balanced on bytes plus this per file.
_FILE_COST_BYTES = 64 << 10


def stream_count(files: int, limit: int = MAX_STREAMS) -> int:
    """How many parallel streams a transfer of ``files`` files uses."""
    return max(1, min(limit, files // _FILES_PER_STREAM))


def download_streams() -> int:
    """The most streams a download uses by default: one per two cores here.

    Each download stream is unpacked by a process of ours that creates files, which
    costs CPU here (uploads create their files on the cluster). On 2 cores, where
    paramiko's receiving thread takes one, a second unpacker only competes with the
    first: several download streams measured slower than one (docs/performance.md).
    """
    return max(1, min(MAX_STREAMS, (os.cpu_count() or 2) // 2))


def split_entries(entries: Sequence[Entry], streams: int) -> list[list[Entry]]:
    """``entries`` cut into at most ``streams`` runs of about equal cost, in order
    (neighbours, often the chunks of one folder, stay in one stream)."""
    if streams <= 1 or len(entries) <= 1:
        return [list(entries)]
    costs = [max(e.size, 0) + _FILE_COST_BYTES for e in entries]
    share = sum(costs) / streams
    parts: list[list[Entry]] = [[]]
    done = 0.0
    for entry, cost in zip(entries, costs, strict=True):
        if done >= share * len(parts) and len(parts) < streams:
            parts.append([])
        parts[-1].append(entry)
        done += cost
    return [part for part in parts if part]


def _listing_file(folder: str, entries: Iterable[Entry], tag: str) -> Path:
    """A NUL-separated list of names for ``tar -T`` (names may hold any byte but NUL)."""
    path = Path(folder) / f"list-{tag}"
    with path.open("wb") as fh:
        for entry in entries:
            fh.write(os.fsencode(entry.name) + b"\0")
    return path


def remote_manifest(
    transport: Transport, path: str, idle_timeout_s: float | None = None
) -> Manifest | None:
    """Count and size of the regular files below ``path``; None when it does not exist.

    With ``idle_timeout_s`` the listing (one line per file, so never silent for long)
    may take as long as it needs, as the transfers it checks do.
    """
    result = transport.run(
        ["find", path, "-type", "f", "-printf", "%s\\n"],
        check=False,
        idempotent=True,
        idle_timeout_s=idle_timeout_s,
    )
    if result.exit_code != 0:
        if "No such file" in result.stderr:
            return None
        raise CommandError(list(result.argv), result.exit_code, result.stdout, result.stderr)
    sizes = result.stdout.split()
    return Manifest(len(sizes), sum(int(s) for s in sizes))


def remote_listing(
    transport: Transport, path: str, idle_timeout_s: float | None = None
) -> tuple[Manifest, list[Entry], list[str]] | None:
    """The manifest of ``path`` on the cluster, its files and empty folders (named
    ``./...``), and every entry that is neither; None when ``path`` does not exist.

    One ``find`` lists it all, NUL-separated, so a name may hold any character but NUL.
    A name that is not UTF-8 is listed with U+FFFD in place of its odd bytes: such a
    listing is good for counting, not for naming files (stage_down then sends the whole
    folder as one stream).
    """
    argv = ["find", path, "-mindepth", "1", "-printf", "%y %s %P\\0"]
    result = transport.run(argv, check=False, idempotent=True, idle_timeout_s=idle_timeout_s)
    if result.exit_code != 0:
        if "No such file" in result.stderr:
            return None
        raise CommandError(argv, result.exit_code, "", result.stderr)
    files: list[Entry] = []
    folders: list[str] = []
    parents: set[str] = set()
    odd: list[str] = []
    size = 0
    for record in result.stdout.split("\0")[:-1]:
        kind, length, name = record.split(" ", 2)
        parents.add(name.rpartition("/")[0])
        if kind == "f":
            files.append(Entry(f"./{name}", int(length)))
            size += int(length)
        elif kind == "d":
            folders.append(name)
        else:
            odd.append(name)
    entries = files + [Entry(f"./{name}", -1) for name in folders if name not in parents]
    return Manifest(len(files), size), entries, odd


def _check_names(sources: Sequence[Path]) -> None:
    names = [p.name for p in sources]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise StagingError(f"two inputs share the name {dupes[0]!r}; rename one of them")
    missing = [str(p) for p in sources if not p.exists() and not p.is_symlink()]
    if missing:
        raise StagingError(f"input not found: {missing[0]}")


def inputs_manifest(sources: Sequence[Path]) -> Manifest:
    """The manifest of what stage_up will send; refuses links and special files."""
    manifest, odd = _scan(sources)
    if odd:
        raise StagingError(
            f"{odd[0]} is a symlink or special file; staging sends regular files and "
            f"folders only, so copy the real file there instead"
        )
    return manifest


class _Counting:
    """A read-only stream wrapper that reports bytes as they pass."""

    def __init__(self, stream: BinaryIO, progress: Progress | None) -> None:
        self._stream = stream
        self._progress = progress

    def read(self, n: int = -1) -> bytes:
        chunk = self._stream.read(n)
        if chunk and self._progress is not None:
            self._progress(len(chunk))
        return chunk


def tar_create_argv(sources: Sequence[Path]) -> list[str]:
    """``tar`` packing each source under its own name, whatever characters it holds.

    Each source is named ``./<name>`` after ``-C <its absolute folder>``: a name that
    starts with ``./`` can never be read as an option, so names beginning with ``-``
    stay names. The list goes to exec directly, never through a shell.
    """
    argv = ["tar", "-c", "-f", "-"]
    for src in sources:
        path = Path(os.path.abspath(src))
        argv += ["-C", str(path.parent), f"./{path.name}"]
    return argv


def tar_list_argv(sources: Sequence[Path], lists: Sequence[tuple[int, Path]]) -> list[str]:
    """``tar`` packing the entries named in NUL-separated list files, each ``(i, list)``
    holding names (``./<name of sources[i]>/...``) relative to the folder of source i.

    ``--no-recursion``: a folder in a list is sent as an (empty) folder; its contents
    are named by the lists themselves. ``--verbatim-files-from``: no name is an option.
    """
    argv = ["tar", "-c", "-f", "-", "--no-recursion", "--null", "--verbatim-files-from"]
    for index, listing in lists:
        folder = Path(os.path.abspath(sources[index])).parent
        argv += ["-C", str(folder), "-T", str(listing)]
    return argv


def _locked(progress: Progress | None) -> Progress | None:
    """``progress`` called by one stream at a time (callers keep plain counters)."""
    if progress is None:
        return None
    lock = threading.Lock()

    def report(n: int) -> None:
        with lock:
            progress(n)

    return report


def _together(tasks: Sequence[Callable[[], None]]) -> list[BaseException]:
    """Run every task at once, one thread each; wait for all; return their errors."""
    errors: list[BaseException | None] = [None] * len(tasks)

    def run(k: int) -> None:
        try:
            tasks[k]()
        except BaseException as exc:  # returned to the caller
            errors[k] = exc

    threads = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(1, len(tasks))]
    for thread in threads:
        thread.start()
    if tasks:
        run(0)
    for thread in threads:
        thread.join()
    return [e for e in errors if e is not None]


@contextlib.contextmanager
def _packed(argv: Sequence[str]) -> Iterator[BinaryIO]:
    """The output of a local ``tar`` (``argv``); a failed ``tar`` raises on exit."""
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errors,
        )
        assert proc.stdout is not None
        try:
            yield proc.stdout
        except BaseException:
            # A failed or stalled transfer: end tar first, so that a pump still blocked
            # reading its pipe gets EOF instead of holding the pipe we close below.
            proc.kill()
            raise
        finally:
            # After a good transfer tar has finished; after a broken one it is ended.
            proc.stdout.close()
            try:
                code = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
        if code != 0:
            errors.seek(0)
            detail = errors.read().decode(errors="replace").strip()
            raise StagingError(f"could not read the inputs (tar exited {code}): {detail}")


def stage_up(
    transport: Transport,
    sources: Sequence[Path],
    remote_dir: str,
    *,
    attempts: int = 2,
    progress: Progress | None = None,
    expected: Manifest | None = None,
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
    streams: int | None = None,
) -> StageReport:
    """Put files and folders (OME-Zarr, TIFF) into ``remote_dir`` as tar streams.

    ``expected`` is ``inputs_manifest(sources)`` when the caller already has it (a walk
    of 20,000 chunk files is not free); otherwise it is computed here. ``streams``: how
    many tar streams at once (default ``stream_count`` of the files); each carries a
    share of the files over its own channel.
    """
    sources = [Path(s) for s in sources]
    _check_names(sources)
    expected = expected or inputs_manifest(sources)
    started = time.monotonic()
    if remote_manifest(transport, remote_dir, idle_timeout_s) == expected:
        log.info("stage up: %s already holds %s; adopted", remote_dir, expected)
        return StageReport(expected, time.monotonic() - started, 0, adopted=True)
    count = stream_count(expected.files) if streams is None else max(1, streams)
    shares: list[list[Entry]] = []
    if count > 1:
        listing: list[Entry] = []
        _scan(sources, listing)
        shares = split_entries(listing, count)
    progress = _locked(progress)
    last_error: Exception | None = None
    for attempt in range(1, attempts + 1):
        partial = f"{remote_dir}.partial-{uuid.uuid4().hex[:8]}"
        try:
            _send_tar(transport, sources, partial, progress, idle_timeout_s, shares)
            _check_and_replace(transport, remote_dir, partial, expected, idle_timeout_s)
            return StageReport(expected, time.monotonic() - started, attempt)
        except (StagingError, TransportError) as exc:
            last_error = exc
            log.warning("stage up attempt %d/%d failed: %s", attempt, attempts, exc)
            _remove_remote(transport, partial)
    raise StagingError(f"upload to {remote_dir} failed after {attempts} attempts: {last_error}")


# Two steps in one command each, to spare a round trip. The scripts are constants; the
# paths reach them only as positional arguments ($1, $2), never as part of the script.
# Make the folder and unpack into it; -i: read to the end of the input (past tar's end
# blocks), so the command ends after our EOF has arrived, never while it is on its way;
# -b 256: read and write 128 kB at a time instead of tar's 10 kB records; -m: files and
# folders get the time they arrived, not the one they had here (one utimensat a file
# fewer, and a scratch space that purges by mtime does not take a years-old image for
# a forgotten one the day it was staged).
_UNPACK_INTO = 'mkdir -p -- "$1" && exec tar -x -i -b 256 -m -f - -C "$1"'
# Make the folder and, inside it, every folder named (NUL-separated) on stdin: several
# streams then never make the same folder at once (GNU tar reports "Cannot open" when a
# folder it found missing was made by another tar before it could make it).
_FOLDERS = 'mkdir -p -- "$1" && cd -- "$1" && exec xargs -0 -r mkdir -p --'
# Count the files in the partial folder ($2) and their bytes; only when that is exactly
# $3 files and $4 bytes, put it in the place of the destination ($1). Otherwise print what
# arrived and exit 3 (4: the folder could not be listed). One command for the check and
# the rename, so a result is never renamed unchecked and the check costs no round trip.
# awk sums in doubles (exact up to 2**53 bytes, 9 PB) and writes a dot to stderr every
# 1,000 files, so that a long listing is activity, not a silence that times out.
_CHECK_AND_REPLACE = r"""[ -d "$2" ] || exit 4
got=$({ find "$2" -type f -printf "%s\n" || echo x; } | awk '$1 == "x" { bad = 1; next }
  { n++; s += $1; if (n % 1000 == 0) printf "." > "/dev/stderr" }
  END { if (bad) exit 4; printf "%d %.0f", n, s }') || exit 4
[ "$got" = "$3 $4" ] || { printf "%s\n" "$got"; exit 3; }
rm -rf -- "$1" && exec mv -T -- "$2" "$1"
"""
_NOT_AS_EXPECTED, _NOT_LISTED = 3, 4


def _check_and_replace(
    transport: Transport, remote_dir: str, partial: str, expected: Manifest, idle_timeout_s: float
) -> None:
    """Rename ``partial`` to ``remote_dir`` once it holds exactly ``expected``, in one
    command; StagingError (the partial folder left) when it does not."""
    argv = ["sh", "-c", _CHECK_AND_REPLACE, "sh", remote_dir, partial]
    argv += [str(expected.files), str(expected.bytes)]
    result = transport.run(argv, check=False, idle_timeout_s=idle_timeout_s)
    if result.exit_code == _NOT_AS_EXPECTED:
        try:
            files, size = result.stdout.split()
            arrived = str(Manifest(int(files), int(size)))
        except ValueError:  # no awk, or an odd one: not counted either
            arrived = f"nothing countable ({result.stderr.strip('.').strip()[-200:]})"
        raise StagingError(f"{partial}: expected {expected}, arrived {arrived}")
    if result.exit_code == _NOT_LISTED:
        raise StagingError(f"{partial}: expected {expected}, arrived None (cannot list it)")
    if result.exit_code != 0:
        raise CommandError(argv, result.exit_code, result.stdout, result.stderr)


def _send_tar(
    transport: Transport,
    sources: Sequence[Path],
    partial: str,
    progress: Progress | None,
    idle_timeout_s: float,
    shares: Sequence[Sequence[Entry]] = (),
) -> None:
    """Send ``sources`` into ``partial``: whole as one stream, or one stream per share."""

    def send(argv: list[str]) -> None:
        with _packed(argv) as stream:
            transport.run(
                ["sh", "-c", _UNPACK_INTO, "sh", partial],
                stdin=_Counting(stream, progress),
                idle_timeout_s=idle_timeout_s,
            )

    if len(shares) <= 1:
        send(tar_create_argv(sources))
        return
    folders = sorted(
        {os.path.dirname(e.name) for share in shares for e in share if e.size >= 0} - {"."}
    )
    transport.run(
        ["sh", "-c", _FOLDERS, "sh", partial],
        stdin=io.BytesIO(b"".join(os.fsencode(name) + b"\0" for name in folders)),
        idle_timeout_s=idle_timeout_s,
    )
    with tempfile.TemporaryDirectory(prefix="biomero-stage-") as folder:
        argvs = []
        for k, share in enumerate(shares):
            roots = sorted({entry.root for entry in share})
            lists = [
                (i, _listing_file(folder, (e for e in share if e.root == i), f"{k}-{i}"))
                for i in roots
            ]
            argvs.append(tar_list_argv(sources, lists))
        errors = _together([functools.partial(send, argv) for argv in argvs])
    if errors:
        raise errors[0]


def _remove_remote(transport: Transport, path: str) -> None:
    try:
        transport.run(["rm", "-rf", path], idempotent=True)
    except TransportError as exc:
        log.warning("could not remove %s: %s", path, exc)


def check_destination(local_dir: Path, expected: Manifest) -> bool:
    """True when ``local_dir`` already holds exactly ``expected`` (adopt it as it is).

    False when the results may land there: it does not exist, or is an empty folder.
    Anything else raises DestinationError: results never replace or mix with what a
    destination holds.
    """
    if not os.path.lexists(local_dir):
        return False
    if local_dir.is_symlink() or not local_dir.is_dir():
        raise DestinationError(
            f"{local_dir} exists and is not a folder; results never replace it. "
            f"Move it away or choose another destination"
        )
    if not any(local_dir.iterdir()):
        return False
    if local_manifest([local_dir]) == expected:
        return True
    raise DestinationError(
        f"{local_dir} already holds other files; results never replace or mix with what "
        f"is there. Move it away or choose another destination"
    )


def _move_into_place(partial: Path, local_dir: Path) -> None:
    """Rename ``partial`` to ``local_dir``; replaces at most an empty folder."""
    try:
        partial.rename(local_dir)  # rename(2) replaces an empty folder, never a full one
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            raise DestinationError(
                f"{local_dir} was filled by something else during the transfer; it is "
                f"left as it is. Move it away or choose another destination"
            ) from exc
        raise


def stage_down(
    transport: Transport,
    remote_dir: str,
    local_dir: Path,
    *,
    attempts: int = 2,
    progress: Progress | None = None,
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
    streams: int | None = None,
) -> StageReport:
    """Bring ``remote_dir`` back into ``local_dir`` as tar streams.

    ``local_dir`` must not exist, or be an empty folder; one that already holds exactly
    the expected files is adopted. Anything else is refused (DestinationError) and
    left untouched. Only the ``.partial-*`` folder this call makes is ever removed.
    ``streams``: how many tar streams at once (default ``stream_count`` of the files, at
    most ``download_streams()``); each carries a share of the listed files over its own
    channel.
    """
    started = time.monotonic()
    found = remote_listing(transport, remote_dir, idle_timeout_s)
    if found is None:
        raise StagingError(f"{remote_dir} does not exist on the cluster")
    expected, entries, odd = found
    if odd:
        raise UnsafeArchiveError(
            f"refused the results in {remote_dir}: {odd[0]!r} is a link or special file; "
            f"results may hold files and folders only. Nothing was kept"
        )
    if check_destination(local_dir, expected):
        return StageReport(expected, time.monotonic() - started, 0, adopted=True)
    count = stream_count(expected.files, download_streams()) if streams is None else max(1, streams)
    # A name that did not arrive as UTF-8 cannot be named back to tar: one whole stream.
    nameable = all("\ufffd" not in entry.name for entry in entries)
    shares = split_entries(entries, count) if count > 1 and nameable else []
    progress = _locked(progress)
    last_error: Exception | None = None
    for attempt in range(1, attempts + 1):
        partial = local_dir.with_name(f"{local_dir.name}.partial-{uuid.uuid4().hex[:8]}")
        partial.mkdir(parents=True)  # a new name: fails rather than reuse anything
        try:
            _receive(transport, remote_dir, partial, progress, expected, idle_timeout_s, shares)
            arrived = local_manifest([partial])
            if arrived != expected:
                raise StagingError(f"{partial}: expected {expected}, arrived {arrived}")
            _move_into_place(partial, local_dir)
            return StageReport(expected, time.monotonic() - started, attempt)
        except (UnsafeArchiveError, DestinationError):
            shutil.rmtree(partial, ignore_errors=True)
            raise
        except (StagingError, TransportError, tarfile.TarError, OSError) as exc:
            last_error = exc
            log.warning("stage down attempt %d/%d failed: %s", attempt, attempts, exc)
            shutil.rmtree(partial, ignore_errors=True)
    raise StagingError(f"download of {remote_dir} failed after {attempts} attempts: {last_error}")


def copy_results(source: Path, local_dir: Path) -> StageReport:
    """Copy a local results folder to ``local_dir`` under the same rules as stage_down."""
    started = time.monotonic()
    expected, odd = _scan([source])
    if odd:
        raise StagingError(f"{odd[0]} is a link or special file; results hold plain files")
    if check_destination(local_dir, expected):
        return StageReport(expected, time.monotonic() - started, 0, adopted=True)
    partial = local_dir.with_name(f"{local_dir.name}.partial-{uuid.uuid4().hex[:8]}")
    partial.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copytree(source, partial, symlinks=True)  # makes partial; fails if it exists
        arrived = local_manifest([partial])
        if arrived != expected:
            raise StagingError(f"{partial}: expected {expected}, arrived {arrived}")
        _move_into_place(partial, local_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return StageReport(expected, time.monotonic() - started, 1)


# -- unpacking what the cluster sends ------------------------------------------------

_FILE_TYPES = frozenset({tarfile.REGTYPE, tarfile.AREGTYPE})
_COPY_BYTES = 1 << 20
_KINDS = {
    tarfile.SYMTYPE: "a symbolic link",
    tarfile.LNKTYPE: "a hard link",
    tarfile.CHRTYPE: "a character device",
    tarfile.BLKTYPE: "a block device",
    tarfile.FIFOTYPE: "a FIFO",
    tarfile.CONTTYPE: "a contiguous file",
    tarfile.GNUTYPE_SPARSE: "a sparse file",
}


def member_parts(member: tarfile.TarInfo) -> tuple[str, ...]:
    """The path components of an acceptable member; UnsafeArchiveError for anything else.

    Acceptable: a regular file or a folder whose name is relative and has no ``..``.
    ``.`` and empty components are dropped (``./a//b`` is ``a/b``).
    """
    name = member.name
    if member.type not in _FILE_TYPES and member.type != tarfile.DIRTYPE:
        kind = _KINDS.get(member.type, f"an entry of type {member.type!r}")
        raise UnsafeArchiveError(f"{name!r} is {kind}; results may hold files and folders only")
    if name.startswith("/") or "\x00" in name:
        raise UnsafeArchiveError(f"{name!r} is an absolute name; results must stay inside")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise UnsafeArchiveError(f"{name!r} climbs out with '..'; results must stay inside")
    if not parts and member.type != tarfile.DIRTYPE:
        raise UnsafeArchiveError(f"{name!r} is a file without a name")
    return parts


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _umask() -> int | None:
    """This process's umask, read without changing it (Linux); None when unknown."""
    try:
        with open("/proc/self/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return None


def file_mode(member_mode: int) -> int:
    """The mode a result file gets: owner read/write always; group/other read (and x)
    as sent; never setuid, setgid or sticky bits."""
    return (member_mode & 0o755) | 0o600


def _open_folder(part: str, parent: int, name: str) -> int:
    """A descriptor of the folder ``part`` in ``parent``; a file or link there refuses
    the stream (``name`` is the member that led here)."""
    try:
        return os.open(part, _DIR_FLAGS, dir_fd=parent)
    except OSError as exc:
        # O_DIRECTORY | O_NOFOLLOW: a file gives ENOTDIR, a link ENOTDIR or ELOOP.
        if exc.errno in (errno.ENOTDIR, errno.ELOOP):
            raise UnsafeArchiveError(f"{name!r} runs through a file or a link") from None
        raise


class _Unpacker:
    """Writes accepted members under ``dest``; never follows or makes a link.

    Every name is resolved one component at a time, relative to a descriptor of the
    folder above it, each opened with O_DIRECTORY | O_NOFOLLOW: an existing entry must
    be a real folder, and no link is followed, wherever it came from. Folders are made
    with mkdir and files are opened with O_CREAT | O_EXCL | O_NOFOLLOW, so no entry is
    written twice and nothing outside ``dest`` can be reached, whatever the stream says.

    Per file that is one ``open`` (of the last component only, in the folder's
    descriptor, with the file's final mode), its ``write`` calls, an ``fchmod`` only
    when the umask took a bit of that mode, the mtime the cluster sent, and ``close``.
    """

    def __init__(self, dest: Path, limit: Manifest | None) -> None:
        self.dest = dest
        self.limit = limit
        self.files = 0
        self.bytes = 0
        self._umask = _umask()
        self._root = os.open(dest, _DIR_FLAGS)
        # The folder the last member was in: members arrive folder by folder.
        self._at: tuple[str, ...] = ()
        self._at_fd = self._root
        self._made: set[tuple[str, ...]] = {()}

    def close(self) -> None:
        if self._at_fd != self._root:
            os.close(self._at_fd)
        os.close(self._root)
        self._at_fd = self._root = -1

    def folder(self, parts: tuple[str, ...], name: str) -> int:
        """A descriptor of the folder ``parts`` below ``dest`` (made when missing);
        owned by the unpacker, valid until the next call."""
        if parts == self._at:
            return self._at_fd
        fd = self._root
        try:
            for depth in range(1, len(parts) + 1):
                if parts[:depth] not in self._made:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(parts[depth - 1], 0o755, dir_fd=fd)
                    self._made.add(parts[:depth])
                child = _open_folder(parts[depth - 1], fd, name)
                if fd != self._root:
                    os.close(fd)
                fd = child
        except BaseException:
            if fd != self._root:
                os.close(fd)
            raise
        if self._at_fd != self._root:
            os.close(self._at_fd)
        self._at, self._at_fd = parts, fd
        return fd

    def file(self, member: tarfile.TarInfo, parts: tuple[str, ...], reader: _ForwardReader) -> None:
        self.files += 1
        self.bytes += member.size
        if self.limit is not None and (
            self.files > self.limit.files or self.bytes > self.limit.bytes
        ):
            raise StagingError(
                f"the stream holds more than the {self.limit} the folder listed; "
                f"did the job still write to it?"
            )
        folder = self.folder(parts[:-1], member.name)
        mode = file_mode(member.mode)
        try:
            fd = os.open(parts[-1], _FILE_FLAGS, mode, dir_fd=folder)
        except FileExistsError:
            raise UnsafeArchiveError(f"{member.name!r} appears twice in the stream") from None
        try:
            # Straight from the stream's buffer into the file, no copy in between.
            reader.copy_to(fd, member.offset_data, member.size)
            if self._umask is None or mode & self._umask:
                os.fchmod(fd, mode)  # the umask took bits this mode keeps
            # The time the job wrote it (one utimensat, about 1% of the system time).
            with contextlib.suppress(OSError, OverflowError, ValueError):
                os.utime(fd, (member.mtime, member.mtime))
        finally:
            os.close(fd)


class _ForwardReader:
    """A tar stream for ``tarfile.TarFile(mode="r")``, read forward only.

    tarfile's own stream mode (``r|``) copies the rest of its buffer on every read, so
    each 512-byte header cost a copy of up to its whole buffer: 12 s of CPU for 20,000
    files. Here a read copies only what it returns, file data goes from the chunk just
    read straight to the file, and a seek backwards is an error (tarfile never needs
    one when reading members in order).
    """

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        # One buffer, filled again and again (readinto): no allocation per chunk.
        self._view = memoryview(bytearray(_COPY_BYTES))
        self._end = 0  # how much of the buffer the last read filled
        self._at = 0  # how much of that was consumed
        self._start = 0  # stream offset of the buffer's first byte

    def _fill(self) -> bool:
        self._start += self._end
        self._at = 0
        readinto = getattr(self._stream, "readinto", None)
        if readinto is not None:
            self._end = readinto(self._view) or 0
        else:
            chunk = self._stream.read(len(self._view))
            self._end = len(chunk)
            self._view[: self._end] = chunk
        return self._end > 0

    def _piece(self, size: int) -> memoryview:
        """Up to ``size`` bytes at the position (valid until the next fill); consumed."""
        if self._at == self._end and not self._fill():
            return self._view[:0]
        piece = self._view[self._at : min(self._end, self._at + size)]
        self._at += len(piece)
        return piece

    def tell(self) -> int:
        return self._start + self._at

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            raise tarfile.ReadError("a tar stream is never read to its end in one piece")
        parts = []
        while size > 0 and (piece := self._piece(size)):
            size -= len(piece)
            parts.append(bytes(piece))
        return b"".join(parts)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence != os.SEEK_SET or offset < self.tell():
            raise tarfile.ReadError("the tar stream can only be read forward")
        size = offset - self.tell()
        while size > 0:
            piece = self._piece(size)
            if not piece:
                raise tarfile.ReadError("unexpected end of data")
            size -= len(piece)
        return self.tell()

    def copy_to(self, fd: int, offset: int, size: int) -> None:
        """Write ``size`` bytes found at ``offset`` (not before the position) to ``fd``."""
        self.seek(offset)
        while size > 0:
            view = self._piece(size)
            if not view:
                raise tarfile.ReadError("unexpected end of data")
            size -= len(view)
            while view:
                view = view[os.write(fd, view) :]


def unpack(stream: BinaryIO, dest: Path, limit: Manifest | None = None) -> None:
    """Unpack a tar stream from the cluster into ``dest`` (an empty folder of ours).

    Refuses (UnsafeArchiveError) at the first member that is not a plain file or
    folder inside ``dest``; with ``limit``, stops (StagingError) at the first byte
    beyond what the folder's listing announced. Memory stays flat: members are
    forgotten once written.
    """
    unpacker = _Unpacker(dest, limit)
    reader = _ForwardReader(stream)
    # TarFile parses the headers (GNU and pax names included) as it would for its own
    # extraction; members are then checked and written by us, never by tarfile.
    try:
        with tarfile.TarFile(fileobj=reader, mode="r") as tar:  # type: ignore[arg-type]
            while (member := tar.next()) is not None:
                parts = member_parts(member)
                if member.type == tarfile.DIRTYPE:
                    unpacker.folder(parts, member.name)
                else:
                    unpacker.file(member, parts, reader)
                tar.members.clear()  # tarfile keeps every member it read; we need none
    finally:
        unpacker.close()


# The unpacking process: ``python -c`` this, with the destination and the limit.
_CHILD = "import sys; from biomeroworker.staging import unpack_main; sys.exit(unpack_main())"
_PIPE_BYTES = 1 << 20


def unpack_main(argv: Sequence[str] | None = None) -> int:
    """Unpack the tar stream on stdin into ``argv[0]``, held to ``argv[1]`` files and
    ``argv[2]`` bytes: the body of the unpacking process. A failure is one JSON line on
    stderr (``kind``: unsafe, staging or other) and exit status 1."""
    dest, files, size = sys.argv[1:4] if argv is None else argv
    try:
        with os.fdopen(0, "rb", buffering=0, closefd=False) as stream:
            unpack(stream, Path(dest), Manifest(int(files), int(size)))
    except UnsafeArchiveError as exc:
        failure = {"kind": "unsafe", "message": str(exc)}
    except StagingError as exc:
        failure = {"kind": "staging", "message": str(exc)}
    except Exception as exc:  # reported to the parent, which decides
        failure = {"kind": "other", "message": f"{type(exc).__name__}: {exc}"}
    else:
        return 0
    sys.stderr.write(json.dumps(failure) + "\n")
    return 1


class _Unpacking:
    """Our unpacker reading one pipe, in a process of its own.

    In its own process it takes none of this process's GIL, which paramiko needs to
    receive the stream: receiving and unpacking run side by side on two cores, and
    several streams unpack without queueing for one lock. It runs ``unpack`` (the same
    code, the same refusals) from this very package.
    """

    def __init__(self, read_fd: int, dest: Path, limit: Manifest) -> None:
        root = str(Path(__file__).resolve().parents[1])
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p),
        }
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _CHILD, str(dest), str(limit.files), str(limit.bytes)],
                stdin=read_fd,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=env,
            )
        finally:
            os.close(read_fd)

    def finish(self, timeout_s: float) -> BaseException | None:
        """Wait for the end of the stream to be written; the unpacker's error, if any."""
        try:
            _, err = self.proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return StagingError(f"the unpacker wrote nothing for {timeout_s:g} s; stopped it")
        if self.proc.returncode == 0:
            return None
        text = err.decode(errors="replace").strip()
        try:
            failure = json.loads(text.splitlines()[-1])
            kind, message = failure["kind"], failure["message"]
        except (ValueError, IndexError, KeyError, TypeError):
            kind, message = "other", f"exit status {self.proc.returncode}: {text[-500:]}"
        if kind == "unsafe":
            return UnsafeArchiveError(message)
        if kind == "staging":
            return StagingError(message)
        return StagingError(f"could not unpack the results: {message}")


class _UnpackingHere:
    """``unpack`` on a thread of this process: for small downloads, where starting a
    Python process (0.1-0.17 s measured here) costs more than sharing the GIL with
    paramiko for a moment. Same code, same refusals, same ``finish``."""

    def __init__(self, read_fd: int, dest: Path, limit: Manifest) -> None:
        self.error: BaseException | None = None
        self.stream = os.fdopen(read_fd, "rb", buffering=0)
        self.thread = threading.Thread(target=self._run, args=(dest, limit), daemon=True)
        self.thread.start()

    def _run(self, dest: Path, limit: Manifest) -> None:
        try:
            with self.stream:
                unpack(self.stream, dest, limit)
                while self.stream.read(_PIPE_BYTES):  # tar's zero padding: let the writer end
                    pass
        except BaseException as exc:  # handed to finish()
            self.error = exc

    def finish(self, timeout_s: float) -> BaseException | None:
        """Wait for the end of the stream to be written; the unpacker's error, if any."""
        self.thread.join(timeout_s)
        if self.thread.is_alive():
            return StagingError(f"the unpacker wrote nothing for {timeout_s:g} s; gave up on it")
        error = self.error
        if error is None or isinstance(error, StagingError):  # UnsafeArchiveError included
            return error
        return StagingError(f"could not unpack the results: {type(error).__name__}: {error}")


# Downloads up to this size are unpacked on a thread here, larger ones in a process.
# Measured on 2 cores (stage_down, thread against process, medians of 5): the thread
# won by 0.05-0.12 s up to 1,000 files and 150 MB (200 files / 20 MB 0.16 against
# 0.23 s, 1,000 / 100 MB 0.64 against 0.71 s, 30 / 150 MB 0.40 against 0.50 s); the
# process won from 1,500 files / 150 MB on (0.86 against 0.90 s; 2,000 / 250 MB 1.13
# against 1.25 s), where receiving and unpacking in parallel pays for its start.
_HERE_FILES = 1000
_HERE_BYTES = 128 << 20


def unpacks_here(limit: Manifest) -> bool:
    """Whether a download of ``limit`` is unpacked on a thread here (else in a process)."""
    return limit.files <= _HERE_FILES and limit.bytes <= _HERE_BYTES


def _unpacker(read_fd: int, dest: Path, limit: Manifest) -> _Unpacking | _UnpackingHere:
    if unpacks_here(limit):
        return _UnpackingHere(read_fd, dest, limit)
    return _Unpacking(read_fd, dest, limit)


def _receive(
    transport: Transport,
    remote_dir: str,
    dest: Path,
    progress: Progress | None,
    expected: Manifest,
    idle_timeout_s: float,
    shares: Sequence[Sequence[Entry]],
) -> None:
    """Unpack ``remote_dir`` into ``dest``: whole as one stream, or one per share."""
    if len(shares) <= 1:
        _receive_tar(transport, remote_dir, dest, progress, expected, idle_timeout_s)
        return
    errors = _together(
        [
            functools.partial(
                _receive_tar,
                transport,
                remote_dir,
                dest,
                progress,
                _manifest_of(share),
                idle_timeout_s,
                share,
            )
            for share in shares
        ]
    )
    refused = [e for e in errors if isinstance(e, UnsafeArchiveError)]
    if refused or errors:
        raise (refused or errors)[0]


def _manifest_of(entries: Iterable[Entry]) -> Manifest:
    sizes = [entry.size for entry in entries if entry.size >= 0]
    return Manifest(len(sizes), sum(sizes))


def _receive_tar(
    transport: Transport,
    remote_dir: str,
    dest: Path,
    progress: Progress | None,
    limit: Manifest,
    idle_timeout_s: float,
    share: Sequence[Entry] | None = None,
) -> None:
    """One stream from the cluster into ``dest``: all of ``remote_dir``, or ``share``."""
    argv = ["tar", "-c", "-f", "-", "-C", remote_dir]
    names: BinaryIO | None = None
    if share is None:
        argv.append(".")
    else:
        # The names go to tar's stdin as data, NUL-separated; each starts with "./".
        argv += ["--no-recursion", "--null", "-T", "-"]
        names = io.BytesIO(b"".join(os.fsencode(entry.name) + b"\0" for entry in share))
    read_fd, write_fd = os.pipe()
    with contextlib.suppress(OSError, AttributeError):  # fewer, larger hand-overs
        fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
    os.set_inheritable(write_fd, False)
    unpacking = _unpacker(read_fd, dest, limit)
    pipe = os.fdopen(write_fd, "wb")
    sink = _ProgressSink(pipe, progress)
    failed: BaseException | None = None
    try:
        transport.run(
            argv,
            stdin=names,
            stdout=sink,  # type: ignore[arg-type]
            idle_timeout_s=idle_timeout_s,
        )
    except BaseException as exc:  # raised below, unless the stream was refused
        failed = exc
    finally:
        with contextlib.suppress(BrokenPipeError):  # the reader stopped early: said below
            pipe.close()
        error = unpacking.finish(max(60.0, idle_timeout_s))
    if isinstance(error, UnsafeArchiveError):
        # A refusal wins over whatever the transfer did next: it must not be retried.
        raise UnsafeArchiveError(
            f"refused the results in {remote_dir}: {error}. Nothing was kept; look for "
            f"links or special files in that folder"
        )
    if failed is not None:
        raise failed
    if error is not None:
        raise error


class _ProgressSink:
    """Feeds the unpacking thread; once that thread has stopped, drops the rest.

    Dropping instead of failing lets the remote command run to its end rather than
    stall on a stream nobody reads; the reader's error is reported afterwards.
    """

    def __init__(self, stream: BinaryIO, progress: Progress | None) -> None:
        self._stream = stream
        self._progress = progress
        self._reader_gone = False

    def write(self, chunk: bytes) -> int:
        if not self._reader_gone:
            try:
                self._stream.write(chunk)
            except BrokenPipeError:
                self._reader_gone = True
        if self._progress is not None:
            self._progress(len(chunk))
        return len(chunk)
