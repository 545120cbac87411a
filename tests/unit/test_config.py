"""slurm-config.ini loading, layering, validation and the helpers on Settings."""

from __future__ import annotations

import configparser
import dataclasses
import logging
import textwrap
from pathlib import Path

import pytest

from biomeroworker import config
from biomeroworker.config import (
    WORKER_KEYS,
    WorkerSettings,
    find_config_files,
    load_settings,
    redact_url,
)
from biomeroworker.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
CELLPOSE_URL = "https://github.com/TorecLuik/W_NucleiSegmentation-Cellpose/tree/v1.2.7"

BASE = f"""
[SSH]
host = testcluster

[SLURM]
slurm_data_path = my-scratch/data
slurm_images_path = my-scratch/images
slurm_converters_path = my-scratch/converters
slurm_script_path = my-scratch/scripts

[WORKFLOWS]
cellpose = cellpose
cellpose_repo = {CELLPOSE_URL}
"""


def write(directory: Path, text: str, name: str = "slurm-config.ini") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def with_slurm(*lines: str) -> str:
    """BASE with ``lines`` added to its [SLURM] section."""
    return BASE.replace("[WORKFLOWS]", "\n".join(lines) + "\n[WORKFLOWS]")


def load(tmp_path: Path, *texts: str, env: dict[str, str] | None = None) -> config.Settings:
    paths = [write(tmp_path, text, f"{i}.ini") for i, text in enumerate(texts)]
    return load_settings(paths, env={} if env is None else env)


def problems(tmp_path: Path, *texts: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, *texts, env=env)
    return caught.value.problems


# ---------------------------------------------------------------- reading and layering


def test_example_config_in_repo_loads_without_problems():
    settings = load_settings([REPO_ROOT / "slurm-config.ini"], env={})
    assert settings.ssh.host
    assert settings.workflows["cellpose"].tag == "v1.2.7"


def test_upstream_style_file_with_every_upstream_key_loads(tmp_path):
    settings = load(
        tmp_path,
        """
        [SSH]
        host = slurm
        inline_ssh_env = True
        [SLURM]
        slurm_data_path = my-scratch/data
        slurm_images_path = my-scratch/singularity_images/workflows
        slurm_converters_path = my-scratch/singularity_images/converters
        slurm_script_path = my-scratch/slurm-scripts
        slurm_script_repo =
        slurm_data_bind_path = my-scratch/data
        slurm_conversion_partition = cpu-short
        slurm_default_partition = normal
        sacct_start_time = 2024-01-01
        sacct_days_ago = 7
        env_file_submission = false
        inject_gpu_flag = false
        gpu_partition = gpu
        gpu_gres = gpu:1
        gpu_resource_flag =
        slurm_image_pull_via_sbatch = true
        image_pull_cpus = 8
        image_pull_mem = 32G
        image_pull_time = 1-00:00:00
        image_pull_concurrency = 4
        image_pull_partition = defq
        apptainer_tmpdir = scratch/tmp
        apptainer_cachedir = scratch/cache
        slurm_zip_cmd = 7za
        sbatch_account = proj1
        [CONVERTERS]
        zarr_to_tiff = cellularimagingcf/convert_zarr_to_tiff:2.0.0
        [MODELS]
        cellpose = cellpose
        cellpose_repo = https://github.com/TorecLuik/W_NucleiSegmentation-Cellpose/tree/v1.2.7
        cellpose_job = jobs/cellpose.sh
        cellpose_job_gres = gpu:1g.10gb:1
        cellpose_use_gpu = true
        deepcell = deepcell
        deepcell_repo = https://github.com/Neubias-WG5/W_NucleiSegmentation-DeepCell/tree/v.1.4.3
        [ANALYTICS]
        track_workflows = True
        enable_job_accounting = False
        enable_job_progress = yes
        enable_workflow_analytics = off
        sqlalchemy_url = postgresql+psycopg2://user:pw@db:5432/biomero
        analytics_rebuild_start_time = 2024-06-01
        analytics_rebuild_days_ago = 30
        [UI]
        anything_the_web_page_writes = 1
        """,
    )
    assert settings.slurm.sacct_start_time.isoformat() == "2024-01-01"
    assert settings.slurm.image_pull_concurrency == 4
    assert settings.slurm.sbatch_flags == {"account": "proj1"}
    assert settings.converters == {"zarr_to_tiff": "cellularimagingcf/convert_zarr_to_tiff:2.0.0"}
    assert settings.workflows["cellpose"].job == "jobs/cellpose.sh"
    assert settings.workflows["cellpose"].use_gpu is True
    assert settings.workflows["deepcell"].tag == "v.1.4.3"
    assert settings.analytics.enable_job_accounting is False
    assert settings.analytics.enable_workflow_analytics is False
    assert settings.analytics.analytics_rebuild_days_ago == 30


def test_later_file_wins_key_by_key(tmp_path):
    settings = load(
        tmp_path,
        BASE + "[WORKER]\nconnect_timeout_s = 20\ncommand_timeout_s = 90\n",
        "[WORKER]\ncommand_timeout_s = 300\n",
    )
    assert settings.worker.connect_timeout_s == 20
    assert settings.worker.command_timeout_s == 300
    assert settings.source_of("WORKER", "command_timeout_s") == str(tmp_path / "1.ini")
    assert settings.source_of("WORKER", "connect_timeout_s") == str(tmp_path / "0.ini")


def test_env_var_overrides_one_key_and_is_recorded_as_its_source(tmp_path):
    env = {"BIOMERO__SLURM__SLURM_DATA_PATH": "/scratch/omero/data"}
    settings = load(tmp_path, BASE, env=env)
    assert settings.slurm.slurm_data_path == "/scratch/omero/data"
    assert settings.source_of("SLURM", "slurm_data_path") == "env BIOMERO__SLURM__SLURM_DATA_PATH"
    assert settings.slurm.slurm_images_path == "my-scratch/images"


def test_env_var_can_set_a_workflow_flag(tmp_path):
    env = {"BIOMERO__WORKFLOWS__CELLPOSE_JOB_MEM": "64G"}
    assert load(tmp_path, BASE, env=env).workflows["cellpose"].job_flags == {"mem": "64G"}


def test_sqlalchemy_url_env_wins_over_the_file(tmp_path):
    text = BASE + "[ANALYTICS]\nsqlalchemy_url = postgresql://a:b@file/db\n"
    settings = load(tmp_path, text, env={"SQLALCHEMY_URL": "postgresql://a:b@env/db"})
    assert settings.analytics.sqlalchemy_url == "postgresql://a:b@env/db"
    assert settings.source_of("ANALYTICS", "sqlalchemy_url") == "env SQLALCHEMY_URL"


def test_namespaced_env_var_wins_over_sqlalchemy_url(tmp_path):
    env = {
        "SQLALCHEMY_URL": "postgresql://a:b@env/db",
        "BIOMERO__ANALYTICS__SQLALCHEMY_URL": "sqlite:///tmp/events.db",
    }
    assert load(tmp_path, BASE, env=env).analytics.sqlalchemy_url == "sqlite:///tmp/events.db"


def test_upstream_env_names_override_the_file_biomero_prefixed_first(tmp_path):
    text = with_slurm("gpu_partition = fromfile")
    env = {"GPU_PARTITION": "legacy", "BIOMERO_GPU_PARTITION": "newer"}
    assert load(tmp_path, text, env=env).slurm.gpu_partition == "newer"
    assert load(tmp_path, text, env={"GPU_PARTITION": "legacy"}).slurm.gpu_partition == "legacy"


def test_env_name_without_section_and_key_is_reported(tmp_path):
    assert problems(tmp_path, BASE, env={"BIOMERO__SLURM": "x"}) == [
        "env BIOMERO__SLURM: expected BIOMERO__<SECTION>__<KEY>"
    ]


def test_env_var_for_unknown_key_names_the_variable(tmp_path):
    found = problems(tmp_path, BASE, env={"BIOMERO__SLURM__SLURM_DATA_PTH": "/x"})
    assert found == [
        "env BIOMERO__SLURM__SLURM_DATA_PTH [SLURM] slurm_data_pth: "
        "unknown key (did you mean slurm_data_path?)"
    ]


def test_env_var_for_unknown_section_is_reported(tmp_path):
    found = problems(tmp_path, BASE, env={"BIOMERO__SLRUM__SLURM_DATA_PATH": "/x"})
    assert found == [
        "env BIOMERO__SLRUM__SLURM_DATA_PATH [SLRUM]: unknown section (did you mean SLURM?)"
    ]


def test_relative_slurm_paths_stay_relative_text(tmp_path):
    settings = load(tmp_path, BASE)
    assert settings.slurm.slurm_data_path == "my-scratch/data"
    assert isinstance(settings.slurm.slurm_script_path, str)


def test_keys_and_section_names_are_case_insensitive(tmp_path):
    text = BASE.replace("[SSH]\nhost", "[ssh]\nHOST").replace("slurm_data_path", "Slurm_Data_Path")
    settings = load(tmp_path, text)
    assert settings.ssh.host == "testcluster"
    assert settings.slurm.slurm_data_path == "my-scratch/data"


def test_empty_value_means_not_set_so_an_override_can_clear_a_key(tmp_path):
    base = with_slurm("slurm_conversion_partition = short")
    settings = load(tmp_path, base, "[SLURM]\nslurm_conversion_partition =\n")
    assert settings.slurm.slurm_conversion_partition is None


def test_double_percent_is_one_percent_as_biomero_and_the_web_page_read_it(tmp_path):
    text = with_slurm("sbatch_output = omero-%%j.log")
    assert load(tmp_path, text).slurm.sbatch_flags == {"output": "omero-%j.log"}
    upstream = configparser.ConfigParser(allow_no_value=True)  # as biomero and the plugin
    upstream.read_string(textwrap.dedent(text))
    assert upstream.get("SLURM", "sbatch_output") == "omero-%j.log"


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("omero-%j.log", "lone '%' in 'omero-%j.log'; write %% for a literal %"),
        ("100%", "lone '%' in '100%'; write %% for a literal %"),
        ("%(slurm_data_path)s/x", "%(name)s references are not supported; write %% for"),
    ],
)
def test_a_percent_the_upstream_readers_would_choke_on_is_refused(tmp_path, value, says):
    text = with_slurm(f"sbatch_output = {value}")
    (found,) = problems(tmp_path, text)
    assert found.startswith(f"{tmp_path / '0.ini'} [SLURM] sbatch_output: {says}")
    assert "e.g. omero-%%j.log" in found
    upstream = configparser.ConfigParser()
    upstream.read_string(textwrap.dedent(text))
    if "%(" not in value:  # biomero and the plugin fail on this file too
        with pytest.raises(configparser.InterpolationError):
            upstream.get("SLURM", "sbatch_output")


def test_environment_values_are_taken_literally(tmp_path):
    env = {"BIOMERO__SLURM__SBATCH_OUTPUT": "omero-%j.log"}
    assert load(tmp_path, BASE, env=env).slurm.sbatch_flags == {"output": "omero-%j.log"}


def test_inline_comments_after_values_are_stripped(tmp_path):
    text = with_slurm(
        "slurm_default_partition = cpu-short       # For preprocessing jobs",
        "slurm_conversion_partition = cpu-long ; conversions",
        "sbatch_comment = run#1",
    )
    slurm = load(tmp_path, text).slurm
    assert slurm.slurm_default_partition == "cpu-short"
    assert slurm.slurm_conversion_partition == "cpu-long"
    assert slurm.sbatch_flags == {"comment": "run#1"}  # no whitespace before '#': a value


def test_the_changelog_the_web_page_adds_on_every_save_is_ignored(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="biomeroworker.config")
    text = BASE + (
        "\n[changelog]\n# Config automatically updated by root (0) via the web UI on "
        "2026-11-29 20:00:00\n"
    )
    assert load(tmp_path, text).workflows["cellpose"].folder == "cellpose"
    assert "[changelog] is for the OMERO.biomero web page; ignored" in caplog.text


def test_the_four_cluster_folders_default_as_in_biomero(tmp_path):
    text = BASE.split("[SLURM]")[0] + "[SLURM]\n[WORKFLOWS]" + BASE.split("[WORKFLOWS]")[1]
    settings = load(tmp_path, text)
    assert (
        settings.slurm.slurm_data_path,
        settings.slurm.slurm_images_path,
        settings.slurm.slurm_converters_path,
        settings.slurm.slurm_script_path,
    ) == (
        "my-scratch/data",
        "my-scratch/singularity_images/workflows",
        "my-scratch/singularity_images/converters",
        "slurm-scripts",
    )
    assert settings.source_of("SLURM", "slurm_converters_path") == "default"


def test_workflow_skills_and_plugin_paths_are_accepted_and_kept(tmp_path):
    text = BASE + "cellpose_skills_path = skills/cellpose\ncellpose_plugin_path = plugins/cp\n"
    wf = load(tmp_path, text).workflows["cellpose"]
    assert (wf.skills_path, wf.plugin_path) == ("skills/cellpose", "plugins/cp")
    rows = {key: value for key, value, _ in load(tmp_path, text).describe()}
    assert rows["WORKFLOWS.cellpose_skills_path"] == "skills/cellpose"


def test_a_misspelt_skills_path_is_still_refused_by_name(tmp_path):
    (found,) = problems(tmp_path, BASE + "cellpose_skill_path = skills/cellpose\n")
    assert "cellpose_skill_path" in found and "did you mean cellpose_skills_path?" in found


def test_workflows_override_wins_over_models_in_an_earlier_file(tmp_path):
    base = BASE.replace("[WORKFLOWS]", "[MODELS]") + "cellpose_job_mem = 8G\n"
    settings = load(tmp_path, base, "[WORKFLOWS]\ncellpose_job_mem = 32G\n")
    assert settings.workflows["cellpose"].job_flags == {"mem": "32G"}


def test_same_key_in_models_and_workflows_of_one_file_is_reported(tmp_path):
    text = BASE + "cellpose_job_mem = 8G\n[MODELS]\ncellpose_job_mem = 16G\n"
    found = problems(tmp_path, text)
    assert found == [
        f"{tmp_path / '0.ini'} [MODELS] cellpose_job_mem: also set in [WORKFLOWS] of this file"
    ]


def test_workflow_folder_defaults_to_its_name_when_empty(tmp_path):
    text = BASE.replace("cellpose = cellpose", "cellpose =")
    assert load(tmp_path, text).workflows["cellpose"].folder == "cellpose"


# ---------------------------------------------------------------- finding the files


def test_system_file_is_read_first_then_the_named_override(tmp_path):
    system = write(tmp_path, BASE, "etc.ini")
    override = write(tmp_path, "[WORKER]\nruntime = native\n", "override.ini")
    found = find_config_files(override, {}, system_file=system, upstream_files=())
    assert found == [system, override]
    assert load_settings(found, env={}).worker.runtime == "native"


def test_biomero_config_env_names_the_override(tmp_path):
    system = write(tmp_path, BASE, "etc.ini")
    override = write(tmp_path, "", "override.ini")
    upstream = write(tmp_path, "", "upstream.ini")
    env = {"BIOMERO_CONFIG": str(override)}
    assert find_config_files(None, env, system_file=system, upstream_files=(upstream,)) == [
        system,
        override,
    ]


def test_explicit_config_file_that_does_not_exist_is_an_error(tmp_path):
    system = write(tmp_path, BASE, "etc.ini")
    with pytest.raises(ConfigError, match=r"missing\.ini: config file named by --config does not"):
        find_config_files(tmp_path / "missing.ini", {}, system_file=system, upstream_files=())


def test_biomero_config_naming_a_missing_file_is_an_error(tmp_path):
    env = {"BIOMERO_CONFIG": str(tmp_path / "gone.ini")}
    with pytest.raises(ConfigError, match=r"gone\.ini: config file named by BIOMERO_CONFIG"):
        find_config_files(None, env, system_file=tmp_path / "etc.ini", upstream_files=())


def test_no_file_anywhere_names_every_place_looked(tmp_path):
    env = {"HOME": str(tmp_path / "home")}
    with pytest.raises(ConfigError) as caught:
        find_config_files(
            None,
            env,
            system_file=tmp_path / "etc.ini",
            upstream_files=(tmp_path / "omero.ini", Path("~/slurm-config.ini")),
        )
    message = str(caught.value)
    for place in ("etc.ini", "omero.ini", str(tmp_path / "home" / "slurm-config.ini")):
        assert place in message


def test_without_override_the_upstream_locations_that_exist_are_read(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    in_home = write(home, BASE)
    found = find_config_files(
        None,
        {"HOME": str(home)},
        system_file=tmp_path / "etc.ini",
        upstream_files=(tmp_path / "omero.ini", Path("~/slurm-config.ini")),
    )
    assert found == [in_home]


def test_biomero_slurm_config_file_is_the_only_file_read_as_upstream(tmp_path):
    system = write(tmp_path, BASE, "etc.ini")
    admin = write(tmp_path, BASE.replace("testcluster", "admincluster"), "admin.ini")
    env = {"BIOMERO_SLURM_CONFIG_FILE": str(admin)}
    found = find_config_files(None, env, system_file=system, upstream_files=(system,))
    assert found == [admin]
    assert load_settings(found, env=env).ssh.host == "admincluster"


def test_biomero_slurm_config_file_naming_a_missing_file_is_an_error(tmp_path):
    env = {"BIOMERO_SLURM_CONFIG_FILE": str(tmp_path / "gone.ini")}
    with pytest.raises(ConfigError, match=r"gone\.ini: config file named by BIOMERO_SLURM_CONFIG"):
        find_config_files(None, env, system_file=tmp_path / "etc.ini", upstream_files=())


def test_biomero_config_and_biomero_slurm_config_file_must_agree(tmp_path):
    one, other = write(tmp_path, BASE, "one.ini"), write(tmp_path, BASE, "other.ini")
    env = {"BIOMERO_SLURM_CONFIG_FILE": str(one), "BIOMERO_CONFIG": str(other)}
    with pytest.raises(ConfigError, match=r"name different files; the OMERO\.biomero admin"):
        find_config_files(None, env, system_file=tmp_path / "etc.ini", upstream_files=())
    env["BIOMERO_CONFIG"] = str(one)
    assert find_config_files(None, env, system_file=tmp_path / "etc.ini") == [one]


def test_an_explicit_config_option_wins_over_biomero_slurm_config_file(tmp_path):
    system = write(tmp_path, BASE, "etc.ini")
    mine = write(tmp_path, "", "mine.ini")
    env = {"BIOMERO_SLURM_CONFIG_FILE": str(tmp_path / "elsewhere.ini")}
    assert find_config_files(mine, env, system_file=system) == [system, mine]


def test_load_settings_with_a_missing_path_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings([tmp_path / "nope.ini"], env={})


# ---------------------------------------------------------------- unknown names


def test_misspelt_slurm_key_names_file_section_key_and_suggestion(tmp_path):
    found = problems(tmp_path, with_slurm("slurm_data_pth = x"))
    assert found == [
        f"{tmp_path / '0.ini'} [SLURM] slurm_data_pth: unknown key (did you mean slurm_data_path?)"
    ]


def test_misspelt_analytics_key_is_reported(tmp_path):
    found = problems(tmp_path, BASE + "[ANALYTICS]\ntrack_workflow = true\n")
    assert found == [
        f"{tmp_path / '0.ini'} [ANALYTICS] track_workflow: unknown key "
        "(did you mean track_workflows?)"
    ]


def test_unknown_ssh_key_is_reported(tmp_path):
    found = problems(tmp_path, BASE.replace("[SLURM]", "hostname = x\n[SLURM]"))
    assert found == [f"{tmp_path / '0.ini'} [SSH] hostname: unknown key (did you mean host?)"]


def test_ssh_connection_details_are_pointed_at_the_ssh_config(tmp_path):
    found = problems(tmp_path, BASE.replace("[SLURM]", "port = 22\n[SLURM]"))
    assert found == [
        f"{tmp_path / '0.ini'} [SSH] port: unknown key; "
        "user, port and key belong in ~/.ssh/config under the host alias"
    ]


def test_misspelt_worker_key_is_reported(tmp_path):
    found = problems(tmp_path, BASE + "[WORKER]\nconect_timeout_s = 5\n")
    assert found == [
        f"{tmp_path / '0.ini'} [WORKER] conect_timeout_s: unknown key "
        "(did you mean connect_timeout_s?)"
    ]


def test_unknown_section_is_reported_with_a_suggestion(tmp_path):
    found = problems(tmp_path, BASE + "[ANALYTIC]\ntrack_workflows = true\n")
    assert found == [f"{tmp_path / '0.ini'} [ANALYTIC]: unknown section (did you mean ANALYTICS?)"]


def test_default_section_is_not_special(tmp_path):
    found = problems(tmp_path, BASE + "[DEFAULT]\nhost = x\n")
    assert found == [f"{tmp_path / '0.ini'} [DEFAULT]: unknown section"]


def test_misspelt_sbatch_prefix_is_suggested(tmp_path):
    found = problems(tmp_path, with_slurm("sbtach_mem = 4G"))
    assert found == [
        f"{tmp_path / '0.ini'} [SLURM] sbtach_mem: unknown key (did you mean sbatch_mem?)"
    ]


# ---------------------------------------------------------------- types


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        *[("true", True), ("Yes", True), ("on", True), ("1", True)],
        *[("false", False), ("NO", False), ("off", False), ("0", False)],
    ],
)
def test_boolean_spellings(tmp_path, text, expected):
    settings = load(tmp_path, BASE + f"[ANALYTICS]\nenable_job_progress = {text}\n")
    assert settings.analytics.enable_job_progress is expected


def _said(found: list[str], text: str) -> bool:
    return any(text in line for line in found)


def test_tracking_cannot_be_turned_off_and_the_message_says_what_instead(tmp_path):
    found = problems(tmp_path, BASE + "[ANALYTICS]\ntrack_workflows = false\n")
    assert _said(found, "[ANALYTICS] track_workflows: cannot be off")
    assert _said(found, "enable_job_accounting")


def test_hand_written_job_scripts_from_a_repository_are_refused_by_name(tmp_path):
    empty = BASE.replace("[SLURM]\n", "[SLURM]\nslurm_script_repo =\n", 1)
    assert load(tmp_path, empty).slurm.slurm_script_repo is None  # upstream's default: fine
    repo = BASE.replace("[SLURM]\n", "[SLURM]\nslurm_script_repo = https://github.com/a/b\n", 1)
    assert _said(problems(tmp_path, repo), "[SLURM] slurm_script_repo: hand-written job scripts")


@pytest.mark.parametrize("path", ["/etc/job.sh", "../outside.sh", "jobs/../../x.sh"])
def test_a_job_script_path_must_stay_under_the_script_path(tmp_path, path):
    text = BASE + f"w = w\nw_repo = {tmp_path}\nw_job = {path}\n"
    assert _said(problems(tmp_path, text), "w_job: expected a path under slurm_script_path")


def test_bad_boolean_is_reported(tmp_path):
    found = problems(tmp_path, BASE + "[ANALYTICS]\nenable_job_progress = maybe\n")
    assert found == [
        f"{tmp_path / '0.ini'} [ANALYTICS] enable_job_progress: "
        "expected true or false (also yes/no, on/off, 1/0), got 'maybe'"
    ]


@pytest.mark.parametrize("value", ["many", "-1", "2.5"])
def test_bad_whole_number_is_reported(tmp_path, value):
    found = problems(tmp_path, BASE + f"[WORKER]\nmax_runs_per_user = {value}\n")
    assert found == [
        f"{tmp_path / '0.ini'} [WORKER] max_runs_per_user: expected a whole number >= 0, "
        f"got '{value}'"
    ]


@pytest.mark.parametrize("key", ["connect_timeout_s", "command_timeout_s", "poll_min_s"])
@pytest.mark.parametrize("value", ["0", "-5", "soon"])
def test_timeouts_must_be_positive_numbers(tmp_path, key, value):
    found = problems(tmp_path, BASE + f"[WORKER]\n{key} = {value}\n")
    assert found == [
        f"{tmp_path / '0.ini'} [WORKER] {key}: expected a number of seconds > 0, got '{value}'"
    ]


def test_keepalive_zero_turns_it_off(tmp_path):
    assert load(tmp_path, BASE + "[WORKER]\nkeepalive_s = 0\n").worker.keepalive_s == 0


def test_choice_outside_the_list_is_reported(tmp_path):
    found = problems(tmp_path, BASE + "[WORKER]\nruntime = docker\n")
    assert found == [
        f"{tmp_path / '0.ini'} [WORKER] runtime: expected one of apptainer, singularity, native, "
        "got 'docker'"
    ]


def test_bad_date_is_reported(tmp_path):
    found = problems(tmp_path, with_slurm("sacct_start_time = 1/2/24"))
    assert found == [
        f"{tmp_path / '0.ini'} [SLURM] sacct_start_time: expected a date YYYY-MM-DD, got '1/2/24'"
    ]


def test_poll_min_above_poll_max_is_reported(tmp_path):
    found = problems(tmp_path, BASE + "[WORKER]\npoll_min_s = 90\n")
    assert found == [f"{tmp_path / '0.ini'} [WORKER] poll_min_s: must not exceed poll_max_s (60)"]


def test_worker_defaults_apply_when_the_section_is_absent(tmp_path):
    assert load(tmp_path, BASE).worker == WorkerSettings()
    assert WorkerSettings().connect_timeout_s == 15 and WorkerSettings().poll_max_s == 60


def test_worker_key_table_and_settings_fields_agree():
    table = {key.name: key.default for key in WORKER_KEYS}
    defaults = {f.name: f.default for f in dataclasses.fields(WorkerSettings)}
    assert table == defaults


# ---------------------------------------------------------------- workflows


def test_flag_for_undeclared_workflow_is_reported(tmp_path):
    found = problems(tmp_path, BASE + "cellpsoe_job_mem = 8G\n")
    assert found == [
        f"{tmp_path / '0.ini'} [WORKFLOWS] cellpsoe_job_mem: workflow 'cellpsoe' is not declared "
        "(add cellpsoe=<folder>) (did you mean cellpose?)"
    ]


def test_repo_for_undeclared_workflow_is_reported(tmp_path):
    found = problems(tmp_path, BASE + f"stardist_repo = {CELLPOSE_URL}\n")
    assert found == [
        f"{tmp_path / '0.ini'} [WORKFLOWS] stardist_repo: workflow 'stardist' is not declared "
        "(add stardist=<folder>)"
    ]


def test_misspelt_workflow_setting_is_not_taken_for_a_new_workflow(tmp_path):
    found = problems(tmp_path, BASE + "cellpose_jb_mem = 8G\n")
    assert found == [
        f"{tmp_path / '0.ini'} [WORKFLOWS] cellpose_jb_mem: unknown key "
        "(did you mean cellpose_job_mem?)"
    ]


def test_workflow_without_repo_is_reported(tmp_path):
    found = problems(tmp_path, BASE + "stardist = stardist\n")
    assert found == [
        f"{tmp_path / '0.ini'} [WORKFLOWS] stardist: workflow 'stardist' needs stardist_repo "
        "(https://github.com/<owner>/<repo>/tree/<tag> or a local folder)"
    ]


def test_workflow_folder_must_be_a_folder_name(tmp_path):
    found = problems(tmp_path, BASE.replace("cellpose = cellpose", "cellpose = ../../etc"))
    assert found == [
        f"{tmp_path / '0.ini'} [WORKFLOWS] cellpose: expected a folder name under "
        "slurm_images_path, got '../../etc'"
    ]


@pytest.mark.parametrize(
    "repo",
    [
        "https://github.com/TorecLuik/W_NucleiSegmentation-Cellpose",
        "https://github.com/TorecLuik/W_NucleiSegmentation-Cellpose/tree/master",
        "https://github.com/TorecLuik/W_NucleiSegmentation-Cellpose/tree/feature",
        "http://github.com/TorecLuik/W_NucleiSegmentation-Cellpose/tree/v1.2.7",
        "https://gitlab.com/someone/workflow/tree/v1.0",
        "git@github.com:TorecLuik/W_NucleiSegmentation-Cellpose.git",
    ],
    ids=["no-tree", "branch", "no-version", "http", "not-github", "ssh"],
)
def test_repo_must_be_a_github_tree_pinned_to_a_tag(tmp_path, repo):
    found = problems(tmp_path, BASE.replace(CELLPOSE_URL, repo))
    assert len(found) == 1
    assert found[0].startswith(f"{tmp_path / '0.ini'} [WORKFLOWS] cellpose_repo: ")


def test_repo_may_be_a_local_folder_relative_to_the_config_file(tmp_path):
    (tmp_path / "workflows" / "segment").mkdir(parents=True)
    settings = load(tmp_path, BASE.replace(CELLPOSE_URL, "workflows/segment"))
    workflow = settings.workflows["cellpose"]
    assert workflow.repo == str(tmp_path / "workflows" / "segment")
    assert workflow.is_local and workflow.tag is None


def test_local_repo_folder_that_does_not_exist_is_reported(tmp_path):
    found = problems(tmp_path, BASE.replace(CELLPOSE_URL, "workflows/absent"))
    assert found == [
        f"{tmp_path / '0.ini'} [WORKFLOWS] cellpose_repo: local workflow folder "
        f"{tmp_path / 'workflows' / 'absent'} does not exist "
        "(or give https://github.com/<owner>/<repo>/tree/<tag>)"
    ]


def test_job_flag_underscores_become_dashes(tmp_path):
    settings = load(tmp_path, BASE + "cellpose_job_mem = 8G\ncellpose_job_cpus_per_task = 4\n")
    assert settings.workflows["cellpose"].job_flags == {"mem": "8G", "cpus-per-task": "4"}


@pytest.mark.parametrize(
    "line", ["sbatch_mem.per.cpu = 1G", "sbatch_ = 1"], ids=["dots", "empty-name"]
)
def test_sbatch_flag_names_must_be_plain(tmp_path, line):
    found = problems(tmp_path, with_slurm(line))
    key = line.split(" =")[0]
    assert found == [
        f"{tmp_path / '0.ini'} [SLURM] {key}: sbatch flag names may use only a-z, 0-9, '-' and '_'"
    ]


def test_workflow_flag_names_must_be_plain(tmp_path):
    found = problems(tmp_path, BASE + "cellpose_job_mem/cpu = 1G\n")
    assert found == [
        f"{tmp_path / '0.ini'} [WORKFLOWS] cellpose_job_mem/cpu: "
        "sbatch flag names may use only a-z, 0-9, '-' and '_'"
    ]


def test_two_spellings_of_one_sbatch_flag_are_reported(tmp_path):
    text = with_slurm("sbatch_cpus_per_task = 2", "sbatch_cpus-per-task = 4")
    found = problems(tmp_path, text)
    assert found == [
        f"{tmp_path / '0.ini'} [SLURM] sbatch_cpus-per-task: same flag as sbatch_cpus_per_task"
    ]


def test_converter_key_must_be_from_to(tmp_path):
    found = problems(tmp_path, BASE + "[CONVERTERS]\nzarr2tiff = image:1\n")
    assert found == [
        f"{tmp_path / '0.ini'} [CONVERTERS] zarr2tiff: expected <from>_to_<to>, e.g. zarr_to_tiff"
    ]


# ---------------------------------------------------------------- required and exclusive


def test_ssh_host_is_required_for_the_ssh_transport(tmp_path):
    found = problems(tmp_path, BASE.replace("host = testcluster", ""))
    assert found == [
        f"{tmp_path / '0.ini'} [SSH] host: missing "
        "(alias in ~/.ssh/config; or set [WORKER] transport=local)"
    ]


def test_ssh_host_is_not_needed_for_the_local_transport(tmp_path):
    text = BASE.replace("host = testcluster", "") + "[WORKER]\ntransport = local\n"
    assert load(tmp_path, text).ssh.host is None


def test_gpu_gres_and_gpu_gpus_together_are_rejected(tmp_path):
    text = with_slurm("gpu_gres = gpu:1", "gpu_gpus = 1")
    assert problems(tmp_path, text) == [
        f"{tmp_path / '0.ini'} [SLURM] gpu_gpus: set only one of gpu_gres and gpu_gpus"
    ]


# ---------------------------------------------------------------- hostile or broken text


def test_value_spanning_lines_is_rejected(tmp_path):
    text = with_slurm("sbatch_comment = one", "  two")
    assert problems(tmp_path, text) == [
        f"{tmp_path / '0.ini'} [SLURM] sbatch_comment: value spans several lines "
        "(an indented next line continues the value)"
    ]


def test_value_with_nul_is_rejected(tmp_path):
    text = with_slurm("sbatch_comment = a\0b")
    assert problems(tmp_path, text) == [
        f"{tmp_path / '0.ini'} [SLURM] sbatch_comment: value contains a NUL character"
    ]


def test_env_value_with_newline_is_rejected(tmp_path):
    env = {"BIOMERO__SLURM__SBATCH_COMMENT": "a\nb"}
    assert problems(tmp_path, BASE, env=env)[0].startswith(
        "env BIOMERO__SLURM__SBATCH_COMMENT [SLURM] sbatch_comment: value spans several lines"
    )


def test_key_set_twice_in_one_file_is_reported(tmp_path):
    found = problems(tmp_path, BASE + "cellpose_job_mem = 1G\ncellpose_job_mem = 2G\n")
    assert found == [
        f"{tmp_path / '0.ini'}: [WORKFLOWS] cellpose_job_mem: set twice in this file (line 15)"
    ]


def test_line_without_equals_is_reported_with_its_number(tmp_path):
    found = problems(tmp_path, "[SSH]\nhost = x\njust words here\n")
    assert found == [f"{tmp_path / '0.ini'}: line 3: not 'key = value': 'just words here'"]


def test_all_problems_are_reported_together(tmp_path):
    text = BASE.replace("host = testcluster", "hots = x") + (
        "cellpose_job_mem = 1\nother_repo = x\n[WORKER]\nruntime = docker\n[EXTRA]\n"
    )
    found = problems(tmp_path, text, env={"BIOMERO__SLURM__NOPE": "1"})
    named = ["[SSH] hots:", "[SSH] host:", "[WORKFLOWS] other_repo:", "[WORKER] runtime:"]
    named += ["[EXTRA]:", "env BIOMERO__SLURM__NOPE [SLURM] nope:"]
    assert len(found) == len(named)
    for fragment in named:
        assert any(fragment in line for line in found), fragment


# ---------------------------------------------------------------- sbatch flags


def gpu_settings(tmp_path, extra: str = "") -> config.Settings:
    text = with_slurm(
        "sbatch_partition = cpu",
        "sbatch_account = proj",
        "sbatch_time = 00:30:00",
        "gpu_partition = gpu",
        "gpu_gres = gpu:1",
    )
    return load(tmp_path, text + extra)


def test_workflow_flags_win_over_global_sbatch_flags(tmp_path):
    settings = gpu_settings(tmp_path, "cellpose_job_time = 02:00:00\n")
    assert settings.sbatch_flags_for("cellpose") == {
        "account": "proj",
        "partition": "cpu",
        "time": "02:00:00",
    }


def test_gpu_workflow_gets_the_gpu_partition_and_gres(tmp_path):
    settings = gpu_settings(tmp_path, "cellpose_use_gpu = true\n")
    assert settings.sbatch_flags_for("cellpose") == {
        "account": "proj",
        "gres": "gpu:1",
        "partition": "gpu",
        "time": "00:30:00",
    }


def test_workflow_own_gres_and_partition_beat_the_gpu_defaults(tmp_path):
    extra = (
        "cellpose_use_gpu = true\ncellpose_job_gres = gpu:a100:2\ncellpose_job_partition = big\n"
    )
    flags = gpu_settings(tmp_path, extra).sbatch_flags_for("cellpose")
    assert flags["gres"] == "gpu:a100:2" and flags["partition"] == "big"


def test_use_gpu_argument_overrides_the_workflow_setting(tmp_path):
    settings = gpu_settings(tmp_path, "cellpose_use_gpu = true\n")
    assert "gres" not in settings.sbatch_flags_for("cellpose", use_gpu=False)
    assert gpu_settings(tmp_path).sbatch_flags_for("cellpose", use_gpu=True)["gres"] == "gpu:1"


def test_default_partition_fills_in_only_when_nothing_set_one(tmp_path):
    text = with_slurm("slurm_default_partition = normal")
    assert load(tmp_path, text).sbatch_flags_for("cellpose") == {"partition": "normal"}
    flags = load(tmp_path, text + "cellpose_job_partition = own\n").sbatch_flags_for("cellpose")
    assert flags == {"partition": "own"}


def test_conversion_jobs_use_the_conversion_partition(tmp_path):
    text = with_slurm(
        "sbatch_partition = cpu", "sbatch_account = p", "slurm_conversion_partition = short"
    )
    assert load(tmp_path, text).sbatch_flags_for_conversion() == {
        "account": "p",
        "partition": "short",
    }


def test_unknown_workflow_is_a_config_error_with_a_suggestion(tmp_path):
    with pytest.raises(ConfigError, match=r"cellpos: no such workflow \(did you mean cellpose\?\)"):
        load(tmp_path, BASE).sbatch_flags_for("cellpos")


# ---------------------------------------------------------------- secrets and describe


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql+psycopg2://bio:s3cret@db:5432/x", "postgresql+psycopg2://bio:***@db:5432/x"),
        ("postgresql://bio:a/b%40c@db/x", "postgresql://bio:***@db/x"),
        ("postgresql://bio@db/x", "postgresql://bio@db/x"),
        ("sqlite:///var/lib/events.db", "sqlite:///var/lib/events.db"),
    ],
    ids=["password", "slash-and-escape", "user-only", "sqlite"],
)
def test_redact_url_hides_only_the_password(url, expected):
    assert redact_url(url) == expected


def test_password_does_not_appear_in_repr(tmp_path):
    settings = load(tmp_path, BASE, env={"SQLALCHEMY_URL": "postgresql://bio:hunter2@db/x"})
    assert settings.analytics.sqlalchemy_url == "postgresql://bio:hunter2@db/x"
    assert "hunter2" not in repr(settings)
    assert "postgresql://bio:***@db/x" in repr(settings.analytics)


def test_password_does_not_appear_in_describe(tmp_path):
    settings = load(tmp_path, BASE, env={"SQLALCHEMY_URL": "postgresql://bio:hunter2@db/x"})
    assert "hunter2" not in repr(settings.describe())
    assert ("ANALYTICS.sqlalchemy_url", "postgresql://bio:***@db/x", "env SQLALCHEMY_URL") in (
        settings.describe()
    )


def test_password_does_not_appear_in_errors(tmp_path):
    found = problems(tmp_path, BASE + "[ANALYTICS]\nsqlalchemy_url = postgres//bio:hunter2@db\n")
    assert len(found) == 1
    assert "hunter2" not in found[0]
    assert found[0].startswith(f"{tmp_path / '0.ini'} [ANALYTICS] sqlalchemy_url: expected")


def test_describe_gives_value_and_source_of_each_key(tmp_path):
    settings = load(
        tmp_path,
        BASE + "cellpose_job_cpus_per_task = 4\n",
        env={"BIOMERO__WORKER__RUNTIME": "native"},
    )
    rows = {key: (value, source) for key, value, source in settings.describe()}
    assert rows["SLURM.slurm_data_path"] == ("my-scratch/data", str(tmp_path / "0.ini"))
    assert rows["WORKER.runtime"] == ("native", "env BIOMERO__WORKER__RUNTIME")
    assert rows["WORKER.poll_max_s"] == ("60", "default")
    assert rows["WORKFLOWS.cellpose_job_cpus-per-task"] == ("4", str(tmp_path / "0.ini"))


def test_settings_cannot_be_changed(tmp_path):
    settings = load(tmp_path, BASE + "cellpose_job_mem = 1G\n")
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.worker.runtime = "native"  # type: ignore[misc]
    with pytest.raises(TypeError):
        settings.workflows["cellpose"].job_flags["mem"] = "2G"  # type: ignore[index]


# ---------------------------------------------------------------- upstream switches


def test_inject_gpu_flag_true_is_refused_with_what_to_do_instead(tmp_path):
    assert load(tmp_path, with_slurm("inject_gpu_flag = false")).slurm.inject_gpu_flag is False
    found = problems(tmp_path, with_slurm("inject_gpu_flag = true"))
    assert len(found) == 1
    assert "[SLURM] inject_gpu_flag: a run cannot switch the GPU on or off here" in found[0]
    assert "<wf>_use_gpu = true" in found[0]
    env = problems(tmp_path, BASE, env={"BIOMERO_INJECT_GPU_FLAG": "yes"})
    assert env[0].startswith("env BIOMERO_INJECT_GPU_FLAG [SLURM] inject_gpu_flag:")


def test_gpu_resource_flag_is_refused_with_what_to_do_instead(tmp_path):
    assert load(tmp_path, with_slurm("gpu_resource_flag =")).slurm.gpu_resource_flag is None
    found = problems(tmp_path, with_slurm("gpu_resource_flag = gpus"))
    assert len(found) == 1
    assert "[SLURM] gpu_resource_flag: is not a biomero setting" in found[0]
    assert "set gpu_gres" in found[0] and "gpu_gpus" in found[0]


def test_a_converter_other_than_zarr_to_tiff_is_refused(tmp_path):
    found = problems(tmp_path, BASE + "[CONVERTERS]\nzarr_to_png = some/image:1\n")
    assert found == [
        f"{tmp_path / '0.ini'} [CONVERTERS] zarr_to_png: only zarr_to_tiff is used (images "
        "leave OMERO as OME-Zarr and workflows read TIFF), so this converter would never "
        "run; remove the line"
    ]


def test_upstream_transport_switches_are_read_by_config_alone():
    """inline_ssh_env, env_file_submission and slurm_zip_cmd select how upstream moves
    environment and results; here parameters always travel in params.json and results
    as a tar stream, so nothing outside the config package reads them (either value is
    fine)."""
    readers = {
        name: sorted(
            str(path.relative_to(REPO_ROOT))
            for path in (REPO_ROOT / "biomeroworker").rglob("*.py")
            if name in path.read_text(encoding="utf-8")
        )
        for name in ("inline_ssh_env", "env_file_submission", "slurm_zip_cmd")
    }
    for name, paths in readers.items():
        assert paths and all(p.startswith("biomeroworker/config/") for p in paths), name


@pytest.mark.parametrize("value", ["true", "false"])
def test_either_value_of_the_upstream_transport_switches_loads(tmp_path, value):
    text = with_slurm(f"env_file_submission = {value}", "slurm_zip_cmd = 7za").replace(
        "host = testcluster", f"host = testcluster\ninline_ssh_env = {value}"
    )
    settings = load(tmp_path, text)
    assert settings.ssh.inline_ssh_env is (value == "true")
    assert settings.slurm.env_file_submission is (value == "true")


UPSTREAM_VALUES = {
    "gpu_partition": "gpu",
    "gpu_gres": "gpu:1",
    "gpu_gpus": "1",
    "slurm_default_partition": "cpu-short",
    "sacct_start_time": "2024-01-01",
    "sacct_days_ago": "3",
    "env_file_submission": "true",
    "inject_gpu_flag": "false",
    "slurm_image_pull_via_sbatch": "true",
    "image_pull_cpus": "2",
    "image_pull_mem": "4G",
    "image_pull_time": "01:00:00",
    "apptainer_tmpdir": "/scratch/tmp",
    "apptainer_cachedir": "/scratch/cache",
    "slurm_zip_cmd": "zip",
    "analytics_rebuild_start_time": "2024-06-01",
    "analytics_rebuild_days_ago": "30",
    "sqlalchemy_url": "postgresql://u:p@db:5432/biomero",
    "token": "e30.e30.sig",
}


@pytest.mark.parametrize(("name", "section", "key"), config.UPSTREAM_ENV)
def test_every_upstream_variable_sets_the_key_it_names(tmp_path, name, section, key):
    settings = load(tmp_path, BASE, env={name: UPSTREAM_VALUES[key]})
    assert settings.source_of(section, key) == f"env {name}"
    value = getattr(getattr(settings, section.lower()), key)
    assert config._show(value) == UPSTREAM_VALUES[key]
