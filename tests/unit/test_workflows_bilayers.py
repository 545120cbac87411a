"""bilayers descriptors: read as biomero 2.8.3 reads them, rendered into a job whose
command line takes each value as one argument, and found where upstream looks."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest
import yaml

from biomeroworker.prepare import flag_command
from biomeroworker.workflows.bilayers import render_flag
from biomeroworker.workflows.descriptor import (
    Descriptor,
    DescriptorError,
    descriptor_from_data,
    find_descriptor,
    load_descriptor,
)
from biomeroworker.workflows.github import fetch_descriptor, resolve_descriptor
from biomeroworker.workflows.jobscript import JobScriptSpec, render_job_script
from biomeroworker.workflows.params import ParameterError, validate_params

FIXTURE = Path(__file__).parents[1] / "fixtures" / "bilayers"
CONFIG = FIXTURE / "config.yaml"
URL = "https://github.com/acme/threshold-count/tree/v0.0.1"


def config() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load(CONFIG.read_text())


def descriptor(**changes: object) -> Descriptor:
    return descriptor_from_data({**config(), **changes}, "t")


# --- reading ---------------------------------------------------------------------------


def test_a_bilayers_config_is_read_with_name_image_command_and_folders() -> None:
    d = load_descriptor(CONFIG)
    assert d.family == "bilayers"
    assert d.name == "Threshold Count"  # citations[0].name, as upstream
    assert d.description.startswith("Test workflow")
    assert d.image == "biomero/threshold_count" and d.image_type == "docker"
    assert d.cli_command == ("python", "-m", "threshold_count", "--verbose")
    # the required image input is the run's in-folder; output_dir_set is its out-folder
    assert d.folder_flags == (("--folder", "in"), ("--save_dir", "out"))
    # hidden args in cli_order: a flag alone, then one with its value appended
    assert d.hidden_args == ("--quiet-progress", "--format=tiff")
    assert [p.id for p in d.parameters if p.server_set] == ["input_images", "save_dir"]


def test_parameters_get_the_types_upstream_gives_them() -> None:
    d = load_descriptor(CONFIG)
    got = {p.id: (p.kind, p.default, p.flag, p.flag_mode) for p in d.user_parameters}
    assert got == {
        "pipeline": ("file", None, "--pipeline", "joined"),  # cli_tag "--pipeline=" stripped
        "threshold_method": ("choice", "otsu", "--threshold_method", "joined"),
        "channel": ("choice", 0, "--channel", "joined"),
        "min_size": ("int", 15, "--min_size", "joined"),
        "sigma": ("float", 2.0, "-s", "separate"),  # a float with a whole default stays float
        "label": ("string", "cells", "--label", "joined"),
        "save_masks": ("boolean", False, "--save_masks", "switch"),  # no append_value
        "exclude_edges": ("boolean", True, "--exclude_edges", "joined"),
    }
    by_id = {p.id: p for p in d.user_parameters}
    assert by_id["threshold_method"].choices == ("otsu", "li")
    assert by_id["channel"].choices == (0, 2)
    assert by_id["pipeline"].formats == ("cppipe", "txt")
    assert by_id["pipeline"].optional and not by_id["threshold_method"].optional
    assert [p.id for p in d.attachments] == ["pipeline"]


def test_an_integer_choice_list_keeps_an_integer_default_as_upstream_coerces_it() -> None:
    data = config()
    channel = next(p for p in data["parameters"] if p["name"] == "channel")
    channel["default"] = 2.0
    d = descriptor_from_data(data, "t")
    assert next(p for p in d.parameters if p.id == "channel").default == 2


def test_without_citations_the_name_is_the_algorithm_folder() -> None:
    assert descriptor(citations=[]).name == "threshold_count"


def _with(section: str, index: int, **changes: object) -> dict:  # type: ignore[type-arg]
    data = config()
    data[section][index] = {**data[section][index], **changes}
    return data


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ({**config(), "docker_image": {"org": "Acme Corp", "name": "x"}}, "lower-case image"),
        ({**config(), "exec_function": {"cli_command": ""}}, "cli_command is missing"),
        ({**config(), "exec_function": {"cli_command": "python 'open"}}, "cli_command"),
        (_with("parameters", 0, cli_tag="--method; rm -rf ~"), "not an option"),
        (_with("parameters", 0, cli_tag="$(reboot)"), "not an option"),
        (_with("parameters", 2, type="slider"), "unsupported type 'slider'"),
        (_with("parameters", 0, default="triangle"), "not one of its options"),
        (_with("parameters", 2, default="many"), "non-numeric default"),
        (_with("parameters", 2, name="min size"), "name must be a name"),
        (_with("parameters", 7, cli_tag="--folder"), "both the in- and out-folder"),
        (_with("parameters", 0, cli_tag="--a=b"), "not an option"),
        (_with("parameters", 0, cli_tag="-"), "not an option"),
        ({**config(), "docker_image": {"org": "a/../b", "name": "n"}}, "lower-case image"),
        ({**config(), "docker_image": {"org": "", "name": ""}}, "lower-case image"),
    ],
)
def test_unusable_configs_are_refused_with_the_reason(data: dict, says: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(DescriptorError, match=says):
        descriptor_from_data(data, "t")


def test_shapes_published_bilayers_configs_have_are_read() -> None:
    """From bilayer-containers/bilayers' algorithms: a registry in org (ASHLAR), options
    of one dash and several letters (elastix -out, -fMask), bare keys given as key=value
    (Fiji's folder=), the out-folder flag named twice (micro-sam) and "default: None"
    (InstanSeg's pixel_size)."""
    data = config()
    data["docker_image"] = {"org": "docker.io/labsyspharm", "name": "ashlar"}
    data["inputs"][0]["cli_tag"] = "folder="
    data["outputs"][0]["cli_tag"] = "-out"
    data["parameters"][7]["cli_tag"] = "-out"
    data["parameters"][2].update(cli_tag="-threads", default="None")
    d = descriptor_from_data(data, "t")
    assert d.image == "docker.io/labsyspharm/ashlar"
    assert d.folder_flags == (("folder", "in"), ("-out", "out"))
    threads = next(p for p in d.parameters if p.id == "min_size")
    assert (threads.flag, threads.flag_mode, threads.default) == ("-threads", "separate", None)
    assert render_flag("folder", "joined", "x") == ["folder=x"]
    text = render_job_script(
        JobScriptSpec(
            workflow="w", version="v1", runtime="apptainer", image_path="/i.sif",
            bilayers=flag_command(d),
        )
    )  # fmt: skip
    assert '"folder=$run_dir/data/in" -out "$run_dir/data/out"' in text


def test_a_local_folder_with_only_a_config_yaml_is_found(tmp_path: Path) -> None:
    shutil.copy(CONFIG, tmp_path / "config.yaml")
    assert find_descriptor(tmp_path).name == "config.yaml"
    (tmp_path / "descriptor.json").write_text(json.dumps({"name": "first"}))
    assert find_descriptor(tmp_path).name == "descriptor.json"  # upstream's order


def test_yaml_that_is_not_yaml_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "config.yaml"
    bad.write_text("inputs: [unclosed\n")
    with pytest.raises(DescriptorError, match="not valid YAML"):
        load_descriptor(bad)


# --- fetching --------------------------------------------------------------------------


def _serving(files: dict[str, bytes], asked: list[str]):  # type: ignore[no-untyped-def]
    def fetch(url: str) -> bytes:
        asked.append(url.rsplit("/", 1)[-1])
        name = url.rsplit("/", 1)[-1]
        if name not in files:
            raise urllib.error.HTTPError(url, 404, "Not Found", {}, None)  # type: ignore[arg-type]
        return files[name]

    return fetch


def test_init_looks_for_descriptor_json_then_yaml_then_config_yaml(tmp_path: Path) -> None:
    asked: list[str] = []
    fetch = _serving({"config.yaml": CONFIG.read_bytes()}, asked)
    d, fetched = fetch_descriptor(URL, cache_root=tmp_path, fetch=fetch)
    assert fetched and d.family == "bilayers"
    assert asked == ["descriptor.json", "descriptor.yaml", "config.yaml"]
    # cached as descriptor.json (the same data), read again without the network
    again = resolve_descriptor(URL, cache_root=tmp_path)
    assert (again.parameters, again.folder_flags, again.hidden_args, again.cli_command) == (
        d.parameters, d.folder_flags, d.hidden_args, d.cli_command,
    )  # fmt: skip
    asked.clear()
    assert fetch_descriptor(URL, cache_root=tmp_path, fetch=fetch)[1] is False
    assert asked == []


def test_a_server_error_is_not_taken_for_a_missing_file(tmp_path: Path) -> None:
    def fetch(url: str) -> bytes:
        raise urllib.error.HTTPError(url, 503, "Unavailable", {}, None)  # type: ignore[arg-type]

    with pytest.raises(DescriptorError, match="503"):
        fetch_descriptor(URL, cache_root=tmp_path, fetch=fetch)


def test_a_tag_without_any_descriptor_names_what_was_tried(tmp_path: Path) -> None:
    with pytest.raises(DescriptorError, match=r"descriptor\.json.*descriptor\.yaml.*config\.yaml"):
        fetch_descriptor(URL, cache_root=tmp_path, fetch=_serving({}, []))


# --- parameters ------------------------------------------------------------------------


def test_values_are_checked_against_the_bilayers_types() -> None:
    d = load_descriptor(CONFIG)
    values = validate_params(d, {"threshold_method": "li", "channel": "2", "sigma": "1.5"})
    assert values == {
        "threshold_method": "li",
        "channel": 2,
        "min_size": 15,
        "sigma": 1.5,
        "label": "cells",
        "save_masks": False,
        "exclude_edges": True,
    }
    with pytest.raises(ParameterError) as caught:
        validate_params(d, {"threshold_method": "x", "save_dir": "/etc", "input_images": "a"})
    text = str(caught.value)
    assert "threshold_method: 'x' is not allowed" in text
    assert "save_dir: set by the server" in text and "input_images: set by the server" in text


@pytest.mark.parametrize(
    ("flag", "mode", "value", "args"),
    [
        ("--x", "joined", "a b", ["--x=a b"]),
        ("--x", "joined", True, ["--x=True"]),
        ("-x", "separate", 1.5, ["-x", "1.5"]),
        ("--x", "switch", True, ["--x"]),
        ("--x", "switch", False, []),
    ],
)
def test_a_value_becomes_the_arguments_upstream_passes(
    flag: str, mode: str, value: object, args: list[str]
) -> None:
    assert render_flag(flag, mode, value) == args  # type: ignore[arg-type]


# --- the job, run with bash (no Slurm) -------------------------------------------------

RECORDER = """import json, sys
from pathlib import Path
argv = sys.argv[1:]
out = next(a.split("=", 1)[1] for a in argv if a.startswith("--save_dir="))
Path(out, "dump.json").write_text(json.dumps(argv))
"""


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "run with spaces"
    (run / "data" / "in").mkdir(parents=True)
    (run / "data" / "in" / "a.tif").write_bytes(b"x")
    return run


def _script(tmp_path: Path, **spec: object) -> Path:
    script = tmp_path / "job.sh"
    text = render_job_script(
        JobScriptSpec(
            workflow="count",
            version="v0.0.1",
            bilayers=flag_command(load_descriptor(CONFIG)),
            reader_python=sys.executable,
            **spec,  # type: ignore[arg-type]
        )
    )
    script.write_text(text)
    return script


def _run(
    script: Path,
    run: Path,
    params: dict,
    path: str | None = None,  # type: ignore[type-arg]
) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    (run / "params.json").write_text(json.dumps(params))
    env = {"PATH": path or os.environ["PATH"], "HOME": str(run)}
    return subprocess.run(
        ["bash", str(script), str(run)], env=env, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip


def _native(tmp_path: Path) -> Path:
    wf = tmp_path / "wf"
    wf.mkdir()
    (wf / "wrapper.py").write_text(RECORDER)
    return _script(tmp_path, runtime="native", native_python=sys.executable, workflow_dir=str(wf))


def test_the_job_gives_each_value_its_flag_and_one_argument_however_hostile(
    tmp_path: Path, run_dir: Path
) -> None:
    pwned = tmp_path / "pwned"
    pwned.mkdir()
    hostile = f"x; touch {pwned}/a $(touch {pwned}/b) `touch {pwned}/c`\nnext --save_dir=/etc"
    params = {
        "threshold_method": "otsu",
        "label": hostile,
        "min_size": 3,
        "sigma": -1.5,  # a negative number after a short flag is still one value
        "save_masks": True,
        "exclude_edges": False,
        "pipeline": "run with spaces/data/files/pipeline",
    }
    result = _run(_native(tmp_path), run_dir, params)
    assert result.returncode == 0, result.stderr
    argv = json.loads((run_dir / "data" / "out" / "dump.json").read_text())
    assert argv == [
        f"--folder={run_dir}/data/in",
        f"--save_dir={run_dir}/data/out",
        "--quiet-progress",
        "--format=tiff",
        "--threshold_method=otsu",
        f"--label={hostile}",
        "--min_size=3",
        "-s",
        "-1.5",
        "--save_masks",
        "--exclude_edges=False",
        "--pipeline=run with spaces/data/files/pipeline",
    ]
    assert list(pwned.iterdir()) == []


def test_a_switch_left_off_passes_nothing(tmp_path: Path, run_dir: Path) -> None:
    result = _run(_native(tmp_path), run_dir, {"threshold_method": "li", "save_masks": False})
    assert result.returncode == 0, result.stderr
    argv = json.loads((run_dir / "data" / "out" / "dump.json").read_text())
    assert "--save_masks" not in argv and argv[-1] == "--threshold_method=li"


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"label": "x", "evil": "1"}, "'evil' is not a parameter"),
        ({"save_dir": "/etc"}, "'save_dir' is not a parameter"),  # server-set: never from params
        ({"sigma": "--save_dir=/etc"}, "starts with '-'"),  # after a short flag it would be a flag
        ({"label": ["a"]}, "bad entry"),
    ],
)
def test_the_job_refuses_what_no_flag_may_take(
    tmp_path: Path,
    run_dir: Path,
    params: dict,
    says: str,  # type: ignore[type-arg]
) -> None:
    result = _run(_native(tmp_path), run_dir, params)
    assert result.returncode != 0
    assert says in result.stderr
    assert not (run_dir / "data" / "out" / "dump.json").exists()


FAKE_RUNTIME = """#!{python}
import json, sys
from pathlib import Path
argv = sys.argv[1:]
out = next(a.split("=", 1)[1] for a in argv if a.startswith("--save_dir="))
Path(out, "dump.json").write_text(json.dumps(argv))
"""


def test_a_container_runs_the_cli_command_with_exec(tmp_path: Path, run_dir: Path) -> None:
    """FakeApptainer stands in for the runtime, which cannot run here; it records argv."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "apptainer"
    fake.write_text(FAKE_RUNTIME.format(python=sys.executable))
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    script = _script(
        tmp_path, runtime="apptainer", image_path="/img/threshold_count_v0.0.1.sif",
        bind_paths=("/data",), workdir="/bilayers", gpu=True,
    )  # fmt: skip
    result = _run(script, run_dir, {"threshold_method": "li"}, f"{bin_dir}:{os.environ['PATH']}")
    assert result.returncode == 0, result.stderr
    argv = json.loads((run_dir / "data" / "out" / "dump.json").read_text())
    assert argv == [
        "exec", "--nv", "--bind", "/data", "--pwd", "/bilayers",
        "/img/threshold_count_v0.0.1.sif", "python", "-m", "threshold_count", "--verbose",
        f"--folder={run_dir}/data/in", f"--save_dir={run_dir}/data/out",
        "--quiet-progress", "--format=tiff", "--threshold_method=li",
    ]  # fmt: skip


def test_the_rendered_script_passes_shellcheck(tmp_path: Path) -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed")
    script = _script(tmp_path, runtime="apptainer", image_path="/img/t.sif")
    result = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
