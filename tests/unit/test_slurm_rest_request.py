"""SubmitRequest -> slurmrestd submit body, per API version (slurm.rest.request).

v0.0.38 field names and values were checked against this machine's slurmrestd
(Slurm 22.05.8, tests/integration/test_slurm_modes.py submits them); v0.0.39+ follow
Slurm's published job_desc_msg descriptions (23.02-25.11).
"""

from __future__ import annotations

import subprocess

import pytest

from biomeroworker.errors import SlurmError
from biomeroworker.slurm import SubmitRequest
from biomeroworker.slurm.rest import request as rq
from biomeroworker.slurm.rest.shapes import SHAPES

V38, V39, V40, V41, V43 = (SHAPES[f"v0.0.{n}"] for n in (38, 39, 40, 41, 43))


def wrapped(n: int) -> dict[str, object]:
    return {"set": True, "infinite": False, "number": n}


def _props(shape=V38, **fields: object) -> dict[str, object]:  # type: ignore[no-untyped-def]
    request = SubmitRequest(script_path="jobs/run.sh", **fields)  # type: ignore[arg-type]
    return rq.job_properties(shape, request, home="/home/u", environment={"PATH": "/bin"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [("5", 5), ("1:30", 2), ("01:00:00", 60), ("2-12", 3600), ("1-00:30:00", 1470)],
)
def test_slurm_times_become_whole_minutes_rounded_up(text: str, expected: int) -> None:
    assert rq.minutes(text) == expected


@pytest.mark.parametrize(("text", "expected"), [("64M", 64), ("4G", 4096), ("512", 512)])
def test_memory_sizes_become_megabytes(text: str, expected: int) -> None:
    assert rq.megabytes(text) == expected


def test_relative_paths_are_made_absolute_against_the_cluster_home() -> None:
    props = _props(chdir="data/run1", output_path="logs/omero-%j.log", error_path="/e.log")
    assert props["current_working_directory"] == "/home/u/data/run1"
    assert props["standard_output"] == "/home/u/logs/omero-%j.log"
    assert props["standard_error"] == "/e.log"


def test_working_directory_defaults_to_the_home_like_sbatch_from_home() -> None:
    assert _props()["current_working_directory"] == "/home/u"


def test_argv_is_never_sent_because_it_corrupts_slurmrestd_2205() -> None:
    for shape in SHAPES.values():
        assert "argv" not in _props(shape, script_args=("a b", "-x"))


def test_request_fields_map_to_rest_properties() -> None:
    props = _props(
        job_name="w", partition="cpu", time_limit="01:00:00", mem="4G", cpus_per_task=2,
        array="1-3", array_throttle=2, extra_flags={"hold": "", "qos": "high"},
    )  # fmt: skip
    assert {k: props[k] for k in ("name", "partition", "time_limit", "memory_per_node")} == {
        "name": "w",
        "partition": "cpu",
        "time_limit": 60,
        "memory_per_node": 4096,
    }
    assert (props["cpus_per_task"], props["array"], props["hold"], props["qos"]) == (
        2,
        "1-3%2",
        True,
        "high",
    )


# What the job scripts and slurm-config.ini put on a job, as extra flags (config keys
# sbatch_<flag> and <wf>_job_<flag>) -> the v0.0.38 fields (all checked live).
V38_FLAGS = {
    "mem": ("300M", {"memory_per_node": 300}),
    "mem-per-cpu": ("1G", {"memory_per_cpu": 1024}),
    "time": ("01:30:00", {"time_limit": 90}),
    "time-min": ("10", {"time_minimum": 10}),
    "cpus-per-task": ("4", {"cpus_per_task": 4}),
    "gres": ("gpu:1", {"gres": "gpu:1"}),
    "gpus": ("a100:2", {"gpus": "a100:2"}),
    "gpus-per-node": ("1", {"gpus_per_node": "1"}),
    "partition": ("gpu", {"partition": "gpu"}),
    "job-name": ("n", {"name": "n"}),
    "mail-type": ("end,FAIL", {"mail_type": "END,FAIL"}),
    "mail-user": ("a@b.c", {"mail_user": "a@b.c"}),
    "account": ("lab", {"account": "lab"}),
    "qos": ("normal", {"qos": "normal"}),
    "constraint": ("bigmem", {"constraints": "bigmem"}),
    "exclusive": ("", {"exclusive": "exclusive"}),
    "nodes": ("1-2", {"nodes": "1-2"}),
    "ntasks": ("2", {"tasks": 2}),
    "nice": ("5", {"nice": 5}),
    "open-mode": ("append", {"open_mode": "append"}),
    "requeue": ("", {"requeue": True}),
}


@pytest.mark.parametrize("flag", list(V38_FLAGS))
def test_every_configurable_flag_maps_to_v038_fields(flag: str) -> None:
    value, fields = V38_FLAGS[flag]
    props = _props(extra_flags={flag: value})
    assert {k: props[k] for k in fields} == fields


def test_typed_and_extra_flags_map_alike() -> None:
    typed = _props(mem="2G", time_limit="5", cpus_per_task=2, gres="gpu:1", job_name="n")
    extra = _props(
        extra_flags={"mem": "2G", "time": "5", "cpus-per-task": "2", "gres": "gpu:1"},
        job_name="n",
    )
    assert typed == extra


@pytest.mark.parametrize("shape", [V39, V40, V41, V43], ids=lambda s: s.version)
def test_newer_versions_write_gpus_as_tres_and_flags_as_lists(shape) -> None:  # type: ignore[no-untyped-def]
    props = _props(
        shape,
        extra_flags={
            "gres": "gpu:1,gres/nvme:2",
            "gpus-per-node": "2",
            "gpus": "a100:2",
            "gpus-per-task": "1",
            "mail-type": "ALL,TIME_LIMIT_90",
            "exclusive": "user",
            "open-mode": "truncate",
        },
    )
    assert props["tres_per_node"] == "gres/gpu:1,gres/nvme:2,gres/gpu:2"
    assert props["tres_per_job"] == "gres/gpu:a100:2"
    assert props["tres_per_task"] == "gres/gpu:1"
    assert props["mail_type"] == [
        "BEGIN", "END", "FAIL", "INVALID_DEPENDENCY", "REQUEUE", "STAGE_OUT", "TIME=90%",
    ]  # fmt: skip
    assert props["shared"] == ["user"]
    assert props["open_mode"] == ["TRUNCATE"]
    assert not {"gres", "gpus", "gpus_per_node", "exclusive"} & props.keys()


def test_exclusive_without_a_value_is_the_shared_none_flag_from_v039() -> None:
    assert _props(V43, extra_flags={"exclusive": ""})["shared"] == ["none"]


def test_export_pairs_join_the_job_environment() -> None:
    props = _props(export="NONE,TOKEN=a b,MODE=x")
    assert props["environment"] == {"PATH": "/bin", "TOKEN": "a b", "MODE": "x"}


def test_export_all_is_refused_because_there_is_no_submitting_shell() -> None:
    with pytest.raises(SlurmError, match="only NAME=value"):
        _props(export="ALL")


def test_unmapped_sbatch_flag_is_refused_with_its_name_not_dropped() -> None:
    with pytest.raises(SlurmError, match=r"--licenses has no slurmrestd mapping \(API v0.0.38\)"):
        _props(extra_flags={"licenses": "matlab"})


@pytest.mark.parametrize(
    ("flag", "value", "why"),
    [
        ("mem", "lots", "not a memory size"),
        ("time", "soon", "not a Slurm time"),
        ("mail-type", "BEGIN,SOMETIMES", "unknown mail type 'SOMETIMES'"),
        ("exclusive", "topo-ish", "expected no value, 'user' or 'mcs'"),
        ("cpus-per-task", "0", "positive whole number"),
    ],
)
def test_unwritable_values_are_refused_with_the_flag(flag: str, value: str, why: str) -> None:
    problems = rq.flag_problems(V38, {flag: value})
    assert list(problems) == [flag]
    assert f"--{flag}={value}" in problems[flag] and why in problems[flag]


def test_flag_problems_is_empty_for_every_mapped_flag() -> None:
    flags = {flag: value for flag, (value, _) in V38_FLAGS.items()}
    assert rq.flag_problems(V38, flags) == {}
    assert rq.flag_problems(V43, flags) == {}


def test_request_invalid_for_sbatch_is_invalid_for_rest_too() -> None:
    with pytest.raises(ValueError, match="newline"):
        _props(job_name="a\nb")


def test_v038_body_has_environment_dict_plain_numbers_and_top_level_script() -> None:
    body = rq.submit_body(V38, script="#!/bin/bash\n", properties=_props(time_limit="5"))
    assert body["script"] == "#!/bin/bash\n"
    assert body["job"]["environment"] == {"PATH": "/bin"}
    assert body["job"]["time_limit"] == 5


def test_v039_body_has_environment_list_and_wrapped_numbers() -> None:
    props = _props(V39, time_limit="5", mem="1G", extra_flags={"mem-per-cpu": "2G"})
    body = rq.submit_body(V39, script="s", properties=props)
    assert body["job"]["environment"] == ["PATH=/bin"]
    assert body["job"]["time_limit"] == wrapped(5)
    assert body["job"]["memory_per_node"] == wrapped(1024)
    assert body["job"]["memory_per_cpu"] == wrapped(2048)
    assert body["script"] == "s"


def test_v041_body_carries_the_script_inside_the_job() -> None:
    body = rq.submit_body(V41, script="s", properties=_props(V41))
    assert set(body) == {"job"} and body["job"]["script"] == "s"


# ---------------------------------------------------------------- script arguments

SCRIPT = '#!/bin/bash\n# BIOMERO job script\n#SBATCH --job-name=x\n\nset -eu\necho "$@"\n'


def test_arguments_become_a_set_line_after_the_directives() -> None:
    text = rq.script_with_arguments(SCRIPT, ("data/run 1", "b"), "job.sh")
    lines = text.split("\n")
    assert lines[:4] == SCRIPT.split("\n")[:4]
    assert lines[4].startswith("set -- 'data/run 1' b ")
    assert lines[5:] == SCRIPT.split("\n")[4:]


def test_no_arguments_leave_the_script_unchanged() -> None:
    assert rq.script_with_arguments(SCRIPT, (), "job.sh") == SCRIPT


HOSTILE = ["it's", '"$(touch pwned)"', "`id`", "; rm -rf ~", "-x", "$HOME", "a\\b", ""]


def test_hostile_arguments_reach_the_script_literally(tmp_path) -> None:  # type: ignore[no-untyped-def]
    script = "#!/bin/bash\nprintf '%s\\0' \"$@\"\n"
    path = tmp_path / "job.sh"
    path.write_text(rq.script_with_arguments(script, HOSTILE, "job.sh"))
    out = subprocess.run(["bash", str(path)], capture_output=True, text=True, cwd=tmp_path)
    assert out.stdout.split("\0")[:-1] == HOSTILE
    assert not (tmp_path / "pwned").exists()


def test_arguments_to_a_non_shell_script_are_refused_with_its_path() -> None:
    with pytest.raises(SlurmError, match=r"convert\.py: script arguments over slurmrestd"):
        rq.script_with_arguments("#!/usr/bin/python3\nprint(1)\n", ("a",), "convert.py")
    assert rq.script_with_arguments("#!/usr/bin/env bash\n", ("a",), "s").count("set -- a") == 1
