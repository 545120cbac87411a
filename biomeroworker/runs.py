"""The steps of a workflow run, each recorded in the event store and safe to repeat.

request -> stage up (+ params.json) -> convert (OME-Zarr to TIFF, a job array) ->
submit the workflow job -> wait -> stage down -> done (remote folder removed).

Every step reads what it needs from the tracked run and first looks for its own earlier
work: an open task of its kind is reused, an upload that already arrived is adopted, a
job whose id was never recorded is found again by its run-unique name. So any process
can pick a run up where another left it: `biomero run --wait` drives the steps in one
process (``drive``), the supervisor drives many runs with one poll per cycle.
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

import platformdirs

from biomeroworker.config import Settings
from biomeroworker.convert.zarr_to_tiff import convert as convert_zarr
from biomeroworker.convert.zarr_to_tiff import tiff_name
from biomeroworker.errors import (
    BiomeroError,
    CommandTimeout,
    ConnectError,
    CredentialsRefused,
    TransportError,
)
from biomeroworker.inputs import RequestCheck, check_images, check_request, partitions_of
from biomeroworker.late_accounting import LateAccounting
from biomeroworker.layout import RunLayout
from biomeroworker.localdirs import adopt, claim, release
from biomeroworker.prepare import cluster_layout, prepared_on_cluster
from biomeroworker.run_record import RunRecord, TaskRecord, thawed
from biomeroworker.slurm.commands import SubmitRequest
from biomeroworker.slurm.parse import JobStatus
from biomeroworker.slurm.rest.modes import slurm_client
from biomeroworker.slurm.scale import scale_memory, scale_time_limit
from biomeroworker.slurm.states import JobState
from biomeroworker.staging import inputs_manifest, stage_down, stage_up
from biomeroworker.tracking.access import current_user
from biomeroworker.tracking.application import Tracker
from biomeroworker.transport.base import Transport
from biomeroworker.userpaths import (
    PathNotAllowed,
    entries,
    hand_over,
    readable_by,
    writable_by,
)
from biomeroworker.waits import JobView, Polled, indexed, view_of
from biomeroworker.workflows.attachments import folder as attachment_folder
from biomeroworker.workflows.attachments import job_parameters, local_files, staging_sources
from biomeroworker.workflows.catalog import LOCAL_VERSION, get_workflow
from biomeroworker.workflows.params import validate_params

log = logging.getLogger(__name__)

CLUSTER = "slurm"
LOG_TAIL_LINES = 30
# A log without newlines must not put megabytes into an event: the tail is cut by bytes.
LOG_TAIL_BYTES = 4096


class RunFailed(BiomeroError):
    """A step of the run failed; the run is marked failed with this message."""

    def __init__(self, error_type: str, message: str) -> None:
        self.error_type = error_type
        self.message = message
        super().__init__(f"{error_type}: {message}")


class RunCancelled(BiomeroError):
    """The run was cancelled while a step waited."""


class Step(Enum):
    EXPORT = "export"
    CONVERT_HERE = "convert here"
    STAGE_UP = "stage up"
    SUBMIT_CONVERT = "submit convert"
    WAIT_CONVERT = "wait convert"
    SUBMIT_JOB = "submit job"
    WAIT_JOB = "wait job"
    STAGE_DOWN = "stage down"
    IMPORT = "import"
    COMPLETE = "complete"
    NONE = "none"

    @property
    def waits(self) -> bool:
        return self in (Step.WAIT_CONVERT, Step.WAIT_JOB)


STEP_LABELS = {
    Step.EXPORT: "export",
    Step.CONVERT_HERE: "convert",
    Step.STAGE_UP: "stage up",
    Step.SUBMIT_CONVERT: "convert",
    Step.WAIT_CONVERT: "convert",
    Step.SUBMIT_JOB: "job",
    Step.WAIT_JOB: "job",
    Step.STAGE_DOWN: "stage down",
    Step.IMPORT: "import",
    Step.COMPLETE: "complete",
}


class DataSide(Protocol):
    """Where a run's inputs come from and its results go, when that is not local files.

    The OMERO side (biomeroworker.omero) exports images as OME-Zarr and imports results
    with provenance. Both calls must be safe to repeat: ``import_results`` after a crash
    finds what an earlier attempt imported for this run (by its provenance) instead of
    importing twice.
    """

    def export(self, run: RunRecord, dest: Path) -> list[Path]: ...

    def import_results(self, run: RunRecord, results: Path) -> dict[str, Any]: ...


class Reporter(Protocol):
    """What a user interface hears about a run (all optional to act on)."""

    def step(self, name: str, detail: str = "") -> None: ...

    def bytes_moved(self, name: str, done: int, total: int) -> None: ...

    def job(self, name: str, state: str, done: int, total: int) -> None: ...


class SilentReporter:
    def step(self, name: str, detail: str = "") -> None:
        log.info("%s %s", name, detail)

    def bytes_moved(self, name: str, done: int, total: int) -> None:
        pass

    def job(self, name: str, state: str, done: int, total: int) -> None:
        pass


def _epoch(moment: datetime | None) -> float:
    """Seconds since the epoch of a recorded moment (now when absent)."""
    return moment.timestamp() if moment else time.time()


def default_results_root() -> Path:
    return Path(platformdirs.user_data_dir("biomero")) / "results"


def results_folder_name(run: RunRecord) -> str:
    """``<workflow>-<run id>``: the folder a run's results get inside a chosen output."""
    workflow = re.sub(r"[^A-Za-z0-9._-]", "_", run.workflow)
    return f"{workflow}-{run.run_id}"


def results_dir(run: RunRecord) -> Path:
    """Where a run's results land: a new folder named after the run inside the chosen
    output folder (so nothing already there is touched), else the run's own folder."""
    chosen = run.inputs.output_dir
    if chosen:
        return chosen / results_folder_name(run)
    return RunLayout(run.run_id, ".", default_results_root()).local_out


def is_zarr(path: Path) -> bool:
    return path.name.lower().endswith(".zarr")


def latest_task(run: RunRecord, kind: str) -> TaskRecord | None:
    return run.latest_task(kind)


def job_name(run_id: str, kind: str, attempt: int = 1) -> str:
    """Run- and attempt-unique, so a job whose id was lost can be found again."""
    return f"biomero-{kind}-{run_id}" if attempt <= 1 else f"biomero-{kind}{attempt}-{run_id}"


RESUBMITTABLE = {"TIMEOUT": "time", "OUT_OF_MEMORY": "mem"}


def resubmissions(run: RunRecord) -> list[TaskRecord]:
    """Earlier attempts of the workflow job that ended for lack of time or memory."""
    return [
        t
        for t in run.tasks
        if t.kind == "job" and t.state == "FAILED" and t.error_type in RESUBMITTABLE
    ]


def source(run: RunRecord) -> str:
    """ "local" (files named on the command line) or a DataSide name such as "omero"."""
    return run.inputs.source


def converts_here(run: RunRecord) -> bool:
    return run.inputs.convert_on == "worker"


def input_files(run: RunRecord) -> list[Path]:
    """Local files to stage up: the request's own or what the export wrote, with
    OME-Zarr replaced by the TIFF the worker made when it converts here."""
    if source(run) == "local":
        files = list(run.inputs.files)
    else:
        task = latest_task(run, "export")
        files = [Path(p) for p in (task.result_locations if task else ())]
    converted = latest_task(run, "convert") if converts_here(run) else None
    if converted is None or converted.state != "COMPLETED":
        return files
    tiffs = {Path(p).name.split(".")[0]: Path(p) for p in converted.result_locations}
    return [tiffs.get(p.name.split(".")[0], p) if is_zarr(p) else p for p in files]


def zarr_inputs(run: RunRecord) -> list[str]:
    """The OME-Zarr inputs to convert to TIFF; none when the workflow reads OME-Zarr
    itself (upstream's Use_ZARR_Format)."""
    if run.inputs.reads_zarr:
        return []
    return [p.name for p in input_files(run) if is_zarr(p)]


def next_step(run: RunRecord) -> Step:
    """What the run needs next, from its tracked tasks alone."""
    if run.finished:
        return Step.NONE
    done = {t.kind for t in run.tasks if t.state == "COMPLETED"}
    external = source(run) != "local"
    if external and "export" not in done:
        return Step.EXPORT
    # Asked at most once, and only while a conversion is not done: a supervisor cycle
    # asks every waiting run for its step several times.
    needs_convert = "convert" not in done and bool(zarr_inputs(run))
    if converts_here(run) and needs_convert:
        return Step.CONVERT_HERE
    if "stage_up" not in done:
        return Step.STAGE_UP
    for kind, submit, wait in (
        ("convert", Step.SUBMIT_CONVERT, Step.WAIT_CONVERT),
        ("job", Step.SUBMIT_JOB, Step.WAIT_JOB),
    ):
        if kind == "convert" and not needs_convert:
            continue
        if kind not in done:
            task = latest_task(run, kind)
            return wait if task and task.slurm_job_id else submit
    if "stage_down" not in done:
        return Step.STAGE_DOWN
    if external and "import" not in done:
        return Step.IMPORT
    return Step.COMPLETE


def waiting_kind(step: Step) -> str:
    """The task kind a waiting step waits for."""
    return "convert" if step is Step.WAIT_CONVERT else "job"


def log_tail(
    transport: Transport,
    path: str,
    *,
    lines: int = LOG_TAIL_LINES,
    max_bytes: int = LOG_TAIL_BYTES,
) -> str:
    """The last ``lines`` lines of a cluster log, never more than ``max_bytes`` of it.

    ``tail -c`` bounds what crosses the link; a first line cut by that bound is dropped
    (unless it is the only one, as in a log without newlines: then it shows cut, after "...").
    """
    try:
        result = transport.run(
            ["tail", "-c", str(max_bytes), "--", path], check=False, idempotent=True
        )
    except TransportError as exc:
        return f"(log {path} unreadable: {exc})"
    if result.exit_code != 0:
        return result.stderr.strip()[:max_bytes] or f"(log {path} unreadable)"
    text = result.stdout
    kept = text.splitlines()
    if len(text.encode()) >= max_bytes and kept:
        kept = kept[1:] if len(kept) > 1 else ["..." + kept[0]]
    tail = "\n".join(kept[-lines:]).strip()
    return tail or "(empty log)"


# While accounting has not listed a job this long after its submission (or after it
# vanished), polls stay fast: the usual cause is slurmdbd lagging by seconds.
ACCOUNTING_LAG_S = 60.0
# Slurm tries to start a job the moment it is submitted, so a job this young may start,
# and a short one end, any moment: polls stay at poll_min_s until then, rather than
# backing off from the first PENDING they see.
FRESH_JOB_S = 10.0


@dataclass
class RunEngine:
    settings: Settings
    transport: Transport
    tracker: Tracker
    reporter: Reporter = field(default_factory=SilentReporter)
    sleep: Callable[[float], None] = time.sleep
    data_sides: dict[str, DataSide] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.reconfigure(self.settings, self.transport)
        self.step_seconds: dict[str, float] = {}
        # task id -> wall-clock time since when a poll has not listed (all of) its job.
        # A job never listed at all counts from its task's start, which is recorded, so
        # a restart does not reset that clock.
        self.unseen_since: dict[str, float] = {}
        # task id -> (run id, message) for jobs waiting without any status past the limit
        # while accounting could not be asked: reported, not failed.
        self.stalled: dict[str, tuple[str, str]] = {}
        # Jobs seen ending by the controller's word, whose accounting is filled in later.
        self.late = LateAccounting()
        self.checked: RequestCheck | None = None  # the last request's checks (for the CLI)

    def reconfigure(self, settings: Settings, transport: Transport) -> None:
        """Use new settings from the next step on (the supervisor reloads a changed
        slurm-config.ini); what runs carry in their records is not touched."""
        self.settings = settings
        self.transport = transport
        self.slurm = slurm_client(settings, transport)
        self.cluster = cluster_layout(settings)

    # -- request ------------------------------------------------------------------

    def request(
        self,
        workflow: str,
        inputs: Sequence[Path],
        params: dict[str, object],
        *,
        version: str | None = None,
        partition: str | None = None,
        output_dir: Path | None = None,
        user: str | None = None,
    ) -> str:
        """Check and record a run: nothing is staged or submitted yet, and the cluster is
        asked only for its partitions (one cached sinfo)."""
        wf = get_workflow(self.settings, workflow, version)
        # Another version than the configured one: an earlier init must have prepared it.
        other = wf.version != (self.settings.workflows[wf.name].tag or LOCAL_VERSION)
        if other and not prepared_on_cluster(self.transport, self.settings, wf):
            raise BiomeroError(
                f"workflow {wf.name} version {wf.version} is not prepared on the cluster "
                f"(no job script or image); set {wf.name}_repo to that tag and run "
                "`biomero init`"
            )
        values = validate_params(wf.descriptor, params)
        # File parameters name local files here: checked now, staged beside the images.
        attachments = local_files(wf.descriptor, params)
        # Images, partition and sbatch values (biomeroworker.inputs); raises InputError.
        self.checked = check_request(
            self.settings,
            wf.name,
            partitions_of(self.settings, self.slurm),
            files=inputs,
            partition=partition,
        )
        return self.tracker.record_run_requested(
            workflow=wf.name,
            version=wf.version,
            user_name=user or current_user(),
            inputs={
                **self.checked.record(),
                "output_dir": str(output_dir.resolve()) if output_dir else None,
                "partition": partition,
                "convert_on": self.settings.worker.convert_on,
                **({"attachments": attachments} if attachments else {}),
            },
            parameters=values,
        )

    # -- helpers ------------------------------------------------------------------

    def layout(self, run: RunRecord) -> RunLayout:
        return RunLayout(run.run_id, self.settings.slurm.slurm_data_path, default_results_root())

    def output_dir(self, run: RunRecord) -> Path:
        return results_dir(run)

    def local_run(self, run: RunRecord) -> Path:
        """The run's own local folder, made (with its owner marker) when first needed.

        A folder without a marker that holds what this run's tasks recorded writing
        there (a run under way when the worker was upgraded) is this run's: it is marked.
        """
        folder = self.layout(run).local_run
        recorded = [Path(p) for t in run.tasks for p in t.result_locations]
        if any(folder in p.parents for p in recorded):
            adopt(folder, run.run_id)
        return claim(folder, run.run_id)

    def open_task(self, run: RunRecord, kind: str) -> str:
        """The run's unfinished task of ``kind`` (left by a crash), or a new one."""
        task = latest_task(run, kind)
        if task is not None and task.state == "STARTED":
            return task.task_id
        return self.tracker.start_task(run.run_id, kind)

    def _timed(self, name: str, started: float) -> None:
        self.step_seconds[name] = self.step_seconds.get(name, 0.0) + time.monotonic() - started

    def is_cancelled(self, run_id: str) -> bool:
        return self.tracker.run_record(run_id).state == "CANCELLED"

    def _fail(self, task: str, error_type: str, message: str) -> RunFailed:
        self.tracker.fail_task(task, error_type, message)
        return RunFailed(error_type, message)

    # -- steps --------------------------------------------------------------------

    def convert_here(self, run: RunRecord) -> None:
        """[WORKER] convert_on = worker: OME-Zarr to TIFF here, before the upload."""
        task = self.open_task(run, "convert")
        self._check_inputs(run, task)
        zarrs = [p for p in input_files(run) if is_zarr(p)]
        self.reporter.step("convert", f"{len(zarrs)} OME-Zarr image(s) to TIFF on the worker")
        try:
            dest = self.local_run(run) / "tiff"
            dest.mkdir(exist_ok=True)
        except (BiomeroError, OSError) as exc:
            raise self._fail(task, "ConversionFailed", str(exc)) from exc
        for done, source_path in enumerate(zarrs, start=1):
            target = dest / tiff_name(source_path)
            try:
                convert_zarr(source_path, target)
            except (BiomeroError, OSError) as exc:
                raise self._fail(task, "ConversionFailed", f"{source_path.name}: {exc}") from exc
            self.tracker.record_result(task, str(target))
            self.tracker.record_progress(task, f"{done}/{len(zarrs)}")
        self.tracker.complete_task(task)

    def _check_inputs(self, run: RunRecord, task: str) -> None:
        """Files named on the command line are read only if their user could read them."""
        if source(run) != "local":
            return
        attached = [Path(p) for refs in run.inputs.attachments.values() for p in refs]
        try:
            readable_by(run.user, [*run.inputs.files, *attached])
        except PathNotAllowed as exc:
            raise self._fail(task, "PathNotAllowed", str(exc)) from exc

    def stage_up(self, run: RunRecord) -> None:
        layout = self.layout(run)
        files = input_files(run)
        task = self.open_task(run, "stage_up")
        self._check_inputs(run, task)
        self.reporter.step("stage up", f"{len(files)} input(s)")
        moved = [0, 0]  # bytes sent, estimated stream size

        def progress(n: int) -> None:
            moved[0] += n
            self.reporter.bytes_moved("stage up", moved[0], moved[1])

        try:
            manifest = inputs_manifest(files)
            # The tar stream adds a 512-byte header per entry and pads files to 512 bytes.
            moved[1] = manifest.bytes + 1024 * (manifest.files + len(files)) + 10240
            report = stage_up(
                self.transport,
                files,
                layout.remote_in,
                progress=progress,
                expected=manifest,
                idle_timeout_s=self.settings.worker.transfer_idle_timeout_s,
            )
            for pid, sources in staging_sources(run.inputs.attachments, layout.local_run).items():
                stage_up(
                    self.transport,
                    sources,
                    posixpath.join(layout.remote_run, attachment_folder(pid)),
                    expected=inputs_manifest(sources),
                    idle_timeout_s=self.settings.worker.transfer_idle_timeout_s,
                )
            self.transport.run(["mkdir", "-p", "--", layout.remote_logs], idempotent=True)
            params = job_parameters(
                thawed(run.parameters), run.inputs.attachments, layout.remote_run
            )
            self.transport.write_text(layout.remote_params, json.dumps(params))
        except ConnectError:
            raise  # the cluster is unreachable: transient, the step is retried
        except (BiomeroError, OSError) as exc:
            raise self._fail(task, "StagingError", str(exc)) from exc
        self.tracker.record_result(task, layout.remote_in)
        self.tracker.record_progress(task, f"{report.manifest} in {report.seconds:.2f} s")
        self.tracker.complete_task(task)

    def _convert_request(self, run: RunRecord) -> SubmitRequest:
        layout = self.layout(run)
        zarrs = zarr_inputs(run)
        listing = "".join(f"{layout.remote_in}/{name}\n" for name in zarrs)
        self.transport.write_text(layout.remote_conversion_list, listing, mode=0o644)
        flags = self.settings.sbatch_flags_for_conversion()
        return SubmitRequest(
            script_path=self.cluster.converter_script(),
            script_args=(layout.remote_conversion_list,),
            job_name=job_name(run.run_id, "convert"),
            partition=flags.pop("partition", None),
            array=f"1-{len(zarrs)}",
            output_path=layout.remote_log("convert-%A_%a.log"),
            extra_flags=flags,
        )

    def _job_request(self, run: RunRecord) -> SubmitRequest:
        wf = get_workflow(self.settings, run.workflow, run.version)
        layout = self.layout(run)
        flags = self.settings.sbatch_flags_for(wf.name)
        configured = flags.pop("partition", None)
        earlier = [t.error_type for t in resubmissions(run)]
        for state, flag in RESUBMITTABLE.items():
            if earlier.count(state) and flag in flags:
                grow = scale_time_limit if flag == "time" else scale_memory
                flags[flag] = grow(flags[flag], 2 ** earlier.count(state))
        return SubmitRequest(
            script_path=self.cluster.job_script(wf.name, wf.version),
            script_args=(layout.remote_run,),
            job_name=job_name(run.run_id, "job", self._attempt(run, "job")),
            partition=run.inputs.partition or configured,
            output_path=layout.remote_log("omero-%j.log"),
            extra_flags=flags,
        )

    def submit(self, run: RunRecord, kind: str) -> str:
        """Submit the run's ``kind`` job ("convert" or "job") exactly once.

        The open task is the recorded intent. If it has no job id, a job with the
        run-unique name may still exist (sbatch answered, the bookkeeping did not
        happen): it is adopted instead of submitting again.
        """
        earlier = latest_task(run, kind)
        resumed = earlier is not None and earlier.state == "STARTED"
        task = self.open_task(run, kind)
        self.reporter.step(f"submit {kind}", run.workflow)
        if self.is_cancelled(run.run_id):
            raise RunCancelled(f"run {run.run_id} was cancelled")
        # Only an open task can have a job behind it: a task opened just now cannot
        # (two commands, squeue and sacct, saved on every first submission).
        name = job_name(run.run_id, kind, self._attempt(run, kind))
        found = self._find_by_name(name) if resumed else []
        if found:
            job_id = found[-1]
            log.info("run %s: adopting %s job %s", run.run_id, kind, job_id)
        else:
            request = self._convert_request(run) if kind == "convert" else self._job_request(run)
            try:
                job_id = self.slurm.submit(request)
            except (ConnectError, CommandTimeout):
                # The answer was lost, perhaps not the job: the task stays open and the
                # next attempt looks for the job by its run-unique name before submitting.
                raise
            except CredentialsRefused:
                # No job was judged: an attempt failed (retried with backoff, and the
                # run fails after step_attempts), so a token fixed meanwhile saves the run.
                raise
            except BiomeroError as exc:
                raise self._fail(task, "SubmitError", str(exc)) from exc
        self.tracker.record_job_submitted(task, job_id, CLUSTER)
        if self.is_cancelled(run.run_id):
            # Cancelled while sbatch ran: the canceller could not see this job yet.
            self.slurm.cancel([job_id])
            raise RunCancelled(f"run {run.run_id} was cancelled")
        return job_id

    @staticmethod
    def _attempt(run: RunRecord, kind: str) -> int:
        """1 for the first job of ``kind``, 2 for its first resubmission, ..."""
        return max(1, sum(1 for t in run.tasks if t.kind == kind))

    def _resubmit(self, run: RunRecord, status: JobStatus, message: str) -> bool:
        """After TIMEOUT/OUT_OF_MEMORY, queue one more attempt with more of what ran out,
        when ``<wf>_resubmit`` allows it and that resource is set; True if queued."""
        flag = RESUBMITTABLE.get(status.state.name)
        wf = self.settings.workflows.get(run.workflow)
        if flag is None or wf is None or len(resubmissions(run)) >= wf.resubmit:
            return False
        if flag not in self.settings.sbatch_flags_for(wf.name):
            return False
        task = latest_task(run, "job")
        assert task is not None
        self.tracker.fail_task(task.task_id, status.state.name, message)
        new = self.tracker.start_task(run.run_id, "job")
        attempt = len(resubmissions(run)) + 1
        self.tracker.record_progress(
            new, f"resubmission {attempt}/{wf.resubmit} after {status.state.name}: more {flag}"
        )
        log.info("run %s: %s; resubmitting with more %s", run.run_id, status.state.name, flag)
        return True

    def _find_by_name(self, name: str) -> list[str]:
        """Jobs named ``name``, in every mode (squeue/sacct, or slurmrestd's job lists)."""
        return self.slurm.find_by_name(name)

    def expected_elements(self, run: RunRecord, kind: str) -> int:
        return len(zarr_inputs(run)) if kind == "convert" else 1

    def job_view(self, run: RunRecord, kind: str, polled: dict[str, JobStatus]) -> JobView:
        """What ``polled`` says about the run's current ``kind`` job."""
        task = latest_task(run, kind)
        assert task is not None and task.slurm_job_id
        return view_of(
            polled,
            task.slurm_job_id,
            array=kind == "convert",
            expected=self.expected_elements(run, kind),
        )

    def poll_news(self, run: RunRecord, polled: dict[str, JobStatus]) -> bool:
        """Whether this poll moved the waiting run (or should be repeated soon).

        News: a state not yet recorded, a job that has ended, a job submitted less than
        ``FRESH_JOB_S`` ago, or a job that accounting has not listed yet (seconds after
        sbatch: backing off then would add seconds to every short job). A job unlisted
        for longer than that is no reason to hurry.
        """
        kind = waiting_kind(next_step(run))
        task = latest_task(run, kind)
        if task is None or not task.slurm_job_id:
            return True
        view = self.job_view(run, kind, polled)
        state = view.summary().state
        if view.final or (state is not JobState.UNKNOWN and state.name != task.job_state):
            return True
        if time.time() - _epoch(task.started_at) < FRESH_JOB_S:
            return True
        return view.missing > 0 and self._unseen_for(task) < ACCOUNTING_LAG_S

    def _unseen_for(self, task: TaskRecord) -> float:
        since = self.unseen_since.get(task.task_id)
        if since is None:
            return 0.0 if task.job_state else time.time() - _epoch(task.started_at)
        return time.time() - since

    def record_poll(self, run: RunRecord, kind: str, polled: dict[str, JobStatus]) -> JobView:
        """Record what a poll says about the run's ``kind`` job; fail the run when Slurm's
        accounting has not listed the job for longer than ``job_unseen_limit_s``."""
        task = latest_task(run, kind)
        assert task is not None and task.slurm_job_id
        view = self.job_view(run, kind, polled)
        summary = view.summary()
        self.reporter.job(kind, summary.state.name, view.done, view.expected)
        # Only a new state, or a final one (with its accounting), goes to the store:
        # loading the task just to hear "nothing new" would cost every poll.
        news = summary.state.name != task.job_state or summary.state.terminal
        if summary.state is not JobState.UNKNOWN and news:
            self.tracker.record_job_status(
                task.task_id,
                summary.state.name,
                summary.exit_code,
                summary.elapsed_s,
                summary.max_rss_bytes,
            )
        if view.final:
            self.late.note(task.task_id, view, array=kind == "convert")
        progress = f"{view.done}/{view.expected}"
        if view.expected > 1 and task.progress != progress:
            self.tracker.record_progress(task.task_id, progress)
        self._watch_listing(run, task, view)
        return view

    def _watch_listing(self, run: RunRecord, task: TaskRecord, view: JobView) -> None:
        """Start, clear or act on the clock of a job the poll did not (fully) list."""
        task_id = task.task_id
        if not view.missing:
            self.unseen_since.pop(task_id, None)
            self.stalled.pop(task_id, None)
            return
        waited = self._unseen_for(task)
        self.unseen_since.setdefault(task_id, time.time() - waited)
        limit = self.settings.worker.job_unseen_limit_s
        if waited < limit:
            return
        what = view.describe_missing()
        if view.accounting_silent:
            self.unseen_since.pop(task_id, None)
            self.stalled.pop(task_id, None)
            raise self._fail(
                task_id,
                "JobLost",
                f"{what} not listed by Slurm's accounting for {waited:.0f} s "
                f"([WORKER] job_unseen_limit_s = {limit:g}): it was never recorded or has "
                f"been purged; look for it with `sacct -j {view.job_id}` on the cluster and "
                "request the run again",
            )
        if task_id not in self.stalled:
            message = (
                f"{what}: no status for {waited:.0f} s; Slurm's accounting cannot be asked "
                f"({view.listed_by} answered instead), so the run keeps waiting"
            )
            log.warning("run %s: %s", run.run_id, message)
            self.stalled[task_id] = (run.run_id, message)
            if task.job_state != JobState.UNKNOWN.name:
                self.tracker.record_job_status(task_id, JobState.UNKNOWN.name)

    def finish(self, run: RunRecord, kind: str, statuses: dict[str, JobStatus]) -> None:
        """A terminal job: complete its task, or fail it with the log's last lines."""
        task = latest_task(run, kind)
        assert task is not None
        failed = [s for s in statuses.values() if not s.state.ok]
        if not failed:
            self.tracker.complete_task(task.task_id)
            return
        worst = failed[0]
        layout = self.layout(run)
        if kind == "convert":
            log_path = layout.remote_log(f"convert-{worst.job_id}.log")
            lead = f"{len(failed)} of {len(statuses)} image(s) failed to convert"
        else:
            log_path = layout.remote_log(f"omero-{worst.job_id}.log")
            lead = f"job {worst.job_id} ended {worst.state.name} (exit {worst.exit_code})"
        message = f"{lead}: {self._log_tail(log_path)}"
        if kind == "job" and self._resubmit(run, worst, message):
            return
        raise self._fail(task.task_id, worst.state.name, message)

    def _log_tail(self, path: str) -> str:
        return log_tail(self.transport, path)

    def stage_down(self, run: RunRecord) -> Path:
        layout = self.layout(run)
        dest = self.output_dir(run)
        task = self.open_task(run, "stage_down")
        chosen = run.inputs.output_dir is not None
        if chosen:
            # A folder the user named is written only if they could write it themselves.
            try:
                nearest = writable_by(run.user, dest)
            except PathNotAllowed as exc:
                raise self._fail(task, "PathNotAllowed", str(exc)) from exc
            before = entries(dest)
        self.reporter.step("stage down", str(dest))
        moved = [0]

        def progress(n: int) -> None:
            moved[0] += n
            self.reporter.bytes_moved("stage down", moved[0], 0)

        try:
            if dest.parent == layout.local_run:
                self.local_run(run)
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
            stage_down(
                self.transport,
                layout.remote_out,
                dest,
                progress=progress,
                idle_timeout_s=self.settings.worker.transfer_idle_timeout_s,
            )
        except ConnectError:
            raise  # transient: retried
        except BiomeroError as exc:
            raise self._fail(task, "StagingError", str(exc)) from exc
        if chosen:
            hand_over(dest, before, nearest, run.user)
        self.tracker.record_result(task, str(dest))
        self.tracker.complete_task(task)
        return dest

    def _side(self, run: RunRecord) -> DataSide:
        name = source(run)
        if name not in self.data_sides:
            raise BiomeroError(f"run {run.run_id} comes from {name}, which is not set up here")
        return self.data_sides[name]

    def export(self, run: RunRecord) -> None:
        """Inputs from the DataSide (e.g. OMERO images as OME-Zarr) into the local run folder."""
        task = self.open_task(run, "export")
        dest = self.layout(run).local_in
        self.reporter.step("export", source(run))
        try:
            self.local_run(run)
            dest.mkdir(exist_ok=True)
            paths = self._side(run).export(run, dest)
            # What was exported meets the rules a local input meets (biomeroworker.inputs).
            exported = check_images(paths, expand=False)
        except ConnectError:
            raise
        except BiomeroError as exc:
            raise self._fail(task, "ExportError", str(exc)) from exc
        for path in paths:
            self.tracker.record_result(task, str(path))
        self.tracker.record_progress(task, exported.summary())
        self.tracker.complete_task(task)

    def import_results(self, run: RunRecord) -> None:
        task = self.open_task(run, "import")
        self.reporter.step("import", source(run))
        try:
            summary = self._side(run).import_results(run, self.output_dir(run))
        except ConnectError:
            raise
        except BiomeroError as exc:
            raise self._fail(task, "ImportError", str(exc)) from exc
        self.tracker.record_result(task, json.dumps(summary, sort_keys=True, default=str))
        self.tracker.complete_task(task)

    def complete(self, run: RunRecord) -> Path:
        """Results are local: remove the remote run folder and close the run."""
        dest = self.output_dir(run)
        self.cleanup_remote(run)
        if source(run) != "local":
            # Exported inputs and downloaded results now live in OMERO: drop the copies,
            # in the run folder this run made (a folder it did not make is kept).
            release(self.layout(run).local_run, run.run_id)
        self.tracker.complete_run(run.run_id, str(dest))
        return dest

    def cleanup_remote(self, run: RunRecord) -> None:
        self.transport.run(["rm", "-rf", "--", self.layout(run).remote_run], idempotent=True)

    def fail(self, run_id: str, exc: RunFailed) -> None:
        """Mark the run failed, unless it was cancelled meanwhile (then say so)."""
        if self.is_cancelled(run_id):
            raise RunCancelled(f"run {run_id} was cancelled") from exc
        self.tracker.fail_run(run_id, exc.error_type, exc.message)

    # -- one step, then the whole run ------------------------------------------------

    def advance(self, run: RunRecord, polled: dict[str, JobStatus] | None = None) -> Step:
        """Do the run's next step; a waiting step needs this cycle's ``polled`` statuses.

        Returns the step that was handled. A step that fails marks the run failed.
        """
        step = next_step(run)
        try:
            if step is Step.EXPORT:
                self.export(run)
            elif step is Step.CONVERT_HERE:
                self.convert_here(run)
            elif step is Step.STAGE_UP:
                self.stage_up(run)
            elif step is Step.SUBMIT_CONVERT:
                self.submit(run, "convert")
            elif step is Step.SUBMIT_JOB:
                self.submit(run, "job")
            elif step.waits and polled is not None:
                kind = waiting_kind(step)
                view = self.record_poll(run, kind, polled)
                if view.final:
                    self.finish(run, kind, dict(view.elements))
            elif step is Step.STAGE_DOWN:
                self.stage_down(run)
            elif step is Step.IMPORT:
                self.import_results(run)
            elif step is Step.COMPLETE:
                self.complete(run)
        except RunFailed as exc:
            self.fail(run.run_id, exc)
            raise
        return step

    def poll_jobs(self, waiting: Mapping[str, int]) -> Polled:
        """One poll for the ``waiting`` jobs (job id -> its elements, ``waiting_on``),
        telling Slurm's client each array's size (so it sees elements the controller
        forgot); indexed once for every run that looks its job up in it."""
        return indexed(self.slurm.poll(sorted(waiting), waiting))

    def settle_accounting(self) -> int:
        """Fill in accounting (memory use) of jobs whose end came from the controller."""
        return self.late.settle(self.slurm, self.tracker)

    def waiting_on(self, run: RunRecord) -> tuple[str, int] | None:
        """The job a waiting run needs polled and its element count; None if it is not
        waiting (a waiting step always has a task with a job id: ``next_step``)."""
        step = next_step(run)
        if not step.waits:
            return None
        kind = waiting_kind(step)
        task = latest_task(run, kind)
        if task is None or not task.slurm_job_id:
            return None
        return task.slurm_job_id, self.expected_elements(run, kind)

    def drive(self, run_id: str) -> Path:
        """Run every remaining step here (for `biomero run --wait`); return the results folder."""
        fast = self.settings.worker.poll_min_s
        interval = fast
        while True:
            run = self.tracker.run_record(run_id)
            if run.state == "CANCELLED":
                raise RunCancelled(f"run {run_id} was cancelled")
            step = next_step(run)
            if step is Step.NONE:
                raise BiomeroError(f"run {run_id} is {run.state.lower()}")
            started = time.monotonic()
            if step.waits:
                waiting = self.waiting_on(run)
                polled = self.poll_jobs(dict([waiting]) if waiting else {})
                news = self.poll_news(run, polled)
                self.advance(run, polled)
                if next_step(self.tracker.run_record(run_id)) is step:
                    interval = (
                        fast if news else min(interval * 1.5, self.settings.worker.poll_max_s)
                    )
                    self.sleep(interval)
                else:
                    interval = fast
            else:
                self.advance(run)
            self._timed(STEP_LABELS[step], started)
            if step is Step.COMPLETE:
                return self.output_dir(run)

    def cancel(self, run_id: str, reason: str = "cancelled by user") -> list[str]:
        """scancel the run's jobs and mark it cancelled; whoever drives it stops."""
        run = self.tracker.run_record(run_id)
        if run.finished:
            raise BiomeroError(f"run {run.run_id} is already {run.state.lower()}")
        jobs = [t.slurm_job_id for t in run.tasks if t.slurm_job_id]
        jobs += self._find_by_name(job_name(run.run_id, "job"))
        jobs = sorted(set(jobs))
        if jobs:
            self.slurm.cancel(jobs)
        self.tracker.cancel_run(run.run_id, reason)
        return jobs
