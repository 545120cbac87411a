"""The supervisor against the real Slurm, sshd and PostgreSQL: restarts, sharing, limits."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from conftest import config_for_mode

from biomeroworker.config import load_settings
from biomeroworker.prepare import init_cluster
from biomeroworker.runs import RunEngine
from biomeroworker.supervisor.leases import LeaseStore
from biomeroworker.supervisor.loop import Supervisor
from biomeroworker.tracking.application import Tracker
from biomeroworker.transport.local import LocalTransport
from biomeroworker.transport.ssh import SSHOptions, SSHTransport

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def env(cluster, rest_cluster, new_database, tmp_path_factory) -> Iterator[dict[str, Any]]:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("supervisor")
    with new_database("biomero_sup") as url:
        extra = (
            "[WORKFLOWS]\n"
            "misbehave = misbehave\n"
            f"misbehave_repo = {REPO}/tests/fixtures/misbehave\n"
            "misbehave_job_mem = 200M\n"
        )
        text = cluster.config_path.read_text().replace("[WORKFLOWS]\n", extra, 1)
        text = text.replace("[ANALYTICS]\n", f"[ANALYTICS]\nsqlalchemy_url = {url}\n")
        text = text.replace("poll_max_s = 5", "poll_max_s = 2")
        config = root / "slurm-config.ini"
        config.write_text(text)
        settings = load_settings(config_file=config)
        transport = SSHTransport(SSHOptions(cluster.alias, command_timeout_s=1800))
        list(init_cluster(transport, settings))
        # The same runs, reached in the other two modes (docs/modes.md).
        shared = root / "cluster"
        shared.mkdir()
        configs = {"ssh": config}
        for mode in ("local", "rest"):
            configs[mode] = root / f"slurm-config-{mode}.ini"
            configs[mode].write_text(config_for_mode(text, mode, shared))
        local = load_settings(config_file=configs["local"])
        list(init_cluster(LocalTransport(home=shared, command_timeout_s=1800), local))
        tracker = Tracker(url)
        yield {
            "configs": configs,
            "config": config,
            "settings": settings,
            "transport": transport,
            "tracker": tracker,
            "root": root,
            "url": url,
        }
        tracker.close()
        transport.close()


def _input(root: Path, name: str, mb: int) -> Path:
    """A folder of TIFFs of random pixels, 1 MB each (one tiny one for 0): the run
    expands it into its images."""
    folder = root / name
    if not folder.exists():
        folder.mkdir()
        side = 1024 if mb else 10
        for i in range(max(mb, 1)):
            pixels = np.frombuffer(os.urandom(side * side), np.uint8).reshape(side, side)
            tifffile.imwrite(folder / f"part-{i:04d}.tif", pixels)
    return folder


def _request(env, mode: str = "ok", *, input_mb: int = 0, **params: object) -> str:  # type: ignore[no-untyped-def]
    engine = RunEngine(env["settings"], env["transport"], env["tracker"])
    source = _input(env["root"], f"input-{input_mb}mb", input_mb)
    out = env["root"] / f"out-{time.monotonic_ns()}"
    return engine.request("misbehave", [source], {"mode": mode, **params}, output_dir=out)


def _start(env, *extra: str, mode: str = "ssh") -> subprocess.Popen[bytes]:  # type: ignore[no-untyped-def]
    log = open(env["root"] / f"supervisor-{time.monotonic_ns()}.log", "wb")  # noqa: SIM115
    argv = [
        sys.executable,
        "-m",
        "biomeroworker",
        "--config",
        str(env["configs"][mode]),
        "supervise",
        "--lease-seconds",
        "3",
        *extra,
    ]
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)


def _wait(what: str, check: Callable[[], bool], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def _task(env, run_id: str, kind: str) -> dict[str, Any] | None:  # type: ignore[no-untyped-def]
    tasks = [t for t in env["tracker"].get_run(run_id)["tasks"] if t["kind"] == kind]
    return tasks[-1] if tasks else None


def _state(env, run_id: str) -> str:  # type: ignore[no-untyped-def]
    return env["tracker"].get_run(run_id)["state"]


def _jobs_named(name: str) -> list[str]:
    out = subprocess.run(
        ["sacct", "-a", "-n", "-X", "-P", f"--name={name}", "-S", "now-1days", "-o", "JobIDRaw"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return sorted(set(out.split()))


def _assert_done_once(env, run_id: str) -> None:  # type: ignore[no-untyped-def]
    run = env["tracker"].get_run(run_id)
    assert run["state"] == "COMPLETED", run
    name = f"biomero-job-{run_id}"
    # slurmdbd records a finished job a moment later; then there must be exactly one.
    _wait("accounting to list the job", lambda: bool(_jobs_named(name)), 60)
    assert len(_jobs_named(name)) == 1
    downs = [t for t in run["tasks"] if t["kind"] == "stage_down" and t["state"] == "COMPLETED"]
    assert len(downs) == 1
    assert (Path(run["result_location"]) / "echo.json").is_file()


def _finish(env, proc: subprocess.Popen[bytes], run_id: str) -> None:  # type: ignore[no-untyped-def]
    try:
        _wait("the run to complete", lambda: _state(env, run_id) in ("COMPLETED", "FAILED"), 180)
    finally:
        proc.terminate()
        proc.wait(timeout=60)


# moment -> (request options, task kind, field, value that says the moment has come)
MOMENTS = {
    "upload": ({"input_mb": 300}, "stage_up", "state", "STARTED"),
    "job": ({"mode": "nap", "nap_s": 6}, "job", "job_state", "RUNNING"),
    "download": ({"out_mb": 300}, "stage_down", "state", "STARTED"),
}


# A restart mid-job in every mode; mid-transfer restarts do not depend on how Slurm is reached.
KILLS = [("upload", "ssh"), ("job", "ssh"), ("job", "local"), ("job", "rest"), ("download", "ssh")]


@pytest.mark.parametrize(("moment", "mode"), KILLS, ids=[f"{m}-{t}" for m, t in KILLS])
def test_kill_9_then_restart_completes_with_one_submission_and_one_import(
    env, moment, mode
) -> None:  # type: ignore[no-untyped-def]
    options, kind, key, value = MOMENTS[moment]
    run_id = _request(env, **options)

    def reached() -> bool:
        return (_task(env, run_id, kind) or {}).get(key) == value

    first = _start(env, mode=mode)
    _wait(f"the {moment} to start", reached)
    first.kill()
    first.wait()
    assert _state(env, run_id) == "RUNNING"
    _finish(env, _start(env, mode=mode), run_id)
    _assert_done_once(env, run_id)


def test_sigterm_leaves_the_job_running_and_a_restart_finishes_it(env) -> None:  # type: ignore[no-untyped-def]
    run_id = _request(env, "nap", nap_s=8)
    first = _start(env)
    _wait("the job to run", lambda: (_task(env, run_id, "job") or {}).get("job_state") == "RUNNING")
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=30) == 0
    job = _task(env, run_id, "job")["slurm_job_id"]  # type: ignore[index]
    state = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True)
    assert state.stdout.strip() == "RUNNING"
    _finish(env, _start(env), run_id)
    _assert_done_once(env, run_id)


def test_two_supervisors_share_runs_without_driving_one_twice(env) -> None:  # type: ignore[no-untyped-def]
    runs = [_request(env, "nap", nap_s=2) for _ in range(4)]
    procs = [_start(env), _start(env)]
    try:
        _wait("all runs to complete", lambda: all(_state(env, r) == "COMPLETED" for r in runs), 240)
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=60)
    for run_id in runs:
        _assert_done_once(env, run_id)


def test_cancel_during_upload_stops_the_run_and_submits_nothing(env) -> None:  # type: ignore[no-untyped-def]
    run_id = _request(env, input_mb=300)
    proc = _start(env)
    try:
        _wait(
            "the upload", lambda: (_task(env, run_id, "stage_up") or {}).get("state") == "STARTED"
        )
        engine = RunEngine(env["settings"], env["transport"], env["tracker"])
        engine.cancel(run_id)
        layout = engine.layout(env["tracker"].run_record(run_id))

        def gone() -> bool:
            return (
                env["transport"].run(["test", "-e", layout.remote_run], check=False).exit_code == 1
            )

        _wait("the remote run folder to be removed", gone, 60)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert _state(env, run_id) == "CANCELLED"
    assert _jobs_named(f"biomero-job-{run_id}") == []


def _in_process_supervisor(env, holder: str) -> Supervisor:  # type: ignore[no-untyped-def]
    transport = SSHTransport(SSHOptions("localslurm"))
    engine = RunEngine(env["settings"], transport, env["tracker"])
    return Supervisor(engine, LeaseStore(env["tracker"].engine, holder, ttl_s=30), workers=2)


# Six jobs must run at once: beside other test processes' jobs the node may not have
# six free slots, and a job that waits for one may start after the first ones ended.
@pytest.mark.serial
def test_one_status_command_per_cycle_for_all_waiting_jobs(env) -> None:  # type: ignore[no-untyped-def]
    runs = [_request(env, "nap", nap_s=20) for _ in range(6)]
    sup = _in_process_supervisor(env, "counting")
    try:

        def all_running() -> bool:
            sup.cycle()
            time.sleep(0.3)
            return all((_task(env, r, "job") or {}).get("job_state") == "RUNNING" for r in runs)

        _wait("all six jobs to run", all_running, 120)
        counts = []
        for _ in range(3):
            before = sup.engine.transport.commands_run
            sup.cycle()
            counts.append(sup.engine.transport.commands_run - before)
        assert counts == [1, 1, 1]
    finally:
        for r in runs:
            sup.engine.cancel(r)
        sup.shutdown()
        sup.engine.transport.close()


def test_total_limit_admits_runs_one_at_a_time_in_order(env) -> None:  # type: ignore[no-untyped-def]
    settings = env["settings"]
    limited = dataclasses.replace(settings.worker, max_runs_total=1)
    sup = _in_process_supervisor(env, "limited")
    sup.engine.settings = dataclasses.replace(settings, worker=limited)
    first, second = _request(env, "nap", nap_s=2), _request(env, "ok")
    try:

        def both_done() -> bool:
            sup.cycle()
            if _state(env, first) == "RUNNING":
                assert _state(env, second) == "REQUESTED"
            time.sleep(0.3)
            return _state(env, second) == "COMPLETED"

        _wait("both runs", both_done, 180)
    finally:
        sup.shutdown()
        sup.engine.transport.close()
    first_run = env["tracker"].get_run(first)
    second_up = next(t for t in env["tracker"].get_run(second)["tasks"] if t["kind"] == "stage_up")
    assert first_run["state"] == "COMPLETED"
    assert second_up["started_at"] >= first_run["ended_at"]


@pytest.mark.serial  # stops slurmdbd and cuts every SSH session of the service account
def test_slurmdbd_outage_and_a_cut_ssh_connection_do_not_fail_the_run(env, cluster) -> None:  # type: ignore[no-untyped-def]
    run_id = _request(env, "nap", nap_s=10)
    proc = _start(env)
    try:
        _wait(
            "the job to run",
            lambda: (_task(env, run_id, "job") or {}).get("job_state") == "RUNNING",
        )
        cluster.ctl("stop", "slurmdbd")
        try:
            # Cut every SSH session of the service account under the supervisor.
            subprocess.run(["pkill", "-f", f"sshd: {cluster.user}"], check=False)
            time.sleep(4)
            assert _state(env, run_id) == "RUNNING"
        finally:
            cluster.ctl("start", "slurmdbd")
        _wait("the run to complete", lambda: _state(env, run_id) != "RUNNING", 180)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    _assert_done_once(env, run_id)


def _sacct_states(job: str) -> list[str]:
    out = subprocess.run(
        ["sacct", "-a", "-n", "-X", "-P", "-j", job, "-o", "State"],
        capture_output=True,
        text=True,
    ).stdout
    return out.split()


@pytest.fixture(scope="module")
def one_zarr(env) -> Path:  # type: ignore[no-untyped-def]
    samples = env["root"] / "samples"
    if not samples.exists():
        script = REPO / "workflows/nuclei-segmentation/make_samples.py"
        subprocess.run([sys.executable, str(script), str(samples)], check=True, capture_output=True)
    return samples / "zarr-0.5/nuclei_s0_yx.ome.zarr"


def test_one_zarr_run_finishes_when_its_conversion_ended_while_no_supervisor_ran(  # type: ignore[no-untyped-def]
    env, one_zarr
) -> None:
    """Issue 18: a one-element conversion array is listed as "<id>_1" once it runs; a
    supervisor that first sees it finished (after a kill -9) must move the run on."""
    engine = RunEngine(env["settings"], env["transport"], env["tracker"])
    out = env["root"] / f"out-{time.monotonic_ns()}"
    run_id = engine.request("misbehave", [one_zarr], {"mode": "ok"}, output_dir=out)
    first = _start(env)
    _wait(
        "the conversion job id",
        lambda: bool((_task(env, run_id, "convert") or {}).get("slurm_job_id")),
    )
    first.kill()
    first.wait()
    job = _task(env, run_id, "convert")["slurm_job_id"]  # type: ignore[index]
    _wait("sacct to say the conversion COMPLETED", lambda: _sacct_states(job) == ["COMPLETED"], 120)
    assert _task(env, run_id, "convert")["state"] == "STARTED"  # type: ignore[index]
    _finish(env, _start(env), run_id)
    _assert_done_once(env, run_id)
    assert len(_jobs_named(f"biomero-convert-{run_id}")) == 1


class FakePoisonSide:
    """A fake OMERO side whose export always blows up (a bug, or memory running out)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.exports = 0

    def export(self, run: dict[str, Any], dest: Path) -> list[Path]:
        self.exports += 1
        raise self.error

    def import_results(self, run: dict[str, Any], results: Path) -> dict[str, Any]:
        raise AssertionError("never reached")


def _poisoned_supervisor(env, holder: str, side: FakePoisonSide) -> Supervisor:  # type: ignore[no-untyped-def]
    sup = _in_process_supervisor(env, holder)
    worker = dataclasses.replace(env["settings"].worker, step_attempts=3, step_retry_s=0.2)
    sup.engine.settings = dataclasses.replace(env["settings"], worker=worker)
    sup.engine.data_sides = {"fake": side}  # type: ignore[dict-item]
    return sup


@pytest.mark.parametrize("error", [RuntimeError("export bug 42"), MemoryError("out of memory 42")])
def test_a_step_that_always_raises_fails_its_run_after_n_attempts_and_others_go_on(
    env, error: BaseException
) -> None:  # type: ignore[no-untyped-def]
    tracker = env["tracker"]
    poisoned = tracker.record_run_requested(
        workflow="misbehave",
        version="local",
        user_name="poison",
        inputs={"source": "fake", "output_dir": None},
        parameters={"mode": "ok"},
    )
    healthy = _request(env, "ok")
    side = FakePoisonSide(error)
    first = _poisoned_supervisor(env, "poison-1", side)
    try:
        _wait("two failed attempts", lambda: (first.cycle(), side.exports >= 2)[1], 60)
    finally:
        first.shutdown()
        first.engine.transport.close()
    assert _state(env, poisoned) == "RUNNING"
    # A new supervisor (nothing in memory) knows the two attempts from the events.
    second = _poisoned_supervisor(env, "poison-2", side)
    try:

        def both_ended() -> bool:
            second.cycle()
            time.sleep(0.1)
            return _state(env, poisoned) == "FAILED" and _state(env, healthy) == "COMPLETED"

        _wait("the poisoned run to fail and the other to complete", both_ended, 180)
    finally:
        second.shutdown()
        second.engine.transport.close()
    assert side.exports == 3
    run = tracker.get_run(poisoned)
    assert run["error_type"] == "StepError"
    assert "export failed 3 times" in run["error"] and "42" in run["error"]
    assert [(t["kind"], t["state"]) for t in run["tasks"]] == [("export", "FAILED")]
    recorded = second.attempts.of(poisoned)
    assert recorded is not None and (recorded.step, recorded.failed) == ("export", 3)
    assert type(error).__name__ in recorded.error
    _assert_done_once(env, healthy)
