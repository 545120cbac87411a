"""The steps of a workflow run, each recorded in the event store and safe to repeat.

request -> stage up (+ params.json) -> convert (OME-Zarr to TIFF, a job array) ->
submit the workflow job -> wait -> stage down -> done (remote folder removed).
`biomero run --wait` drives them in one process; every step reads what it needs from
the tracked run, so any process can pick a run up where another left it.
"""

from __future__ import annotations

import getpass
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import platformdirs

from biomeroworker.config import Settings
from biomeroworker.errors import BiomeroError, TransportError
from biomeroworker.layout import RunLayout
from biomeroworker.prepare import cluster_layout
from biomeroworker.slurm.client import SlurmClient
from biomeroworker.slurm.commands import SubmitRequest
from biomeroworker.slurm.parse import JobStatus
from biomeroworker.slurm.states import JobState
from biomeroworker.staging import local_manifest, stage_down, stage_up
from biomeroworker.tracking.application import Tracker
from biomeroworker.transport.base import Transport
from biomeroworker.workflows.catalog import get_workflow
from biomeroworker.workflows.params import validate_params

log = logging.getLogger(__name__)

CLUSTER = "slurm"
LOG_TAIL_LINES = 30


class RunFailed(BiomeroError):
    """A step of the run failed; the run is marked failed with this message."""

    def __init__(self, error_type: str, message: str) -> None:
        self.error_type = error_type
        super().__init__(f"{error_type}: {message}")


class RunCancelled(BiomeroError):
    """The run was cancelled while a step waited."""


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


def default_results_root() -> Path:
    return Path(platformdirs.user_data_dir("biomero")) / "results"


def is_zarr(path: Path) -> bool:
    return path.is_dir() and path.name.lower().endswith(".zarr")


@dataclass
class RunEngine:
    settings: Settings
    transport: Transport
    tracker: Tracker
    reporter: Reporter = field(default_factory=SilentReporter)
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        self.slurm = SlurmClient(self.transport)
        self.cluster = cluster_layout(self.settings)
        self.step_seconds: dict[str, float] = {}

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
        """Validate and record a run; nothing touches the cluster yet."""
        wf = get_workflow(self.settings, workflow, version)
        values = validate_params(wf.descriptor, params)
        files = [Path(p).resolve() for p in inputs]
        if not files:
            raise BiomeroError("give at least one input image (OME-Zarr folder or TIFF)")
        missing = [str(p) for p in files if not p.exists()]
        if missing:
            raise BiomeroError(f"input not found: {', '.join(missing)}")
        return self.tracker.record_run_requested(
            workflow=wf.name,
            version=wf.version,
            user_name=user or getpass.getuser(),
            inputs={
                "files": [str(p) for p in files],
                "output_dir": str(output_dir.resolve()) if output_dir else None,
                "partition": partition,
            },
            parameters=values,
        )

    # -- helpers ------------------------------------------------------------------

    def layout(self, run: dict[str, Any]) -> RunLayout:
        return RunLayout(run["run_id"], self.settings.slurm.slurm_data_path, default_results_root())

    def output_dir(self, run: dict[str, Any]) -> Path:
        chosen = run["inputs"].get("output_dir")
        return Path(chosen) if chosen else self.layout(run).local_out

    def _task(self, run_id: str, kind: str) -> str:
        return self.tracker.start_task(run_id, kind)

    def _timed(self, name: str, started: float) -> None:
        self.step_seconds[name] = self.step_seconds.get(name, 0.0) + time.monotonic() - started

    def _check_not_cancelled(self, run_id: str) -> None:
        if self.tracker.get_run(run_id)["state"] == "CANCELLED":
            raise RunCancelled(f"run {run_id} was cancelled")

    # -- steps --------------------------------------------------------------------

    def stage_up(self, run: dict[str, Any]) -> None:
        started = time.monotonic()
        layout = self.layout(run)
        files = [Path(p) for p in run["inputs"]["files"]]
        task = self._task(run["run_id"], "stage_up")
        self.reporter.step("stage up", f"{len(files)} input(s)")
        manifest = local_manifest(files)
        # The tar stream adds a 512-byte header per entry and pads each file to 512 bytes.
        total = manifest.bytes + 1024 * (manifest.files + len(files)) + 10240
        moved = [0]

        def progress(n: int) -> None:
            moved[0] += n
            self.reporter.bytes_moved("stage up", moved[0], total)

        try:
            report = stage_up(self.transport, files, layout.remote_in, progress=progress)
            self.transport.run(["mkdir", "-p", "--", layout.remote_logs], idempotent=True)
            self.transport.write_text(layout.remote_params, json.dumps(run["parameters"]))
        except (BiomeroError, OSError) as exc:
            self.tracker.fail_task(task, "StagingError", str(exc))
            raise RunFailed("StagingError", str(exc)) from exc
        self.tracker.record_result(task, layout.remote_in)
        self.tracker.record_progress(task, f"{report.manifest} in {report.seconds:.2f} s")
        self.tracker.complete_task(task)
        self._timed("stage up", started)

    def convert(self, run: dict[str, Any]) -> None:
        """OME-Zarr inputs become TIFF on the cluster: one array element per image."""
        zarrs = [Path(p).name for p in run["inputs"]["files"] if is_zarr(Path(p))]
        if not zarrs:
            return
        started = time.monotonic()
        layout = self.layout(run)
        task = self._task(run["run_id"], "convert")
        self.reporter.step("convert", f"{len(zarrs)} OME-Zarr image(s) to TIFF")
        listing = "".join(f"{layout.remote_in}/{name}\n" for name in zarrs)
        self.transport.write_text(layout.remote_conversion_list, listing, mode=0o644)
        flags = self.settings.sbatch_flags_for_conversion()
        request = SubmitRequest(
            script_path=self.cluster.converter_script(),
            script_args=(layout.remote_conversion_list,),
            job_name="biomero-convert",
            partition=flags.pop("partition", None),
            array=f"1-{len(zarrs)}",
            comment=f"biomero-run:{run['run_id']}:convert",
            output_path=layout.remote_log("convert-%A_%a.log"),
            extra_flags=flags,
        )
        job_id = self._submit(task, request)
        final = self.wait(run["run_id"], task, job_id, expected=len(zarrs), name="convert")
        failed = [s for s in final.values() if not s.state.ok]
        if failed:
            worst = failed[0]
            tail = self._log_tail(layout.remote_log(f"convert-{worst.job_id}.log"))
            message = (
                f"{len(failed)} of {len(zarrs)} image(s) failed to convert; {worst.job_id}: {tail}"
            )
            self.tracker.fail_task(task, worst.state.name, message)
            raise RunFailed("ConversionFailed", message)
        self.tracker.complete_task(task)
        self._timed("convert", started)

    def submit_workflow(self, run: dict[str, Any]) -> tuple[str, str]:
        wf = get_workflow(self.settings, run["workflow"], run["version"])
        layout = self.layout(run)
        task = self._task(run["run_id"], "job")
        self.reporter.step("submit", f"{wf.name} {wf.version}")
        flags = self.settings.sbatch_flags_for(wf.name)
        configured = flags.pop("partition", None)
        partition = run["inputs"].get("partition") or configured
        request = SubmitRequest(
            script_path=self.cluster.job_script(wf.name, wf.version),
            script_args=(layout.remote_run,),
            job_name=f"biomero-{wf.name}",
            partition=partition,
            comment=f"biomero-run:{run['run_id']}:job",
            output_path=layout.remote_log("omero-%j.log"),
            extra_flags=flags,
        )
        return task, self._submit(task, request)

    def _submit(self, task: str, request: SubmitRequest) -> str:
        try:
            job_id = self.slurm.submit(request)
        except BiomeroError as exc:
            self.tracker.fail_task(task, "SubmitError", str(exc))
            raise RunFailed("SubmitError", str(exc)) from exc
        self.tracker.record_job_submitted(task, job_id, CLUSTER)
        return job_id

    def wait(
        self, run_id: str, task: str, job_id: str, *, expected: int = 1, name: str = "job"
    ) -> dict[str, JobStatus]:
        """Poll (one command per cycle) until every element is terminal; record changes only."""
        w = self.settings.worker
        interval = min(w.poll_min_s, 1.0)
        last: dict[str, str] = {}
        while True:
            statuses = {
                k: v for k, v in self.slurm.poll([job_id]).items() if k != job_id or expected == 1
            }
            if expected > 1:
                statuses = {k: v for k, v in statuses.items() if v.array_task_id is not None}
            view = {k: v.state.name for k, v in statuses.items()}
            changed = view != last
            last = view
            done = sum(1 for s in statuses.values() if s.state.terminal)
            summary = _summarise(statuses, expected)
            self.reporter.job(name, summary.state.name, done, expected)
            self.tracker.record_job_status(
                task,
                summary.state.name,
                summary.exit_code,
                summary.elapsed_s,
                summary.max_rss_bytes,
            )
            if expected > 1:
                self.tracker.record_progress(task, f"{done}/{expected}")
            if len(statuses) >= expected and done >= expected:
                return statuses
            if changed:
                interval = min(w.poll_min_s, 1.0)
                self._check_not_cancelled(run_id)
            else:
                interval = min(interval * 1.5, w.poll_max_s)
            self.sleep(interval)

    def _log_tail(self, path: str) -> str:
        try:
            result = self.transport.run(
                ["tail", "-n", str(LOG_TAIL_LINES), "--", path], check=False, idempotent=True
            )
        except TransportError as exc:
            return f"(log {path} unreadable: {exc})"
        return result.stdout.strip() or result.stderr.strip() or "(empty log)"

    def finish_job(self, run: dict[str, Any], task: str, job_id: str, status: JobStatus) -> None:
        if status.state.ok:
            self.tracker.complete_task(task)
            return
        tail = self._log_tail(self.layout(run).remote_log(f"omero-{job_id}.log"))
        message = f"job {job_id} ended {status.state.name} (exit {status.exit_code}): {tail}"
        self.tracker.fail_task(task, status.state.name, message)
        raise RunFailed(status.state.name, message)

    def stage_down(self, run: dict[str, Any]) -> Path:
        started = time.monotonic()
        layout = self.layout(run)
        dest = self.output_dir(run)
        dest.parent.mkdir(parents=True, exist_ok=True)
        task = self._task(run["run_id"], "stage_down")
        self.reporter.step("stage down", str(dest))
        moved = [0]

        def progress(n: int) -> None:
            moved[0] += n
            self.reporter.bytes_moved("stage down", moved[0], 0)

        try:
            stage_down(self.transport, layout.remote_out, dest, progress=progress)
        except BiomeroError as exc:
            self.tracker.fail_task(task, "StagingError", str(exc))
            raise RunFailed("StagingError", str(exc)) from exc
        self.tracker.record_result(task, str(dest))
        self.tracker.complete_task(task)
        self._timed("stage down", started)
        return dest

    def cleanup_remote(self, run: dict[str, Any]) -> None:
        self.transport.run(["rm", "-rf", "--", self.layout(run).remote_run], idempotent=True)

    # -- the whole run ------------------------------------------------------------

    def drive(self, run_id: str) -> Path:
        """Run every step in order (for `biomero run --wait`); return the results folder."""
        run = self.tracker.get_run(run_id)
        try:
            self.stage_up(run)
            self.convert(run)
            started = time.monotonic()
            task, job_id = self.submit_workflow(run)
            final = self.wait(run_id, task, job_id)
            self._timed("job", started)
            self.finish_job(run, task, job_id, final[job_id])
            dest = self.stage_down(run)
        except RunCancelled:
            raise
        except RunFailed as exc:
            if self.tracker.get_run(run_id)["state"] == "CANCELLED":
                raise RunCancelled(f"run {run_id} was cancelled") from exc
            self.tracker.fail_run(run_id, exc.error_type, str(exc))
            raise
        self.cleanup_remote(run)
        self.tracker.complete_run(run_id, str(dest))
        return dest

    def cancel(self, run_id: str, reason: str = "cancelled by user") -> list[str]:
        run = self.tracker.get_run(run_id)
        jobs = [t["slurm_job_id"] for t in run["tasks"] if t.get("slurm_job_id")]
        if jobs:
            self.slurm.cancel(jobs)
        self.tracker.cancel_run(run["run_id"], reason)
        return jobs


def _summarise(statuses: dict[str, JobStatus], expected: int) -> JobStatus:
    """One status for a job or a whole array: the first failure, else the least advanced."""
    if not statuses:
        return JobStatus(job_id="?", state=JobState.PENDING)
    values = list(statuses.values())
    failed = [s for s in values if s.state.terminal and not s.state.ok]
    if failed:
        return failed[0]
    running = [s for s in values if not s.state.terminal]
    if running or len(values) < expected:
        return running[0] if running else JobStatus(job_id="?", state=JobState.PENDING)
    return values[0]
