"""`biomero run`, `results`, `cancel` and `cleanup`: a workflow run from the command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from biomeroworker.run_record import RunRecord
    from biomeroworker.runs import RunEngine


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a workflow on images through Slurm")
    p.add_argument("workflow")
    p.add_argument(
        "inputs", nargs="+", type=Path, metavar="INPUT", help="OME-Zarr folders or TIFFs"
    )
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a parameter value; for a file parameter, a local file (staged beside the images)",
    )
    p.add_argument("--version", help="workflow version (default: the configured one)")
    p.add_argument("--partition", help="Slurm partition (default: from the config)")
    p.add_argument(
        "--output",
        type=Path,
        help="folder to put the results in, as a new subfolder <workflow>-<run id>; "
        "nothing already there is touched (default: the user data dir)",
    )
    p.add_argument("--wait", action="store_true", help="drive the run here and show progress")
    p.set_defaults(func=run)

    r = sub.add_parser("results", help="download a finished run's results")
    r.add_argument("run")
    r.add_argument(
        "--output",
        type=Path,
        required=True,
        help="folder to put the results in, as a new subfolder <workflow>-<run id>",
    )
    r.set_defaults(func=results)

    c = sub.add_parser("cancel", help="cancel a run: scancel its jobs and mark it cancelled")
    c.add_argument("run")
    c.set_defaults(func=cancel)

    k = sub.add_parser(
        "cleanup",
        help="remove remote run folders of runs that ended more than DAYS ago "
        "(by the tracking database; folders of unknown runs are kept)",
    )
    k.add_argument("--older-than", type=float, required=True, metavar="DAYS")
    k.add_argument("--dry-run", action="store_true")
    k.set_defaults(func=cleanup)


def parse_params(pairs: list[str]) -> dict[str, object]:
    from biomeroworker.errors import BiomeroError

    values: dict[str, object] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise BiomeroError(f"--param {pair!r}: write NAME=VALUE")
        values[name] = value
    return values


def run(args: argparse.Namespace) -> int:
    from biomeroworker.cli.common import engine_for
    from biomeroworker.cli.progress import RichReporter
    from biomeroworker.runs import RunFailed

    reporter = RichReporter() if args.wait else None
    with engine_for(args, reporter) as engine:
        run_id = engine.request(
            args.workflow,
            args.inputs,
            parse_params(args.param),
            version=args.version,
            partition=args.partition,
            output_dir=args.output,
        )
        print(f"run {run_id}")
        if engine.checked is not None and engine.checked.summary():
            print(engine.checked.summary())
        if not args.wait:
            # Recorded: a supervisor (`biomero supervise`) drives it from here.
            return 0
        try:
            with reporter:  # type: ignore[union-attr]
                dest = engine.drive(run_id)
        except RunFailed as exc:
            print(f"run {run_id} failed: {exc}", file=sys.stderr)
            return 1
        print(f"results in {dest}")
        for name, seconds in engine.step_seconds.items():
            print(f"  {name:<11} {seconds:6.2f} s")
    return 0


def results(args: argparse.Namespace) -> int:
    """A completed run's results (already local) copied to --output; for a failed or
    cancelled run, whatever its job left in the remote out folder. Either way into a
    new subfolder ``<workflow>-<run id>``: nothing already in --output is touched."""
    from biomeroworker.cli.common import engine_for
    from biomeroworker.errors import BiomeroError
    from biomeroworker.runs import results_folder_name
    from biomeroworker.staging import copy_results, stage_down

    with engine_for(args) as engine:
        run = _own_run(engine, args.run)
        dest = args.output.resolve() / results_folder_name(run)
        state, where = run.state, run.result_location
        if state == "COMPLETED" and where and Path(where).is_dir():
            report = copy_results(Path(where), dest)
        elif state in ("FAILED", "CANCELLED"):
            dest.parent.mkdir(parents=True, exist_ok=True)
            report = stage_down(
                engine.transport,
                engine.layout(run).remote_out,
                dest,
                idle_timeout_s=engine.settings.worker.transfer_idle_timeout_s,
            )
        else:
            raise BiomeroError(
                f"run {run.run_id} is {state.lower()}: results come when it completes "
                f"(see `biomero status {run.run_id[:8]}`)"
            )
    print(f"results in {dest}" + (" (already there)" if report.adopted else ""))
    return 0


def _own_run(engine: RunEngine, ref: str) -> RunRecord:
    """The run ``ref`` names, if the caller owns it or is an admin."""
    from biomeroworker.cli.tracking import caller
    from biomeroworker.tracking.access import check_run_access

    viewer, admins = caller(engine.settings)
    run = engine.tracker.run_record(ref)
    check_run_access(run, viewer, admins)
    return run


def _admin_only(engine: RunEngine, command: str) -> None:
    """Commands that act on everyone's runs are for root and [WORKER] admins."""
    from biomeroworker.cli.tracking import caller
    from biomeroworker.tracking.access import AccessDeniedError, is_admin

    viewer, admins = caller(engine.settings)
    if not is_admin(viewer, admins):
        raise AccessDeniedError(
            f"biomero {command} acts on every user's runs: it needs root or a name in "
            f"[WORKER] admins; {viewer} is not one"
        )


def cancel(args: argparse.Namespace) -> int:
    from biomeroworker.cli.common import engine_for

    with engine_for(args) as engine:
        jobs = engine.cancel(_own_run(engine, args.run).run_id)
    print(f"cancelled run {args.run}" + (f" (scancel {' '.join(jobs)})" if jobs else ""))
    return 0


def cleanup(args: argparse.Namespace) -> int:
    from biomeroworker.cleanup import remove_old_runs
    from biomeroworker.cli.common import engine_for

    with engine_for(args) as engine:
        _admin_only(engine, "cleanup")
        plan = remove_old_runs(
            engine.transport, engine.tracker, engine.settings, args.older_than, args.dry_run
        )
    verb = "would remove" if args.dry_run else "removed"
    for path in plan.remove:
        print(f"{verb} {path}")
    print(f"{verb} {len(plan.remove)} folder(s)")
    for note in plan.notes():
        print(note)
    return 0
