"""`biomero status [RUN] [--json] [--all]`: runs as the read models see them."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from biomeroworker.run_record import RunRecord

DEFAULT_LIMIT = 50


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("status", help="show your workflow runs, or one run")
    parser.add_argument("run", nargs="?", metavar="RUN", help="run id (or a unique prefix)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--all", action="store_true", help="everyone's runs (admins: root or [WORKER] admins)"
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_LIMIT,
        metavar="N",
        help=f"newest N runs, a page (default {DEFAULT_LIMIT}; 0 for all)",
    )
    parser.add_argument(
        "--after",
        metavar="RUN",
        help="the page of runs older than RUN (the last run of the previous page)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from biomeroworker.cli.tracking import caller, open_tracker, optional_settings
    from biomeroworker.tracking.access import check_run_access, visible_owner

    settings = optional_settings(args)
    viewer, admins = caller(settings)
    with open_tracker(args, settings) as tracker:
        if args.run:
            found = tracker.run_record(args.run)
            check_run_access(found, viewer, admins)
            return _show_run(found, args.json)
        owner = visible_owner(viewer, want_all=args.all, admins=admins)
        after = None
        if args.after:
            anchor = tracker.run_record(args.after)
            check_run_access(anchor, viewer, admins)
            after = anchor.run_id
        if args.limit > 0:
            # one more than the page, to know whether an older page follows
            rows = tracker.list_runs(user=owner, limit=args.limit + 1, after=after)
            older = rows[args.limit - 1]["run_id"] if len(rows) > args.limit else None
            rows = rows[: args.limit]
        else:
            rows, older = list(tracker.iter_runs(user=owner, after=after)), None
        total = None if args.json else tracker.count_runs(user=owner)
    more = None if older is None else _next_page(args, older)
    if args.json:
        # The read model's own rows: a listed run carries no tasks (a record would).
        print(json.dumps(rows, indent=2))
        if more:
            print(more, file=sys.stderr)
        return 0
    from biomeroworker.run_record import RunRecord

    _print_runs([RunRecord.from_row(row) for row in rows], total or 0, more)
    return 0


def _next_page(args: argparse.Namespace, last: str) -> str:
    every = " --all" if args.all else ""
    limit = "" if args.limit == DEFAULT_LIMIT else f" --limit {args.limit}"
    return f"older runs: biomero status{every}{limit} --after {last}"


def _show_run(found: RunRecord, as_json: bool) -> int:
    if as_json:
        print(json.dumps(found.to_row(), indent=2))
    else:
        _print_run(found)
    return 0


def _when(moment: datetime | None) -> str:
    return "" if moment is None else f"{moment:%Y-%m-%d %H:%M:%S}"


def _print_runs(runs: list[RunRecord], total: int, more: str | None) -> None:
    from biomeroworker.cli.text import print_table

    print_table(
        "",
        ["RUN", "WORKFLOW", "VERSION", "USER", "STATE", "STEP", "CREATED", "JOBS"],
        [
            [
                item.run_id[:8],
                item.workflow,
                item.version,
                item.user,
                item.state,
                item.step or "",
                _when(item.created_at),
                ",".join(item.slurm_job_ids),
            ]
            for item in runs
        ],
        f"{len(runs)} of {total} runs (times UTC)" + (f"\n{more}" if more else ""),
    )


def _print_run(found: RunRecord) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"run {found.run_id}: {found.workflow} {found.version}")
    console.print(f"user {found.user}  state {found.state}  step {found.step or '-'}")
    if found.error:
        console.print(f"error ({found.error_type}): {found.error}", markup=False)
    if found.result_location:
        console.print(f"results: {found.result_location}", markup=False)
    table = Table(caption="times UTC")
    for column in ("STEP", "STATE", "JOB", "JOB STATE", "EXIT", "STARTED", "ENDED", "ERROR"):
        table.add_column(column)
    for task in found.tasks:
        table.add_row(
            task.kind,
            task.state,
            task.slurm_job_id or "",
            task.job_state or "",
            "" if task.exit_code is None else str(task.exit_code),
            _when(task.started_at),
            _when(task.ended_at),
            task.error_type or "",
        )
    console.print(table)
    for task in found.tasks:
        if task.state == "STARTED" and task.job_state == "UNKNOWN":
            console.print(
                f"waiting without status: job {task.slurm_job_id} ({task.kind}) is not "
                "listed by Slurm; the supervisor's log says why. The run fails once Slurm's "
                "accounting has not listed it for [WORKER] job_unseen_limit_s.",
                markup=False,
            )
