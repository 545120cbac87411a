"""`biomero stats`: runs per workflow, step durations, failures and Slurm use."""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("stats", help="analytics over tracked runs")
    parser.add_argument(
        "--period", choices=("day", "week", "month", "year"), default="month", help="run counts per"
    )
    parser.add_argument(
        "--since", type=datetime.fromisoformat, metavar="DATE", help="only runs from DATE (UTC)"
    )
    parser.add_argument("--all", action="store_true", help="everyone's runs (admins only)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from biomeroworker.cli.tracking import caller, open_tracker, optional_settings
    from biomeroworker.tracking.access import visible_owner

    settings = optional_settings(args)
    viewer, admins = caller(settings)
    owner = visible_owner(viewer, want_all=args.all, admins=admins)
    with open_tracker(args, settings) as tracker:
        result = tracker.stats(user=owner, period=args.period, since=args.since)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_tables(result)
    return 0


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def _mebibytes(value: int | None) -> str:
    return "" if value is None else f"{value / 2**20:.1f}"


def _print_tables(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    runs = Table(title=f"Runs per {result['period']}")
    for column in ("PERIOD", "WORKFLOW", "USER", "RUNS", "COMPLETED", "FAILED"):
        runs.add_column(column)
    for row in result["runs"]:
        runs.add_row(
            row["period"],
            row["workflow"],
            row["user"],
            *(str(row[k]) for k in ("runs", "completed", "failed")),
        )
    steps = Table(title="Duration per step (completed tasks)")
    for column in ("STEP", "COUNT", "MEAN S", "P95 S"):
        steps.add_column(column)
    for row in result["step_durations"]:
        steps.add_row(
            row["step"], str(row["count"]), _seconds(row["mean_s"]), _seconds(row["p95_s"])
        )
    failures = Table(title="Failures by cause")
    for column in ("ERROR TYPE", "STEP", "RUNS"):
        failures.add_column(column)
    for row in result["failures"]:
        failures.add_row(row["error_type"], row["step"], str(row["runs"]))
    slurm = Table(title="Slurm use per user")
    for column in ("USER", "JOBS", "ELAPSED S", "MEAN S", "MAX RSS MiB"):
        slurm.add_column(column)
    for row in result["slurm_use"]:
        slurm.add_row(
            row["user"],
            str(row["jobs"]),
            _seconds(row["elapsed_s"]),
            _seconds(row["mean_elapsed_s"]),
            _mebibytes(row["max_rss_bytes"]),
        )
    for table in (runs, steps, failures, slurm):
        console.print(table)
