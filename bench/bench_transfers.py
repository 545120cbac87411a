"""Transfers of real sizes: time, throughput and the worker's peak memory.

    .venv/bin/python bench/bench_transfers.py                  # 1 GB file + 100,000 files
    .venv/bin/python bench/bench_transfers.py --big-gb 10      # the 10 GB single file
    .venv/bin/python bench/bench_transfers.py --small-files 20000 --big-gb 0.2   # quick

Each transfer (stage_up, then stage_down of what arrived) runs in a fresh Python
process over the SSH transport to localslurm, with ``command_timeout_s`` set far below
the transfer's length (streams must time out on silence only). The child reports its
own peak RSS (``ru_maxrss``; the system ``tar`` it starts is a separate process and not
counted) next to its RSS after imports, so the difference is what the transfer itself
held. Data lives under --root (default /tmp), never in the repo, and is removed after,
on both sides. Not run by the tests. Needs about 3x the big file in free disk (source,
cluster copy, download), all on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ALIAS = "localslurm"
REMOTE = "biomero-bench-transfers"

CHILD = """
import json, resource, sys, time
from pathlib import Path
from biomeroworker.staging import stage_down, stage_up
from biomeroworker.transport.ssh import SSHOptions, SSHTransport

direction, source, remote, dest, command_timeout = sys.argv[1:6]
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
transport = SSHTransport(SSHOptions(sys.argv[6], command_timeout_s=float(command_timeout)))
transport.run(["true"])
started = time.monotonic()
if direction == "up":
    report = stage_up(transport, [Path(source)], remote, idle_timeout_s=60)
else:
    report = stage_down(transport, remote, Path(dest), idle_timeout_s=60)
seconds = time.monotonic() - started
transport.close()
print(json.dumps({
    "files": report.manifest.files,
    "bytes": report.manifest.bytes,
    "seconds": seconds,
    "mb_per_s": report.manifest.bytes / 1e6 / seconds,
    "base_rss_mb": base / 1024,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
"""


def make_big(root: Path, gb: float) -> Path:
    """One file of ``gb`` GB (zeros: nothing on the path compresses, so they cost as much
    as any bytes, and writing them is quick)."""
    folder = root / f"big-{gb:g}GB"
    path = folder / "image.ome.tif"
    size = int(gb * 1e9)
    if path.is_file() and path.stat().st_size == size:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    block = bytes(8 << 20)
    with path.open("wb") as fh:
        left = size
        while left > 0:
            left -= fh.write(block[: min(left, len(block))])
    return folder


def make_small(root: Path, files: int, size: int) -> Path:
    """``files`` files of ``size`` bytes in an OME-Zarr-like tree, 1,000 per folder."""
    folder = root / f"small-{files}x{size}" / "plate.ome.zarr"
    done = folder.parent / "complete"
    if done.is_file():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    payload = os.urandom(size)
    for n in range(files):
        chunk = folder / "0" / str(n // 1000) / str(n % 1000)
        if n % 1000 == 0:
            chunk.parent.mkdir(parents=True, exist_ok=True)
        chunk.write_bytes(payload)
    done.write_text("")
    return folder


def transfer(direction: str, source: Path, remote: str, dest: Path, timeout: float) -> dict:
    argv = [sys.executable, "-c", CHILD, direction, str(source), remote, str(dest)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [*argv, str(timeout), ALIAS], capture_output=True, text=True, env=env, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"{direction} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ssh(*argv: str) -> None:
    # Fixed commands, no user input: a word list handed to ssh.
    subprocess.run(["ssh", "-o", "BatchMode=yes", ALIAS, "--", *argv], check=True)


def bench(name: str, source: Path, root: Path, timeout: float) -> list[dict]:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")
    remote = f"{REMOTE}/{slug}"
    down = root / f"down-{slug}"
    shutil.rmtree(down, ignore_errors=True)
    ssh("rm", "-rf", remote)
    ssh("mkdir", "-p", REMOTE)
    rows = []
    try:
        for direction in ("up", "down"):
            row = transfer(direction, source, remote, down, timeout)
            row.update(case=name, direction=direction, command_timeout_s=timeout)
            rows.append(row)
            print(
                f"{name:<22} {direction:<4} {row['files']:>7} files {row['bytes'] / 1e9:7.2f} GB "
                f"{row['seconds']:8.1f} s {row['mb_per_s']:7.1f} MB/s  "
                f"RSS {row['base_rss_mb']:6.1f} -> {row['peak_rss_mb']:6.1f} MB",
                flush=True,
            )
    finally:
        shutil.rmtree(down, ignore_errors=True)
        ssh("rm", "-rf", remote)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--big-gb", type=float, default=1.0, help="single file size; 0 skips")
    parser.add_argument("--small-files", type=int, default=100_000, help="0 skips")
    parser.add_argument("--small-bytes", type=int, default=1024)
    parser.add_argument("--command-timeout", type=float, default=2.0)
    parser.add_argument("--root", type=Path, default=Path("/tmp/biomero-bench-transfers"))
    parser.add_argument("--keep", action="store_true", help="keep the generated inputs")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    rows: list[dict] = []
    started = time.monotonic()
    try:
        if args.big_gb > 0:
            big = make_big(args.root, args.big_gb)
            rows += bench(f"1 file, {args.big_gb:g} GB", big, args.root, args.command_timeout)
        if args.small_files > 0:
            small = make_small(args.root, args.small_files, args.small_bytes)
            name = f"{args.small_files} files x {args.small_bytes} B"
            rows += bench(name, small, args.root, args.command_timeout)
    finally:
        if not args.keep:
            shutil.rmtree(args.root, ignore_errors=True)
    print(f"total {time.monotonic() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
