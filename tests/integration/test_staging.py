"""Staging over the real transports: round trips, adoption, broken streams, hostile names.

Every test runs over the SSH transport (real sshd of localslurm) and the local one.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import pytest

from biomeroworker.errors import ConnectError
from biomeroworker.staging import (
    Manifest,
    StagingError,
    UnsafeArchiveError,
    stage_down,
    stage_up,
)
from biomeroworker.transport.base import CommandResult
from biomeroworker.transport.local import LocalTransport
from biomeroworker.transport.ssh import SSHOptions, SSHTransport

MARKER = "biomero-pwned-staging"  # what an injected `touch` would create
HOSTILE_NAMES = [
    "it's.tif",
    'say "hi".tif',
    "$(touch biomero-pwned-staging).tif",
    "`touch biomero-pwned-staging`",
    "a;touch biomero-pwned-staging",
    "with space.ome.zarr",
    "line1\nline2.tif",
    "-rf",
    "--to-command=touch biomero-pwned-staging",
    "*",
    "back\\slash",
]


def _zarr(root: Path, name: str = "img.ome.zarr", chunks: int = 40) -> Path:
    folder = root / name
    for n in range(chunks):
        chunk = folder / "0" / "0" / str(n // 10) / str(n % 10)
        chunk.parent.mkdir(parents=True, exist_ok=True)
        chunk.write_bytes(os.urandom(20_000 + n))
    (folder / ".zattrs").write_text('{"multiscales": [{"version": "0.4"}]}')
    (folder / "0" / ".zarray").write_text('{"chunks": [1, 1, 64, 64]}')
    return folder


def _tiff(root: Path, name: str, size: int = 300_000) -> Path:
    path = root / name
    path.write_bytes(b"II*\x00" + os.urandom(size))
    return path


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


def _remote_dir(transport) -> str:  # type: ignore[no-untyped-def]
    base = f"staging-{uuid.uuid4().hex[:8]}"
    transport.run(["mkdir", "-p", base])
    return f"{base}/data/in"


def _siblings(transport, remote_dir: str) -> list[str]:  # type: ignore[no-untyped-def]
    parent = remote_dir.rsplit("/", 1)[0]
    return transport.run(["ls", "-A", parent]).stdout.split()


class FakeCutTransport:
    """A real transport whose first ``cuts`` streams break midway, as a dropped link would.

    Uploads lose the end of their input (an input shorter than ``after_bytes``, such as
    a list of folders to make, passes whole and is not counted); downloads lose the end of
    their output and then report the connection as dropped. Everything else goes to the
    real transport.
    """

    def __init__(self, real, *, cuts: int, after_bytes: int = 150_000) -> None:  # type: ignore[no-untyped-def]
        self.real = real
        self.cuts = cuts
        self.after_bytes = after_bytes
        self._lock = threading.Lock()  # parallel streams take cuts from several threads

    def _take_cut(self) -> bool:
        with self._lock:
            if self.cuts == 0:
                return False
            self.cuts -= 1
            return True

    @property
    def commands_run(self) -> int:
        return self.real.commands_run

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: BinaryIO | None = None,
        stdout: BinaryIO | None = None,
        **kwargs: object,
    ) -> CommandResult:
        if self.cuts == 0 or (stdin is None and stdout is None):
            return self.real.run(argv, stdin=stdin, stdout=stdout, **kwargs)
        if stdout is None:
            head = stdin.read(self.after_bytes + 1)  # type: ignore[union-attr]
            # Only a stream long enough to break midway is cut, and only while cuts are left.
            if len(head) > self.after_bytes and self._take_cut():
                head = head[: self.after_bytes]
            else:
                head += stdin.read()  # type: ignore[union-attr]
            return self.real.run(argv, stdin=io.BytesIO(head), stdout=stdout, **kwargs)
        if not self._take_cut():
            return self.real.run(argv, stdin=stdin, stdout=stdout, **kwargs)
        # A download (its stdin, if any, is the list of names to send): cut its output.
        kept = _FirstBytes(stdout, self.after_bytes)
        self.real.run(argv, stdin=stdin, stdout=kept, **kwargs)
        raise ConnectError("FakeCutTransport: connection dropped mid-stream")

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.real, name)


class _FirstBytes:
    def __init__(self, stream, limit: int) -> None:  # type: ignore[no-untyped-def]
        self.stream = stream
        self.left = limit

    def write(self, chunk: bytes) -> int:
        if self.left > 0:
            self.stream.write(chunk[: self.left])
            self.left -= len(chunk)
        return len(chunk)


def test_round_trip_keeps_every_file_and_byte(transport, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "other").mkdir()
    sources = [
        _zarr(tmp_path / "src"),
        _tiff(tmp_path / "src", "a.tif"),
        _tiff(tmp_path / "other", "b.tiff", 1000),
    ]
    remote = _remote_dir(transport)
    up = stage_up(transport, sources, remote)
    down = stage_down(transport, remote, tmp_path / "back")
    expected = {**_digests(tmp_path / "src"), **_digests(tmp_path / "other")}
    assert _digests(tmp_path / "back") == expected
    assert up.manifest == down.manifest
    assert up.manifest.files == len(expected)


def test_uploads_carry_their_arrival_time_not_the_mtime_here(transport, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = _zarr(tmp_path / "src", chunks=3)
    tif = _tiff(tmp_path / "src", "old.tif")
    for path in [tif, *src.rglob("*")]:
        os.utime(path, (1_000_000_000, 1_000_000_000))  # 2001
    remote = _remote_dir(transport)
    started = int(time.time()) - 5
    stage_up(transport, [src, tif], remote)
    listed = transport.run(["find", remote, "-printf", "%T@\\n"]).stdout.split()
    assert len(listed) == len(list(src.rglob("*"))) + 3  # the folder, the Zarr, the TIFF
    assert min(float(t) for t in listed) >= started


def test_an_upload_is_a_check_a_stream_and_a_checked_rename(transport, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    remote = _remote_dir(transport)
    before = transport.commands_run
    report = stage_up(transport, [_zarr(tmp_path / "src")], remote, streams=1)
    assert transport.commands_run - before == 3
    assert transport.run(["find", remote, "-type", "f"]).stdout.count("\n") == 42
    assert report.manifest.files == 42
    assert _siblings(transport, remote) == ["in"]


def test_second_stage_up_adopts_without_transfer(transport, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sources = [_zarr(tmp_path), _tiff(tmp_path, "a.tif")]
    remote = _remote_dir(transport)
    stage_up(transport, sources, remote)
    before = transport.commands_run
    again = stage_up(transport, sources, remote)
    assert again.adopted
    assert again.attempts == 0
    assert transport.commands_run - before == 1  # the manifest check, nothing else


def test_second_stage_down_adopts_without_transfer(transport, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    remote = _remote_dir(transport)
    stage_up(transport, [_zarr(tmp_path / "src")], remote)
    stage_down(transport, remote, tmp_path / "back")
    before = transport.commands_run
    again = stage_down(transport, remote, tmp_path / "back")
    assert again.adopted
    assert transport.commands_run - before == 1


def test_broken_upload_is_retried_and_leaves_no_partial(transport, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = _zarr(tmp_path / "src")
    remote = _remote_dir(transport)
    report = stage_up(FakeCutTransport(transport, cuts=1), [src], remote)
    assert report.attempts == 2
    assert _siblings(transport, remote) == ["in"]
    stage_down(transport, remote, tmp_path / "back")
    assert _digests(tmp_path / "back") == _digests(tmp_path / "src")


def test_upload_that_always_breaks_leaves_nothing_behind(transport, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    remote = _remote_dir(transport)
    with pytest.raises(StagingError, match="failed after 2 attempts"):
        stage_up(FakeCutTransport(transport, cuts=2), [_zarr(tmp_path)], remote)
    assert _siblings(transport, remote) == []


def test_broken_download_is_retried_and_leaves_no_partial(transport, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    remote = _remote_dir(transport)
    stage_up(transport, [_zarr(tmp_path / "src")], remote)
    report = stage_down(FakeCutTransport(transport, cuts=1), remote, tmp_path / "dest" / "out")
    assert report.attempts == 2
    assert os.listdir(tmp_path / "dest") == ["out"]
    assert _digests(tmp_path / "dest" / "out") == _digests(tmp_path / "src")


def test_download_that_always_breaks_leaves_no_local_folder(transport, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    remote = _remote_dir(transport)
    stage_up(transport, [_zarr(tmp_path / "src")], remote)
    (tmp_path / "dest").mkdir()
    with pytest.raises(StagingError, match="failed after 2 attempts"):
        stage_down(FakeCutTransport(transport, cuts=2), remote, tmp_path / "dest" / "out")
    assert os.listdir(tmp_path / "dest") == []


def test_hostile_names_arrive_intact_and_nothing_executes(transport, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "src"
    src.mkdir()
    sources = [_tiff(src, name, 100) for name in HOSTILE_NAMES]
    inner = src / "-folder $(x)"
    inner.mkdir()
    for name in HOSTILE_NAMES:
        _tiff(inner, name, 10)
    sources.append(inner)
    remote = _remote_dir(transport)
    stage_up(transport, sources, remote)
    listing = transport.run(["find", remote, "-type", "f", "-printf", "%P\\0"]).stdout
    assert sorted(listing.split("\0")[:-1]) == sorted(_digests(src))
    stage_down(transport, remote, tmp_path / "back")
    assert _digests(tmp_path / "back") == _digests(src)
    # Commands run in the cluster home and in our working directory: neither has it.
    assert not transport.run(["test", "-e", MARKER], check=False).ok
    assert not Path(MARKER).exists()


def test_download_refuses_links_out_of_the_destination(transport, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    remote = _remote_dir(transport)
    stage_up(transport, [_tiff(tmp_path, "mask.tif")], remote)
    # A workflow that leaves a link to a file outside its output folder.
    transport.run(["ln", "-s", "../../../../../../etc/passwd", f"{remote}/leak.tif"])
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(UnsafeArchiveError, match=r"leak\.tif"):
        stage_down(transport, remote, dest / "out")
    assert os.listdir(dest) == []


def test_download_refuses_absolute_links(transport, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    remote = _remote_dir(transport)
    stage_up(transport, [_tiff(tmp_path, "mask.tif")], remote)
    transport.run(["ln", "-s", "/etc/passwd", f"{remote}/leak.tif"])
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(UnsafeArchiveError):
        stage_down(transport, remote, dest / "out")
    assert os.listdir(dest) == []


def _tree(root: Path) -> tuple[dict[str, str], list[str]]:
    """Every file's digest and every folder under ``root``."""
    folders = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_dir())
    return _digests(root), folders


def test_parallel_streams_carry_every_file_byte_and_empty_folder(transport, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "other").mkdir()
    zarr = _zarr(tmp_path / "src", chunks=60)
    (zarr / "empty" / "deeper").mkdir(parents=True)
    sources = [zarr, _tiff(tmp_path / "src", "a.tif"), _tiff(tmp_path / "other", "b.tif", 999)]
    remote = _remote_dir(transport)
    up = stage_up(transport, sources, remote, streams=3)
    down = stage_down(transport, remote, tmp_path / "back", streams=3)
    src_digests, src_folders = _tree(tmp_path / "src")
    back_digests, back_folders = _tree(tmp_path / "back")
    assert back_digests == {**src_digests, **_digests(tmp_path / "other")}
    assert back_folders == src_folders
    assert up.manifest == down.manifest == Manifest(len(back_digests), up.manifest.bytes)
    assert _siblings(transport, remote) == ["in"]


def test_parallel_streams_keep_hostile_names(transport, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "src"
    inner = src / "-folder $(x)"
    inner.mkdir(parents=True)
    for name in HOSTILE_NAMES:
        _tiff(inner, name, 10)
        _tiff(inner, f"2-{name}", 10)
    remote = _remote_dir(transport)
    stage_up(transport, [inner], remote, streams=4)
    stage_down(transport, remote, tmp_path / "back", streams=4)
    assert _digests(tmp_path / "back") == _digests(src)
    assert not transport.run(["test", "-e", MARKER], check=False).ok
    assert not Path(MARKER).exists()


def test_a_broken_parallel_download_is_retried_and_leaves_no_partial(
    transport, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    remote = _remote_dir(transport)
    stage_up(transport, [_zarr(tmp_path / "src", chunks=60)], remote)
    cut = FakeCutTransport(transport, cuts=1, after_bytes=50_000)
    report = stage_down(cut, remote, tmp_path / "dest" / "out", streams=3)
    assert report.attempts == 2
    assert os.listdir(tmp_path / "dest") == ["out"]
    assert _digests(tmp_path / "dest" / "out") == _digests(tmp_path / "src")


def test_a_broken_parallel_upload_is_retried_and_leaves_no_partial(
    transport, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    src = _zarr(tmp_path / "src", chunks=60)
    remote = _remote_dir(transport)
    report = stage_up(
        FakeCutTransport(transport, cuts=1, after_bytes=50_000), [src], remote, streams=3
    )
    assert report.attempts == 2
    assert _siblings(transport, remote) == ["in"]
    stage_down(transport, remote, tmp_path / "back")
    assert _digests(tmp_path / "back") == _digests(tmp_path / "src")


def test_parallel_download_refuses_links(transport, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    remote = _remote_dir(transport)
    stage_up(transport, [_zarr(tmp_path / "src")], remote)
    transport.run(["ln", "-s", "../../../../../../etc/passwd", f"{remote}/img.ome.zarr/leak.tif"])
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(UnsafeArchiveError, match=r"leak\.tif"):
        stage_down(transport, remote, dest / "out", streams=3)
    assert os.listdir(dest) == []


def test_ssh_transport_negotiates_aes_gcm_for_fast_streams(ssh_transport) -> None:  # type: ignore[no-untyped-def]
    ssh_transport.run(["true"])
    session = ssh_transport._client().get_transport()
    assert session.local_cipher == "aes128-gcm@openssh.com"
    assert session.remote_cipher == "aes128-gcm@openssh.com"


# -- streams time out on silence, never on length ----------------------------------------

# Runs the command given after the rate (bytes/s) and passes its output on at that rate.
# A fixed program text handed to `python3 -c`; the command is an argument list.
PACER = """
import subprocess, sys, time
rate = float(sys.argv[1])
proc = subprocess.Popen(sys.argv[2:], stdout=subprocess.PIPE)
out, sent, started = sys.stdout.buffer, 0, time.monotonic()
while chunk := proc.stdout.read1(8192):
    out.write(chunk)
    out.flush()
    sent += len(chunk)
    time.sleep(max(0.0, sent / rate - (time.monotonic() - started)))
sys.exit(proc.wait())
"""
# Passes on the first N bytes of the command's output, then goes silent for a while.
STALLER = """
import subprocess, sys, time
limit = int(sys.argv[1])
proc = subprocess.Popen(sys.argv[2:], stdout=subprocess.PIPE)
sys.stdout.buffer.write(proc.stdout.read(limit))
sys.stdout.buffer.flush()
time.sleep(20)
"""


class _PacedReader:
    """The producing side of an upload, slowed to ``rate`` bytes per second."""

    def __init__(self, stream: BinaryIO, rate: float) -> None:
        self.stream = stream
        self.rate = rate
        self.sent = 0
        self.started = time.monotonic()

    def read(self, n: int = -1) -> bytes:
        chunk = self.stream.read(8192)
        self.sent += len(chunk)
        time.sleep(max(0.0, self.sent / self.rate - (time.monotonic() - self.started)))
        return chunk


class _StallingReader:
    """The producing side of an upload, silent after ``limit`` bytes until released."""

    def __init__(self, stream: BinaryIO, limit: int, release: threading.Event) -> None:
        self.stream = stream
        self.left = limit
        self.release = release

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            self.release.wait()
            return b""
        chunk = self.stream.read(min(self.left, 8192))
        self.left -= len(chunk)
        return chunk


class SlowTransport:
    """A real transport whose streams are slowed (``rate``) or stall (``stall_after``).

    Uploads are slowed on our side (the tar stream we send); downloads on the cluster's
    side, by running the cluster's ``tar`` under a pacing (or stalling) Python there.
    Every other command goes to the real transport unchanged.
    """

    def __init__(self, real, *, rate: float = 0, stall_after: int = 0) -> None:  # type: ignore[no-untyped-def]
        self.real = real
        self.rate = rate
        self.stall_after = stall_after
        self.release = threading.Event()

    @property
    def commands_run(self) -> int:
        return self.real.commands_run

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: BinaryIO | None = None,
        stdout: BinaryIO | None = None,
        **kwargs: object,
    ) -> CommandResult:
        if stdin is not None:
            stdin = (
                _StallingReader(stdin, self.stall_after, self.release)  # type: ignore[assignment]
                if self.stall_after
                else _PacedReader(stdin, self.rate)
            )
        if stdout is not None:
            program, arg = (STALLER, self.stall_after) if self.stall_after else (PACER, self.rate)
            argv = ["python3", "-c", program, str(arg), *argv]
        return self.real.run(argv, stdin=stdin, stdout=stdout, **kwargs)

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.real, name)


@pytest.fixture(params=["ssh", "local"])
def impatient_transport(request, cluster, tmp_path_factory):  # type: ignore[no-untyped-def]
    """A transport whose commands may take 1 s at most."""
    if request.param == "ssh":
        transport = SSHTransport(SSHOptions(cluster.alias, command_timeout_s=1))
        yield transport
        transport.close()
    else:
        yield LocalTransport(home=tmp_path_factory.mktemp("impatient"), command_timeout_s=1)


def test_transfers_far_longer_than_the_command_timeout_succeed(  # type: ignore[no-untyped-def]
    impatient_transport, tmp_path: Path
) -> None:
    src = tmp_path / "src" / "img.ome.zarr"
    src.mkdir(parents=True)
    (src / "big").write_bytes(os.urandom(2_400_000))
    remote = _remote_dir(impatient_transport)
    slow = SlowTransport(impatient_transport, rate=220_000)  # about 11 s each way
    up = stage_up(slow, [src], remote, idle_timeout_s=10, attempts=1)
    down = stage_down(slow, remote, tmp_path / "back", idle_timeout_s=10, attempts=1)
    assert up.seconds > 10 and down.seconds > 10  # each 10x the 1 s command timeout
    assert up.attempts == down.attempts == 1
    assert _digests(tmp_path / "back") == _digests(tmp_path / "src")


def test_a_stalled_upload_fails_once_nothing_moves(transport, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "src" / "img.ome.zarr"
    src.mkdir(parents=True)
    (src / "big").write_bytes(os.urandom(1_000_000))
    remote = _remote_dir(transport)
    stalling = SlowTransport(transport, stall_after=100_000)
    started = time.monotonic()
    try:
        with pytest.raises(StagingError, match=r"stalled: no data moved for 1\.5 s"):
            stage_up(stalling, [src.parent], remote, idle_timeout_s=1.5, attempts=1)
    finally:
        stalling.release.set()
    assert time.monotonic() - started < 30  # not the 60 s command timeout, not forever
    assert _siblings(transport, remote) == []


def test_a_stalled_download_fails_once_nothing_moves(transport, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    remote = _remote_dir(transport)
    stage_up(transport, [_zarr(tmp_path / "src")], remote)
    dest = tmp_path / "dest"
    dest.mkdir()
    started = time.monotonic()
    with pytest.raises(StagingError, match=r"stalled: no data moved for 1\.5 s"):
        stage_down(
            SlowTransport(transport, stall_after=100_000),
            remote,
            dest / "out",
            idle_timeout_s=1.5,
            attempts=1,
        )
    assert time.monotonic() - started < 30
    assert os.listdir(dest) == []
