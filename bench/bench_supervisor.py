"""Supervisor cost per poll cycle against the number of active runs, on localslurm.

    .venv/bin/python -m bench.bench_supervisor [--sizes 10,100,1000] [--cycles 10] [--url URL]

For each size N: N held jobs are submitted to the real local Slurm (one remote command,
``sbatch --hold`` in a loop, so they stay PENDING and cost the cluster nothing), N runs
are recorded in the tracking store as having staged their inputs and submitted those
jobs, and one in-process ``Supervisor`` (the real one, over SSH) drives them: after two
warm-up cycles (claiming the runs, recording PENDING once) it runs ``--cycles`` cycles
and records per cycle the process CPU time (``time.process_time``: every thread of
this process, the SSH transport's included; not sshd's or sacct's), the wall time, the
part of it spent waiting for the remote command, and the remote commands. The jobs are
cancelled afterwards.

Results: ``bench/results/<date>-supervisor.json`` and, when matplotlib is installed
(``pip install -e .[bench]``), the curve ``docs/supervisor-cycle.png``. The load
average is recorded with each size: the machine is shared, the numbers are noisy.
Asserts nothing. Needs localslurm/up.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import machine  # noqa: E402
from biomeroworker.config import load_settings  # noqa: E402
from biomeroworker.runs import RunEngine  # noqa: E402
from biomeroworker.supervisor.leases import LeaseStore  # noqa: E402
from biomeroworker.supervisor.loop import Supervisor  # noqa: E402
from biomeroworker.tracking.application import Tracker  # noqa: E402
from biomeroworker.transport.ssh import SSHOptions, SSHTransport  # noqa: E402

CONFIG = REPO / "localslurm" / "run" / "slurm-config.ini"
PNG = REPO / "docs" / "supervisor-cycle.png"
# One remote command submits all held jobs; the count is its positional argument.
SUBMIT_LOOP = (
    'for i in $(seq 1 "$1"); do '
    "sbatch --parsable --hold -p cpu-short -J bench-sup -o /dev/null --wrap 'sleep 1' "
    "|| exit 1; done"
)


def _settings(root: Path, url: str):  # type: ignore[no-untyped-def]
    text = CONFIG.read_text().replace("[ANALYTICS]\n", f"[ANALYTICS]\nsqlalchemy_url = {url}\n")
    path = root / "slurm-config.ini"
    path.write_text(text)
    return load_settings(config_file=path)


def submit_held(transport: SSHTransport, count: int) -> list[str]:
    out = transport.run(["sh", "-c", SUBMIT_LOOP, "sh", str(count)], timeout_s=1800).stdout
    return [line.split(";")[0] for line in out.split()]


def record_waiting(tracker: Tracker, jobs: list[str]) -> None:
    """Runs that staged their input and submitted ``jobs`` (one each), as the engine
    records them; the waiting step is what is measured."""
    for job in jobs:
        run_id = tracker.record_run_requested(
            workflow="nuclei",
            version="bench",
            user_name="bench",
            inputs={"files": ["/bench/a.tif"], "output_dir": None},
        )
        up = tracker.start_task(run_id, "stage_up")
        tracker.complete_task(up)
        task = tracker.start_task(run_id, "job")
        tracker.record_job_submitted(task, job, "slurm")


def one_size(settings, url: str, size: int, cycles: int) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    transport = SSHTransport(SSHOptions("localslurm"))
    load_before = os.getloadavg()
    started = time.monotonic()
    jobs = submit_held(transport, size)
    submit_s = time.monotonic() - started
    try:
        started = time.monotonic()
        with Tracker(url, project=False) as recorder:
            record_waiting(recorder, jobs)
            recorder.project()
        record_s = time.monotonic() - started
        with Tracker(url) as tracker:  # as `biomero supervise` opens it
            engine = RunEngine(settings, transport, tracker)
            sup = Supervisor(engine, LeaseStore(tracker.engine, f"bench-{size}", ttl_s=3600))
            warmup = []
            for _ in range(2):
                c0, w0 = time.process_time(), time.monotonic()
                sup.cycle()
                warmup.append({"cpu_s": time.process_time() - c0, "wall_s": time.monotonic() - w0})
            remote = [0.0]
            real_run = transport.run

            def timed_run(*args: Any, **kwargs: Any) -> Any:
                started = time.monotonic()
                try:
                    return real_run(*args, **kwargs)
                finally:
                    remote[0] += time.monotonic() - started

            transport.run = timed_run  # type: ignore[method-assign]
            cpu, wall, commands, waited = [], [], [], []
            for _ in range(cycles):
                c0, w0, n0 = time.process_time(), time.monotonic(), transport.commands_run
                remote[0] = 0.0
                sup.cycle()
                cpu.append(time.process_time() - c0)
                wall.append(time.monotonic() - w0)
                commands.append(transport.commands_run - n0)
                waited.append(remote[0])
            del transport.run
            states = {t["job_state"] for r in tracker.active_runs() for t in r["tasks"]}
            sup.shutdown()
    finally:
        transport.run(["scancel", *jobs], check=False, timeout_s=600)
        transport.close()
    return {
        "active_runs": size,
        "cycles": cycles,
        "cpu_s_per_cycle": [round(x, 4) for x in cpu],
        "cpu_s_per_cycle_median": round(statistics.median(cpu), 4),
        "cpu_ms_per_run_median": round(1000 * statistics.median(cpu) / size, 3),
        "wall_s_per_cycle_median": round(statistics.median(wall), 4),
        # Of the wall time: waiting for the remote sacct (slurmdbd's work, not ours).
        "remote_s_per_cycle_median": round(statistics.median(waited), 4),
        "commands_per_cycle": commands,
        "job_states_seen": sorted(s for s in states if s),
        "warmup_cycles": [{k: round(v, 3) for k, v in w.items()} for w in warmup],
        "submit_held_s": round(submit_s, 1),
        "record_runs_s": round(record_s, 1),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }


def plot(results: dict[str, Any], path: Path) -> bool:
    """The curve: CPU per cycle and commands per cycle against active runs."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e .[bench]): no PNG drawn")
        return False
    rows = results["sizes"]
    runs = [r["active_runs"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    ax.plot(runs, [1000 * r["cpu_s_per_cycle_median"] for r in rows], "o-", label="CPU ms / cycle")
    ax.plot(
        runs, [1000 * r["wall_s_per_cycle_median"] for r in rows], "s--", label="wall ms / cycle"
    )
    ax.plot(
        runs,
        [1000 * r["remote_s_per_cycle_median"] for r in rows],
        "^:",
        label="of it, waiting for sacct",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("active runs waiting on Slurm")
    ax.set_ylabel("milliseconds per poll cycle (median)")
    for r in rows:
        ax.annotate(
            f"{max(r['commands_per_cycle'])} cmd",
            (r["active_runs"], 1000 * r["wall_s_per_cycle_median"]),
            textcoords="offset points",
            xytext=(4, 6),
            fontsize=8,
        )
    load = max(r["load_average_before"][0] for r in rows)
    ax.set_title(
        f"biomero supervise, one poll cycle ({results['date'][:10]}, "
        f"{results['machine']['cores']} cores, load up to {load:.1f})",
        fontsize=9,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument("--url", help="tracking database (default: SQLite in a temp dir)")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args()
    started = dt.datetime.now()
    results: dict[str, Any] = {
        "date": started.isoformat(timespec="seconds"),
        "machine": machine.describe(REPO),
        "store": "PostgreSQL" if args.url and args.url.startswith("postgres") else "SQLite",
        "sizes": [],
    }
    for size in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix="biomero-bench-sup-") as tmp:
            url = args.url or f"sqlite:///{tmp}/t.sqlite"
            row = one_size(_settings(Path(tmp), url), url, size, args.cycles)
        print(
            f"{size:5d} runs: CPU {1000 * row['cpu_s_per_cycle_median']:.1f} ms/cycle "
            f"({row['cpu_ms_per_run_median']:.3f} ms/run), wall "
            f"{1000 * row['wall_s_per_cycle_median']:.1f} ms (remote "
            f"{1000 * row['remote_s_per_cycle_median']:.1f} ms), commands/cycle "
            f"{sorted(set(row['commands_per_cycle']))}, load {row['load_average_before'][0]}",
            flush=True,
        )
        results["sizes"].append(row)
    out = REPO / "bench" / "results" / f"{started.date().isoformat()}-supervisor.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {out.relative_to(REPO)}")
    if not args.no_plot and plot(results, PNG):
        print(f"curve: {PNG.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
