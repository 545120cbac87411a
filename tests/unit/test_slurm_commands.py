from __future__ import annotations

from datetime import date

import pytest

from biomeroworker.slurm.commands import (
    SubmitRequest,
    after_ok,
    sacct_argv,
    sbatch_argv,
    scancel_argv,
    sinfo_argv,
    squeue_argv,
)
from biomeroworker.transport.base import shell_join

SACCT_FORMAT = (
    "--format=JobID,JobIDRaw,State,ExitCode,Elapsed,Start,End,MaxRSS,NodeList,AllocTRES,Reason"
)


def test_minimal_submit_renders_parsable_export_none_and_the_script() -> None:
    argv = sbatch_argv(SubmitRequest(script_path="jobs/run.sh"))
    assert argv == ["sbatch", "--parsable", "--export=NONE", "jobs/run.sh"]


def test_full_submit_renders_every_flag_sorted_by_name() -> None:
    request = SubmitRequest(
        script_path="/home/u/wf/job.sh",
        script_args=("--in", "data/in"),
        job_name="cellpose",
        partition="cpu-short",
        time_limit="01:00:00",
        mem="32GB",
        cpus_per_task=4,
        gres="gpu:1",
        gpus="1",
        array="1-10",
        array_throttle=2,
        dependency="afterok:41:42",
        comment="run 7f3a",
        output_path="logs/omero-%j.log",
        error_path="logs/omero-%j.err",
        chdir="/home/u/wf",
        extra_flags={"account": "imaging", "exclusive": "", "qos": "normal"},
    )
    assert sbatch_argv(request) == [
        "sbatch",
        "--parsable",
        "--account=imaging",
        "--array=1-10%2",
        "--chdir=/home/u/wf",
        "--comment=run 7f3a",
        "--cpus-per-task=4",
        "--dependency=afterok:41:42",
        "--error=logs/omero-%j.err",
        "--exclusive",
        "--export=NONE",
        "--gpus=1",
        "--gres=gpu:1",
        "--job-name=cellpose",
        "--mem=32GB",
        "--output=logs/omero-%j.log",
        "--partition=cpu-short",
        "--qos=normal",
        "--time=01:00:00",
        "/home/u/wf/job.sh",
        "--in",
        "data/in",
    ]


def test_export_extra_flag_replaces_the_export_none_default() -> None:
    argv = sbatch_argv(SubmitRequest(script_path="j.sh", extra_flags={"export": "ALL"}))
    assert argv == ["sbatch", "--parsable", "--export=ALL", "j.sh"]


def test_export_field_replaces_the_export_none_default() -> None:
    argv = sbatch_argv(SubmitRequest(script_path="j.sh", export="NONE,OMP_NUM_THREADS=1"))
    assert argv == ["sbatch", "--parsable", "--export=NONE,OMP_NUM_THREADS=1", "j.sh"]


def test_config_flags_render_as_extra_flags() -> None:
    # The shape config.Settings.sbatch_flags_for() returns.
    flags = {"cpus-per-task": "2", "mem": "32GB", "partition": "cpu-short", "time": "01:00:00"}
    argv = sbatch_argv(SubmitRequest(script_path="j.sh", extra_flags=flags))
    assert argv == [
        "sbatch",
        "--parsable",
        "--cpus-per-task=2",
        "--export=NONE",
        "--mem=32GB",
        "--partition=cpu-short",
        "--time=01:00:00",
        "j.sh",
    ]


@pytest.mark.parametrize(
    "value",
    [
        "x; rm -rf ~",
        "$(reboot)",
        "`id`",
        "a b\tc",
        "'quoted' \"twice\"",
        "--partition=evil",
    ],
)
def test_hostile_value_stays_one_argv_element(value: str) -> None:
    argv = sbatch_argv(SubmitRequest(script_path="j.sh", comment=value, job_name=value))
    assert f"--comment={value}" in argv
    assert f"--job-name={value}" in argv
    assert len(argv) == 6  # sbatch, --parsable, 3 flags, script


@pytest.mark.parametrize("value", ["a\nb", "a\rb", "a\x00b"])
def test_newline_or_nul_in_a_value_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="newline or NUL"):
        sbatch_argv(SubmitRequest(script_path="j.sh", comment=value))


@pytest.mark.parametrize("value", ["a\nb", "a\x00b"])
def test_newline_or_nul_in_an_extra_flag_value_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="newline or NUL"):
        sbatch_argv(SubmitRequest(script_path="j.sh", extra_flags={"qos": value}))


@pytest.mark.parametrize(
    "name", ["Mem", "mem=1", "-mem", "p", "a b", "a;b", "", "qos\n", "ünïcode"]
)
def test_bad_extra_flag_name_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="flag name"):
        sbatch_argv(SubmitRequest(script_path="j.sh", extra_flags={name: "1"}))


@pytest.mark.parametrize("name", ["wrap", "parsable", "test-only"])
def test_extra_flag_that_changes_how_sbatch_works_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="cannot be set"):
        sbatch_argv(SubmitRequest(script_path="j.sh", extra_flags={name: "x"}))


def test_flag_given_as_field_and_extra_flag_is_refused() -> None:
    with pytest.raises(ValueError, match="given twice"):
        sbatch_argv(SubmitRequest(script_path="j.sh", mem="1G", extra_flags={"mem": "2G"}))


@pytest.mark.parametrize("path", ["-x.sh", "--wrap=id", ""])
def test_script_path_that_sbatch_would_read_as_an_option_is_refused(path: str) -> None:
    with pytest.raises(ValueError, match="script path"):
        sbatch_argv(SubmitRequest(script_path=path))


def test_hostile_script_argument_stays_one_argv_element() -> None:
    argv = sbatch_argv(SubmitRequest(script_path="j.sh", script_args=("a; id", "$(id)")))
    assert argv[-2:] == ["a; id", "$(id)"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("time_limit", "1 hour"),
        ("time_limit", "01:00:00;id"),
        ("mem", "lots"),
        ("mem", "4G 1"),
        ("array", "1-3%2"),  # the throttle has its own field
        ("array", "1-3;id"),
        ("dependency", "afterok:1 && id"),
        ("job_name", ""),
    ],
)
def test_malformed_typed_value_is_refused(field: str, value: str) -> None:
    request = SubmitRequest(script_path="j.sh", **{field: value})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sbatch --"):
        sbatch_argv(request)


@pytest.mark.parametrize("time_limit", ["30", "30:00", "01:00:00", "1-0", "1-12:00", "2-00:00:00"])
def test_every_slurm_time_limit_form_is_accepted(time_limit: str) -> None:
    assert f"--time={time_limit}" in sbatch_argv(
        SubmitRequest(script_path="j.sh", time_limit=time_limit)
    )


@pytest.mark.parametrize("cpus", [0, -1, True])
def test_cpus_per_task_must_be_a_positive_integer(cpus: int) -> None:
    with pytest.raises(ValueError, match="positive integer"):
        sbatch_argv(SubmitRequest(script_path="j.sh", cpus_per_task=cpus))


def test_array_throttle_without_array_is_refused() -> None:
    with pytest.raises(ValueError, match="throttle needs an array"):
        sbatch_argv(SubmitRequest(script_path="j.sh", array_throttle=2))


def test_after_ok_joins_job_ids() -> None:
    assert after_ok("41", "42_3") == "afterok:41:42_3"


@pytest.mark.parametrize("bad", ["", "41;id", "-1", "41.batch", "abc"])
def test_after_ok_refuses_what_is_not_a_job_id(bad: str) -> None:
    with pytest.raises(ValueError):
        after_ok("41", bad)


def test_sacct_asks_for_all_jobs_and_their_steps_in_one_command() -> None:
    assert sacct_argv(["12", "45_3", "12"]) == [
        "env",
        "SLURM_BITSTR_LEN=0",
        "sacct",
        "--parsable2",
        "--noheader",
        SACCT_FORMAT,
        "--jobs=12,45_3",
    ]


def test_squeue_lists_array_elements_and_finished_jobs() -> None:
    assert squeue_argv(["12", "45"]) == [
        "squeue",
        "--noheader",
        "--array",
        "--states=all",
        "--format=%i|%A|%F|%K|%T|%M|%S|%e|%N|%r",
        "--jobs=12,45",
    ]


def test_scancel_takes_each_job_id_as_its_own_argument() -> None:
    assert scancel_argv(["12", "45_3"]) == ["scancel", "12", "45_3"]


def test_sinfo_asks_for_partition_summaries() -> None:
    assert sinfo_argv() == ["sinfo", "--noheader", "--format=%P|%a|%l|%D|%C"]


@pytest.mark.parametrize("bad", ["12;reboot", "--me", "12 13", "", "45_[1-3]"])
@pytest.mark.parametrize("build", [sacct_argv, squeue_argv, scancel_argv])
def test_query_commands_refuse_what_is_not_a_job_id(build, bad: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="job id"):
        build(["12", bad])


def test_query_commands_refuse_an_empty_job_list() -> None:
    with pytest.raises(ValueError, match="no job ids"):
        sacct_argv([])


def test_rendered_submit_survives_shell_quoting_unchanged() -> None:
    import shlex

    argv = sbatch_argv(SubmitRequest(script_path="j.sh", comment="it's $(id) `x`"))
    assert shlex.split(shell_join(argv)) == argv


@pytest.mark.parametrize(
    ("start", "days", "expected"),
    [
        (None, None, "now-7days"),
        (date(2024, 1, 1), None, "2024-01-01"),
        (date(2024, 1, 1), 3, "now-3days"),  # the rolling window wins, as upstream
        (None, 0, "now-0days"),
    ],
)
def test_the_sacct_window_keys_set_how_far_back_a_lost_job_is_searched(
    start: date | None, days: int | None, expected: str
) -> None:
    from biomeroworker.slurm.commands import find_by_name_sacct_argv, history_start

    assert f"--starttime={expected}" in find_by_name_sacct_argv("n", history_start(start, days))
