"""What comes back from the cluster, and where it lands, without services.

Tar streams are built here, member by member, as a hostile cluster account could send
them; the transport is the real LocalTransport rooted in a temporary home. After every
refused stream nothing outside the destination has changed.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from biomeroworker import staging
from biomeroworker.errors import ConnectError
from biomeroworker.localdirs import MARKER, FolderTakenError, claim, owner_of, release
from biomeroworker.run_record import RunRecord
from biomeroworker.runs import log_tail
from biomeroworker.staging import (
    _CHECK_AND_REPLACE,
    MAX_STREAMS,
    DestinationError,
    Entry,
    Manifest,
    StagingError,
    UnsafeArchiveError,
    _check_and_replace,
    copy_results,
    download_streams,
    local_manifest,
    split_entries,
    stage_down,
    stream_count,
    unpack,
    unpacks_here,
)
from biomeroworker.transport.base import CommandResult
from biomeroworker.transport.local import LocalTransport


@pytest.fixture
def transport(tmp_path: Path) -> LocalTransport:
    home = tmp_path / "home"
    home.mkdir()
    return LocalTransport(home=home)


def _member(name: str, kind: bytes = tarfile.REGTYPE, **fields: Any) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = fields.pop("mode", 0o755 if kind == tarfile.DIRTYPE else 0o644)
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def _tar(*entries: tarfile.TarInfo | tuple[tarfile.TarInfo, bytes], pax: bool = False) -> bytes:
    """A tar stream of exactly these members; a file's bytes come with it as a pair."""
    buf = io.BytesIO()
    fmt = tarfile.PAX_FORMAT if pax else tarfile.GNU_FORMAT
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for entry in entries:
            info, data = entry if isinstance(entry, tuple) else (entry, b"")
            if info.type in (tarfile.REGTYPE, tarfile.AREGTYPE):
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return buf.getvalue()


def _file(name: str, data: bytes = b"payload") -> tuple[tarfile.TarInfo, bytes]:
    return _member(name), data


def _snapshot(root: Path, skip: Path) -> dict[str, object]:
    """Every entry under ``root`` except ``skip``: kind, mode and content or target."""
    seen: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if here == skip or skip in here.parents:
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            path = here / name
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                what: object = ("link", os.readlink(path))
            elif stat.S_ISREG(info.st_mode):
                what = ("file", info.st_mode, hashlib.sha256(path.read_bytes()).hexdigest())
            else:
                what = ("other", info.st_mode)
            seen[str(path.relative_to(root))] = what
    return seen


@pytest.fixture
def world(tmp_path: Path) -> tuple[Path, Path]:
    """An empty destination, and files outside it that a hostile stream would aim at."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("keep me")
    (outside / "sub").mkdir()
    (outside / "sub" / "deep.txt").write_text("keep me too")
    dest = tmp_path / "work" / "dest"
    dest.mkdir(parents=True)
    return tmp_path, dest


def _cve_2025_4517_chain(outside: Path) -> list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]]:
    """Folders with long names, each shadowed by a one-letter symlink, so that a path
    checker resolving the chain with os.path.realpath passes PATH_MAX and stops; a link
    at the end of the chain that leads back to the top; one that climbs from there to
    ``outside``; and a file written through it. With tarfile's "data" filter on an
    unpatched Python (3.11.7 here) this overwrites ``outside/victim.txt``."""
    long_name = "d" * 247
    steps = "abcdefghijklmnop"
    entries: list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]] = []
    path = ""
    for step in steps:
        entries.append(_member(os.path.join(path, long_name), tarfile.DIRTYPE))
        entries.append(_member(os.path.join(path, step), tarfile.SYMTYPE, linkname=long_name))
        path = os.path.join(path, long_name)
    top = os.path.join(*steps, "l" * 254)
    entries.append(_member(top, tarfile.SYMTYPE, linkname="../" * len(steps)))
    climb = os.path.relpath(outside, outside.parent / "work" / "dest")
    entries.append(_member("escape", tarfile.SYMTYPE, linkname=f"{top}/{climb}"))
    entries.append(_file("escape/victim.txt", b"overwritten"))
    return entries


def _hostile_streams(outside: Path) -> dict[str, bytes]:
    victim = outside / "victim.txt"
    return {
        "symlink chain (CVE-2025-4517 style)": _tar(*_cve_2025_4517_chain(outside), pax=True),
        "relative symlink out, then a file through it": _tar(
            _member("out", tarfile.SYMTYPE, linkname="../../outside"),
            _file("out/victim.txt", b"overwritten"),
        ),
        "symlink inside the folder": _tar(
            _file("a.txt"), _member("b.txt", tarfile.SYMTYPE, linkname="a.txt")
        ),
        "hard link to a file outside, then a write to it": _tar(
            _member("h", tarfile.LNKTYPE, linkname=str(victim)),
            _file("h", b"overwritten"),
        ),
        "hard link climbing out": _tar(
            _member("h", tarfile.LNKTYPE, linkname="../../outside/victim.txt"),
            _file("h", b"overwritten"),
        ),
        "hard link to a member": _tar(
            _file("a.txt"), _member("b.txt", tarfile.LNKTYPE, linkname="a.txt")
        ),
        "dot-dot file": _tar(_file("../../outside/victim.txt", b"overwritten")),
        "dot-dot in the middle": _tar(_file("x/../../../outside/victim.txt", b"overwritten")),
        "dot-dot folder": _tar(_member("../../outside/new", tarfile.DIRTYPE)),
        "absolute file": _tar(_file(str(victim), b"overwritten")),
        "absolute folder": _tar(_member(str(outside / "newdir"), tarfile.DIRTYPE)),
        "pax path climbing out": _tar(
            (_member("fine.txt", pax_headers={"path": "../../outside/victim.txt"}), b"over"),
            pax=True,
        ),
        "character device": _tar(_member("null", tarfile.CHRTYPE, devmajor=1, devminor=3)),
        "block device": _tar(_member("disk", tarfile.BLKTYPE, devmajor=8, devminor=0)),
        "fifo": _tar(_member("pipe", tarfile.FIFOTYPE)),
        "contiguous file": _tar(_member("c", tarfile.CONTTYPE)),
        "file then a path through it": _tar(_file("a"), _file("a/b")),
        "the same file twice": _tar(_file("a.txt", b"one"), _file("a.txt", b"two")),
    }


HOSTILE_CASES = list(_hostile_streams(Path("/x")))


@pytest.mark.parametrize("case", HOSTILE_CASES)
def test_hostile_streams_are_refused_and_nothing_outside_changes(
    case: str, world: tuple[Path, Path]
) -> None:
    root, dest = world
    stream = _hostile_streams(root / "outside")[case]
    before = _snapshot(root, skip=dest)
    with pytest.raises(UnsafeArchiveError):
        unpack(io.BytesIO(stream), dest)
    assert _snapshot(root, skip=dest) == before
    leftovers = [p for p in dest.rglob("*") if p.is_symlink() or not (p.is_file() or p.is_dir())]
    assert leftovers == []


def test_plain_files_and_folders_unpack_with_safe_modes(tmp_path: Path) -> None:
    stream = _tar(
        _member("./", tarfile.DIRTYPE),
        _member("./masks", tarfile.DIRTYPE, mode=0o7777),
        (_member("./masks/a.tif", mode=0o4755), b"tiff"),
        (_member("./table.csv", mode=0o000), b"a,b\n"),
        (_member(".//deep//x/y.txt"), b"implicit folders"),
    )
    dest = tmp_path / "dest"
    dest.mkdir()
    unpack(io.BytesIO(stream), dest)
    assert (dest / "masks" / "a.tif").read_bytes() == b"tiff"
    assert (dest / "deep" / "x" / "y.txt").read_bytes() == b"implicit folders"
    assert stat.S_IMODE((dest / "masks" / "a.tif").stat().st_mode) == 0o755  # no setuid
    assert stat.S_IMODE((dest / "table.csv").stat().st_mode) == 0o600  # owner can read it
    assert local_manifest([dest]) == Manifest(3, 4 + 4 + 16)


def _unpack_under_umask(stream: bytes, dest: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        unpack(io.BytesIO(stream), dest)
    finally:
        os.umask(old)


def test_result_files_are_created_with_their_mode_and_need_no_chmod(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chmods: list[int] = []
    monkeypatch.setattr(os, "fchmod", lambda fd, mode: chmods.append(mode))
    stream = _tar((_member("./a.tif", mode=0o644), b"a"), (_member("./run.sh", mode=0o755), b"b"))
    _unpack_under_umask(stream, tmp_path, 0o022)
    assert stat.S_IMODE((tmp_path / "a.tif").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "run.sh").stat().st_mode) == 0o755
    assert chmods == []


def test_a_umask_that_takes_bits_still_leaves_result_files_their_sent_mode(
    tmp_path: Path,
) -> None:
    stream = _tar((_member("./a.tif", mode=0o644), b"a"), (_member("./run.sh", mode=0o4755), b"b"))
    _unpack_under_umask(stream, tmp_path, 0o077)
    assert stat.S_IMODE((tmp_path / "a.tif").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "run.sh").stat().st_mode) == 0o755


def test_result_files_keep_the_mtime_the_cluster_sent(tmp_path: Path) -> None:
    stream = _tar((_member("./d/a.csv", mtime=1_000_000_000), b"a,b\n"))
    unpack(io.BytesIO(stream), tmp_path)
    assert (tmp_path / "d" / "a.csv").stat().st_mtime == 1_000_000_000


class _SwapsFolderForLink(io.BytesIO):
    """Hands out a few bytes per read; once ``at`` bytes are out, replaces ``folder``
    by a link to ``target``, as another local process could while a download runs."""

    def __init__(self, data: bytes, at: int, folder: Path, target: Path) -> None:
        super().__init__(data)
        self.at, self.folder, self.target = at, folder, target
        self.swapped = False

    def readinto(self, buffer: Any) -> int:
        if not self.swapped and self.tell() >= self.at:
            self.folder.rename(self.folder.with_name("moved"))
            self.folder.symlink_to(self.target)
            self.swapped = True
        return super().readinto(memoryview(buffer)[:100])


def test_a_folder_swapped_for_a_link_during_a_download_is_never_followed(
    world: tuple[Path, Path],
) -> None:
    root, dest = world
    stream = _tar(_file("./a/one", b"1"), _file("./b/two", b"2"), _file("./a/planted", b"3"))
    before = _snapshot(root, skip=dest)
    swapping = _SwapsFolderForLink(stream, 2 * 1024, dest / "a", root / "outside")
    with pytest.raises(UnsafeArchiveError, match="runs through a file or a link"):
        unpack(swapping, dest)
    assert swapping.swapped
    assert _snapshot(root, skip=dest) == before


def test_a_stream_longer_than_its_listing_stops_at_the_first_extra_byte(tmp_path: Path) -> None:
    stream = _tar(_file("a", b"x" * 10), _file("b", b"y" * 10))
    with pytest.raises(StagingError, match="more than"):
        unpack(io.BytesIO(stream), tmp_path, limit=Manifest(2, 15))


class _Trickle(io.BytesIO):
    """A stream that hands out a few bytes per read, as a pipe may."""

    def read(self, size: int | None = -1) -> bytes:
        return super().read(min(7, size) if size is not None and size >= 0 else 7)

    def readinto(self, buffer: Any) -> int:
        return super().readinto(memoryview(buffer)[:7])


def test_members_split_across_any_read_boundary_unpack_intact(tmp_path: Path) -> None:
    payloads = {f"./d{n % 3}/f{n}": os.urandom(n * 97) for n in range(12)}
    stream = _tar(_member("./d0", tarfile.DIRTYPE), *(_file(k, v) for k, v in payloads.items()))
    dest = tmp_path / "dest"
    dest.mkdir()
    unpack(_Trickle(stream), dest)
    assert {f"./{p.relative_to(dest)}": p.read_bytes() for p in dest.rglob("f*")} == payloads


def test_a_stream_cut_inside_a_file_fails_and_is_not_taken_for_a_short_file(
    tmp_path: Path,
) -> None:
    stream = _tar(_file("a", b"x" * 5000))
    with pytest.raises(tarfile.ReadError):
        unpack(io.BytesIO(stream[: 512 + 3000]), tmp_path)


def test_shares_are_in_order_cover_every_entry_and_balance_bytes_and_files() -> None:
    entries = [Entry(f"./f{n}", 1000 * (n % 5)) for n in range(1000)] + [Entry("./e", -1)]
    shares = split_entries(entries, 4)
    assert [e for share in shares for e in share] == entries
    assert len(shares) == 4
    costs = [sum(max(e.size, 0) + (64 << 10) for e in share) for share in shares]
    assert max(costs) - min(costs) <= 2 * ((64 << 10) + 4000)
    assert split_entries(entries[:1], 4) == [entries[:1]]


def test_few_files_go_as_one_stream_and_many_as_several() -> None:
    assert stream_count(1) == stream_count(200) == 1
    assert stream_count(600) == 2
    assert stream_count(2_000) == stream_count(100_000) == MAX_STREAMS


@pytest.mark.parametrize(("cores", "streams"), [(None, 1), (1, 1), (2, 1), (4, 2), (64, 4)])
def test_downloads_use_one_stream_per_two_cores(
    cores: int | None, streams: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    assert download_streams() == streams


def test_parallel_stage_down_refuses_a_hostile_stream_and_keeps_nothing(
    transport: LocalTransport, tmp_path: Path, unpacker: str
) -> None:
    out = transport.home / "run" / "out"
    out.mkdir(parents=True)
    for n in range(6):
        (out / f"mask{n}.tif").write_bytes(b"x" * 4000)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("keep me")
    before = _snapshot(tmp_path, skip=transport.home)
    stream = _hostile_streams(outside)["hard link to a file outside, then a write to it"]
    cluster = HostileCluster(transport, stream)
    with pytest.raises(UnsafeArchiveError, match="refused the results in run/out"):
        stage_down(cluster, "run/out", tmp_path / "mine", streams=3)  # type: ignore[arg-type]
    assert cluster.streams == 3
    assert _snapshot(tmp_path, skip=transport.home) == before
    assert not (tmp_path / "mine").exists()


def test_a_name_that_is_not_utf8_comes_back_intact_through_one_whole_stream(
    transport: LocalTransport, tmp_path: Path
) -> None:
    out = transport.home / "run" / "out"
    out.mkdir(parents=True)
    for n in range(6):
        (out / f"mask{n}.tif").write_bytes(os.urandom(100 + n))
    odd = os.fsencode(out) + b"/caf\xe9.tif"  # Latin-1, not UTF-8
    with open(odd, "wb") as fh:
        fh.write(b"latin")
    report = stage_down(transport, "run/out", tmp_path / "back", streams=3)
    assert report.manifest.files == 7
    with open(os.fsencode(tmp_path / "back") + b"/caf\xe9.tif", "rb") as fh:
        assert fh.read() == b"latin"


class HostileCluster:
    """A FAKE cluster answer: the real LocalTransport for every command, except that
    the results stream (``tar -c``) is replaced by bytes the test built."""

    def __init__(self, real: LocalTransport, stream: bytes, *, then_drop: bool = False) -> None:
        self.real = real
        self.stream = stream
        self.then_drop = then_drop  # the connection drops once the stream was sent
        self.streams = 0

    def run(
        self, argv: Sequence[str], *, stdout: BinaryIO | None = None, **kwargs: Any
    ) -> CommandResult:
        if stdout is None:
            return self.real.run(argv, **kwargs)
        self.streams += 1
        for start in range(0, len(self.stream), 4096):
            stdout.write(self.stream[start : start + 4096])
        if self.then_drop:
            raise ConnectError("HostileCluster: connection dropped")
        return CommandResult(tuple(argv), 0, "", "", 0.0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@pytest.fixture(params=["thread", "process"])
def unpacker(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each unpacker in turn: on a thread here (small downloads) and in a process."""
    monkeypatch.setattr(staging, "_HERE_FILES", 10**9 if request.param == "thread" else -1)
    return str(request.param)


def test_small_downloads_unpack_here_and_large_ones_in_a_process() -> None:
    # Starting a Python process costs 0.1-0.17 s here: more than a few files take.
    assert unpacks_here(Manifest(1, 10_000))
    assert unpacks_here(Manifest(500, 50 << 20))  # one image's masks as OME-Zarr
    assert not unpacks_here(Manifest(2_000, 250 << 20))
    assert not unpacks_here(Manifest(10, 1 << 30))


@pytest.mark.parametrize(
    "case",
    ["symlink chain (CVE-2025-4517 style)", "hard link to a file outside, then a write to it"],
)
def test_stage_down_refuses_a_hostile_stream_and_keeps_nothing(
    case: str, transport: LocalTransport, tmp_path: Path, unpacker: str
) -> None:
    (transport.home / "run" / "out").mkdir(parents=True)
    (transport.home / "run" / "out" / "mask.tif").write_bytes(b"x" * 4000)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("keep me")
    results = tmp_path / "results"
    results.mkdir()
    before = _snapshot(tmp_path, skip=transport.home)
    cluster = HostileCluster(transport, _hostile_streams(outside)[case])
    with pytest.raises(UnsafeArchiveError, match="refused the results in run/out"):
        stage_down(cluster, "run/out", results / "mine")  # type: ignore[arg-type]
    assert _snapshot(tmp_path, skip=transport.home) == before
    assert os.listdir(results) == []


def test_a_refused_stream_is_not_retried_even_when_the_connection_drops_after_it(
    transport: LocalTransport, tmp_path: Path, unpacker: str
) -> None:
    (transport.home / "run" / "out").mkdir(parents=True)
    (transport.home / "run" / "out" / "mask.tif").write_bytes(b"x" * 4000)
    stream = _tar(_member("leak", tarfile.SYMTYPE, linkname="/etc/passwd"))
    cluster = HostileCluster(transport, stream, then_drop=True)
    with pytest.raises(UnsafeArchiveError):
        stage_down(cluster, "run/out", tmp_path / "mine", attempts=3)  # type: ignore[arg-type]
    assert cluster.streams == 1
    assert os.listdir(tmp_path) == ["home"]


# -- where results land: never over anything that was there ---------------------------


def _remote_results(transport: LocalTransport) -> str:
    out = transport.home / "run" / "out"
    (out / "sub").mkdir(parents=True)
    (out / "a.csv").write_text("a,b\n1,2\n")
    (out / "sub" / "mask.tif").write_bytes(os.urandom(5000))
    return "run/out"


def test_stage_down_refuses_a_destination_that_holds_other_files(
    transport: LocalTransport, tmp_path: Path
) -> None:
    remote = _remote_results(transport)
    dest = tmp_path / "Documents"
    dest.mkdir()
    (dest / "thesis.docx").write_text("years of work")
    (dest / "sub").mkdir()
    before = _snapshot(tmp_path, skip=transport.home)
    with pytest.raises(DestinationError, match=r"Documents already holds other files"):
        stage_down(transport, remote, dest)
    assert _snapshot(tmp_path, skip=transport.home) == before


def test_stage_down_refuses_a_destination_that_is_a_file_or_a_link(
    transport: LocalTransport, tmp_path: Path
) -> None:
    remote = _remote_results(transport)
    (tmp_path / "file").write_text("mine")
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    for name in ("file", "link"):
        with pytest.raises(DestinationError, match="is not a folder"):
            stage_down(transport, remote, tmp_path / name)
    assert (tmp_path / "file").read_text() == "mine"
    assert os.listdir(tmp_path / "real") == []


def test_stage_down_fills_a_new_or_empty_destination_and_adopts_its_own_copy(
    transport: LocalTransport, tmp_path: Path
) -> None:
    remote = _remote_results(transport)
    (tmp_path / "empty").mkdir()
    for name in ("new", "empty"):
        report = stage_down(transport, remote, tmp_path / name)
        assert report.manifest == Manifest(2, 8 + 5000) and not report.adopted
        assert (tmp_path / name / "a.csv").read_text() == "a,b\n1,2\n"
    again = stage_down(transport, remote, tmp_path / "new")
    assert again.adopted
    assert sorted(os.listdir(tmp_path)) == ["empty", "home", "new"]  # no partials left


def test_copy_results_follows_the_same_rules(transport: LocalTransport, tmp_path: Path) -> None:
    source = transport.home / _remote_results(transport)
    copy_results(source, tmp_path / "copy")
    assert local_manifest([tmp_path / "copy"]) == local_manifest([source])
    assert copy_results(source, tmp_path / "copy").adopted
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("mine")
    with pytest.raises(DestinationError):
        copy_results(source, tmp_path / "busy")
    assert os.listdir(tmp_path / "busy") == ["x"]


# -- the run's own local folder ---------------------------------------------------------


def test_a_run_folder_is_claimed_once_and_released_only_by_its_run(tmp_path: Path) -> None:
    folder = tmp_path / "results" / "run-1"
    assert claim(folder, "run-1") == folder
    assert owner_of(folder) == "run-1"
    (folder / "in").mkdir()
    assert claim(folder, "run-1") == folder  # a retry of the same run
    with pytest.raises(FolderTakenError, match="was not made by run run-2"):
        claim(folder, "run-2")
    assert not release(folder, "run-2")
    assert folder.is_dir()
    assert release(folder, "run-1")
    assert not folder.exists()
    assert os.listdir(tmp_path / "results") == []


def test_a_folder_someone_else_made_is_neither_written_nor_removed(tmp_path: Path) -> None:
    folder = tmp_path / "run-1"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(FolderTakenError):
        claim(folder, "run-1")
    assert not release(folder, "run-1")
    assert sorted(os.listdir(folder)) == ["notes.txt"]
    (tmp_path / "empty").mkdir()  # an empty folder holds nothing to lose: it is taken
    claim(tmp_path / "empty", "run-2")
    assert os.listdir(tmp_path / "empty") == [MARKER]


# -- log tails --------------------------------------------------------------------------


def test_a_log_without_newlines_gives_a_tail_of_bounded_size(
    transport: LocalTransport,
) -> None:
    (transport.home / "one-line.log").write_bytes(b"x" * (3 << 20) + b"THE END")
    tail = log_tail(transport, "one-line.log", max_bytes=4096)
    assert len(tail.encode()) <= 4096 + 3
    assert tail.startswith("...x") and tail.endswith("xTHE END")


def test_a_log_tail_keeps_whole_last_lines_within_the_byte_bound(
    transport: LocalTransport,
) -> None:
    lines = [f"line {n} " + "y" * 150 for n in range(100)]
    (transport.home / "job.log").write_text("\n".join(lines) + "\n")
    short = log_tail(transport, "job.log", lines=5)
    assert short.splitlines() == lines[-5:]
    bounded = log_tail(transport, "job.log", lines=30, max_bytes=1000).splitlines()
    assert bounded == lines[-len(bounded) :]  # whole lines only: the cut one is dropped
    assert 0 < len(bounded) < 30
    missing = log_tail(transport, "gone.log")
    assert "No such file" in missing


class FakeDataSide:
    """A FAKE OMERO side: "exports" one small TIFF, imports nothing."""

    def export(self, run: RunRecord, dest: Path) -> list[Path]:
        import numpy
        import tifffile

        image = dest / "image1.tif"
        tifffile.imwrite(image, numpy.zeros((8, 8), dtype=numpy.uint8))
        return [image]

    def import_results(self, run: RunRecord, results: Path) -> dict[str, Any]:
        return {}


def _omero_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from biomeroworker.config import load_settings
    from biomeroworker.runs import RunEngine
    from biomeroworker.tracking.application import Tracker

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    config = tmp_path / "slurm-config.ini"
    config.write_text(
        "[SSH]\nhost = nowhere\n[SLURM]\nslurm_data_path = d\nslurm_images_path = i\n"
        "slurm_converters_path = c\nslurm_script_path = s\n"
    )
    (tmp_path / "home").mkdir(exist_ok=True)
    tracker = Tracker(f"sqlite:///{tmp_path / 't.sqlite'}")
    engine = RunEngine(
        load_settings([config], env={}),
        LocalTransport(home=tmp_path / "home"),
        tracker,
        data_sides={"omero": FakeDataSide()},
    )
    run_id = tracker.record_run_requested(
        workflow="nuclei", version="1", user_name="alice", inputs={"source": "omero"}
    )
    return engine, run_id


def test_the_export_writes_only_into_a_run_folder_it_made_and_the_end_removes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from biomeroworker.runs import Step

    engine, run_id = _omero_engine(tmp_path, monkeypatch)
    with engine.tracker:
        assert engine.advance(engine.tracker.run_record(run_id)) is Step.EXPORT
        run = engine.tracker.run_record(run_id)
        folder = engine.layout(run).local_run
        assert owner_of(folder) == run_id
        assert (folder / "in" / "image1.tif").is_file()
        engine.complete(run)
        assert not folder.exists()


def test_the_export_refuses_a_run_folder_someone_else_made_and_leaves_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from biomeroworker.runs import RunFailed

    engine, run_id = _omero_engine(tmp_path, monkeypatch)
    with engine.tracker:
        run = engine.tracker.run_record(run_id)
        folder = engine.layout(run).local_run
        (folder / "in").mkdir(parents=True)
        (folder / "in" / "notes.txt").write_text("mine")
        with pytest.raises(RunFailed, match="was not made by run"):
            engine.advance(run)
        assert not release(folder, run_id)
        assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) == [
            "in",
            "in/notes.txt",
        ]
        assert engine.tracker.get_run(run_id)["state"] == "FAILED"


def test_a_run_under_way_before_markers_existed_keeps_its_run_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, run_id = _omero_engine(tmp_path, monkeypatch)
    with engine.tracker:
        run = engine.tracker.run_record(run_id)
        folder = engine.layout(run).local_run
        (folder / "in").mkdir(parents=True)  # exported by a worker without markers
        FakeDataSide().export(run, folder / "in")
        task = engine.tracker.start_task(run_id, "export")
        engine.tracker.record_result(task, str(folder / "in" / "image1.tif"))
        engine.tracker.complete_task(task)
        assert engine.local_run(engine.tracker.run_record(run_id)) == folder
        assert owner_of(folder) == run_id
        assert (folder / "in" / "image1.tif").is_file()


def test_results_come_back_as_a_tar_stream_with_no_archive_program_on_the_cluster(
    transport: LocalTransport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """[SLURM] slurm_zip_cmd names upstream's archive program; nothing here runs one."""
    poisoned = tmp_path / "bin"
    poisoned.mkdir()
    for name in ("zip", "unzip", "7z", "7za"):
        program = poisoned / name
        program.write_text(f"#!/bin/sh\ntouch {tmp_path}/ran-{name}\nexit 1\n")
        program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{poisoned}:{os.environ['PATH']}")
    remote = _remote_results(transport)
    report = stage_down(transport, remote, tmp_path / "results")
    assert report.manifest == Manifest(2, 8 + 5000)
    assert not list(tmp_path.glob("ran-*"))


def _partial(home: Path, name: str, files: dict[str, bytes]) -> Path:
    folder = home / name
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


HOSTILE_DEST = "-in $(touch pwned) `touch pwned`; *"


def test_an_upload_that_arrived_as_listed_replaces_the_destination_in_one_command(
    transport: LocalTransport,
) -> None:
    old = _partial(transport.home, HOSTILE_DEST, {"stale.txt": b"old"})
    _partial(transport.home, "up.partial-1", {"a/x": b"abc", "a/-y z": b"12345"})
    before = transport.commands_run
    _check_and_replace(transport, HOSTILE_DEST, "up.partial-1", Manifest(2, 8), 60)
    assert transport.commands_run - before == 1
    assert sorted(p.name for p in old.rglob("*")) == ["-y z", "a", "x"]
    assert not (transport.home / "up.partial-1").exists()
    assert not (transport.home / "pwned").exists()


@pytest.mark.parametrize(
    ("arrived", "expected"),
    [
        ({"a": b"abc"}, Manifest(2, 8)),  # a file short
        ({"a": b"abc", "b": b"1234"}, Manifest(2, 8)),  # a byte short
        ({"a": b"abc", "b": b"12345", "c": b""}, Manifest(2, 8)),  # one file too many
    ],
)
def test_an_upload_that_did_not_arrive_as_listed_is_neither_renamed_nor_counted(
    arrived: dict[str, bytes], expected: Manifest, transport: LocalTransport
) -> None:
    _partial(transport.home, "in", {"stale.txt": b"old"})
    partial = _partial(transport.home, "in.partial-1", arrived)
    got = Manifest(len(arrived), sum(len(v) for v in arrived.values()))
    with pytest.raises(StagingError, match=re.escape(f"expected {expected}, arrived {got}")):
        _check_and_replace(transport, "in", "in.partial-1", expected, 60)
    assert (transport.home / "in" / "stale.txt").read_bytes() == b"old"
    assert sorted(p.name for p in partial.iterdir()) == sorted(arrived)


def test_an_upload_whose_partial_folder_is_gone_is_not_counted(
    transport: LocalTransport,
) -> None:
    _partial(transport.home, "in", {"stale.txt": b"old"})
    with pytest.raises(StagingError, match="arrived None"):
        _check_and_replace(transport, "in", "in.partial-1", Manifest(0, 0), 60)
    assert (transport.home / "in" / "stale.txt").read_bytes() == b"old"


def test_the_upload_check_shows_activity_while_it_lists_many_files(
    transport: LocalTransport,
) -> None:
    partial = _partial(transport.home, "in.partial-1", {})
    for n in range(2500):
        (partial / str(n)).touch()
    argv = ["sh", "-c", _CHECK_AND_REPLACE, "sh", "in", "in.partial-1", "2500", "1"]
    result = transport.run(argv, check=False)
    assert (result.exit_code, result.stdout, result.stderr) == (3, "2500 0\n", "..")
