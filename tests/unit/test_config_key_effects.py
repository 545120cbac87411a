"""Each [SSH] / [WORKER] / [REST] key reaches the part that acts on it: the transport,
the Slurm client, the slurmrestd client, the run layout, the supervisor's admission,
polling and retry policy. Nothing connects anywhere."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Any

import pytest

from biomeroworker import runs
from biomeroworker.config import Settings, load_settings
from biomeroworker.prepare import _job_spec, cluster_layout
from biomeroworker.run_record import RunRecord
from biomeroworker.runs import RunEngine, Step
from biomeroworker.slurm.rest.modes import slurm_client
from biomeroworker.slurm.rest.token import StaticToken, TokenCommand, TokenFile
from biomeroworker.supervisor.leases import LeaseStore
from biomeroworker.supervisor.loop import Supervisor
from biomeroworker.tracking import Tracker
from biomeroworker.transport import close_all, open_transport
from biomeroworker.transport.local import LocalTransport
from biomeroworker.transport.ssh import SSHTransport
from biomeroworker.workflows.catalog import get_workflow
from biomeroworker.workflows.jobscript import render_job_script

REPO = Path(__file__).resolve().parents[2]
FOLDERS = (
    "[SLURM]\nslurm_data_path = scratch/data\nslurm_images_path = i\n"
    "slurm_converters_path = c\nslurm_script_path = s\n"
)


def settings(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "slurm-config.ini"
    path.write_text(text)
    return load_settings([path], env={})


def test_ssh_keys_reach_the_one_ssh_connection(tmp_path: Path) -> None:
    s = settings(
        tmp_path,
        "[SSH]\nhost = cluster-alias\n" + FOLDERS + "[WORKER]\nconnect_timeout_s = 7\n"
        "command_timeout_s = 9\nkeepalive_s = 0\n",
    )
    try:
        transport = open_transport(s)
        assert isinstance(transport, SSHTransport)  # transport = ssh, the default
        options = transport.options
        assert (options.host, options.connect_timeout_s) == ("cluster-alias", 7)
        assert (options.command_timeout_s, options.keepalive_s) == (9, 0)
    finally:
        close_all()


def test_local_transport_works_in_shared_path_with_the_command_timeout(tmp_path: Path) -> None:
    s = settings(
        tmp_path,
        FOLDERS + f"[WORKER]\ntransport = local\nshared_path = {tmp_path}\ncommand_timeout_s = 9\n",
    )
    transport = open_transport(s)
    assert isinstance(transport, LocalTransport)
    assert (transport.home, transport.command_timeout_s) == (tmp_path, 9)
    assert slurm_client(s, transport).command_timeout_s == 9  # sbatch, squeue, sacct


@pytest.mark.parametrize(
    ("token", "kind"),
    [
        ("token_command = scontrol token lifespan=900", TokenCommand),
        ("token_file = /run/secrets/jwt", TokenFile),
        ("token = e30.e30.sig", StaticToken),
    ],
)
def test_rest_keys_reach_the_slurmrestd_client(tmp_path: Path, token: str, kind: type) -> None:
    s = settings(
        tmp_path,
        "[SSH]\nhost = cluster-alias\n" + FOLDERS + "[WORKER]\ntransport = rest\n"
        "[REST]\nurl = https://slurm.example:6820/\nuser = biomero\napi_version = v0.0.40\n"
        f"{token}\ntoken_refresh_s = 120\nrequest_timeout_s = 12\nverify_tls = false\n"
        "staging = ssh\nhome = /home/biomero\n",
    )
    client = slurm_client(s, LocalTransport(home=tmp_path))
    api = client.api  # type: ignore[union-attr]
    assert (api.url, api.user, api.shape.version) == (
        "https://slurm.example:6820",
        "biomero",
        "v0.0.40",
    )
    assert (api.timeout_s, api.verify_tls) == (12, False)
    assert isinstance(api.tokens, kind)
    if kind is TokenCommand:
        assert api.tokens.argv == ["scontrol", "token", "lifespan=900"]
    if kind is not StaticToken:
        assert api.tokens.refresh_s == 120
    assert client._home == "/home/biomero"  # type: ignore[union-attr]


def test_rest_shared_staging_copies_into_the_cluster_home(tmp_path: Path) -> None:
    s = settings(
        tmp_path,
        FOLDERS + "[WORKER]\ntransport = rest\n[REST]\nurl = http://127.0.0.1:6820\n"
        f"user = biomero\ntoken = e30.e30.sig\nstaging = shared\nhome = {tmp_path}\n",
    )
    transport = open_transport(s)
    assert isinstance(transport, LocalTransport) and transport.home == tmp_path


def test_native_runtime_and_native_python_shape_the_job_script(tmp_path: Path) -> None:
    workflow = (
        f"[WORKFLOWS]\nmisbehave = misbehave\nmisbehave_repo = {REPO}/tests/fixtures/misbehave\n"
    )
    native = settings(
        tmp_path,
        FOLDERS + workflow + "[WORKER]\ntransport = local\nruntime = native\n"
        "native_python = /opt/py/bin/python3\n",
    )
    wf = get_workflow(native, "misbehave")
    script = render_job_script(_job_spec(native, cluster_layout(native), wf))
    assert "/opt/py/bin/python3 " in script and "apptainer" not in script
    container = settings(
        tmp_path,
        FOLDERS + "slurm_data_bind_path = /scratch/shared\n" + workflow + "[WORKER]\n"
        "transport = local\nruntime = singularity\n",
    )
    wf = get_workflow(container, "misbehave")
    script = render_job_script(_job_spec(container, cluster_layout(container), wf))
    assert "singularity run " in script and "/opt/py" not in script
    assert "--bind /scratch/shared " in script  # slurm_data_bind_path


def test_gpu_gpus_is_the_gpu_request_of_gpu_workflows(tmp_path: Path) -> None:
    s = settings(
        tmp_path,
        FOLDERS + "gpu_gpus = 2\n[WORKFLOWS]\nmisbehave = misbehave\n"
        f"misbehave_repo = {REPO}/tests/fixtures/misbehave\n[WORKER]\ntransport = local\n",
    )
    assert s.sbatch_flags_for("misbehave", use_gpu=True)["gpus"] == "2"
    assert "gpus" not in s.sbatch_flags_for("misbehave")


@pytest.fixture
def engine(tmp_path: Path) -> Any:
    def make(worker: str) -> RunEngine:
        s = settings(tmp_path, FOLDERS + f"[WORKER]\ntransport = local\n{worker}")
        tracker = Tracker(f"sqlite:///{tmp_path / 't.sqlite'}")
        made.append(tracker)
        return RunEngine(s, LocalTransport(home=tmp_path), tracker)

    made: list[Tracker] = []
    yield make
    for tracker in made:
        tracker.close()


def _supervisor(engine: RunEngine) -> Supervisor:
    leases = LeaseStore(engine.tracker.engine, "test-holder", ttl_s=30)
    return Supervisor(engine, leases, workers=1)


def test_slurm_data_path_holds_the_run_folders(engine: Any) -> None:
    layout = engine("").layout(
        RunRecord(run_id="r1", workflow="w", version="v", user="u", state="RUNNING")
    )
    assert layout.remote_run.startswith("scratch/data/")
    assert layout.remote_in.startswith(layout.remote_run)


@pytest.mark.parametrize(
    ("worker", "admitted"),
    [
        ("", ["a1", "a2", "b1"]),
        ("max_runs_total = 2\n", ["a1", "a2"]),
        ("max_runs_per_user = 1\n", ["a1", "b1"]),
    ],
)
def test_admission_keeps_the_run_limits(engine: Any, worker: str, admitted: list[str]) -> None:
    sup = _supervisor(engine(worker))
    try:
        waiting = [
            RunRecord(run_id=run_id, workflow="w", version="v", state="REQUESTED", user=run_id[0])
            for run_id in ("a1", "a2", "b1")
        ]
        assert [r.run_id for r in sup.admit(waiting)] == admitted
    finally:
        sup.shutdown()


def test_the_supervisor_polls_from_poll_min_s_up_to_poll_max_s(engine: Any) -> None:
    sup = _supervisor(engine("poll_min_s = 2\npoll_max_s = 30\n"))
    try:
        assert (sup.fast_s, sup.slow_s, sup.interval_s) == (2, 30, 2)
    finally:
        sup.shutdown()


def test_step_attempts_and_step_retry_s_set_the_retry_policy(engine: Any) -> None:
    made = engine("step_attempts = 2\nstep_retry_s = 7\n")
    sup = _supervisor(made)
    try:
        run_id = made.tracker.record_run_requested(workflow="w", version="v", user_name="u")
        run = made.tracker.run_record(run_id)
        sup._attempt_failed(run, Step.STAGE_UP, ValueError("bad file"))
        assert made.tracker.get_run(run_id)["state"] == "REQUESTED"
        assert sup._backoff(1) == 7 and sup._backoff(2) == 14
        sup._attempt_failed(run, Step.STAGE_UP, ValueError("bad file"))
        assert made.tracker.get_run(run_id)["state"] == "FAILED"
    finally:
        sup.shutdown()


def test_transfers_get_transfer_idle_timeout_s(
    engine: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = engine("transfer_idle_timeout_s = 42\n")
    image = tmp_path / "a.tif"
    image.write_bytes(b"II*\0")
    run_id = made.tracker.record_run_requested(
        workflow="w",
        version="v",
        user_name=getpass.getuser(),
        inputs={"files": [str(image)], "source": "local"},
    )
    seen: dict[str, Any] = {}

    class Seen(Exception):
        pass

    def fake_stage_up(*args: Any, **kwargs: Any) -> None:
        seen.update(kwargs)
        raise Seen

    monkeypatch.setattr(runs, "stage_up", fake_stage_up)
    with pytest.raises(Seen):
        made.stage_up(made.tracker.run_record(run_id))
    assert seen["idle_timeout_s"] == 42


def test_skills_and_plugin_paths_are_shown_by_biomero_workflows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Kept for biomero-workflow-skills, which wrote them: `biomero workflows` shows them."""
    import argparse
    import json

    from biomeroworker.cli import workflows

    config = tmp_path / "slurm-config.ini"
    config.write_text(
        FOLDERS + f"[WORKFLOWS]\nmisbehave = misbehave\nmisbehave_repo = {REPO}/tests/fixtures/"
        "misbehave\nmisbehave_skills_path = skills/misbehave\nmisbehave_plugin_path = plugins/mb\n"
        "[WORKER]\ntransport = local\n"
    )
    workflows.run(argparse.Namespace(config=str(config), json=True))
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["skills_path"], row["plugin_path"]) == ("skills/misbehave", "plugins/mb")
    workflows.run(argparse.Namespace(config=str(config), json=False))
    assert "misbehave_skills_path = skills/misbehave" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("lines", "since"),
    [
        ("", "now-7days"),
        ("sacct_start_time = 2024-01-01\n", "2024-01-01"),
        ("sacct_start_time = 2024-01-01\nsacct_days_ago = 30\n", "now-30days"),
    ],
)
def test_the_sacct_window_keys_reach_the_slurm_client(
    tmp_path: Path, lines: str, since: str
) -> None:
    s = settings(tmp_path, FOLDERS + lines + "[WORKER]\ntransport = local\n")
    assert slurm_client(s, LocalTransport(home=tmp_path)).history_since == since  # type: ignore[union-attr]
