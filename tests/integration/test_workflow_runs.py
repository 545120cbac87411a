"""Workflow runs on the local Slurm: results, failures, limits, cancel, hostile values.

The cases that differ by how the worker reaches Slurm (TIFF and OME-Zarr inputs end to
end, a failing workflow, OUT_OF_MEMORY, cancel, adoption after a crash) run in all
three modes (``mode_env``); the rest run over ssh (``env``).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from conftest import MODES, config_for_mode

from biomeroworker.cli import main
from biomeroworker.config import load_settings
from biomeroworker.errors import BiomeroError
from biomeroworker.prepare import init_cluster
from biomeroworker.runs import RunCancelled, RunEngine, RunFailed, Step
from biomeroworker.tracking.application import Tracker
from biomeroworker.transport.base import Transport
from biomeroworker.transport.local import LocalTransport
from biomeroworker.transport.ssh import SSHOptions, SSHTransport

if TYPE_CHECKING:
    from conftest import LocalCluster

REPO = Path(__file__).resolve().parents[2]
HOSTILE = 'it\'s "$(touch /tmp/biomero-pwned-run)" `id` ; rm -rf ~ && echo\nnext line'


WORKFLOWS = (
    "[WORKFLOWS]\n"
    "misbehave = misbehave\n"
    f"misbehave_repo = {REPO}/tests/fixtures/misbehave\n"
    "misbehave_job_mem = 100M\n"
    "misbehave_job_time = 00:01:00\n"
    "retrying = misbehave\n"
    f"retrying_repo = {REPO}/tests/fixtures/misbehave\n"
    "retrying_job_mem = 100M\n"
    "retrying_resubmit = 1\n"
)


class ModeEnvs:
    """One run environment per mode (ssh, local, rest), made when first asked for:
    its own config, transport and tracker, the cluster prepared with `init`."""

    def __init__(self, cluster: LocalCluster, root: Path) -> None:
        self.cluster, self.root = cluster, root
        self.made: dict[str, dict[str, Any]] = {}
        self.samples = root / "samples"
        subprocess.run(
            [sys.executable, str(REPO / "workflows/nuclei-segmentation/make_samples.py"),
             str(self.samples)],
            check=True, capture_output=True,
        )  # fmt: skip

    def get(self, mode: str) -> dict[str, Any]:
        if mode not in self.made:
            if mode == "local":
                # Local mode uses the service account's native Python read-only; an
                # ssh init first makes sure it is current, so root never installs into it.
                self.get("ssh")
            self.made[mode] = self._make(mode)
        return self.made[mode]

    def _make(self, mode: str) -> dict[str, Any]:
        root = self.root / mode
        root.mkdir()
        shared = root / "cluster"
        text = self.cluster.config_path.read_text().replace("[WORKFLOWS]\n", WORKFLOWS, 1)
        text = text.replace(
            "[ANALYTICS]\n", f"[ANALYTICS]\nsqlalchemy_url = sqlite:///{root}/t.sqlite\n"
        )
        config = root / "slurm-config.ini"
        config.write_text(config_for_mode(text, mode, shared))
        settings = load_settings(config_file=config)
        transport: Transport
        if mode == "local":
            shared.mkdir()
            transport = LocalTransport(home=shared, command_timeout_s=1800)
        else:
            transport = SSHTransport(SSHOptions(self.cluster.alias, command_timeout_s=1800))
        list(init_cluster(transport, settings))
        tracker = Tracker(settings_url=settings.analytics.sqlalchemy_url)
        return {
            "mode": mode,
            "settings": settings,
            "transport": transport,
            "tracker": tracker,
            "root": root,
            "samples": self.samples,
            "config": config,
        }

    def close(self) -> None:
        for made in self.made.values():
            made["tracker"].close()
            made["transport"].close()


@pytest.fixture(scope="module")
def envs(cluster, rest_cluster, tmp_path_factory):  # type: ignore[no-untyped-def]
    made = ModeEnvs(cluster, tmp_path_factory.mktemp("runs"))
    yield made
    made.close()


@pytest.fixture
def env(envs):  # type: ignore[no-untyped-def]
    """The ssh-mode environment, for cases that do not depend on the mode."""
    return envs.get("ssh")


@pytest.fixture(params=MODES)
def mode_env(request, envs):  # type: ignore[no-untyped-def]
    """The same case in every mode: ssh, local (Slurm run here, as root), rest."""
    return envs.get(request.param)


def _engine(env) -> RunEngine:  # type: ignore[no-untyped-def]
    return RunEngine(env["settings"], env["transport"], env["tracker"])


def _objects_per_image(folder: Path) -> Counter[str]:
    found: Counter[str] = Counter()
    for table in folder.glob("*_objects.csv"):
        with table.open(newline="") as fh:
            found.update(row["image"] for row in csv.DictReader(fh))
    return found


def test_sample_workflow_finds_the_known_nuclei_counts(mode_env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = mode_env
    samples = env["samples"]
    counts = json.loads((samples / "counts.json").read_text())
    chosen = [
        "zarr-0.5/nuclei_s0_yx.ome.zarr",
        "zarr-0.4/nuclei_s1_czyx.ome.zarr",
        "tiff/nuclei_s2_tczyx.ome.tif",
    ]
    engine = _engine(env)
    run_id = engine.request(
        "nuclei",
        [samples / c for c in chosen],
        {"output_prefix": "t_"},
        output_dir=tmp_path / "out",
    )
    dest = engine.drive(run_id)
    found = _objects_per_image(dest)
    for c in chosen:
        assert found[Path(c).name.split(".")[0]] == counts[c]
    run = env["tracker"].get_run(run_id)
    assert run["state"] == "COMPLETED"
    assert dest == tmp_path / "out" / f"nuclei-{run_id}"
    copy = tmp_path / "copy"
    assert main(["--config", str(env["config"]), "results", run_id, "--output", str(copy)]) == 0
    copied = copy / f"nuclei-{run_id}"
    assert sorted(p.name for p in copied.iterdir()) == sorted(p.name for p in dest.iterdir())
    assert {t["kind"] for t in run["tasks"]} == {"stage_up", "convert", "job", "stage_down"}
    # the remote run folder is gone after a successful run
    layout = engine.layout(env["tracker"].run_record(run_id))
    assert env["transport"].run(["test", "-e", layout.remote_run], check=False).exit_code == 1


def test_failing_workflow_surfaces_exit_code_and_log_tail(mode_env, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    env = mode_env
    engine = _engine(env)
    image = env["samples"] / "tiff/nuclei_s0_yx.ome.tif"
    run_id = engine.request("misbehave", [image], {"mode": "fail"}, output_dir=tmp_path / "out")
    with pytest.raises(RunFailed):
        engine.drive(run_id)
    run = env["tracker"].get_run(run_id)
    assert run["state"] == "FAILED"
    assert run["error_type"] == "FAILED"
    assert "exit 3" in run["error"]
    assert "failing on purpose" in run["error"]
    assert main(["--config", str(env["config"]), "status", run_id]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert "exit 3" in shown
    assert "failing on purpose" in shown
    # what the failed job wrote before it failed can still be fetched
    partial = tmp_path / "partial"
    assert main(["--config", str(env["config"]), "results", run_id, "--output", str(partial)]) == 0
    assert (partial / f"misbehave-{run_id}" / "echo.json").is_file()


def test_hostile_parameter_values_reach_the_workflow_literally(env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = _engine(env)
    marker = "/tmp/biomero-pwned-run"
    env["transport"].run(["rm", "-f", marker])
    image = env["samples"] / "tiff/nuclei_s0_yx.ome.tif"
    run_id = engine.request("misbehave", [image], {"echo": HOSTILE}, output_dir=tmp_path / "out")
    dest = engine.drive(run_id)
    echo = json.loads((dest / "echo.json").read_text())
    assert echo["params"]["echo"] == HOSTILE
    assert not any(HOSTILE in arg for arg in echo["argv"])  # never on a command line
    assert env["transport"].run(["test", "-e", marker], check=False).exit_code == 1
    assert not Path(marker).exists()


def test_out_of_memory_surfaces_as_such(mode_env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = mode_env
    engine = _engine(env)
    image = env["samples"] / "tiff/nuclei_s0_yx.ome.tif"
    run_id = engine.request("misbehave", [image], {"mode": "oom"}, output_dir=tmp_path / "out")
    with pytest.raises(RunFailed):
        engine.drive(run_id)
    assert env["tracker"].get_run(run_id)["error_type"] == "OUT_OF_MEMORY"


def test_time_limit_surfaces_as_timeout(env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = _engine(env)
    image = env["samples"] / "tiff/nuclei_s0_yx.ome.tif"
    run_id = engine.request("misbehave", [image], {"mode": "sleep"}, output_dir=tmp_path / "out")
    with pytest.raises(RunFailed):
        engine.drive(run_id)
    assert env["tracker"].get_run(run_id)["error_type"] == "TIMEOUT"


def test_cancel_stops_the_job_and_marks_the_run_cancelled(mode_env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = mode_env
    engine = _engine(env)
    image = env["samples"] / "tiff/nuclei_s0_yx.ome.tif"
    run_id = engine.request("misbehave", [image], {"mode": "sleep"}, output_dir=tmp_path / "out")
    outcome: list[BaseException] = []

    def drive() -> None:
        try:
            engine.drive(run_id)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=drive)
    worker.start()
    deadline = time.monotonic() + 60
    job = None
    while time.monotonic() < deadline and job is None:
        tasks = env["tracker"].get_run(run_id)["tasks"]
        job = next((t for t in tasks if t["kind"] == "job" and t["job_state"] == "RUNNING"), None)
        time.sleep(0.5)
    assert job is not None, "the job never started"
    _engine(env).cancel(run_id)
    worker.join(timeout=60)
    assert not worker.is_alive()
    assert isinstance(outcome[0], RunCancelled)
    assert env["tracker"].get_run(run_id)["state"] == "CANCELLED"
    argv = ["sacct", "-n", "-X", "-P", "-o", "State", "-j", job["slurm_job_id"]]
    deadline = time.monotonic() + 30  # accounting records the end a moment later
    state = env["transport"].run(argv).stdout.strip()
    while not state.startswith("CANCELLED") and time.monotonic() < deadline:
        time.sleep(0.5)
        state = env["transport"].run(argv).stdout.strip()
    assert state.startswith("CANCELLED")


def _jobs_named(name: str) -> list[str]:
    """What accounting lists under ``name`` (asked here, as root, whatever the mode),
    once it lists anything: slurmdbd records an ended job a moment later, and other
    tests on this shared cluster stop slurmdbd for a while."""
    argv = ["sacct", "-a", "-n", "-X", "-P", f"--name={name}", "-S", "now-1days", "-o", "JobID"]
    deadline = time.monotonic() + 120
    while True:
        out = subprocess.run(argv, capture_output=True, text=True)
        if (out.returncode == 0 and out.stdout.strip()) or time.monotonic() > deadline:
            return sorted(set(out.stdout.split()))
        time.sleep(0.5)


def test_a_job_submitted_just_before_a_crash_is_adopted_not_submitted_again(
    mode_env, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    env = mode_env
    engine = _engine(env)
    image = env["samples"] / "tiff/nuclei_s0_yx.ome.tif"
    run_id = engine.request(
        "misbehave", [image], {"mode": "nap", "nap_s": 2}, output_dir=tmp_path / "out"
    )
    engine.advance(env["tracker"].run_record(run_id))  # stage up
    run = env["tracker"].run_record(run_id)
    # The crash: the submit task is open and Slurm took the job, but its id was never
    # recorded (the process died between the answer and the bookkeeping).
    engine.open_task(run, "job")
    lost = engine.slurm.submit(engine._job_request(env["tracker"].run_record(run_id)))
    job = next(t for t in env["tracker"].get_run(run_id)["tasks"] if t["kind"] == "job")
    assert job["slurm_job_id"] is None
    # Another process picks the run up where it was left.
    dest = _engine(env).drive(run_id)
    assert (dest / "echo.json").is_file()
    jobs = [t for t in env["tracker"].get_run(run_id)["tasks"] if t["kind"] == "job"]
    assert [t["slurm_job_id"] for t in jobs] == [lost]
    assert _jobs_named(f"biomero-job-{run_id}") == [lost]


def test_a_first_submission_runs_sbatch_alone(env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A task opened just now has no job behind it: no squeue or sacct by name first."""
    engine = _engine(env)
    image = env["samples"] / "tiff/nuclei_s0_yx.ome.tif"
    run_id = engine.request("misbehave", [image], {"mode": "ok"}, output_dir=tmp_path / "out")
    engine.advance(env["tracker"].run_record(run_id))  # stage up
    asked: list[str] = []
    real_run = engine.transport.run

    def noting(argv, **kwargs):  # type: ignore[no-untyped-def]
        asked.append(argv[0])
        return real_run(argv, **kwargs)

    engine.transport.run = noting  # type: ignore[method-assign]
    try:
        assert engine.advance(env["tracker"].run_record(run_id)) is Step.SUBMIT_JOB
    finally:
        del engine.transport.run  # type: ignore[method-assign]
    assert asked == ["sbatch"]
    engine.cancel(run_id)


def test_a_connection_dropped_while_sbatch_ran_leaves_the_run_to_adopt_its_job(
    env, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """Found by bench/chaos.py: the SSH connection cut while sbatch ran failed the run.
    Slurm may have taken the job, so the run stays open and the next attempt adopts it."""
    from biomeroworker.errors import ConnectError

    engine = _engine(env)
    image = env["samples"] / "tiff/nuclei_s0_yx.ome.tif"
    run_id = engine.request("misbehave", [image], {"mode": "ok"}, output_dir=tmp_path / "out")
    engine.advance(env["tracker"].run_record(run_id))  # stage up
    submitted = []
    real_submit = engine.slurm.submit

    def answer_lost(request):  # type: ignore[no-untyped-def]
        submitted.append(real_submit(request))
        raise ConnectError("ssh localslurm: connection dropped while running sbatch")

    engine.slurm.submit = answer_lost  # type: ignore[method-assign]
    with pytest.raises(ConnectError):
        engine.advance(env["tracker"].run_record(run_id))
    assert env["tracker"].get_run(run_id)["state"] == "RUNNING"
    dest = _engine(env).drive(run_id)
    assert (dest / "echo.json").is_file()
    jobs = [t for t in env["tracker"].get_run(run_id)["tasks"] if t["kind"] == "job"]
    assert [t["slurm_job_id"] for t in jobs] == submitted
    assert _jobs_named(f"biomero-job-{run_id}") == submitted


def test_out_of_memory_is_resubmitted_once_with_twice_the_memory(env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = _engine(env)
    image = env["samples"] / "tiff/nuclei_s0_yx.ome.tif"
    run_id = engine.request(
        "retrying", [image], {"mode": "oom", "hog_mb": 150}, output_dir=tmp_path / "out"
    )
    engine.drive(run_id)
    run = env["tracker"].get_run(run_id)
    jobs = [t for t in run["tasks"] if t["kind"] == "job"]
    assert run["state"] == "COMPLETED"
    assert [(t["state"], t["error_type"]) for t in jobs] == [
        ("FAILED", "OUT_OF_MEMORY"),
        ("COMPLETED", None),
    ]
    req_mem = (
        env["transport"]
        .run(["sacct", "-n", "-X", "-P", "-o", "ReqMem", "-j", jobs[1]["slurm_job_id"]])
        .stdout.strip()
    )
    assert req_mem.startswith("200M")


def _drive_until_the_job_runs(engine: RunEngine, run_id: str) -> threading.Thread:
    """Drive ``run_id`` in a thread; return once its Slurm job is RUNNING."""

    def drive() -> None:
        with contextlib.suppress(BiomeroError):  # cancelled by the test
            engine.drive(run_id)

    worker = threading.Thread(target=drive, daemon=True)
    worker.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        tasks = engine.tracker.get_run(run_id)["tasks"]
        if any(t["kind"] == "job" and t["job_state"] == "RUNNING" for t in tasks):
            return worker
        time.sleep(0.5)
    raise AssertionError("the job never started")


def _own_data_path(env, tmp_path):  # type: ignore[no-untyped-def]
    """Settings whose slurm_data_path is a folder of this test alone."""
    import dataclasses

    settings = env["settings"]
    # Other tests leave runs in the shared one, and other checkouts share the cluster.
    data = f"cleanup-{secrets.token_hex(4)}"
    return data, dataclasses.replace(
        settings, slurm=dataclasses.replace(settings.slurm, slurm_data_path=data)
    )


def test_cleanup_judges_age_by_the_run_record_and_spares_running_jobs(env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from biomeroworker.cleanup import remove_old_runs

    transport = env["transport"]
    data, settings = _own_data_path(env, tmp_path)
    engine = RunEngine(settings, transport, env["tracker"])
    image = env["samples"] / "tiff/nuclei_s0_yx.ome.tif"
    running = engine.request("misbehave", [image], {"mode": "sleep"}, output_dir=tmp_path / "o")
    worker = _drive_until_the_job_runs(engine, running)
    ended = engine.request("misbehave", [image], {})
    engine.cancel(ended)  # ended just now
    unknown = "0f0e0d0c-aaaa-bbbb-cccc-000000000001"  # no run of the database
    for name in (ended, unknown, "not-a-run"):
        transport.run(["mkdir", "-p", f"{data}/{name}/data/in"])
    # Every folder looks ancient: a running job never touches its run folder either.
    for name in (running, ended, unknown, "not-a-run"):
        transport.run(["touch", "-d", "10 days ago", f"{data}/{name}"])
    try:
        plan = remove_old_runs(transport, env["tracker"], settings, 7, dry_run=False)
        assert plan.remove == []
        assert plan.active == [f"{data}/{running}"]
        assert plan.recent == [f"{data}/{ended}"]
        assert plan.unknown == [f"{data}/{unknown}"]
        plan = remove_old_runs(transport, env["tracker"], settings, 0, dry_run=False)
        assert plan.remove == [f"{data}/{ended}"]
        remaining = transport.run(["ls", data]).stdout.split()
        assert sorted(remaining) == sorted([running, unknown, "not-a-run"])
        staged = transport.run(["find", f"{data}/{running}/data/in", "-type", "f"]).stdout
        assert staged.strip()  # the running job's inputs are all still there
    finally:
        engine.cancel(running)
        worker.join(timeout=60)
        transport.run(["rm", "-rf", data])


def test_cleanup_removes_nothing_when_the_database_fails(env, tmp_path, new_database) -> None:  # type: ignore[no-untyped-def]
    import psycopg2

    from biomeroworker.cleanup import remove_old_runs

    transport = env["transport"]
    data, settings = _own_data_path(env, tmp_path)
    with new_database("biomero_cleanup") as url:
        tracker = Tracker(url)
        try:
            run_id = tracker.record_run_requested(
                workflow="misbehave", version="1", user_name="u", inputs={}, parameters={}
            )
            tracker.cancel_run(run_id)  # ended, so removable while the database answers
            transport.run(["mkdir", "-p", f"{data}/{run_id}/data/in"])
            assert remove_old_runs(transport, tracker, settings, 0, dry_run=True).remove == [
                f"{data}/{run_id}"
            ]
            conn = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
            conn.autocommit = True
            with conn.cursor() as cursor:
                cursor.execute(f"DROP DATABASE {url.rsplit('/', 1)[1]} WITH (FORCE)")
            conn.close()
            with pytest.raises(BiomeroError, match="Nothing was removed"):
                remove_old_runs(transport, tracker, settings, 0, dry_run=False)
            assert transport.run(["ls", data]).stdout.split() == [run_id]
        finally:
            tracker.close()
            transport.run(["rm", "-rf", data])


def test_cleanup_with_an_empty_database_removes_nothing_and_says_why(env, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    data, _ = _own_data_path(env, tmp_path)
    run_id = _engine(env).request("misbehave", [env["samples"] / "tiff/nuclei_s0_yx.ome.tif"], {})
    env["transport"].run(["mkdir", "-p", f"{data}/{run_id}"])
    config = tmp_path / "slurm-config.ini"  # the same cluster, no database configured
    text = (
        env["config"]
        .read_text()
        .replace(f"sqlalchemy_url = sqlite:///{env['root']}/t.sqlite\n", "")
    )
    config.write_text(re.sub(r"(?m)^slurm_data_path = .*$", f"slurm_data_path = {data}", text))
    try:
        argv = ["--config", str(config), "cleanup", "--older-than", "0"]
        assert main(argv) == 0
        shown = capsys.readouterr().out
        assert "removed 0 folder(s)" in shown
        assert "does not know" in shown and "no tracking database is configured" in shown
        assert env["transport"].run(["ls", data]).stdout.split() == [run_id]
    finally:
        _engine(env).cancel(run_id)
        env["transport"].run(["rm", "-rf", data])


def test_results_land_in_a_new_subfolder_and_the_destination_keeps_its_files(  # type: ignore[no-untyped-def]
    env, tmp_path, capsys
) -> None:
    config = str(env["config"])
    image = env["samples"] / "tiff/nuclei_s0_yx.ome.tif"
    documents = tmp_path / "Documents"
    (documents / "old-results").mkdir(parents=True)
    (documents / "thesis.docx").write_text("years of work")
    (documents / "old-results" / "echo.json").write_text("an earlier run")
    argv = ["--config", config, "run", "misbehave", str(image), "--output", str(documents)]
    assert main([*argv, "--wait"]) == 0
    run_id = capsys.readouterr().out.split()[1]
    landed = documents / f"misbehave-{run_id}"
    assert (landed / "echo.json").is_file()
    assert sorted(os.listdir(documents)) == sorted(["old-results", "thesis.docx", landed.name])
    assert (documents / "thesis.docx").read_text() == "years of work"
    assert (documents / "old-results" / "echo.json").read_text() == "an earlier run"
    # `results` follows the same rule: a new subfolder, or the same results already there.
    assert main(["--config", config, "results", run_id, "--output", str(documents)]) == 0
    assert "(already there)" in capsys.readouterr().out
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "keep.txt").write_text("mine")
    assert main(["--config", config, "results", run_id, "--output", str(copy)]) == 0
    assert (copy / landed.name / "echo.json").read_bytes() == (landed / "echo.json").read_bytes()
    assert (copy / "keep.txt").read_text() == "mine"
    # A folder of that name holding something else is refused and left as it is.
    taken = tmp_path / "taken" / landed.name
    taken.mkdir(parents=True)
    (taken / "mine.txt").write_text("not results")
    assert main(["--config", config, "results", run_id, "--output", str(taken.parent)]) == 2
    assert "already holds other files" in capsys.readouterr().err
    assert os.listdir(taken.parent) == [landed.name]
    assert os.listdir(taken) == ["mine.txt"]


def test_conversion_on_the_worker_when_configured(env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import dataclasses

    settings = env["settings"]
    here = dataclasses.replace(
        settings, worker=dataclasses.replace(settings.worker, convert_on="worker")
    )
    engine = RunEngine(here, env["transport"], env["tracker"])
    samples = env["samples"]
    counts = json.loads((samples / "counts.json").read_text())
    chosen = ["zarr-0.5/nuclei_s1_yx.ome.zarr", "zarr-0.4/nuclei_s2_czyx.ome.zarr"]
    run_id = engine.request(
        "nuclei", [samples / c for c in chosen], {}, output_dir=tmp_path / "out"
    )
    found = _objects_per_image(engine.drive(run_id))
    for c in chosen:
        assert found[Path(c).name.split(".")[0]] == counts[c]
    convert = next(t for t in env["tracker"].get_run(run_id)["tasks"] if t["kind"] == "convert")
    assert convert["slurm_job_id"] is None
    assert [Path(p).suffix for p in convert["result_locations"]] == [".tif", ".tif"]
