"""Run both systems side by side on localslurm and report medians and ours/biomero ratios.

Started by bench/run; see docs/performance.md for what each figure means.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench import bench_tracking, data, machine, ours
from bench.cluster_setup import BENCH, WORK, init_cluster, write_configs
from bench.stats import cycles_from_waits, cycles_within, fmt, median, ratio, table
from biomeroworker.config import load_settings
from biomeroworker.transport import open_transport

ALIAS = "localslurm"
WINDOW_S = 600.0  # item 4: a job that waits 10 minutes in the queue


class Plan:
    def __init__(self, quick: bool, reps: int | None) -> None:
        self.quick = quick
        self.reps = reps or (1 if quick else 3)
        self.datasets = (
            [data.Dataset("20MB", 20_000_000, 200)]
            if quick
            else [
                data.Dataset("250MB", 250_000_000, 2_000),
                data.Dataset("1GB", 1_000_000_000, 20_000),
            ]
        )
        self.poll_counts = [1, 10] if quick else [1, 10, 100]
        self.poll_cycles = 2 if quick else 5
        self.images = [1] if quick else [1, 100]
        self.event_cycles = 5 if quick else 30


class Peer:
    """biomero's half, run in its own virtualenv through bench/peer_biomero.py."""

    def __init__(self, python: Path | None, home: str, store: Path) -> None:
        self.python = python
        self.home = home
        self.store = store

    @property
    def available(self) -> bool:
        return self.python is not None

    def __call__(self, task: str, **opts: Any) -> dict[str, Any] | None:
        if self.python is None:
            return None
        opts = {"home": self.home, "store": str(self.store), **opts}
        done = subprocess.run(
            [str(self.python), str(BENCH / "peer_biomero.py"), task, json.dumps(opts)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            tail = "\n".join(done.stderr.strip().splitlines()[-5:])
            print(f"  biomero {task} failed:\n{tail}")
            return {"error": tail}
        return json.loads(done.stdout.strip().splitlines()[-1])


def say(text: str) -> None:
    print(text, flush=True)


def med(runs: list[dict[str, Any]] | None, key: str) -> float | None:
    values = [r[key] for r in runs or () if r.get(key) is not None]
    return median(values) if values else None


# --- the four items --------------------------------------------------------------------


def bench_staging(plan: Plan, transport: Any, peer: Peer) -> list[dict[str, Any]]:
    results = []
    for ds in plan.datasets:
        export_dir = WORK / "data" / ds.label
        zarr = data.make_zarr(export_dir, ds)
        tar_path = ours.make_tar(zarr, WORK / "data" / f"{ds.label}.tar")
        say(
            f"\n[1] staging {ds.label}: {ds.files} files, {ds.total_bytes / 1e6:.0f} MB "
            f"(median of {plan.reps})"
        )
        limit = ours.limit_runs(transport, ALIAS, tar_path, plan.reps)
        left_remote: list[str] = []
        left_local: list[Path] = []
        up = ours.staging_up_runs(transport, zarr, plan.reps, left_remote)
        # Results to bring back: the dataset in <remote>/data/out (put there once, untimed).
        location = f"bench-stage/{ds.label}"
        ours.stage_up(transport, [zarr], f"{location}/data/out")
        down = ours.staging_down_runs(
            transport, f"{location}/data/out", WORK / "tmp", plan.reps, left_local
        )
        tar_pipe = ours.tar_pipe_runs(
            ALIAS, zarr, f"{location}/data/out", WORK / "tmp", plan.reps, left_remote, left_local
        )
        peer_up = peer(
            "staging_up",
            export_dir=str(export_dir),
            tmp=str(WORK / "tmp"),
            reps=plan.reps,
            defer_cleanup=True,
        )
        peer_down = peer(
            "staging_down",
            location=f"{peer.home}/{location}",
            tmp=str(WORK / "tmp"),
            reps=plan.reps,
            defer_cleanup=True,
        )
        for answer in (peer_up, peer_down):
            left_remote += (answer or {}).get("left_remote", [])
            left_local += [Path(p) for p in (answer or {}).get("left_local", [])]
        # Every repetition's copies go only now (see ours.staging_up_runs).
        transport.run(["rm", "-rf", "--", "bench-stage", *left_remote])
        for path in left_local:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        row = _staging_row(ds, limit, up, down, peer_up, peer_down, tar_pipe)
        for way in ("up", "down"):
            r = row[way]
            say(
                f"  {way:4s} ours {fmt(r['ours_s'], 's')}  limit {fmt(r['limit_s'], 's')} "
                f"(OpenSSH {fmt(r['limit_openssh_s'], 's')}, our channel "
                f"{fmt(r['limit_ours_s'], 's')})  tar|ssh|tar {fmt(r['tar_pipe_s'], 's')}  "
                f"biomero {fmt(r['biomero_s'], 's')}  "
                f"ours/limit {fmt(r['ours_over_limit'], 'x')}  "
                f"ours/tar|ssh|tar {fmt(r['ours_over_tar_pipe'], 'x')}  "
                f"ours/biomero {fmt(r['ours_over_biomero'], 'x')}"
            )
        results.append(row)
    return results


def _staging_row(ds, limit, up, down, peer_up, peer_down, tar_pipe) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    row: dict[str, Any] = {
        "dataset": ds.label,
        "files": ds.files,
        "bytes": ds.total_bytes,
        "raw": {
            "limit": limit,
            "ours_up": up,
            "ours_down": down,
            "biomero_up": peer_up,
            "biomero_down": peer_down,
            "tar_pipe": tar_pipe,
        },
    }
    for way, mine, theirs in (("up", up, peer_up), ("down", down, peer_down)):
        openssh_s = median(limit[f"{way}_openssh"])
        channel_s = median(limit[f"{way}_ours"])
        best = min(v for v in (openssh_s, channel_s) if v is not None)
        ours_s = med(mine, "total_s")
        tar_pipe_s = median(tar_pipe[way]) if tar_pipe[way] else None
        biomero_s = med((theirs or {}).get("reps"), "total_s")
        parts = {
            k: med((theirs or {}).get("reps"), k) for k in ("zip_s", "put_s", "get_s", "unzip_s")
        }
        row[way] = {
            "ours_s": ours_s,
            "limit_s": best,
            "limit_openssh_s": openssh_s,
            "limit_ours_s": channel_s,
            "tar_pipe_s": tar_pipe_s,
            "biomero_s": biomero_s,
            "biomero_parts_s": {k: v for k, v in parts.items() if v is not None},
            "ours_over_limit": ratio(ours_s, best),
            "ours_over_tar_pipe": ratio(ours_s, tar_pipe_s),
            "ours_over_biomero": ratio(ours_s, biomero_s),
        }
    return row


def bench_polling(plan: Plan, transport: Any, peer: Peer, partition: str) -> list[dict]:
    say(f"\n[2] status polling, held jobs ({plan.poll_cycles} cycles each)")
    results = []
    for count in plan.poll_counts:
        ids = ours.submit_held(transport, count, partition)
        try:
            ours.wait_visible(transport, ids)
            mine = ours.poll_runs(transport, ids, plan.poll_cycles)
            theirs = peer("poll", job_ids=ids, cycles=plan.poll_cycles)
        finally:
            ours.cancel(transport, ids)
        row = {
            "jobs": count,
            "ours_commands": med(mine, "commands"),
            "ours_wall_s": med(mine, "wall_s"),
            "ours_states": mine[-1]["states"],
        }
        if theirs and "error" not in theirs:
            row |= {
                "biomero_list_commands": med(theirs["list_call"], "commands"),
                "biomero_list_wall_s": med(theirs["list_call"], "wall_s"),
                "biomero_loop_commands": med(theirs["per_job_loop"], "commands"),
                "biomero_loop_wall_s": med(theirs["per_job_loop"], "wall_s"),
                "biomero_states": theirs["states_seen"],
            }
            row["ours_over_biomero_loop_wall"] = ratio(
                row["ours_wall_s"], row["biomero_loop_wall_s"]
            )
        say(
            f"  {count:3d} jobs: ours {fmt(row['ours_commands'])} command(s), "
            f"{fmt(row['ours_wall_s'], 's')}; biomero check_job_status(list) "
            f"{fmt(row.get('biomero_list_commands'))} command(s), "
            f"{fmt(row.get('biomero_list_wall_s'), 's')}; biomero per-job wait loop "
            f"{fmt(row.get('biomero_loop_commands'))} command(s), "
            f"{fmt(row.get('biomero_loop_wall_s'), 's')}"
        )
        results.append(row)
    return results


def bench_e2e(plan: Plan, config: Path, transport: Any, peer: Peer, store: Path) -> list[dict]:
    say(f"\n[3] end to end, no-op workflow (median of {plan.reps})")
    settings = load_settings(config_file=str(config))
    results = []
    for count in plan.images:
        images = data.make_images(WORK / "data" / f"images_{count}", count)
        mine = ours.e2e_runs(
            config, transport, f"sqlite:///{store}", images, WORK / "tmp", plan.reps
        )
        theirs = peer(
            "e2e",
            export_dir=str(images[0].parent),
            tmp=str(WORK / "tmp"),
            reps=plan.reps,
            wrapper=str(BENCH / "workflows" / "noop" / "wrapper.py"),
            python=settings.worker.native_python,
            descriptor=str(BENCH / "workflows" / "noop" / "descriptor.json"),
        )
        reps = (theirs or {}).get("reps")
        row = {"images": count, "raw": {"ours": mine, "biomero": theirs}}
        for key in ("total_s", "job_elapsed_s", "overhead_s", "end_to_local_s", "commands"):
            row[f"ours_{key}"] = med(mine, key)
            row[f"biomero_{key}"] = med(reps, key)
        row["ours_worker_s"] = med(mine, "worker_s")
        row["ours_over_biomero_overhead"] = ratio(row["ours_overhead_s"], row["biomero_overhead_s"])
        row["ours_where_it_goes_s"] = ours.where_it_goes(mine)
        say(
            f"  {count:3d} image(s): ours total {fmt(row['ours_total_s'], 's')}, job "
            f"{fmt(row['ours_job_elapsed_s'], 's')}, overhead {fmt(row['ours_overhead_s'], 's')},"
            f" end->local {fmt(row['ours_end_to_local_s'], 's')} | biomero total "
            f"{fmt(row['biomero_total_s'], 's')}, overhead {fmt(row['biomero_overhead_s'], 's')}"
            f", end->local {fmt(row['biomero_end_to_local_s'], 's')}"
        )
        say(
            f"      ours, all but Slurm's part (sbatch to job done, slurmctld's log): "
            f"{fmt(row['ours_worker_s'], 's')}"
        )
        parts = row["ours_where_it_goes_s"]
        where = ", ".join(f"{k} {v}" for k, v in parts.items() if v)
        say(f"      ours, where it goes (median s): {where}")
        results.append(row)
    return results


def extrapolate(measured: dict[str, Any], cycles_in_window: int) -> dict[str, Any]:
    """Events in the window: what the measured cycles wrote, plus the rate of their
    second half for every further cycle (a first PENDING event is not repeated)."""
    after = measured["events_after_cycle"]
    half = after[len(after) // 2 :]
    rate = (half[-1] - half[0]) / max(len(half) - 1, 1) if len(half) > 1 else 0.0
    extra = max(cycles_in_window - len(after), 0)
    return {
        "cycles_in_window": cycles_in_window,
        "events_in_window": round(measured["events"] + rate * extra),
        "events_per_cycle_steady": rate,
    }


def bench_events(
    plan: Plan, config: Path, transport: Any, peer: Peer, store: Path
) -> dict[str, Any]:
    say(
        f"\n[4] events for a job waiting in the queue: {plan.event_cycles} measured poll cycles, "
        f"extrapolated to {WINDOW_S / 60:.0f} minutes"
    )
    image = data.make_images(WORK / "data" / "images_1", 1)[0]
    mine = ours.events_run(config, transport, store, image, plan.event_cycles)
    # Our waits as measured: poll_min_s while the job is young (FRESH_JOB_S), then
    # growing by half up to poll_max_s, which repeats.
    result: dict[str, Any] = {
        "ours": mine | extrapolate(mine, cycles_from_waits(WINDOW_S, mine["waits_s"])),
    }
    theirs = peer("events", cycles=plan.event_cycles, compressed_sleep_s=ours.COMPRESSED_SLEEP_S)
    if theirs and "error" not in theirs:
        interval = theirs["interval_s"]
        result["biomero"] = theirs | extrapolate(
            theirs, cycles_within(WINDOW_S, interval, 1.0, interval)
        )
    for who in ("ours", "biomero"):
        r = result.get(who)
        if r:
            say(
                f"  {who:7s} measured {r['events']} event(s) in {r['cycles']} cycles; "
                f"10 min = {r['cycles_in_window']} polls -> {r['events_in_window']} event(s) "
                "(extrapolated)"
            )
    return result


# --- report ----------------------------------------------------------------------------


def summary(results: dict[str, Any]) -> str:
    rows = []
    for s in results["staging"]:
        for way in ("up", "down"):
            r = s[way]
            rows.append(
                [
                    f"staging {way}, {s['dataset']} ({s['files']} files)",
                    fmt(r["ours_s"], "s"),
                    fmt(r["biomero_s"], "s"),
                    fmt(r["ours_over_biomero"], "x"),
                    f"limit {fmt(r['limit_s'], 's')}, ours/limit {fmt(r['ours_over_limit'], 'x')}; "
                    f"tar|ssh|tar {fmt(r.get('tar_pipe_s'), 's')}, "
                    f"ours/that {fmt(r.get('ours_over_tar_pipe'), 'x')}",
                ]
            )
    for p in results["polling"]:
        rows.append(
            [
                f"poll cycle, {p['jobs']} held job(s)",
                f"{fmt(p['ours_commands'])} cmd, {fmt(p['ours_wall_s'], 's')}",
                f"{fmt(p.get('biomero_loop_commands'))} cmd, "
                f"{fmt(p.get('biomero_loop_wall_s'), 's')}",
                fmt(p.get("ours_over_biomero_loop_wall"), "x"),
                f"biomero check_job_status(list): {fmt(p.get('biomero_list_commands'))} "
                f"cmd, {fmt(p.get('biomero_list_wall_s'), 's')}",
            ]
        )
    for e in results["e2e"]:
        rows.append(
            [
                f"no-op run overhead, {e['images']} image(s)",
                fmt(e["ours_overhead_s"], "s"),
                fmt(e["biomero_overhead_s"], "s"),
                fmt(e["ours_over_biomero_overhead"], "x"),
                f"job end -> results local: {fmt(e['ours_end_to_local_s'], 's')} vs "
                f"{fmt(e['biomero_end_to_local_s'], 's')}; ours less Slurm's part: "
                f"{fmt(e.get('ours_worker_s'), 's')}",
            ]
        )
    ev = results["events"]
    if ev:
        ours_n = ev["ours"]["events_in_window"]
        theirs_n = ev.get("biomero", {}).get("events_in_window")
        rows.append(
            [
                "events, job queued 10 min (extrapolated)",
                fmt(ours_n),
                fmt(theirs_n),
                fmt(ratio(ours_n, theirs_n), "x"),
                f"from {ev['ours']['cycles']} measured cycles each",
            ]
        )
    rows += tracking_rows(results.get("tracking"))
    return table(["figure (median)", "ours", "biomero 2.8.3", "ours/biomero", "note"], rows)


def bench_tracking_part(plan: Plan) -> dict[str, Any]:
    """bench/bench_tracking.py: its own JSON beside ours, and its curve on a full run."""
    result = bench_tracking.measure(plan.quick)
    say(f"  results: {bench_tracking.write(result).relative_to(BENCH.parent)}")
    if not plan.quick:
        curve = BENCH.parent / "docs" / "tracking-curves.png"
        if bench_tracking.plot(result, curve):
            say(f"  curve: {curve.relative_to(BENCH.parent)}")
    return result


def tracking_rows(tracking: dict[str, Any] | None) -> list[list[str]]:
    """Our tracking on PostgreSQL (biomero's is not measured: its status has no paging)."""
    if not tracking:
        return []
    tp = tracking["throughput"]
    largest = tracking["reads"][-1]
    slowest = max(bench_tracking.READ_LABELS, key=lambda key: largest[key])
    return [
        [
            "tracking: append, events/s",
            f"{tp['append_batched']['events_per_s']:.0f}",
            "-",
            "-",
            f"cycles of {tp['cycle_runs']} runs; one command per transaction: "
            f"{tp['append_single']['events_per_s']:.0f}",
        ],
        [
            "tracking: projection, events/s",
            f"{tp['project']['events_per_s']:.0f}",
            "-",
            "-",
            f"catch-up of {tp['project']['events']} events; rebuild "
            f"{tp['rebuild']['events_per_s']:.0f}",
        ],
        [
            f"status/stats, {largest['runs']:,} runs (slowest)",
            fmt(largest[slowest], "s"),
            "-",
            "-",
            f"{bench_tracking.READ_LABELS[slowest]}; a new process for status --all "
            f"{fmt(largest['process_s'], 's')}",
        ],
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 repetition")
    parser.add_argument("--reps", type=int, help="repetitions per figure (default 3)")
    parser.add_argument("--peer-python", type=Path, help="python of the biomero virtualenv")
    parser.add_argument("--peer-missing", default="", help="why biomero's half is skipped")
    opts = parser.parse_args()
    plan = Plan(opts.quick, opts.reps)
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "tmp").mkdir(exist_ok=True)
    ours_store = WORK / "tracking.sqlite"
    peer_store = WORK / "biomero-tracking.sqlite"
    for path in (ours_store, peer_store):
        path.unlink(missing_ok=True)
    config, default_polling = write_configs(ours_store)
    init_cluster(config)
    settings = load_settings(config_file=str(config))
    transport = open_transport(settings)
    partition = settings.slurm.slurm_default_partition or "cpu-short"
    home = transport.run(["printenv", "HOME"]).stdout.strip()
    peer = Peer(opts.peer_python, home, peer_store)
    if not peer.available:
        say(
            f"biomero 2.8.3 is not available ({opts.peer_missing or 'no --peer-python'}): "
            "running our half only"
        )
    started = dt.datetime.now()
    results: dict[str, Any] = {
        "date": started.isoformat(timespec="seconds"),
        "mode": "quick" if plan.quick else "full",
        "repetitions": plan.reps,
        "machine": machine.describe(WORK),
        "biomero": "2.8.3" if peer.available else f"not run: {opts.peer_missing}",
        "config": str(config.relative_to(BENCH.parent)),
    }
    results["staging"] = bench_staging(plan, transport, peer)
    results["polling"] = bench_polling(plan, transport, peer, partition)
    results["e2e"] = bench_e2e(plan, config, transport, peer, ours_store)
    results["events"] = bench_events(plan, default_polling, transport, peer, ours_store)
    results["tracking"] = bench_tracking_part(plan)
    transport.run(["rm", "-rf", ours.REMOTE])
    shutil.rmtree(WORK / "tmp", ignore_errors=True)
    results["seconds"] = round((dt.datetime.now() - started).total_seconds(), 1)
    text = summary(results)
    say("\n" + text)
    out_dir = BENCH / "results"
    out_dir.mkdir(exist_ok=True)
    suffix = "-quick" if plan.quick else ""
    out = out_dir / f"{started.date().isoformat()}{suffix}.json"
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    say(f"\nresults: {out.relative_to(BENCH.parent)} ({results['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
