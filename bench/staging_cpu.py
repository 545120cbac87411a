"""CPU time of staging, ours and the cluster's, next to the wall time (the machine is shared).

    .venv/bin/python -m bench.staging_cpu --mb 250 --files 2000 --repeat 3
    .venv/bin/python -m bench.staging_cpu --mb 1000 --files 20000 --compare /work/main
    .venv/bin/python -m bench.staging_cpu --mb 1000 --files 20000 --unpack-only

Each repetition takes the one-channel limit (our transport: the same bytes as one tar
file into ``dd of=/dev/null`` and back with ``cat``), then ``stage_up`` and
``stage_down`` of an OME-Zarr-shaped folder, for this checkout's ``staging`` and, with
``--compare DIR``, for ``DIR/biomeroworker/staging.py`` loaded beside it, interleaved so
that the load of other processes hits both alike. For every step: wall time, the CPU
(user + system) of this process and its children (the local ``tar``, the unpacking
process) and of the cluster's side: the sshd serving our connection and every command it
ran (``tar -x``, ``find``; counted from /proc when they are reaped, so sshd's crypto is
in it). Wall time on a loaded machine is noise; CPU time much less so.

``--unpack-only``: no network; the unpacking process alone reads the dataset as a GNU
tar file from disk (``python -c unpack_main``, as a download runs it), timed and CPU-counted.

Numbers go to ``bench/results/staging-cpu-<date>.json`` with the load averages. Data lives
under /tmp. Not run by the tests, nor by ``bench/run``. Needs localslurm up (except
``--unpack-only``) and read access to the sshd processes' /proc entries (root, or the
same user as the cluster account).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from bench import data
from bench.bench_staging import NullSink
from bench.ours import make_tar
from biomeroworker import staging
from biomeroworker.transport.ssh import SSHOptions, SSHTransport

ROOT = Path("/tmp/biomero-bench-cpu")
REMOTE = "biomero-bench-cpu"
BENCH = Path(__file__).resolve().parent
_TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int) -> float:
    """User + system CPU of ``pid`` and its reaped children, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # after the ")": state is field 3; utime 14, stime 15, cutime 16, cstime 17
    return sum(int(fields[k - 3]) for k in (14, 15, 16, 17)) / _TICK


def _server_pids(transport: SSHTransport) -> list[int]:
    """The sshd processes holding the server end of our connection's socket."""
    sock = transport._client().get_transport().sock  # type: ignore[union-attr]
    port = sock.getsockname()[1]
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if int(cols[2].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    pids.append(int(entry.name))
                    break
        except OSError:
            continue
    return pids


class Meter:
    """Wall, our CPU (with reaped children) and the server side's CPU of one step."""

    def __init__(self, transport: SSHTransport | None) -> None:
        self.pids = _server_pids(transport) if transport is not None else []

    def remote(self) -> float:
        return sum(_proc_cpu(pid) for pid in self.pids)

    def measure(self, action: Callable[[], object]) -> dict[str, float]:
        load = os.getloadavg()[0]
        t0, r0 = os.times(), self.remote()
        started = time.perf_counter()
        action()
        wall = time.perf_counter() - started
        t1, r1 = os.times(), self.remote()
        return {
            "wall_s": round(wall, 3),
            "our_user_s": round(t1.user - t0.user + t1.children_user - t0.children_user, 2),
            "our_sys_s": round(t1.system - t0.system + t1.children_system - t0.children_system, 2),
            "remote_cpu_s": round(r1 - r0, 2),
            "load": round(load, 2),
        }


def load_staging(checkout: Path) -> ModuleType:
    """``checkout``'s staging module, beside ours (the rest of the package is ours)."""
    spec = importlib.util.spec_from_file_location(
        f"staging_{checkout.name}", checkout / "biomeroworker" / "staging.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


def unpack_only(
    tar_path: Path, code_root: Path, files: int, size: int, dest: Path
) -> dict[str, float]:
    """The unpacking process of ``code_root`` reading ``tar_path`` into ``dest``."""
    dest.mkdir()
    env = {**os.environ, "PYTHONPATH": str(code_root)}
    t0 = os.times()
    load = os.getloadavg()[0]
    started = time.perf_counter()
    with tar_path.open("rb") as fh:
        subprocess.run(
            [sys.executable, "-c", staging._CHILD, str(dest), str(files), str(size)],
            stdin=fh,
            env=env,
            check=True,
        )
    wall = time.perf_counter() - started
    t1 = os.times()
    return {
        "wall_s": round(wall, 3),
        "our_user_s": round(t1.children_user - t0.children_user, 2),
        "our_sys_s": round(t1.children_system - t0.children_system, 2),
        "load": round(load, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alias", default="localslurm")
    parser.add_argument("--mb", type=float, default=250)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--compare", type=Path, action="append", help="another checkout to interleave with"
    )
    parser.add_argument("--unpack-only", action="store_true")
    parser.add_argument("--up-streams", type=int, help="stage_up streams (default: auto)")
    parser.add_argument("--down-streams", type=int, help="stage_down streams (default: auto)")
    args = parser.parse_args()

    ROOT.mkdir(parents=True, exist_ok=True)
    ds = data.Dataset(f"cpu{args.files}", int(args.mb * 1e6), args.files)
    zarr = data.make_zarr(ROOT / ds.label, ds)
    tar_path = make_tar(zarr, ROOT / f"{ds.label}.tar")
    expected = staging.inputs_manifest([zarr])
    here = Path(staging.__file__).resolve().parents[1]
    versions: dict[str, Any] = {"new": here}
    for other in args.compare or []:
        versions = {other.resolve().name: other.resolve(), **versions}
    rows: dict[str, list[dict[str, float]]] = {}

    def note(key: str, row: dict[str, float]) -> None:
        rows.setdefault(key, []).append(row)
        print(key, row, flush=True)

    # Everything written is removed at the end, not between steps: on ext4 without a
    # journal (this VM) creating a file right after thousands were deleted costs several
    # times more (the inode allocator skips every recently deleted inode), so deleting
    # one step's files would tax the next step, whichever version it runs.
    leftovers: list[Path] = []
    remotes: list[str] = []
    if args.unpack_only:
        # What a download reads: GNU tar's own format, as the cluster's ``tar -c`` sends it.
        gnu_tar = ROOT / f"{ds.label}-gnu.tar"
        if not gnu_tar.exists():
            argv = ["tar", "-c", "-b", "256", "-f", str(gnu_tar), "-C", str(zarr.parent)]
            subprocess.run([*argv, zarr.name], check=True)
        tar_path = gnu_tar
        for _ in range(args.repeat):
            for name, root in versions.items():
                dest = ROOT / f"unpack-{uuid.uuid4().hex[:8]}"
                leftovers.append(dest)
                row = unpack_only(tar_path, root, expected.files, expected.bytes, dest)
                note(f"unpack_{name}", row)
    else:
        modules = {
            name: (staging if root == here else load_staging(root))
            for name, root in versions.items()
        }
        transport = SSHTransport(SSHOptions(args.alias))
        transport.run(["mkdir", "-p", REMOTE])
        meter = Meter(transport)
        remote_tar = f"{REMOTE}/limit.tar"
        with tar_path.open("rb") as fh:
            transport.run(["dd", f"of={remote_tar}", "bs=1M", "status=none"], stdin=fh)
        for _ in range(args.repeat):

            def limit_up() -> None:
                with tar_path.open("rb") as fh:
                    transport.run(["dd", "of=/dev/null", "bs=1M", "status=none"], stdin=fh)

            note("limit_up", meter.measure(limit_up))
            note(
                "limit_down",
                meter.measure(lambda: transport.run(["cat", remote_tar], stdout=NullSink())),  # type: ignore[arg-type]
            )
            for name, module in modules.items():
                remote = f"{REMOTE}/up-{uuid.uuid4().hex[:8]}"
                local = ROOT / f"down-{uuid.uuid4().hex[:8]}"
                note(
                    f"up_{name}",
                    meter.measure(
                        lambda m=module, r=remote: m.stage_up(
                            transport,
                            [zarr],
                            r,
                            expected=m.Manifest(expected.files, expected.bytes),
                            streams=args.up_streams,
                        )
                    ),
                )
                note(
                    f"down_{name}",
                    meter.measure(
                        lambda m=module, r=remote, d=local: m.stage_down(
                            transport, r, d, streams=args.down_streams
                        )
                    ),
                )
                leftovers.append(local)
                remotes.append(remote)
        transport.run(["rm", "-rf", remote_tar, *remotes], timeout_s=3600)
        transport.close()
    for path in leftovers:
        shutil.rmtree(path)

    summary = {
        key: {field: statistics.median(r[field] for r in runs) for field in runs[0]}
        for key, runs in rows.items()
    }
    print(json.dumps(summary, indent=1))
    out = BENCH / "results" / f"staging-cpu-{dt.date.today().isoformat()}.json"
    previous = json.loads(out.read_text()) if out.exists() else []
    previous.append(
        {
            "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "mb": args.mb,
            "files": args.files,
            "versions": {k: str(v) for k, v in versions.items()},
            "unpack_only": args.unpack_only,
            "runs": rows,
            "median": summary,
        }
    )
    out.write_text(json.dumps(previous, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
