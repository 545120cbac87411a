"""What the OMERO scripts do when they run: record, report, cancel; nothing long.

Each action takes the user's script session (``conn``), the tracker and plain values,
and returns the message the script shows. A run belongs to the OMERO user id that
requested it; every action that names a run checks that id first, and answers "not
one of your runs" for anyone else's, so run ids leak nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from biomeroworker.errors import BiomeroError
from biomeroworker.inputs import PartitionSource
from biomeroworker.omero import upstream
from biomeroworker.omero.exporter import check_attachments, selected_images
from biomeroworker.omero.forms import (
    BATCH_SIZE,
    Catalog,
    read_choices,
    read_outputs,
    read_selection,
    read_wait,
    whole_number,
)
from biomeroworker.omero.scripting import cluster_partitions
from biomeroworker.run_record import RunRecord
from biomeroworker.tracking.application import Tracker
from biomeroworker.tracking.errors import UnknownRunError

# Waiting in the script: the first checks come soon (a short run is reported within a
# second of its end), then back off to every WAIT_POLL_S.
WAIT_POLL_FIRST_S = 0.5
WAIT_POLL_S = 5.0


@dataclass(frozen=True)
class ScriptUser:
    name: str
    user_id: int
    group_id: int


def user_of(conn: Any) -> ScriptUser:
    ctx = conn.getEventContext()
    return ScriptUser(str(ctx.userName), int(ctx.userId), int(ctx.groupId))


def own_run(tracker: Tracker, ref: str, user: ScriptUser) -> RunRecord:
    ref = (ref or "").strip()
    if not ref:
        raise BiomeroError("give the run id (Workflow Status lists yours)")
    try:
        run = tracker.run_record(ref)
    except UnknownRunError:
        run = None
    if run is None or run.omero_user_id != user.user_id:
        raise UnknownRunError(f"run {ref!r} is not one of your runs")
    return run


# -- Run Workflow ------------------------------------------------------------------------


def screens_as_plates(conn: Any, data_type: str, ids: list[int]) -> tuple[str, list[int]]:
    """A Screen selection (upstream's scripts take one) is the selection of its plates."""
    if data_type != "Screen":
        return data_type, ids
    plates: list[int] = []
    for screen_id in ids:
        screen = conn.getObject("Screen", screen_id)
        if screen is None:
            raise BiomeroError(f"Screen {screen_id} not found, or not readable in this group")
        plates += [int(plate.getId()) for plate in screen.listChildren()]
    if not plates:
        raise BiomeroError(f"Screen {ids} has no plates to run on")
    return "Plate", sorted(set(plates), key=plates.index)


def _check_readable(conn: Any, data_type: str, ids: list[int]) -> None:
    missing = [i for i in ids if conn.getObject(data_type, i) is None]
    if missing:
        raise BiomeroError(f"{data_type} {missing} not found, or not readable in this group")


def _batches(ids: list[int], size: int) -> list[list[int]]:
    return [ids[i : i + size] for i in range(0, len(ids), size)]


@dataclass(frozen=True)
class Requested:
    run_ids: list[str]
    notes: list[str]  # what the user should know, e.g. values not checked on the cluster


def check_choices(
    catalog: Catalog,
    choices: list[Any],
    partitions: PartitionSource | None,
    *,
    converts: bool = True,
) -> list[str]:
    """The rules `biomero run` applies (biomeroworker.inputs.check_request), for the
    picked workflows of an OMERO run: partition, time limit and other sbatch values
    against the cluster, and the conversion job's when the run converts (exports are
    OME-Zarr; Use_ZARR_Format skips the conversion). Raises InputError with every
    problem; returns notes (a cluster that did not answer)."""
    from biomeroworker.inputs import check_request

    if catalog.settings is None:
        return []
    source = partitions or cluster_partitions(catalog.settings)
    notes = []
    for choice in choices:
        checked = check_request(catalog.settings, choice.workflow.name, source, converts=converts)
        if checked.unchecked and f"warning: {checked.unchecked}" not in notes:
            notes.append(f"warning: {checked.unchecked}")
    return notes


def request_runs(
    conn: Any,
    tracker: Tracker,
    catalog: Catalog,
    inputs: Mapping[str, Any],
    *,
    batched: bool = False,
    partitions: PartitionSource | None = None,
) -> Requested:
    """Check the form's answers and record one run per workflow (and batch).

    ``partitions`` answers what the cluster offers (default: asked over the configured
    transport, cached); nothing is recorded unless every check passes.
    """
    user = user_of(conn)
    data_type, ids = screens_as_plates(conn, *read_selection(inputs))
    options = read_outputs(inputs)
    choices = read_choices(inputs, catalog)
    _check_readable(conn, data_type, ids)
    options, reused = upstream.existing_dataset(conn, inputs, options)
    if options.dataset_id:
        _check_readable(conn, "Dataset", [options.dataset_id])
    # An empty Dataset or Plate is refused now, not when the export finds nothing.
    image_ids = [int(image.getId()) for image, _ in selected_images(conn, data_type, ids)]
    reads_zarr = bool(inputs.get(upstream.USE_ZARR))
    notes = check_choices(catalog, choices, partitions, converts=not reads_zarr)
    for choice in choices:
        check_attachments(conn, choice.attachments)
    email, mail_note = upstream.notify_address(conn, inputs)
    ours = [n for n in (reused, mail_note) if n] + upstream.notes(inputs)
    notes += [f"Note: {n}" for n in ours]
    selections = [(data_type, ids)]
    if batched:
        size = whole_number(BATCH_SIZE, inputs.get(BATCH_SIZE) or 0)
        if size < 1:
            raise BiomeroError(f"{BATCH_SIZE} must be at least 1")
        selections = [("Image", batch) for batch in _batches(image_ids, size)]
    run_ids = []
    for choice in choices:
        for kind, chosen in selections:
            run_ids.append(
                tracker.record_run_requested(
                    workflow=choice.workflow.name,
                    version=choice.workflow.version,
                    user_name=user.name,
                    inputs={
                        "source": "omero",
                        "data_type": kind,
                        "ids": chosen,
                        "outputs": options.to_outputs(),
                        "partition": None,
                        "output_dir": None,
                        "notify_email": email,
                        # Use_ZARR_Format: the workflow reads the OME-Zarr export as is.
                        "reads_zarr": reads_zarr,
                        # file parameter -> OMERO file annotation ids (export downloads)
                        **({"attachments": choice.attachments} if choice.attachments else {}),
                    },
                    parameters=choice.parameters,
                    omero_user_id=user.user_id,
                    omero_group_id=user.group_id,
                )
            )
    return Requested(run_ids, notes)


def wait_for(
    tracker: Tracker,
    run_ids: list[str],
    minutes: float,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> list[RunRecord]:
    """Poll the read models until every run finished or ``minutes`` passed."""
    deadline = clock() + minutes * 60
    interval = WAIT_POLL_FIRST_S
    while True:
        runs = [tracker.run_record(r) for r in run_ids]
        if all(r.finished for r in runs) or clock() >= deadline:
            return runs
        sleep(interval)
        interval = min(interval * 1.5, WAIT_POLL_S)


def run_workflow(
    conn: Any,
    tracker: Tracker,
    catalog: Catalog,
    inputs: Mapping[str, Any],
    *,
    batched: bool = False,
    sleep: Callable[[float], None] = time.sleep,
    partitions: PartitionSource | None = None,
) -> str:
    requested = request_runs(conn, tracker, catalog, inputs, batched=batched, partitions=partitions)
    run_ids = requested.run_ids
    lines = [f"Recorded run {r} (see Workflow Status)" for r in run_ids]
    minutes = read_wait(inputs)
    if minutes is not None:
        lines = [_outcome(run) for run in wait_for(tracker, run_ids, minutes, sleep=sleep)]
    return "\n".join(requested.notes + lines)


def _outcome(run: RunRecord) -> str:
    text = f"run {run.run_id}: {run.state.lower()}"
    if not run.finished:
        return text + f" (at {run.step or 'the start'}; still going, see Workflow Status)"
    if run.error:
        return text + f": {run.error_type}: {run.error}"
    return text


# -- Workflow Status ---------------------------------------------------------------------


def _line(run: RunRecord) -> str:
    created = f"{run.created_at:%Y-%m-%d %H:%M:%S}" if run.created_at else ""
    jobs = ",".join(run.slurm_job_ids) or "-"
    return (
        f"{run.run_id}  {run.workflow} {run.version}  {run.state:<9} "
        f"{run.step or '-':<10}  {created}  jobs {jobs}"
    )


def status(tracker: Tracker, user: ScriptUser, run_ref: str | None = None, limit: int = 20) -> str:
    if run_ref:
        run = own_run(tracker, run_ref, user)
        lines = [_line(run)]
        if run.error:
            lines.append(f"error ({run.error_type}): {run.error}")
        for task in run.tasks:
            progress = f" {task.progress}" if task.progress else ""
            job = f" job {task.slurm_job_id} {task.job_state or ''}" if task.slurm_job_id else ""
            lines.append(f"  {task.kind:<10} {task.state:<9}{job}{progress}")
        return "\n".join(lines)
    runs = [r for r in tracker.run_records(user=user.name) if r.omero_user_id == user.user_id]
    if not runs:
        return "You have no workflow runs."
    return "\n".join(
        [f"Your last {min(limit, len(runs))} of {len(runs)} run(s):"]
        + [_line(r) for r in runs[:limit]]
    )


# -- Cancel ----------------------------------------------------------------------------


def cancel(
    tracker: Tracker,
    user: ScriptUser,
    run_ref: str,
    cancel_run: Callable[[str, str], list[str]],
    reason: str = "",
) -> str:
    """``cancel_run`` is RunEngine.cancel (scancel the jobs, mark the run cancelled)."""
    run = own_run(tracker, run_ref, user)
    if run.finished:
        raise BiomeroError(f"run {run.run_id} is already {run.state.lower()}")
    jobs = cancel_run(run.run_id, reason or f"cancelled by {user.name}")
    return f"Cancelled run {run.run_id}" + (f" (scancel {' '.join(jobs)})" if jobs else "")


# -- Get Results -------------------------------------------------------------------------


def get_results(
    conn: Any,
    tracker: Tracker,
    run_ref: str,
    results_dir: Callable[[RunRecord], Path],
) -> str:
    """Import a finished run's results again, in this session, if the worker still has
    them; whatever was imported before is found by its provenance and not repeated.
    Without local results, list what the run imported."""
    from biomeroworker.omero.importer import Importer, ImportOptions, run_annotations
    from biomeroworker.omero.side import source_index

    user = user_of(conn)
    run = own_run(tracker, run_ref, user)
    if not run.finished:
        return (
            f"run {run.run_id} is {run.state.lower()} (at {run.step or 'the start'}); "
            "its results are imported when it finishes"
        )
    if run.omero_group_id is not None and run.omero_group_id != user.group_id:
        raise BiomeroError(f"switch to group {run.omero_group_id} (the run's group) and run again")
    results = results_dir(run)
    if results.is_dir() and any(results.iterdir()):
        options = ImportOptions.from_outputs(run.inputs.outputs)
        summary = Importer(conn, run, results, source_index(run), options).import_all()
        return f"run {run.run_id}: " + _describe(summary)
    found = run_annotations(conn, run.run_id)
    if not found:
        return f"run {run.run_id} ({run.state.lower()}) has no results in OMERO or on the worker"
    kinds: dict[str, int] = {}
    for ann in found:
        kinds[ann.get("kind", "?")] = kinds.get(ann.get("kind", "?"), 0) + 1
    listing = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    return f"run {run.run_id} imported earlier: {listing}"


def _describe(summary: Mapping[str, Any]) -> str:
    parts = [
        f"{len(summary['images'])} new image(s)",
        f"{summary['attachments']} attachment(s)",
        f"{summary['tables']} table(s)",
        f"{summary['rois']} ROI(s)",
    ]
    if summary["dataset_id"]:
        parts.append(f"in Dataset {summary['dataset_id']}")
    if summary["skipped"]:
        parts.append(f"{summary['skipped']} already there")
    text = ", ".join(parts)
    for problem in summary["problems"]:
        text += f"\nproblem: {problem}"
    return text
