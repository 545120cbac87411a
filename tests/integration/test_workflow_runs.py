"""Workflow runs on the local Slurm: results, failures, limits, cancel, hostile values."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from biomeroworker.cli import main
from biomeroworker.config import load_settings
from biomeroworker.prepare import init_cluster
from biomeroworker.runs import RunCancelled, RunEngine, RunFailed
from biomeroworker.tracking.application import Tracker
from biomeroworker.transport.ssh import SSHOptions, SSHTransport

REPO = Path(__file__).resolve().parents[2]
HOSTILE = 'it\'s "$(touch /tmp/biomero-pwned-run)" `id` ; rm -rf ~ && echo\nnext line'


@pytest.fixture(scope="module")
def env(cluster, tmp_path_factory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("runs")
    extra = (
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
    text = cluster.config_path.read_text().replace("[WORKFLOWS]\n", extra, 1)
    text = text.replace(
        "[ANALYTICS]\n", f"[ANALYTICS]\nsqlalchemy_url = sqlite:///{root}/t.sqlite\n"
    )
    config = root / "slurm-config.ini"
    config.write_text(text)
    settings = load_settings(config_file=config)
    transport = SSHTransport(SSHOptions(cluster.alias, command_timeout_s=1800))
    list(init_cluster(transport, settings))
    samples = root / "samples"
    subprocess.run(
        [sys.executable, str(REPO / "workflows/nuclei-segmentation/make_samples.py"), str(samples)],
        check=True,
        capture_output=True,
    )
    tracker = Tracker(settings_url=settings.analytics.sqlalchemy_url)
    yield {
        "settings": settings,
        "transport": transport,
        "tracker": tracker,
        "root": root,
        "samples": samples,
        "config": config,
    }
    tracker.close()
    transport.close()


def _engine(env) -> RunEngine:  # type: ignore[no-untyped-def]
    return RunEngine(env["settings"], env["transport"], env["tracker"])


def _objects_per_image(folder: Path) -> Counter[str]:
    found: Counter[str] = Counter()
    for table in folder.glob("*_objects.csv"):
        with table.open(newline="") as fh:
            found.update(row["image"] for row in csv.DictReader(fh))
    return found


def test_sample_workflow_finds_the_known_nuclei_counts(env, tmp_path) -> None:  # type: ignore[no-untyped-def]
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
    copy = tmp_path / "copy"
    assert main(["--config", str(env["config"]), "results", run_id, "--output", str(copy)]) == 0
    assert sorted(p.name for p in copy.iterdir()) == sorted(p.name for p in dest.iterdir())
    assert {t["kind"] for t in run["tasks"]} == {"stage_up", "convert", "job", "stage_down"}
    # the remote run folder is gone after a successful run
    assert (
        env["transport"].run(["test", "-e", engine.layout(run).remote_run], check=False).exit_code
        == 1
    )


def test_failing_workflow_surfaces_exit_code_and_log_tail(env, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
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
    assert (partial / "echo.json").is_file()


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


def test_out_of_memory_surfaces_as_such(env, tmp_path) -> None:  # type: ignore[no-untyped-def]
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


def test_cancel_stops_the_job_and_marks_the_run_cancelled(env, tmp_path) -> None:  # type: ignore[no-untyped-def]
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


def test_cleanup_removes_old_leftovers_but_not_active_runs(env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import dataclasses

    from biomeroworker.cleanup import remove_old_runs

    transport = env["transport"]
    data = f"cleanup-{tmp_path.name}"  # a data folder of its own: other tests leave runs
    settings = env["settings"]
    settings = dataclasses.replace(
        settings, slurm=dataclasses.replace(settings.slurm, slurm_data_path=data)
    )
    engine = _engine(env)
    image = env["samples"] / "tiff/nuclei_s0_yx.ome.tif"
    active = engine.request("misbehave", [image], {})
    env["tracker"].start_task(active, "stage_up")  # the run is under way
    leftover = "0f0e0d0c-aaaa-bbbb-cccc-000000000001"
    recent = "0f0e0d0c-aaaa-bbbb-cccc-000000000002"
    for name in (leftover, recent, active, "not-a-run"):
        transport.run(["mkdir", "-p", f"{data}/{name}/data/in"])
    for name in (leftover, active, "not-a-run"):
        transport.run(["touch", "-d", "10 days ago", f"{data}/{name}"])
    removed = remove_old_runs(transport, env["tracker"], settings, 7, dry_run=False)
    assert removed == [f"{data}/{leftover}"]
    remaining = transport.run(["ls", data]).stdout.split()
    assert leftover not in remaining
    assert {recent, active, "not-a-run"} <= set(remaining)
    engine.cancel(active)
    transport.run(["rm", "-rf", data])


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
