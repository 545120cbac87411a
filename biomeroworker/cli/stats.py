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
    from biomeroworker.cli.text import print_table

    print_table(
        f"Runs per {result['period']}",
        ["PERIOD", "WORKFLOW", "USER", "RUNS", "COMPLETED", "FAILED"],
        [
            [row["period"], row["workflow"], row["user"]]
            + [str(row[k]) for k in ("runs", "completed", "failed")]
            for row in result["runs"]
        ],
    )
    print_table(
        "Duration per step (completed tasks)",
        ["STEP", "COUNT", "MEAN S", "P95 S"],
        [
            [row["step"], str(row["count"]), _seconds(row["mean_s"]), _seconds(row["p95_s"])]
            for row in result["step_durations"]
        ],
    )
    print_table(
        "Failures by cause",
        ["ERROR TYPE", "STEP", "RUNS"],
        [[row["error_type"], row["step"], str(row["runs"])] for row in result["failures"]],
    )
    print_table(
        "Slurm use per user",
        ["USER", "JOBS", "ELAPSED S", "MEAN S", "MAX RSS MiB"],
        [
            [
                row["user"],
                str(row["jobs"]),
                _seconds(row["elapsed_s"]),
                _seconds(row["mean_elapsed_s"]),
                _mebibytes(row["max_rss_bytes"]),
            ]
            for row in result["slurm_use"]
        ],
    )
