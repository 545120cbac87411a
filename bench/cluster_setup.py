"""The bench configuration: localslurm's slurm-config.ini plus the no-op workflow."""

from __future__ import annotations

import configparser
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
WORK = BENCH / "work"
LOCAL_CONFIG = ROOT / "localslurm" / "run" / "slurm-config.ini"


def write_configs(store: Path) -> tuple[Path, Path]:
    """(bench config, the same with the worker's default poll intervals) under bench/work."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(LOCAL_CONFIG)
    if not parser.has_section("WORKFLOWS"):
        parser.add_section("WORKFLOWS")
    workflows = parser["WORKFLOWS"]
    workflows["noop"] = "noop"
    workflows["noop_repo"] = str(BENCH / "workflows" / "noop")
    workflows["noop_job_mem"] = "256M"
    workflows["noop_job_time"] = "00:10:00"
    if not parser.has_section("ANALYTICS"):
        parser.add_section("ANALYTICS")
    parser["ANALYTICS"]["sqlalchemy_url"] = f"sqlite:///{store}"
    config = WORK / "bench-config.ini"
    _write(parser, config, "localslurm/run/slurm-config.ini plus the no-op workflow")
    if parser.has_section("WORKER"):
        for key in ("poll_min_s", "poll_max_s"):
            parser.remove_option("WORKER", key)
    # Item 4 needs a job that waits in the queue: it may start an hour from now.
    workflows["noop_job_begin"] = "now+3600"
    defaults = WORK / "bench-config-queued.ini"
    _write(parser, defaults, "bench-config.ini with default poll intervals, job begins in 1 h")
    return config, defaults


def _write(parser: configparser.ConfigParser, path: Path, what: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        fh.write(f"; Written by bench/run: {what}.\n")
        parser.write(fh)


def init_cluster(config: Path) -> None:
    """`biomero init`: folders, the no-op workflow's files and job script (idempotent)."""
    biomero = ROOT / ".venv" / "bin" / "biomero"
    subprocess.run(
        [str(biomero), "--config", str(config), "init"], check=True, stdout=subprocess.DEVNULL
    )
