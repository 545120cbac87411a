from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from biomeroworker.prepare import flag_command
from biomeroworker.workflows.descriptor import load_descriptor
from biomeroworker.workflows.jobscript import (
    JobScriptError,
    JobScriptSpec,
    render_job_script,
)

GOLDEN = Path(__file__).parent / "golden"
BILAYERS = Path(__file__).parents[1] / "fixtures" / "bilayers" / "config.yaml"

GOLDEN_SPECS = {
    "native_params_file.sh": JobScriptSpec(
        workflow="nuclei",
        version="v1.0.0",
        runtime="native",
        native_python="/opt/biomero/venvs/nuclei/bin/python",
        workflow_dir="/home/biomero/workflows/nuclei",
        sbatch={"time": "00:30:00", "mem": "4GB", "cpus-per-task": "2"},
    ),
    "apptainer_argv_gpu.sh": JobScriptSpec(
        workflow="cellpose",
        version="v1.2.7",
        runtime="apptainer",
        params_mode="argv",
        image_path="/home/biomero/images/cellpose/t_nucleisegmentation-cellpose_v1.2.7.sif",
        bind_paths=("/data/my-scratch",),
        workdir="/app",
        gpu=True,
        sbatch={"gres": "gpu:1", "partition": "gpu", "mem": "32GB"},
    ),
    "apptainer_bilayers.sh": JobScriptSpec(
        workflow="count",
        version="v0.0.1",
        runtime="apptainer",
        image_path="/home/biomero/images/count/threshold_count_v0.0.1.sif",
        bind_paths=("/data/my-scratch",),
        workdir="/bilayers",
        bilayers=flag_command(load_descriptor(BILAYERS)),
    ),
    "singularity_params_file.sh": JobScriptSpec(
        workflow="nuclei",
        version="v1.0.0",
        runtime="singularity",
        image_path="/home/biomero/images/nuclei/w_nucleisegmentation-watershed_v1.0.0.sif",
        bind_paths=("/data", "/scratch"),
        workdir="/app",
    ),
}

HOSTILE = {
    "dollar": "$(touch {pwned}/dollar)",
    "backticks": "`touch {pwned}/backtick`",
    "semicolon": "x; touch {pwned}/semicolon",
    "andand": "x && touch {pwned}/andand",
    "quotes": "it's a \"quoted\" 'value'",
    "newline": "line one\nline two; touch {pwned}/newline",
    "glob": "*",
    "dashes": "--outfolder /etc",
    "empty": "",
    "unicode": "kern \u00e9 \u2603",
}

STAND_IN = """import json, sys
from pathlib import Path
argv = sys.argv[1:]
out = Path(argv[argv.index("--outfolder") + 1])
params = None
if "--params-file" in argv:
    params = json.loads(Path(argv[argv.index("--params-file") + 1]).read_text())
(out / "dump.json").write_text(json.dumps({"argv": argv, "params": params}))
sys.exit(int(params.get("exit_code", 0)) if params else 0)
"""


@pytest.mark.parametrize("name", sorted(GOLDEN_SPECS))
def test_rendered_script_matches_golden_file(name: str) -> None:
    rendered = render_job_script(GOLDEN_SPECS[name])
    path = GOLDEN / name
    if not path.exists():
        path.write_text(rendered, encoding="utf-8")
        pytest.fail(f"recorded new golden file {path}; review it and run again")
    assert rendered == path.read_text(encoding="utf-8"), (
        f"job script differs from {path}. If the change is intended, delete the golden "
        "file to accept: the next run records the new script."
    )


def test_sbatch_lines_are_sorted_and_merged_over_defaults() -> None:
    spec = GOLDEN_SPECS["native_params_file.sh"]
    lines = [x for x in render_job_script(spec).splitlines() if x.startswith("#SBATCH")]
    assert lines == sorted(lines)
    assert "#SBATCH --job-name=biomero-nuclei" in lines
    custom = JobScriptSpec(**{**spec.__dict__, "sbatch": {"job-name": "mine"}})
    assert "#SBATCH --job-name=mine" in render_job_script(custom)


def test_golden_scripts_pass_shellcheck() -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    result = subprocess.run(
        ["shellcheck", *sorted(str(p) for p in GOLDEN.glob("*.sh"))],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout


def test_gpu_adds_nv_only_for_gpu_workflows() -> None:
    gpu = render_job_script(GOLDEN_SPECS["apptainer_argv_gpu.sh"])
    cpu = render_job_script(GOLDEN_SPECS["singularity_params_file.sh"])
    assert " run --nv " in gpu
    assert "--nv" not in cpu


@pytest.mark.parametrize(
    ("sbatch", "message"),
    [
        ({"mem": "4GB\n#SBATCH --uid=0"}, "no spaces"),
        ({"comment": "two words"}, "no spaces"),
        ({"Mem; rm": "1"}, "long option name"),
    ],
)
def test_unsafe_sbatch_values_are_refused(sbatch: dict[str, str], message: str) -> None:
    spec = JobScriptSpec(**{**GOLDEN_SPECS["native_params_file.sh"].__dict__, "sbatch": sbatch})
    with pytest.raises(JobScriptError, match=message):
        render_job_script(spec)


@pytest.mark.parametrize("version", ["v1\nrm -rf /", "../v1", "v1 x", ""])
def test_unsafe_workflow_version_is_refused(version: str) -> None:
    spec = JobScriptSpec(workflow="w", version=version, runtime="native", workflow_dir="/w")
    with pytest.raises(JobScriptError, match="version"):
        render_job_script(spec)


def test_container_runtime_without_image_is_refused() -> None:
    with pytest.raises(JobScriptError, match="image_path"):
        render_job_script(JobScriptSpec(workflow="w", version="v1", runtime="apptainer"))


# --- executing the rendered script with bash, no Slurm -------------------------------


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "run dir with spaces"
    (run / "data" / "in").mkdir(parents=True)
    (run / "data" / "in" / "sample.tif").write_bytes(b"fake image")
    return run


@pytest.fixture
def pwned(tmp_path: Path) -> Path:
    folder = tmp_path / "pwned"
    folder.mkdir()
    return folder


def hostile_params(pwned: Path) -> dict[str, str]:
    return {key: value.format(pwned=pwned) for key, value in HOSTILE.items()}


def native_script(tmp_path: Path, params_mode: str) -> Path:
    workflow_dir = tmp_path / "workflow"
    workflow_dir.mkdir(exist_ok=True)
    (workflow_dir / "wrapper.py").write_text(STAND_IN, encoding="utf-8")
    spec = JobScriptSpec(
        workflow="standin",
        version="v0",
        runtime="native",
        params_mode=params_mode,  # type: ignore[arg-type]
        native_python=sys.executable,
        workflow_dir=str(workflow_dir),
        reader_python=sys.executable,
    )
    script = tmp_path / f"job_{params_mode}.sh"
    script.write_text(render_job_script(spec), encoding="utf-8")
    return script


def run_job(
    script: Path, run: Path, params: dict, *, via_env: bool = False
) -> subprocess.CompletedProcess:
    (run / "params.json").write_text(json.dumps(params), encoding="utf-8")
    env = {"PATH": os.environ["PATH"], "HOME": str(run)}
    argv = ["bash", str(script)]
    if via_env:
        env["BIOMERO_RUN_DIR"] = str(run)
    else:
        argv.append(str(run))
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)


def dump(run: Path) -> dict:
    return json.loads((run / "data" / "out" / "dump.json").read_text(encoding="utf-8"))


def test_native_script_passes_hostile_values_literally_through_params_file(
    tmp_path: Path, run_dir: Path, pwned: Path
) -> None:
    params = hostile_params(pwned)
    result = run_job(native_script(tmp_path, "file"), run_dir, params)
    assert result.returncode == 0, result.stderr
    seen = dump(run_dir)
    assert seen["params"] == params
    assert seen["argv"] == [
        "--infolder", f"{run_dir}/data/in", "--outfolder", f"{run_dir}/data/out",
        "--gtfolder", f"{run_dir}/data/gt", "--local", "-nmc",
        "--params-file", f"{run_dir}/params.json",
    ]  # fmt: skip
    assert list(pwned.iterdir()) == []


def test_argv_reader_turns_hostile_values_into_single_arguments(
    tmp_path: Path, run_dir: Path, pwned: Path
) -> None:
    params = {**hostile_params(pwned), "sigma": 1.5, "count": 3, "use_gpu": False}
    result = run_job(native_script(tmp_path, "argv"), run_dir, params)
    assert result.returncode == 0, result.stderr
    argv = dump(run_dir)["argv"]
    as_text = {True: "true", False: "false"}
    expected_tail = []
    for key, value in params.items():
        expected_tail += [f"--{key}", as_text[value] if isinstance(value, bool) else str(value)]
    assert argv[:7] == [
        "--infolder", f"{run_dir}/data/in", "--outfolder", f"{run_dir}/data/out",
        "--gtfolder", f"{run_dir}/data/gt", "--local",
    ]  # fmt: skip
    assert argv[8:] == expected_tail
    assert list(pwned.iterdir()) == []


def test_argv_reader_passes_no_arguments_for_empty_params(tmp_path: Path, run_dir: Path) -> None:
    result = run_job(native_script(tmp_path, "argv"), run_dir, {})
    assert result.returncode == 0, result.stderr
    assert dump(run_dir)["argv"][-1] == "-nmc"


def test_argv_reader_rejects_a_non_identifier_key(tmp_path: Path, run_dir: Path) -> None:
    result = run_job(native_script(tmp_path, "argv"), run_dir, {"a b; ls": "1"})
    assert result.returncode != 0
    assert "bad entry" in result.stderr
    assert not (run_dir / "data" / "out" / "dump.json").exists()


def test_run_folder_can_come_from_the_environment(tmp_path: Path, run_dir: Path) -> None:
    result = run_job(native_script(tmp_path, "file"), run_dir, {"x": "1"}, via_env=True)
    assert result.returncode == 0, result.stderr
    assert dump(run_dir)["params"] == {"x": "1"}


def test_job_exit_status_is_the_workflow_exit_status(tmp_path: Path, run_dir: Path) -> None:
    result = run_job(native_script(tmp_path, "file"), run_dir, {"exit_code": 7})
    assert result.returncode == 7


def test_job_without_run_folder_fails_with_a_message(tmp_path: Path) -> None:
    script = native_script(tmp_path, "file")
    result = subprocess.run(
        ["bash", str(script)], env={"PATH": os.environ["PATH"]}, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "BIOMERO_RUN_DIR" in result.stderr


def test_job_without_params_file_fails_with_a_message(tmp_path: Path, run_dir: Path) -> None:
    script = native_script(tmp_path, "file")
    result = subprocess.run(
        ["bash", str(script), str(run_dir)], capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "params.json" in result.stderr


FAKE_APPTAINER = """#!{python}
import json, os, sys
from pathlib import Path
argv = sys.argv[1:]
out = Path(argv[argv.index("--outfolder") + 1])
(out / "dump.json").write_text(json.dumps({{"argv": argv, "params": None}}))
"""


def test_container_script_hands_hostile_values_to_the_runtime_as_single_arguments(
    tmp_path: Path, run_dir: Path, pwned: Path
) -> None:
    """FakeApptainer stands in for the runtime, which cannot run here; it records argv."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "apptainer"
    fake.write_text(FAKE_APPTAINER.format(python=sys.executable), encoding="utf-8")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    spec = JobScriptSpec(
        **{**GOLDEN_SPECS["apptainer_argv_gpu.sh"].__dict__, "reader_python": sys.executable}
    )
    script = tmp_path / "job.sh"
    script.write_text(render_job_script(spec), encoding="utf-8")
    params = hostile_params(pwned)
    (run_dir / "params.json").write_text(json.dumps(params), encoding="utf-8")
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    result = subprocess.run(
        ["bash", str(script), str(run_dir)], env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    argv = dump(run_dir)["argv"]
    assert argv[:7] == [
        "run",
        "--nv",
        "--bind",
        "/data/my-scratch",
        "--pwd",
        "/app",
        spec.image_path,
    ]
    assert argv[-2 * len(params) :] == [x for k, v in params.items() for x in (f"--{k}", v)]
    assert list(pwned.iterdir()) == []
