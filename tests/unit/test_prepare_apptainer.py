"""biomero init for container runtimes: the image's working directory becomes --pwd.

Apptainer and Slurm cannot run here, so FakeApptainer and FakeSbatch scripts on PATH
stand in for them; the local transport runs them as it would run the real commands.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from biomeroworker.config import load_settings
from biomeroworker.prepare import image_workdir, init_cluster
from biomeroworker.transport.local import LocalTransport

REPO = Path(__file__).resolve().parents[2]

FAKE_APPTAINER = """#!/bin/bash
# FakeApptainer: answers `inspect --json --labels SIF` from SIF.labels.json; `pull
# --force SIF SOURCE` writes SIF and records the source and the pull environment.
if [[ $1 == inspect ]]; then
    sif="${@: -1}"
    [[ -f "$sif.labels.json" ]] || { echo "no such image: $sif" >&2; exit 255; }
    cat "$sif.labels.json"
    exit 0
fi
if [[ $1 == pull ]]; then
    echo "$4 TMPDIR=${APPTAINER_TMPDIR:-} CACHEDIR=${APPTAINER_CACHEDIR:-}" > "$3"
    exit 0
fi
echo "FakeApptainer: $*" >&2
exit 1
"""

FAKE_SBATCH = """#!/bin/bash
# FakeSbatch: records its arguments and answers like `sbatch --parsable`.
printf '%s\\n' "$@" >> "$HOME/sbatch.calls"
echo 4242
"""


@pytest.fixture
def cluster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("apptainer", FAKE_APPTAINER), ("sbatch", FAKE_SBATCH)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path('/usr/bin')}:{Path('/bin')}")
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def _labels(sif: Path, labels: dict[str, str]) -> None:
    sif.parent.mkdir(parents=True, exist_ok=True)
    sif.write_bytes(b"SIF")
    document = {"data": {"attributes": {"labels": labels}}, "type": "container"}
    Path(f"{sif}.labels.json").write_text(json.dumps(document))


def test_workdir_comes_from_the_image_label(cluster_home: Path) -> None:
    sif = cluster_home / "img.sif"
    _labels(sif, {"org.biomero.workdir": "/app", "maintainer": "x"})
    assert image_workdir(LocalTransport(home=cluster_home), "apptainer", str(sif)) == "/app"


@pytest.mark.parametrize(
    "labels", [{}, {"org.biomero.workdir": "relative/path"}, {"maintainer": "x"}]
)
def test_no_usable_label_means_no_pwd(cluster_home: Path, labels: dict[str, str]) -> None:
    sif = cluster_home / "img.sif"
    _labels(sif, labels)
    assert image_workdir(LocalTransport(home=cluster_home), "apptainer", str(sif)) is None


def test_an_image_not_pulled_yet_has_no_workdir(cluster_home: Path) -> None:
    transport = LocalTransport(home=cluster_home)
    assert image_workdir(transport, "apptainer", str(cluster_home / "missing.sif")) is None


def test_init_pulls_first_then_renders_pwd_once_the_image_is_there(
    cluster_home: Path, tmp_path: Path
) -> None:
    config = tmp_path / "slurm-config.ini"
    config.write_text(
        "[SLURM]\nslurm_data_path = data\nslurm_images_path = images\n"
        "slurm_converters_path = converters\nslurm_script_path = scripts\n"
        "[WORKFLOWS]\nmisbehave = misbehave\n"
        f"misbehave_repo = {REPO}/tests/fixtures/misbehave\n"
        f"[WORKER]\ntransport = local\nshared_path = {cluster_home}\nruntime = apptainer\n"
    )
    settings = load_settings(
        config_file=config,
        env={"HOME": str(cluster_home), "BIOMERO_IMAGE_PULL_VIA_SBATCH": "true"},
    )
    transport = LocalTransport(home=cluster_home)
    first = {a.what: a for a in init_cluster(transport, settings)}
    assert "4242" in first["misbehave image"].detail  # the pull went to Slurm
    script = cluster_home / "scripts/misbehave/local/job.sh"
    assert "--pwd" not in script.read_text()

    _labels(
        cluster_home / "images/misbehave/w_misbehave_local.sif", {"org.biomero.workdir": "/app"}
    )
    second = {a.what: a for a in init_cluster(transport, settings)}
    assert second["misbehave image"].done is False  # already pulled
    assert second["misbehave local job script"].done is True
    assert "--pwd /app" in script.read_text()


def _settings(cluster_home: Path, tmp_path: Path, slurm: str = "", workflows: str = ""):  # type: ignore[no-untyped-def]
    config = tmp_path / "slurm-config.ini"
    config.write_text(
        "[SLURM]\nslurm_data_path = data\nslurm_images_path = images\n"
        "slurm_converters_path = converters\nslurm_script_path = scripts\n"
        f"{slurm}"
        "[WORKFLOWS]\nmisbehave = odd-folder\n"
        f"misbehave_repo = {REPO}/tests/fixtures/misbehave\n{workflows}"
        f"[WORKER]\ntransport = local\nshared_path = {cluster_home}\nruntime = apptainer\n"
    )
    return load_settings(config_file=config, env={"HOME": str(cluster_home)})


def test_by_default_images_are_pulled_on_the_login_node_into_the_configured_folder(
    cluster_home: Path, tmp_path: Path
) -> None:
    """Upstream's default (slurm_image_pull_via_sbatch off); `<wf> = <folder>` is where."""
    settings = _settings(
        cluster_home,
        tmp_path,
        slurm="apptainer_tmpdir = tmp/pull\napptainer_cachedir = cache/it's\n",
    )
    actions = {a.what: a for a in init_cluster(LocalTransport(home=cluster_home), settings)}
    assert "pulled on the login node" in actions["misbehave image"].detail
    sif = cluster_home / "images/odd-folder/w_misbehave_local.sif"
    assert sif.read_text().split() == [
        "docker://biomero/w_misbehave:local",
        "TMPDIR=tmp/pull",
        "CACHEDIR=cache/it's",
    ]
    assert not (cluster_home / "sbatch.calls").exists()


def test_pull_jobs_get_the_pull_resources_and_run_at_most_n_at_once(
    cluster_home: Path, tmp_path: Path
) -> None:
    settings = _settings(
        cluster_home,
        tmp_path,
        slurm="slurm_image_pull_via_sbatch = true\nimage_pull_cpus = 2\nimage_pull_mem = 3G\n"
        "image_pull_time = 00:40:00\nimage_pull_concurrency = 1\n",
    )
    list(init_cluster(LocalTransport(home=cluster_home), settings))
    calls = (cluster_home / "sbatch.calls").read_text().split("\n")
    for flag in (
        "--cpus-per-task=2",
        "--mem=3G",
        "--time=00:40:00",
        "--dependency=singleton",
        "--job-name=biomero-pull-0",
    ):
        assert flag in calls


def test_the_job_script_is_also_rendered_where_wf_job_says(
    cluster_home: Path, tmp_path: Path
) -> None:
    settings = _settings(cluster_home, tmp_path, workflows="misbehave_job = jobs/misbehave.sh\n")
    actions = {a.what: a for a in init_cluster(LocalTransport(home=cluster_home), settings)}
    paths = "scripts/misbehave/local/job.sh, scripts/jobs/misbehave.sh"
    assert actions["misbehave local job script"].detail == paths
    rendered = (cluster_home / "scripts/misbehave/local/job.sh").read_text()
    assert (cluster_home / "scripts/jobs/misbehave.sh").read_text() == rendered
