"""Bad inputs are refused by the real CLI before anything is recorded, staged or submitted.

Each test runs `biomero run` against the local Slurm with its own remote data folder, then
looks in the three places a run would leave a trace: the tracking store, the remote data
folder and Slurm's accounting (sacct's SubmitLine names the data folder).
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from biomeroworker.cli import main
from biomeroworker.tracking.application import Tracker
from biomeroworker.transport.ssh import SSHOptions, SSHTransport

REPO = Path(__file__).resolve().parents[2]
HOSTILE = "it's \"$(touch biomero-pwned-request)\" `id`;\nnext & 'x'"


@pytest.fixture(scope="module")
def env(cluster, tmp_path_factory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("requests")
    data = f"data-requests-{secrets.token_hex(4)}"
    text = cluster.config_path.read_text().replace(
        "slurm_data_path = data", f"slurm_data_path = {data}"
    )
    text = text.replace(
        "[ANALYTICS]\n", f"[ANALYTICS]\nsqlalchemy_url = sqlite:///{root}/t.sqlite\n"
    )
    config = root / "slurm-config.ini"
    config.write_text(text)
    samples = root / "samples"
    subprocess.run(
        [
            sys.executable,
            str(REPO / "workflows/nuclei-segmentation/make_samples.py"),
            str(samples),
            *("--seeds", "0", "--axes", "yx"),
        ],
        check=True,
        capture_output=True,
    )
    transport = SSHTransport(SSHOptions(cluster.alias, command_timeout_s=60))
    yield {"root": root, "config": config, "data": data, "samples": samples, "t": transport}
    transport.run(["rm", "-rf", "--", data])
    transport.close()


def _own_config(env, tmp_path: Path, old: str = "", new: str = "") -> Path:  # type: ignore[no-untyped-def]
    """The module's config with one value changed and a tracking store of its own."""
    text = env["config"].read_text().replace(old, new)
    text = text.replace(f"sqlite:///{env['root']}/t.sqlite", f"sqlite:///{tmp_path}/t.sqlite")
    config = tmp_path / "slurm-config.ini"
    config.write_text(text)
    return config


def _run(env, *args: str) -> int:  # type: ignore[no-untyped-def]
    return main(["--config", str(env["config"]), "run", "nuclei", *args])


def _assert_nothing_happened(env) -> None:  # type: ignore[no-untyped-def]
    with Tracker(f"sqlite:///{env['root']}/t.sqlite") as tracker:
        assert tracker.list_runs() == []
    listed = env["t"].run(["ls", "-A", "--", env["data"]], check=False)
    assert listed.stdout.strip() == ""  # no run folder was staged
    argv = ["sacct", "--noheader", "--parsable2", "-X", "-S", "now-2hours", "-o", "SubmitLine%1000"]
    # Other checkouts' tests stop slurmdbd for a while on this shared cluster: wait for it.
    deadline = time.monotonic() + 120
    while (submitted := env["t"].run(argv, check=False)).exit_code != 0:
        assert time.monotonic() < deadline, submitted.stderr
        time.sleep(2)
    assert env["data"] not in submitted.stdout


def test_a_text_file_is_refused_and_nothing_is_recorded_staged_or_submitted(env, capsys) -> None:  # type: ignore[no-untyped-def]
    assert _run(env, "/etc/passwd") == 2
    err = capsys.readouterr().err
    assert "nothing was recorded" in err
    assert "/etc/passwd: is not an image" in err
    _assert_nothing_happened(env)


def test_a_folder_of_folders_is_refused_with_what_it_holds(env, capsys) -> None:  # type: ignore[no-untyped-def]
    assert _run(env, str(env["samples"])) == 2
    err = capsys.readouterr().err
    assert f"{env['samples']}: is a folder, not an image" in err
    assert "tiff is a folder" in err and "counts.json is not an image" in err
    _assert_nothing_happened(env)


def test_an_unknown_partition_is_refused_with_the_cluster_partitions(env, capsys) -> None:  # type: ignore[no-untyped-def]
    image = env["samples"] / "tiff" / "nuclei_s0_yx.ome.tif"
    assert _run(env, str(image), "--partition", "nosuchpart") == 2
    err = capsys.readouterr().err
    assert "--partition: partition 'nosuchpart' does not exist on the cluster" in err
    assert "partitions: cpu-short, cpu-long" in err
    _assert_nothing_happened(env)


def test_a_time_above_the_partition_limit_is_refused(env, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    config = _own_config(env, tmp_path, "nuclei_job_time = 00:10:00", "nuclei_job_time = 3:00:00")
    image = env["samples"] / "tiff" / "nuclei_s0_yx.ome.tif"
    assert main(["--config", str(config), "run", "nuclei", str(image)]) == 2
    err = capsys.readouterr().err
    assert "nuclei_job_time: time 3:00:00 is above the 02:00:00 that partition cpu-short" in err
    # the same job fits the long partition
    assert (
        main(["--config", str(config), "run", "nuclei", str(image), "--partition", "cpu-long"]) == 0
    )


def test_a_hostile_file_name_is_shown_quoted_and_a_good_one_is_recorded(
    env, tmp_path, capsys
) -> None:  # type: ignore[no-untyped-def]
    config = _own_config(env, tmp_path)
    bad = tmp_path / f"{HOSTILE}.txt"
    bad.write_text("not an image")
    assert main(["--config", str(config), "run", "nuclei", str(bad)]) == 2
    err = capsys.readouterr().err
    assert repr(str(bad)) in err
    good = tmp_path / f"{HOSTILE}.tif"
    tifffile.imwrite(good, np.zeros((16, 16), np.uint8))
    assert main(["--config", str(config), "run", "nuclei", str(good)]) == 0
    out = capsys.readouterr().out
    assert "inputs: 1 image(s)" in out
    with Tracker(f"sqlite:///{tmp_path}/t.sqlite") as tracker:
        (run,) = tracker.list_runs()
        assert run["inputs"]["files"] == [str(good)]
        assert run["inputs"]["bytes"] == good.stat().st_size
        tracker.cancel_run(run["run_id"], "test done")
    assert not list(Path.cwd().glob("biomero-pwned-*"))


def test_check_fails_a_workflow_whose_partition_does_not_exist(cluster, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "slurm-config.ini"
    config.write_text(
        cluster.config_path.read_text().replace(
            "nuclei_job_mem = 1G\n", "nuclei_job_mem = 1G\nnuclei_job_partition = gpu-huge\n"
        )
    )
    assert main(["--config", str(config), "check"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  workflow nuclei: [WORKFLOWS] nuclei_job_partition: partition 'gpu-huge'" in out
    assert "partitions: cpu-short, cpu-long" in out
    assert "PASS  conversion job" in out


def test_a_gpu_request_and_memory_the_nodes_lack_are_refused(env, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    config = _own_config(
        env, tmp_path, "nuclei_job_mem = 1G\n", "nuclei_job_mem = 4096G\nnuclei_job_gres = gpu:1\n"
    )
    image = env["samples"] / "tiff" / "nuclei_s0_yx.ome.tif"
    assert main(["--config", str(config), "run", "nuclei", str(image)]) == 2
    err = capsys.readouterr().err
    assert "[WORKFLOWS] nuclei_job_gres: partition cpu-short has no gpu (GRES: none)" in err
    assert "[WORKFLOWS] nuclei_job_mem: mem 4096G is more than the" in err
    with Tracker(f"sqlite:///{tmp_path}/t.sqlite") as tracker:
        assert tracker.list_runs() == []
