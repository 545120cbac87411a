"""Data up to the cluster and results back: one tar stream per run over one channel.

No zip on the worker and no 7z on the login node: a tar stream is written on one side
while the other unpacks it. Uploads are packed by the system ``tar`` (C, no GIL) and
downloads unpacked by Python's tarfile with the ``data`` filter, which refuses members
that would land outside the destination. A transfer lands in a ``.partial-*`` folder, is checked
(file count and bytes) and only then renamed into place, so a broken transfer never
counts as done and a retry starts clean. A destination that already holds exactly the
expected files is adopted, which makes both directions safe to repeat after a crash.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import subprocess
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


class StagingError(BiomeroError):
    """A transfer failed or arrived incomplete, after its retries."""


class UnsafeArchiveError(StagingError):
    """The cluster sent an entry that would land outside the destination; not retried."""


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


def _scan(paths: Iterable[Path]) -> tuple[Manifest, list[Path]]:
    """The manifest, and every entry that is neither a regular file nor a folder."""
    files = size = 0
    odd: list[Path] = []
    pending = [Path(p) for p in paths]
    while pending:
        path = pending.pop()
        info = path.lstat()
        if stat.S_ISREG(info.st_mode):
            files += 1
            size += info.st_size
        elif stat.S_ISDIR(info.st_mode):
            pending.extend(Path(entry.path) for entry in os.scandir(path))
        else:
            odd.append(path)
    return Manifest(files, size), odd


def remote_manifest(transport: Transport, path: str) -> Manifest | None:
    """Count and size of the regular files below ``path``; None when it does not exist."""
    result = transport.run(
        ["find", path, "-type", "f", "-printf", "%s\\n"], check=False, idempotent=True
    )
    if result.exit_code != 0:
        if "No such file" in result.stderr:
            return None
        raise CommandError(list(result.argv), result.exit_code, result.stdout, result.stderr)
    sizes = result.stdout.split()
    return Manifest(len(sizes), sum(int(s) for s in sizes))


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


@contextlib.contextmanager
def _packed(sources: Sequence[Path]) -> Iterator[BinaryIO]:
    """The output of a local ``tar`` over ``sources``; a failed ``tar`` raises on exit."""
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(
            tar_create_argv(sources),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errors,
        )
        assert proc.stdout is not None
        try:
            yield proc.stdout
        finally:
            # After a good transfer tar has finished; after a broken one, closing its
            # pipe ends it.
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
) -> StageReport:
    """Put files and folders (OME-Zarr, TIFF) into ``remote_dir`` as one tar stream.

    ``expected`` is ``inputs_manifest(sources)`` when the caller already has it (a walk
    of 20,000 chunk files is not free); otherwise it is computed here.
    """
    sources = [Path(s) for s in sources]
    _check_names(sources)
    expected = expected or inputs_manifest(sources)
    started = time.monotonic()
    if remote_manifest(transport, remote_dir) == expected:
        log.info("stage up: %s already holds %s; adopted", remote_dir, expected)
        return StageReport(expected, time.monotonic() - started, 0, adopted=True)
    last_error: Exception | None = None
    for attempt in range(1, attempts + 1):
        partial = f"{remote_dir}.partial-{uuid.uuid4().hex[:8]}"
        try:
            _send_tar(transport, sources, partial, progress)
            arrived = remote_manifest(transport, partial)
            if arrived != expected:
                raise StagingError(f"{partial}: expected {expected}, arrived {arrived}")
            transport.run(["rm", "-rf", remote_dir], idempotent=True)
            transport.run(["mv", "-T", partial, remote_dir])
            return StageReport(expected, time.monotonic() - started, attempt)
        except (StagingError, TransportError) as exc:
            last_error = exc
            log.warning("stage up attempt %d/%d failed: %s", attempt, attempts, exc)
            _remove_remote(transport, partial)
    raise StagingError(f"upload to {remote_dir} failed after {attempts} attempts: {last_error}")


def _send_tar(
    transport: Transport, sources: Sequence[Path], partial: str, progress: Progress | None
) -> None:
    transport.run(["mkdir", "-p", partial], idempotent=True)
    with _packed(sources) as stream:
        transport.run(["tar", "-x", "-f", "-", "-C", partial], stdin=_Counting(stream, progress))


def _remove_remote(transport: Transport, path: str) -> None:
    try:
        transport.run(["rm", "-rf", path], idempotent=True)
    except TransportError as exc:
        log.warning("could not remove %s: %s", path, exc)


def stage_down(
    transport: Transport,
    remote_dir: str,
    local_dir: Path,
    *,
    attempts: int = 2,
    progress: Progress | None = None,
) -> StageReport:
    """Bring ``remote_dir`` back into ``local_dir`` as one tar stream."""
    started = time.monotonic()
    expected = remote_manifest(transport, remote_dir)
    if expected is None:
        raise StagingError(f"{remote_dir} does not exist on the cluster")
    if local_dir.is_dir() and local_manifest([local_dir]) == expected:
        return StageReport(expected, time.monotonic() - started, 0, adopted=True)
    last_error: Exception | None = None
    for attempt in range(1, attempts + 1):
        partial = local_dir.with_name(f"{local_dir.name}.partial-{uuid.uuid4().hex[:8]}")
        partial.mkdir(parents=True)
        try:
            _receive_tar(transport, remote_dir, partial, progress)
            arrived = local_manifest([partial])
            if arrived != expected:
                raise StagingError(f"{partial}: expected {expected}, arrived {arrived}")
            if local_dir.exists():
                shutil.rmtree(local_dir)
            partial.rename(local_dir)
            return StageReport(expected, time.monotonic() - started, attempt)
        except UnsafeArchiveError:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        except (StagingError, TransportError, tarfile.TarError, OSError) as exc:
            last_error = exc
            log.warning("stage down attempt %d/%d failed: %s", attempt, attempts, exc)
            shutil.rmtree(partial, ignore_errors=True)
    raise StagingError(f"download of {remote_dir} failed after {attempts} attempts: {last_error}")


def _tar_reader(fd: int, dest: Path, errors: list[BaseException]) -> None:
    try:
        with os.fdopen(fd, "rb") as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            # The "data" filter refuses absolute names, "..", links that point outside
            # dest (absolute or relative), devices and FIFOs, and drops setuid bits.
            tar.extractall(dest, filter="data")
    except BaseException as exc:  # surfaced by the caller
        errors.append(exc)


def _receive_tar(
    transport: Transport, remote_dir: str, dest: Path, progress: Progress | None
) -> None:
    read_fd, write_fd = os.pipe()
    errors: list[BaseException] = []
    reader = threading.Thread(target=_tar_reader, args=(read_fd, dest, errors), daemon=True)
    reader.start()
    pipe = os.fdopen(write_fd, "wb")
    sink = _ProgressSink(pipe, progress)
    try:
        transport.run(["tar", "-c", "-f", "-", "-C", remote_dir, "."], stdout=sink)  # type: ignore[arg-type]
    finally:
        with contextlib.suppress(BrokenPipeError):  # the reader stopped early: said below
            pipe.close()
        reader.join(timeout=60)
    if errors:
        error = errors[0]
        if isinstance(error, tarfile.FilterError):
            raise UnsafeArchiveError(
                f"refused the results in {remote_dir}: {error}. Nothing was kept; look for "
                f"links in that folder that point outside it"
            )
        raise StagingError(f"could not unpack the results: {error}")


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
