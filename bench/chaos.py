"""Exactly-once under random faults: many runs while a driver breaks things at random.

    .venv/bin/python bench/chaos.py [--runs 32] [--seed N] [--mean-gap 4] [--limit 1200]
                                    [--json OUT]

Requests a mix of runs (one OME-Zarr, several OME-Zarr, one TIFF, and a workflow that
fails on purpose, with a TIFF or OME-Zarr input) on the real localslurm, starts
`biomero supervise`, and at random moments (exponential gaps, mean ``--mean-gap`` s):

- kills the supervisor with SIGKILL (it is started again after a short random pause),
- cuts its SSH connection (kills the sshd processes serving that TCP connection only),
- stops slurmdbd for a few seconds (``localslurm/ctl stop|start slurmdbd``),
- terminates every database connection of the run store (``pg_terminate_backend``).

Then it checks every run: the state it should have (COMPLETED, or FAILED for the failing
workflow), exactly one Slurm job per step (sacct by the run-unique job name), one
download ("import" for command-line runs) per completed run, and no ``.partial-*``
folder left locally or on the cluster. Prints a report listing every run that did not
end as expected (unfinished runs included), and exits 1 if there is any.
Needs localslurm/up and PostgreSQL on 127.0.0.1:5432 (user postgres, trust).
tests/integration/test_chaos.py runs a short version.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from biomeroworker.config import Settings, load_settings  # noqa: E402
from biomeroworker.errors import BiomeroError  # noqa: E402
from biomeroworker.prepare import init_cluster  # noqa: E402
from biomeroworker.run_record import RunRecord  # noqa: E402
from biomeroworker.runs import RunEngine  # noqa: E402
from biomeroworker.tracking.application import Tracker  # noqa: E402
from biomeroworker.transport.ssh import SSHOptions, SSHTransport  # noqa: E402

LOCALSLURM = REPO / "localslurm"
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
SSH_PORT = 2222
FAULTS = ("kill_supervisor", "cut_ssh", "slurmdbd_outage", "terminate_db")
# kind -> (number of OME-Zarr inputs, TIFF input?, workflow mode, expected end state)
KINDS: dict[str, tuple[int, bool, str, str]] = {
    "zarr1": (1, False, "ok", "COMPLETED"),
    "zarr3": (3, False, "ok", "COMPLETED"),
    "tiff": (0, True, "ok", "COMPLETED"),
    "fail-tiff": (0, True, "fail", "FAILED"),
    "fail-zarr": (1, False, "fail", "FAILED"),
}


# ---------------------------------------------------------------- set-up


@contextlib.contextmanager
def throwaway_database(prefix: str = "biomero_chaos") -> Iterator[str]:
    name = f"{prefix}_{secrets.token_hex(4)}"
    _admin(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    finally:
        _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _admin(statement: str, *params: object) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(dbname="postgres", **PG)
    conn.autocommit = True
    try:
        with conn.cursor() as cursor:
            cursor.execute(statement, params or None)
            return cursor.fetchall() if cursor.description else []
    finally:
        conn.close()


def write_config(root: Path, url: str) -> Path:
    """The localslurm config plus the test workflow, the store, and quick polls."""
    base = (LOCALSLURM / "run/slurm-config.ini").read_text()
    extra = (
        "[WORKFLOWS]\nmisbehave = misbehave\n"
        f"misbehave_repo = {REPO}/tests/fixtures/misbehave\nmisbehave_job_mem = 100M\n"
    )
    text = base.replace("[WORKFLOWS]\n", extra, 1)
    text = text.replace("[ANALYTICS]\n", f"[ANALYTICS]\nsqlalchemy_url = {url}\n", 1)
    text = re.sub(r"(?m)^poll_min_s = .*$", "poll_min_s = 1", text)
    text = re.sub(r"(?m)^poll_max_s = .*$", "poll_max_s = 3", text)
    text = text.replace("[WORKER]\n", "[WORKER]\nstep_retry_s = 2\n", 1)
    path = root / "slurm-config.ini"
    path.write_text(text)
    return path


def make_samples(root: Path) -> dict[str, list[Path]]:
    """Small synthetic images: OME-Zarr 0.5 and OME-TIFF, three of each."""
    out = root / "samples"
    if not out.exists():
        script = REPO / "workflows/nuclei-segmentation/make_samples.py"
        subprocess.run(
            [sys.executable, str(script), str(out), "--axes", "yx"],
            check=True,
            capture_output=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    zarrs = sorted((out / "zarr-0.5").glob("*.ome.zarr"))
    tiffs = sorted(p for p in out.rglob("*.tif*") if p.is_file())
    if len(zarrs) < 3 or not tiffs:
        raise RuntimeError(f"make_samples wrote too little under {out}")
    return {"zarr": zarrs, "tiff": tiffs}


@dataclass
class Planned:
    run_id: str
    kind: str
    expect: str
    zarrs: int


def request_runs(
    engine: RunEngine,
    samples: dict[str, list[Path]],
    runs: int,
    out: Path,
    rng: random.Random,
    nap_max_s: int = 0,
) -> list[Planned]:
    """``runs`` runs, every kind at least once when there is room, the rest at random;
    good runs' jobs sleep up to ``nap_max_s`` so the runs spread over time."""
    kinds = list(KINDS)
    chosen = kinds[:runs] + [rng.choice(kinds) for _ in range(max(0, runs - len(kinds)))]
    rng.shuffle(chosen)
    planned = []
    for kind in chosen:
        zarrs, tiff, mode, expect = KINDS[kind]
        inputs = rng.sample(samples["zarr"], zarrs) + (
            [rng.choice(samples["tiff"])] if tiff else []
        )
        params: dict[str, object] = {"mode": mode}
        if mode == "ok" and nap_max_s:
            params = {"mode": "nap", "nap_s": rng.randint(0, nap_max_s)}
        run_id = engine.request(
            "misbehave",
            inputs,
            params,
            output_dir=out / f"{kind}-{len(planned):03d}",
        )
        planned.append(Planned(run_id, kind, expect, zarrs))
    return planned


# ---------------------------------------------------------------- the supervisor


class SupervisorProcess:
    """`biomero supervise` in its own process, started again whenever asked."""

    def __init__(self, config: Path, logs: Path) -> None:
        self.config = config
        self.logs = logs
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = (self.logs / f"supervise-{self.starts:03d}.log").open("wb")
        argv = [sys.executable, "-m", "biomeroworker", "--config", str(self.config)]
        self.proc = subprocess.Popen(
            [*argv, "supervise", "--lease-seconds", "3"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        log.close()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill9()


def _ss(filter_expr: str) -> list[tuple[str, str, list[int]]]:
    """(local address, peer address, pids) of established TCP sockets matching ``filter_expr``."""
    out = subprocess.run(
        ["ss", "-Htnp", "state", "established", filter_expr],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    rows = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        pids = [int(p) for p in re.findall(r"pid=(\d+)", line)]
        rows.append((parts[2], parts[3], pids))
    return rows


def sshd_serving(pid: int) -> list[int]:
    """The sshd processes at the far end of ``pid``'s connections to the SSH port."""
    mine = [local for local, _peer, pids in _ss(f"( dport = :{SSH_PORT} )") if pid in pids]
    found: set[int] = set()
    for _local, peer, pids in _ss(f"( sport = :{SSH_PORT} )"):
        if peer in mine:
            found.update(p for p in pids if p != pid)
    return sorted(found)


# ---------------------------------------------------------------- faults


@dataclass
class Driver:
    supervisor: SupervisorProcess
    database: str
    rng: random.Random
    kinds: tuple[str, ...] = FAULTS
    counts: Counter[str] = field(default_factory=Counter)
    log: list[str] = field(default_factory=list)
    deck: list[str] = field(default_factory=list)

    def inject(self) -> None:
        """The next fault from a shuffled deck: every kind once per round, random order."""
        if not self.deck:
            self.deck = list(self.kinds)
            self.rng.shuffle(self.deck)
        kind = self.deck.pop()
        done = getattr(self, kind)()
        # A fault with nothing to hit (no supervisor, no open connection) is counted apart.
        name = kind if done else f"{kind} (nothing to hit)"
        self.counts[name] += 1
        self.log.append(f"{time.strftime('%H:%M:%S')} {name}")

    def kill_supervisor(self) -> bool:
        if not self.supervisor.alive:
            return False
        self.supervisor.kill9()
        time.sleep(self.rng.uniform(0, 2))
        self.supervisor.start()
        return True

    def cut_ssh(self) -> bool:
        """Kill the sshd side of the supervisor's connection, waiting up to 10 s for one
        (a supervisor just started connects only when a run needs the cluster)."""
        victims: list[int] = []
        deadline = time.monotonic() + 10
        while not victims and self.supervisor.alive and time.monotonic() < deadline:
            assert self.supervisor.proc is not None
            victims = sshd_serving(self.supervisor.proc.pid)
            if not victims:
                time.sleep(0.5)
        for victim in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        return bool(victims)

    def slurmdbd_outage(self) -> bool:
        ctl = str(LOCALSLURM / "ctl")
        subprocess.run([ctl, "stop", "slurmdbd"], check=True, capture_output=True)
        try:
            time.sleep(self.rng.uniform(1, 5))
        finally:
            subprocess.run([ctl, "start", "slurmdbd"], check=True, capture_output=True)
        return True

    def terminate_db(self) -> bool:
        rows = _admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            self.database,
        )
        return bool(rows)


# ---------------------------------------------------------------- checks


def _retry(what: Callable[[], Any], attempts: int = 5) -> Any:
    """Our own reads survive the connection kills too."""
    for attempt in range(attempts):
        try:
            return what()
        except BiomeroError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.5)
    return None


def jobs_named(name: str) -> list[str]:
    """The Slurm jobs named ``name``: one id per submission (an array's elements are one)."""
    out = subprocess.run(
        ["sacct", "-a", "-n", "-X", "-P", f"--name={name}", "-S", "now-2days", "-o", "JobID"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return sorted({line.split("_", 1)[0] for line in out.split()})


def _wait_for_accounting(names: list[str], timeout_s: float = 60) -> None:
    """slurmdbd lists finished jobs a moment late (and later still after an outage)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(jobs_named(n) for n in names):
            return
        time.sleep(1)


def check(
    planned: list[Planned],
    tracker: Tracker,
    engine: RunEngine,
    transport: SSHTransport,
    results: Path,
) -> dict[str, Any]:
    """Every run against what it should be; the report's per-run findings."""
    runs = {p.run_id: _retry(lambda p=p: tracker.get_run(p.run_id)) for p in planned}
    names = []
    for p in planned:
        if runs[p.run_id]["state"] in ("COMPLETED", "FAILED"):
            names.append(f"biomero-job-{p.run_id}")
            names += [f"biomero-convert-{p.run_id}"] if p.zarrs else []
    _wait_for_accounting(names)
    problems: list[dict[str, Any]] = []
    states: Counter[str] = Counter()
    slurm_jobs = 0
    downloads = 0
    for p in planned:
        run = runs[p.run_id]
        states[run["state"]] += 1
        finding: dict[str, Any] = {"run": p.run_id, "kind": p.kind, "state": run["state"]}
        if run["state"] not in ("COMPLETED", "FAILED", "CANCELLED"):
            finding["problem"] = f"did not finish (step {run['step'] or '-'})"
        elif run["state"] != p.expect or (p.expect == "FAILED" and run["error_type"] != "FAILED"):
            # A failing workflow must fail because its job failed, not for another reason.
            finding["problem"] = f"expected {p.expect}: {run['error_type']}: {run['error']}"
        for kind in ["convert", "job"] if p.zarrs else ["job"]:
            found = jobs_named(f"biomero-{kind}-{p.run_id}")
            slurm_jobs += len(found)
            if run["state"] in ("COMPLETED", "FAILED") and len(found) != 1:
                finding.setdefault("problem", "")
                finding["problem"] += f" {len(found)} {kind} jobs {found}"
        ups = [t for t in run["tasks"] if t["kind"] == "stage_down" and t["state"] == "COMPLETED"]
        downloads += len(ups)
        if len(ups) != (1 if run["state"] == "COMPLETED" else 0):
            finding.setdefault("problem", "")
            finding["problem"] += f" {len(ups)} downloads"
        if "problem" in finding:
            problems.append(finding)
    partial_local = [str(p) for p in results.rglob(".partial-*")]
    remote = [engine.layout(RunRecord.from_row(runs[p.run_id])).remote_run for p in planned]
    found = transport.run(["find", *remote, "-name", ".partial-*"], check=False, idempotent=True)
    partial_remote = found.stdout.split()
    return {
        "runs": len(planned),
        "kinds": dict(Counter(p.kind for p in planned)),
        "states": dict(states),
        "slurm_jobs": slurm_jobs,
        "downloads": downloads,
        "partial_left": partial_local + partial_remote,
        "problems": problems,
    }


# ---------------------------------------------------------------- the whole run


def chaos(
    root: Path,
    url: str,
    *,
    runs: int,
    seed: int,
    mean_gap_s: float,
    limit_s: float,
    faults: tuple[str, ...] = FAULTS,
    settle_s: float = 180,
    nap_max_s: int = 0,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    rng = random.Random(seed)  # noqa: S311 (fault timing, not secrets)
    config = write_config(root, url)
    settings: Settings = load_settings(config_file=config)
    transport = SSHTransport(SSHOptions("localslurm", command_timeout_s=600))
    tracker = Tracker(url)
    try:
        list(init_cluster(transport, settings))
        engine = RunEngine(settings, transport, tracker)
        samples = make_samples(root)
        planned = request_runs(engine, samples, runs, root / "results", rng, nap_max_s)
        say(f"requested {len(planned)} runs: {dict(Counter(p.kind for p in planned))}")
        logs = root / "logs"
        logs.mkdir(exist_ok=True)
        supervisor = SupervisorProcess(config, logs)
        driver = Driver(supervisor, url.rsplit("/", 1)[1], rng, faults)
        started = time.monotonic()
        supervisor.start()
        ids = [p.run_id for p in planned]

        def open_runs() -> int:
            states = _retry(lambda: [tracker.get_run(i)["state"] for i in ids])
            return sum(1 for s in states if s not in ("COMPLETED", "FAILED", "CANCELLED"))

        try:
            left = len(ids)
            while left and time.monotonic() - started < limit_s:
                time.sleep(min(rng.expovariate(1 / mean_gap_s), 3 * mean_gap_s))
                if not supervisor.alive:
                    supervisor.start()
                driver.inject()
                left = open_runs()
                now = time.monotonic() - started
                say(f"{now:6.0f} s: {left} runs open, faults {dict(driver.counts)}")
            # No more faults: let the runs finish (a Slurm job may still be on its way).
            settle = time.monotonic()
            while open_runs() and time.monotonic() - settle < settle_s:
                if not supervisor.alive:
                    supervisor.start()
                time.sleep(1)
        finally:
            supervisor.stop()
        elapsed = time.monotonic() - started
        report = check(planned, tracker, engine, transport, root / "results")
        report.update(
            seed=seed,
            elapsed_s=round(elapsed, 1),
            faults=dict(driver.counts),
            supervisor_starts=supervisor.starts,
            fault_log=driver.log,
            logs=str(logs),
        )
        return report
    finally:
        tracker.close()
        transport.close()


def format_report(report: dict[str, Any]) -> str:
    lines = [
        f"runs {report['runs']} {report['kinds']} in {report['elapsed_s']} s "
        f"(seed {report['seed']})",
        f"faults {report['faults']}; supervisor started {report['supervisor_starts']} times",
        f"end states {report['states']}; Slurm jobs {report['slurm_jobs']}; "
        f"downloads {report['downloads']}; .partial-* left {len(report['partial_left'])}",
        f"runs not as expected: {len(report['problems'])}",
    ]
    lines += [
        f"  {p['run']} {p['kind']} {p['state']}: {p['problem'].strip()}" for p in report["problems"]
    ]
    lines += [f"  left: {p}" for p in report["partial_left"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=32)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--mean-gap", type=float, default=4.0, help="mean seconds between faults")
    parser.add_argument("--limit", type=float, default=1200, help="seconds of faults at most")
    parser.add_argument("--faults", nargs="+", choices=FAULTS, default=list(FAULTS))
    parser.add_argument(
        "--nap-max", type=int, default=8, help="good runs' jobs sleep 0..N s (spreads the runs)"
    )
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="biomero-chaos-"))
    with throwaway_database() as url:
        report = chaos(
            root,
            url,
            runs=args.runs,
            seed=args.seed,
            mean_gap_s=args.mean_gap,
            limit_s=args.limit,
            faults=tuple(args.faults),
            nap_max_s=args.nap_max,
        )
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 1 if report["problems"] or report["partial_left"] else 0


if __name__ == "__main__":
    sys.exit(main())
