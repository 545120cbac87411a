"""biomero init for container runtimes: the image's working directory becomes --pwd.

Apptainer and Slurm cannot run here, so FakeApptainer and FakeSbatch scripts on PATH
stand in for them; the local transport runs them as it would run the real commands.
"""

from __future__ import annotations

import json
import subprocess
import sys
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
if [[ $1 == run ]]; then
    # run [--bind B] SIF ZARR --output TIFF: record the call, write the TIFF
    shift
    [[ $1 == --bind ]] && shift 2
    printf '%s\\n' "$@" > "$HOME/run.args"
    echo "TIFF of $2" > "$4"
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
        f"native_python = {sys.executable}\n"
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


def _settings(  # type: ignore[no-untyped-def]
    cluster_home: Path,
    tmp_path: Path,
    slurm: str = "",
    workflows: str = "",
    converters: str = "",
    python: str = sys.executable,
):
    config = tmp_path / "slurm-config.ini"
    config.write_text(
        "[SLURM]\nslurm_data_path = data\nslurm_images_path = images\n"
        "slurm_converters_path = converters\nslurm_script_path = scripts\n"
        f"{slurm}"
        f"[CONVERTERS]\n{converters}"
        "[WORKFLOWS]\nmisbehave = odd-folder\n"
        f"misbehave_repo = {REPO}/tests/fixtures/misbehave\n{workflows}"
        f"[WORKER]\ntransport = local\nshared_path = {cluster_home}\nruntime = apptainer\n"
        f"native_python = {python}\n"
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


def test_a_configured_converter_image_is_pulled_and_run_per_array_element(
    cluster_home: Path, tmp_path: Path
) -> None:
    settings = _settings(
        cluster_home,
        tmp_path,
        converters="zarr_to_tiff = cellularimagingcf/convert_zarr_to_tiff:2.0.0\n",
        python="/nonexistent/python",  # not needed: the image converts
    )
    actions = {a.what: a for a in init_cluster(LocalTransport(home=cluster_home), settings)}
    sif = cluster_home / "converters/convert_zarr_to_tiff_2.0.0.sif"
    assert "pulled on the login node" in actions["converter zarr_to_tiff image"].detail
    assert sif.read_text().startswith("docker://cellularimagingcf/convert_zarr_to_tiff:2.0.0")
    script = cluster_home / "converters/zarr_to_tiff.sh"
    assert subprocess.run(["shellcheck", str(script)], capture_output=True).returncode == 0
    # One array element, as Slurm would start it, on a hostile file name.
    data = cluster_home / "data/run1/data/in"
    zarr = data / "it's $(x) `y`.ome.zarr"
    zarr.mkdir(parents=True)
    (zarr / "zarr.json").write_text("{}")
    listing = cluster_home / "data/run1/convert.list"
    listing.write_text(f"{zarr}\n")
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "HOME": str(cluster_home),
           "SLURM_ARRAY_TASK_ID": "1"}  # fmt: skip
    subprocess.run(["bash", str(script), str(listing)], env=env, check=True)
    tiff = data / "it's $(x) `y`.tif"
    assert tiff.read_text() == f"TIFF of {zarr}\n"
    assert not zarr.exists()
    assert (cluster_home / "run.args").read_text().split("\n")[:4] == [
        str(sif.relative_to(cluster_home)),
        str(zarr),
        "--output",
        str(tiff),
    ]


def test_without_a_converter_image_init_checks_the_clusters_python_can_convert(
    cluster_home: Path, tmp_path: Path
) -> None:
    from biomeroworker.errors import BiomeroError

    settings = _settings(cluster_home, tmp_path, python="/usr/bin/false")
    seen = []
    with pytest.raises(BiomeroError, match="converter python: /usr/bin/false on the cluster"):
        seen.extend(init_cluster(LocalTransport(home=cluster_home), settings))
    fine = _settings(cluster_home, tmp_path)
    actions = {a.what: a for a in init_cluster(LocalTransport(home=cluster_home), fine)}
    assert actions["converter python"].error == ""


def _job_script(cluster_home: Path, tmp_path: Path, slurm: str = "", workflows: str = "") -> str:
    settings = _settings(cluster_home, tmp_path, slurm=slurm, workflows=workflows)
    list(init_cluster(LocalTransport(home=cluster_home), settings))
    return (cluster_home / "scripts/misbehave/local/job.sh").read_text()


@pytest.mark.parametrize(
    "switches",
    [
        "env_file_submission = true\n",
        "env_file_submission = false\n",
        "slurm_zip_cmd = zip\n",
        "slurm_zip_cmd = 7za\n",
    ],
)
def test_upstream_transport_switches_leave_the_job_script_as_it_is(
    cluster_home: Path, tmp_path: Path, switches: str
) -> None:
    """Parameter values always reach the job in <run>/params.json (upstream's
    env_file_submission = true, without an environment at all); either value renders
    the same script."""
    plain = _job_script(cluster_home, tmp_path)
    assert _job_script(cluster_home, tmp_path, slurm=switches) == plain
    assert "params.json" in plain and "export " not in plain


def test_gpu_use_follows_wf_use_gpu_with_inject_gpu_flag_off(
    cluster_home: Path, tmp_path: Path
) -> None:
    """Upstream without inject_gpu_flag: <wf>_use_gpu decides --nv and the gpu_* resources."""
    gpu = "gpu_partition = gpu\ngpu_gres = gpu:1\ninject_gpu_flag = false\n"
    cpu_script = _job_script(cluster_home, tmp_path, slurm=gpu)
    gpu_script = _job_script(cluster_home, tmp_path, slurm=gpu, workflows="misbehave_use_gpu = 1\n")
    assert "--nv" not in cpu_script and "--gres" not in cpu_script
    assert " run --nv " in gpu_script
    assert "#SBATCH --gres=gpu:1" in gpu_script and "#SBATCH --partition=gpu" in gpu_script


def test_pull_jobs_go_to_image_pull_partition(cluster_home: Path, tmp_path: Path) -> None:
    settings = _settings(
        cluster_home,
        tmp_path,
        slurm="slurm_image_pull_via_sbatch = true\nimage_pull_partition = cpu-short\n",
    )
    list(init_cluster(LocalTransport(home=cluster_home), settings))
    calls = (cluster_home / "sbatch.calls").read_text().split("\n")
    assert "--partition=cpu-short" in calls
