"""Staging time against file count: the same bytes in 1,000 / 10,000 / 100,000 files.

    .venv/bin/python -m bench.staging_curve                  # 250 MB, 1 repetition
    .venv/bin/python -m bench.staging_curve --mb 100 --repeat 3 --streams 1,auto

For each file count: the one-channel limit (the same bytes as one tar file into
``dd of=/dev/null`` and back with ``cat``, through our transport), then ``stage_up`` and
``stage_down`` of an OME-Zarr-shaped folder of that many chunk files. Numbers go to
``bench/results/staging-curve-<date>.json``, the plot to ``docs/staging-curve.png``. The
load average is recorded with every measurement: the machine may be shared. Data lives
under /tmp, never in the repo. Not run by the tests, nor by ``bench/run``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import shutil
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from bench import data, machine
from bench.bench_staging import NullSink
from bench.ours import make_tar
from biomeroworker.staging import download_streams, stage_down, stage_up, stream_count
from biomeroworker.transport.ssh import SSHOptions, SSHTransport

ROOT = Path("/tmp/biomero-bench-curve")
REMOTE = "biomero-bench-curve"
BENCH = Path(__file__).resolve().parent


def timed(action: Any) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def measure(
    transport: SSHTransport, files: int, total: int, repeat: int, variants: list[str]
) -> dict[str, Any]:
    ds = data.Dataset(f"curve{files}", total, files)
    zarr = data.make_zarr(ROOT / ds.label, ds)
    tar_path = make_tar(zarr, ROOT / f"{ds.label}.tar")
    remote_tar = f"{REMOTE}/limit.tar"
    with tar_path.open("rb") as fh:
        transport.run(["dd", f"of={remote_tar}", "bs=1M", "status=none"], stdin=fh)
    runs: dict[str, list[float]] = {}
    loads: list[float] = []

    def note(key: str, seconds: float) -> None:
        runs.setdefault(key, []).append(round(seconds, 3))

    for _ in range(repeat):
        loads.append(round(os.getloadavg()[0], 2))
        with tar_path.open("rb") as fh:
            note(
                "limit_up_s",
                timed(
                    lambda: transport.run(["dd", "of=/dev/null", "bs=1M", "status=none"], stdin=fh)
                ),
            )
        note("limit_down_s", timed(lambda: transport.run(["cat", remote_tar], stdout=NullSink())))  # type: ignore[arg-type]
        for variant in variants:
            streams = None if variant == "auto" else int(variant)
            remote = f"{REMOTE}/up-{uuid.uuid4().hex[:8]}"
            local = ROOT / f"down-{uuid.uuid4().hex[:8]}"
            up = functools.partial(stage_up, transport, [zarr], remote, streams=streams)
            note(f"up_{variant}_s", timed(up))
            down = functools.partial(stage_down, transport, remote, local, streams=streams)
            note(f"down_{variant}_s", timed(down))
            shutil.rmtree(local)
            transport.run(["rm", "-rf", remote])
        loads.append(round(os.getloadavg()[0], 2))
    transport.run(["rm", "-f", remote_tar])
    row: dict[str, Any] = {
        "files": files,
        "bytes": total,
        "streams_auto_up": stream_count(files),
        "streams_auto_down": stream_count(files, download_streams()),
        "load_average": loads,
        "runs": runs,
    }
    median = {key: statistics.median(values) for key, values in runs.items()}
    row["median"] = median
    for variant in variants:
        row[f"up_{variant}_over_limit"] = round(median[f"up_{variant}_s"] / median["limit_up_s"], 2)
        row[f"down_{variant}_over_limit"] = round(
            median[f"down_{variant}_s"] / median["limit_down_s"], 2
        )
    return row


def plot(rows: list[dict[str, Any]], variants: list[str], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = [r["files"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for way, colour in (("up", "tab:blue"), ("down", "tab:orange")):
        ax.plot(
            counts,
            [r["median"][f"limit_{way}_s"] for r in rows],
            ":",
            color=colour,
            label=f"one-channel limit {way}",
        )
        for variant, style in zip(variants, ("-o", "--s", "-.^"), strict=False):
            label = f"stage_{way}" + ("" if variant == "auto" else f", {variant} stream(s)")
            ax.plot(
                counts,
                [r["median"][f"{way}_{variant}_s"] for r in rows],
                style,
                color=colour,
                label=label,
            )
    ax.set_xscale("log")
    ax.set_xticks(counts, [f"{c:,}" for c in counts])
    ax.minorticks_off()
    ax.set_xlabel("files (same total bytes)")
    ax.set_ylabel("seconds (median)")
    ax.set_ylim(bottom=0)
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alias", default="localslurm")
    parser.add_argument("--mb", type=float, default=250, help="total size at every count")
    parser.add_argument("--counts", default="1000,10000,100000")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--streams", default="auto", help="comma list: auto and/or numbers")
    parser.add_argument("--png", type=Path, default=BENCH.parent / "docs" / "staging-curve.png")
    parser.add_argument("--keep", action="store_true", help="keep the generated folders")
    args = parser.parse_args()
    variants = args.streams.split(",")
    total = int(args.mb * 1e6)
    transport = SSHTransport(SSHOptions(args.alias, command_timeout_s=900))
    started = dt.datetime.now()
    rows = []
    try:
        transport.run(["mkdir", "-p", REMOTE])
        for files in (int(c) for c in args.counts.split(",")):
            row = measure(transport, files, total, args.repeat, variants)
            print(json.dumps({k: row[k] for k in row if k != "runs"}), flush=True)
            rows.append(row)
        transport.run(["rm", "-rf", REMOTE])
    finally:
        transport.close()
        if not args.keep:
            shutil.rmtree(ROOT, ignore_errors=True)
    result = {
        "date": started.isoformat(timespec="seconds"),
        "machine": machine.describe(BENCH),
        "total_bytes": total,
        "repetitions": args.repeat,
        "rows": rows,
    }
    out = BENCH / "results" / f"staging-curve-{started.date().isoformat()}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    cores = result["machine"]["cores"]  # type: ignore[index]
    loads = [load for r in rows for load in r["load_average"]]
    title = (
        f"staging {args.mb:g} MB as N files, {started.date()} ({cores} cores, "
        f"load average {min(loads):.1f}-{max(loads):.1f})"
    )
    plot(rows, variants, title, args.png)
    print(f"results: {out}\nplot: {args.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
