"""Staging throughput: stage_up / stage_down against the limit of one SSH channel.

    .venv/bin/python bench/bench_staging.py                 # 250 MB in 2,000 chunk files
    .venv/bin/python bench/bench_staging.py --large         # also 1 GB in 20,000 files
    .venv/bin/python bench/bench_staging.py --peer          # also zip + SFTP + unzip

The limit is the same bytes (a tar of the folder, built once) pushed through one SSH
channel into ``dd of=/dev/null`` and read back with ``cat``, via OpenSSH and via our
transport. For reference, the folder also goes through OpenSSH as ``tar | ssh tar -x``
and back, which pays the same disk writes staging pays. Each number is the median of
--repeat runs, taken interleaved so that load from other processes hits every variant
alike. Data lives under /tmp, never in the repo.
Not run by the tests.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tarfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

from biomeroworker.staging import stage_down, stage_up, tar_create_argv
from biomeroworker.transport.ssh import SSHOptions, SSHTransport

ROOT = Path("/tmp/biomero-bench-staging")
REMOTE = "biomero-bench-staging"


class NullSink:
    def write(self, chunk: bytes) -> int:
        return len(chunk)


def make_zarr(files: int, file_bytes: int) -> Path:
    """An OME-Zarr-like folder: ``<name>.zarr/0/<c>/<y>/<x>`` chunks of random bytes."""
    folder = ROOT / f"{files}x{file_bytes}" / "big.ome.zarr"
    if folder.is_dir():
        return folder
    partial = folder.with_name("partial.zarr")
    shutil.rmtree(partial, ignore_errors=True)
    per_row = 50
    for n in range(files):
        chunk = partial / "0" / "0" / str(n // per_row) / str(n % per_row)
        chunk.parent.mkdir(parents=True, exist_ok=True)
        chunk.write_bytes(os.urandom(file_bytes))
    (partial / ".zattrs").write_text('{"multiscales": [{"version": "0.4"}]}')
    partial.rename(folder)
    return folder


def make_tar(folder: Path) -> Path:
    path = folder.parent / "limit.tar"
    if not path.exists():
        with tarfile.open(path, "w") as tar:
            tar.add(folder, arcname=folder.name)
    return path


def timed(fn: Callable[[], object]) -> float:
    started = time.monotonic()
    fn()
    return time.monotonic() - started


def openssh(alias: str, argv: list[str], **kwargs: object) -> None:
    # The remote command is fixed here (no user input), a single word list joined by ssh.
    subprocess.run(["ssh", "-o", "BatchMode=yes", alias, "--", *argv], check=True, **kwargs)  # type: ignore[call-overload]


def bench_size(
    transport: SSHTransport, alias: str, files: int, file_bytes: int, repeat: int, peer: bool
) -> None:
    folder = make_zarr(files, file_bytes)
    tar_path = make_tar(folder)
    size_mb = tar_path.stat().st_size / 1e6
    remote_tar = f"{REMOTE}/limit.tar"
    transport.run(["mkdir", "-p", REMOTE])
    with tar_path.open("rb") as fh:
        transport.run(["dd", f"of={remote_tar}", "bs=1M", "status=none"], stdin=fh)
    down = folder.parent / "down"
    times: dict[str, list[float]] = {}

    def record(name: str, fn: Callable[[], object]) -> None:
        times.setdefault(name, []).append(timed(fn))

    def ours_up() -> None:
        with tar_path.open("rb") as fh:
            transport.run(["dd", "of=/dev/null", "bs=1M", "status=none"], stdin=fh)

    def openssh_tar_up() -> None:
        openssh(alias, ["rm", "-rf", f"{REMOTE}/ref"])
        openssh(alias, ["mkdir", "-p", f"{REMOTE}/ref"])
        pack = subprocess.Popen(tar_create_argv([folder]), stdout=subprocess.PIPE)
        openssh(alias, ["tar", "-x", "-f", "-", "-C", f"{REMOTE}/ref"], stdin=pack.stdout)
        pack.stdout.close()  # type: ignore[union-attr]
        pack.wait()

    def openssh_tar_down() -> None:
        ref = folder.parent / "ref"
        shutil.rmtree(ref, ignore_errors=True)
        ref.mkdir()
        remote = ["ssh", "-o", "BatchMode=yes", alias, "--", "tar", "-c", "-f", "-", "-C"]
        pack = subprocess.Popen([*remote, f"{REMOTE}/in", "."], stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-f", "-", "-C", str(ref)], stdin=pack.stdout, check=True)
        pack.stdout.close()  # type: ignore[union-attr]
        pack.wait()

    def openssh_up() -> None:
        with tar_path.open("rb") as fh:
            openssh(alias, ["dd", "of=/dev/null", "bs=1M", "status=none"], stdin=fh)

    for _ in range(repeat):
        transport.run(["rm", "-rf", f"{REMOTE}/in"])
        shutil.rmtree(down, ignore_errors=True)
        record("limit up, OpenSSH", openssh_up)
        record("limit up, our transport", ours_up)
        record("stage_up", lambda: stage_up(transport, [folder], f"{REMOTE}/in"))
        record("ref: tar|ssh|tar up, OpenSSH", openssh_tar_up)
        record(
            "limit down, OpenSSH",
            lambda: openssh(alias, ["cat", remote_tar], stdout=subprocess.DEVNULL),
        )
        record(
            "limit down, our transport",
            lambda: transport.run(["cat", remote_tar], stdout=NullSink()),  # type: ignore[arg-type]
        )
        record("stage_down", lambda: stage_down(transport, f"{REMOTE}/in", down))
        record("ref: tar|ssh|tar down, OpenSSH", openssh_tar_down)
        if peer:
            record("peer: zip + SFTP + unzip", lambda: peer_path(transport, folder))
    report(f"{files} files, {size_mb:.0f} MB", times)
    transport.run(["rm", "-rf", REMOTE])
    shutil.rmtree(down, ignore_errors=True)
    shutil.rmtree(folder.parent / "ref", ignore_errors=True)


def peer_path(transport: SSHTransport, folder: Path) -> None:
    """biomero's way, approximated: deflate zip locally, one SFTP put, unpack remotely.

    biomero unpacks with ``7z x``; ``unzip`` stands in when p7zip is not installed.
    """
    archive = folder.parent / "peer.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            zf.write(path, path.relative_to(folder.parent))
    transport.run(["rm", "-rf", f"{REMOTE}/peer"])
    transport.run(["mkdir", "-p", f"{REMOTE}/peer"])
    transport.put_file(archive, f"{REMOTE}/peer/peer.zip")
    has_7z = transport.run(["which", "7z"], check=False).ok
    unpack = ["7z", "x", "-y", "peer.zip"] if has_7z else ["unzip", "-q", "peer.zip"]
    transport.run(["env", "-C", f"{REMOTE}/peer", *unpack], timeout_s=600)
    archive.unlink()


def report(title: str, times: dict[str, list[float]]) -> None:
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"\n== {title} (median of {len(next(iter(times.values())))}) ==")
    for name, value in median.items():
        print(f"  {name:28s} {value:6.2f} s   runs: {' '.join(f'{v:.2f}' for v in times[name])}")
    for way in ("up", "down"):
        ours = median[f"stage_{way}"]
        for via in ("OpenSSH", "our transport"):
            limit = median[f"limit {way}, {via}"]
            print(f"  stage_{way} / limit via {via:14s} {ours / limit:5.2f}x")
        ref = median[f"ref: tar|ssh|tar {way}, OpenSSH"]
        print(f"  stage_{way} / OpenSSH tar|ssh|tar     {ours / ref:5.2f}x")
    if "peer: zip + SFTP + unzip" in median:
        peer = median["peer: zip + SFTP + unzip"]
        print(f"  peer / stage_up              {peer / median['stage_up']:5.2f}x faster")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alias", default="localslurm", help="ssh alias of the cluster")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--large", action="store_true", help="also 1 GB in 20,000 files")
    parser.add_argument("--peer", action="store_true", help="also time zip + SFTP + unzip")
    args = parser.parse_args()
    transport = SSHTransport(SSHOptions(args.alias, command_timeout_s=900))
    try:
        bench_size(transport, args.alias, 2_000, 125_000, args.repeat, args.peer)
        if args.large:
            bench_size(transport, args.alias, 20_000, 50_000, args.repeat, args.peer)
    finally:
        transport.close()


if __name__ == "__main__":
    main()
