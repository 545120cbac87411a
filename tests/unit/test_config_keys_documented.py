"""Every config key is declared, documented, and proven to do something.

docs/configuration.md's key tables (the `| Key |` tables under "Sections and keys")
and its upstream environment-variable table are parsed; so are the keys config.py
declares. A declared key must be documented and a documented key declared. Then
every documented key (and variable) must be named in EFFECTS below, with the tests
that prove what it changes (or, for a refused value, the test of the refusal); each
named test must exist (test functions are collected from tests/**/*.py with ast).
A key that does nothing cannot be listed honestly, so it cannot be documented.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from biomeroworker import config

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "configuration.md"
TESTS = REPO / "tests"

# (section, key) -> "file::test" under tests/, each proving the key's effect
# (a rendered job script, sbatch argv, layout path, refusal message, rows, ...).
EFFECTS: dict[tuple[str, str], tuple[str, ...]] = {
    # [SSH]
    ("SSH", "host"): (
        "unit/test_config_key_effects.py::test_ssh_keys_reach_the_one_ssh_connection",
        "unit/test_config.py::test_ssh_host_is_required_for_the_ssh_transport",
    ),
    ("SSH", "inline_ssh_env"): (
        "unit/test_config.py::test_upstream_transport_switches_are_read_by_config_alone",
        "unit/test_config.py::test_either_value_of_the_upstream_transport_switches_loads",
    ),
    # [SLURM]
    ("SLURM", "slurm_data_path"): (
        "unit/test_config_key_effects.py::test_slurm_data_path_holds_the_run_folders",
    ),
    ("SLURM", "slurm_images_path"): (
        "unit/test_prepare_apptainer.py::"
        "test_by_default_images_are_pulled_on_the_login_node_into_the_configured_folder",
    ),
    ("SLURM", "slurm_converters_path"): (
        "unit/test_prepare_apptainer.py::"
        "test_a_configured_converter_image_is_pulled_and_run_per_array_element",
    ),
    ("SLURM", "slurm_script_path"): (
        "unit/test_prepare_apptainer.py::test_the_job_script_is_also_rendered_where_wf_job_says",
    ),
    ("SLURM", "slurm_script_repo"): (
        "unit/test_config.py::test_hand_written_job_scripts_from_a_repository_are_refused_by_name",
    ),
    ("SLURM", "slurm_data_bind_path"): (
        "unit/test_config_key_effects.py::test_native_runtime_and_native_python_shape_the_job_script",
    ),
    ("SLURM", "slurm_conversion_partition"): (
        "unit/test_config.py::test_conversion_jobs_use_the_conversion_partition",
        "unit/test_inputs.py::test_an_ome_zarr_input_checks_the_conversion_partition_too",
    ),
    ("SLURM", "slurm_default_partition"): (
        "unit/test_config.py::test_default_partition_fills_in_only_when_nothing_set_one",
    ),
    ("SLURM", "sbatch_<flag>"): (
        "unit/test_config.py::test_workflow_flags_win_over_global_sbatch_flags",
    ),
    ("SLURM", "gpu_partition"): (
        "unit/test_config.py::test_gpu_workflow_gets_the_gpu_partition_and_gres",
        "unit/test_prepare_apptainer.py::test_gpu_use_follows_wf_use_gpu_with_inject_gpu_flag_off",
    ),
    ("SLURM", "gpu_gres"): (
        "unit/test_config.py::test_gpu_workflow_gets_the_gpu_partition_and_gres",
        "unit/test_prepare_apptainer.py::test_gpu_use_follows_wf_use_gpu_with_inject_gpu_flag_off",
    ),
    ("SLURM", "gpu_gpus"): (
        "unit/test_config_key_effects.py::test_gpu_gpus_is_the_gpu_request_of_gpu_workflows",
        "unit/test_config.py::test_gpu_gres_and_gpu_gpus_together_are_rejected",
    ),
    ("SLURM", "sacct_start_time"): (
        "unit/test_config_key_effects.py::test_the_sacct_window_keys_reach_the_slurm_client",
        "unit/test_slurm_commands.py::test_the_sacct_window_keys_set_how_far_back_a_lost_job_is_searched",
    ),
    ("SLURM", "sacct_days_ago"): (
        "unit/test_config_key_effects.py::test_the_sacct_window_keys_reach_the_slurm_client",
        "unit/test_slurm_commands.py::test_the_sacct_window_keys_set_how_far_back_a_lost_job_is_searched",
    ),
    ("SLURM", "slurm_image_pull_via_sbatch"): (
        "unit/test_prepare_apptainer.py::"
        "test_by_default_images_are_pulled_on_the_login_node_into_the_configured_folder",
        "unit/test_prepare_apptainer.py::test_pull_jobs_get_the_pull_resources_and_run_at_most_n_at_once",
    ),
    ("SLURM", "image_pull_cpus"): (
        "unit/test_prepare_apptainer.py::test_pull_jobs_get_the_pull_resources_and_run_at_most_n_at_once",
    ),
    ("SLURM", "image_pull_mem"): (
        "unit/test_prepare_apptainer.py::test_pull_jobs_get_the_pull_resources_and_run_at_most_n_at_once",
    ),
    ("SLURM", "image_pull_time"): (
        "unit/test_prepare_apptainer.py::test_pull_jobs_get_the_pull_resources_and_run_at_most_n_at_once",
    ),
    ("SLURM", "image_pull_partition"): (
        "unit/test_prepare_apptainer.py::test_pull_jobs_go_to_image_pull_partition",
    ),
    ("SLURM", "image_pull_concurrency"): (
        "unit/test_prepare_apptainer.py::test_pull_jobs_get_the_pull_resources_and_run_at_most_n_at_once",
    ),
    ("SLURM", "apptainer_tmpdir"): (
        "unit/test_prepare_apptainer.py::"
        "test_by_default_images_are_pulled_on_the_login_node_into_the_configured_folder",
    ),
    ("SLURM", "apptainer_cachedir"): (
        "unit/test_prepare_apptainer.py::"
        "test_by_default_images_are_pulled_on_the_login_node_into_the_configured_folder",
    ),
    ("SLURM", "env_file_submission"): (
        "unit/test_prepare_apptainer.py::test_upstream_transport_switches_leave_the_job_script_as_it_is",
        "unit/test_config.py::test_upstream_transport_switches_are_read_by_config_alone",
    ),
    ("SLURM", "inject_gpu_flag"): (
        "unit/test_prepare_apptainer.py::test_gpu_use_follows_wf_use_gpu_with_inject_gpu_flag_off",
        "unit/test_config.py::test_inject_gpu_flag_true_is_refused_with_what_to_do_instead",
    ),
    ("SLURM", "gpu_resource_flag"): (
        "unit/test_config.py::test_gpu_resource_flag_is_refused_with_what_to_do_instead",
    ),
    ("SLURM", "slurm_zip_cmd"): (
        "unit/test_staging_archive.py::"
        "test_results_come_back_as_a_tar_stream_with_no_archive_program_on_the_cluster",
        "unit/test_prepare_apptainer.py::test_upstream_transport_switches_leave_the_job_script_as_it_is",
        "unit/test_config.py::test_upstream_transport_switches_are_read_by_config_alone",
    ),
    # [WORKFLOWS]
    ("WORKFLOWS", "<wf>"): (
        "unit/test_prepare_apptainer.py::"
        "test_by_default_images_are_pulled_on_the_login_node_into_the_configured_folder",
    ),
    ("WORKFLOWS", "<wf>_repo"): (
        "unit/test_omero_forms.py::test_the_catalog_comes_from_local_descriptors",
        "integration/test_init_downloads.py::"
        "test_init_downloads_pinned_workflows_once_and_a_run_uses_them",
    ),
    ("WORKFLOWS", "<wf>_job"): (
        "unit/test_prepare_apptainer.py::test_the_job_script_is_also_rendered_where_wf_job_says",
        "unit/test_config.py::test_a_job_script_path_must_stay_under_the_script_path",
    ),
    ("WORKFLOWS", "<wf>_use_gpu"): (
        "unit/test_config.py::test_gpu_workflow_gets_the_gpu_partition_and_gres",
        "unit/test_prepare_apptainer.py::test_gpu_use_follows_wf_use_gpu_with_inject_gpu_flag_off",
    ),
    ("WORKFLOWS", "<wf>_resubmit"): (
        "integration/test_workflow_runs.py::test_out_of_memory_is_resubmitted_once_with_twice_the_memory",
    ),
    ("WORKFLOWS", "<wf>_job_<flag>"): (
        "unit/test_config.py::test_workflow_flags_win_over_global_sbatch_flags",
        "unit/test_config.py::test_job_flag_underscores_become_dashes",
    ),
    # Written by biomero-workflow-skills for its own tools: shown by `biomero workflows`.
    ("WORKFLOWS", "<wf>_skills_path"): (
        "unit/test_config_key_effects.py::test_skills_and_plugin_paths_are_shown_by_biomero_workflows",
    ),
    ("WORKFLOWS", "<wf>_plugin_path"): (
        "unit/test_config_key_effects.py::test_skills_and_plugin_paths_are_shown_by_biomero_workflows",
    ),
    # [CONVERTERS]
    ("CONVERTERS", "zarr_to_tiff"): (
        "unit/test_prepare_apptainer.py::"
        "test_a_configured_converter_image_is_pulled_and_run_per_array_element",
    ),
    ("CONVERTERS", "<from>_to_<to>"): (
        "unit/test_config.py::test_a_converter_other_than_zarr_to_tiff_is_refused",
    ),
    # [ANALYTICS]
    ("ANALYTICS", "track_workflows"): (
        "unit/test_config.py::test_tracking_cannot_be_turned_off_and_the_message_says_what_instead",
    ),
    ("ANALYTICS", "enable_job_accounting"): (
        "unit/test_tracking_switches.py::"
        "test_an_analytics_switch_off_leaves_its_dashboard_table_unwritten",
    ),
    ("ANALYTICS", "enable_job_progress"): (
        "unit/test_tracking_switches.py::"
        "test_an_analytics_switch_off_leaves_its_dashboard_table_unwritten",
    ),
    ("ANALYTICS", "enable_workflow_analytics"): (
        "unit/test_tracking_switches.py::"
        "test_an_analytics_switch_off_leaves_its_dashboard_table_unwritten",
    ),
    ("ANALYTICS", "sqlalchemy_url"): (
        "unit/test_tracking_switches.py::test_with_every_switch_on_every_table_is_written",
        "unit/test_config.py::test_sqlalchemy_url_env_wins_over_the_file",
    ),
    ("ANALYTICS", "analytics_rebuild_start_time"): (
        "unit/test_tracking_switches.py::test_tracking_rebuild_applies_the_configured_window",
        "unit/test_tracking_switches.py::test_rebuild_since_follows_upstream_days_ago_over_start_time",
    ),
    ("ANALYTICS", "analytics_rebuild_days_ago"): (
        "unit/test_tracking_switches.py::test_tracking_rebuild_applies_the_configured_window",
        "unit/test_tracking_switches.py::test_rebuild_since_follows_upstream_days_ago_over_start_time",
    ),
    # [WORKER]
    ("WORKER", "transport"): (
        "unit/test_config_key_effects.py::test_ssh_keys_reach_the_one_ssh_connection",
        "unit/test_config_key_effects.py::test_local_transport_works_in_shared_path_with_the_command_timeout",
        "unit/test_config_key_effects.py::test_rest_keys_reach_the_slurmrestd_client",
    ),
    ("WORKER", "shared_path"): (
        "unit/test_config_key_effects.py::test_local_transport_works_in_shared_path_with_the_command_timeout",
        "unit/test_config_rest.py::test_local_mode_stages_into_the_shared_path",
    ),
    ("WORKER", "connect_timeout_s"): (
        "unit/test_config_key_effects.py::test_ssh_keys_reach_the_one_ssh_connection",
    ),
    ("WORKER", "command_timeout_s"): (
        "unit/test_config_key_effects.py::test_ssh_keys_reach_the_one_ssh_connection",
        "unit/test_config_key_effects.py::test_local_transport_works_in_shared_path_with_the_command_timeout",
    ),
    ("WORKER", "transfer_idle_timeout_s"): (
        "unit/test_config_key_effects.py::test_transfers_get_transfer_idle_timeout_s",
    ),
    ("WORKER", "keepalive_s"): (
        "unit/test_config_key_effects.py::test_ssh_keys_reach_the_one_ssh_connection",
    ),
    ("WORKER", "runtime"): (
        "unit/test_config_key_effects.py::test_native_runtime_and_native_python_shape_the_job_script",
    ),
    ("WORKER", "native_python"): (
        "unit/test_config_key_effects.py::test_native_runtime_and_native_python_shape_the_job_script",
    ),
    ("WORKER", "max_runs_total"): (
        "unit/test_config_key_effects.py::test_admission_keeps_the_run_limits",
    ),
    ("WORKER", "max_runs_per_user"): (
        "unit/test_config_key_effects.py::test_admission_keeps_the_run_limits",
    ),
    ("WORKER", "poll_min_s"): (
        "unit/test_config_key_effects.py::test_the_supervisor_polls_from_poll_min_s_up_to_poll_max_s",
    ),
    ("WORKER", "poll_max_s"): (
        "unit/test_config_key_effects.py::test_the_supervisor_polls_from_poll_min_s_up_to_poll_max_s",
        "unit/test_supervisor_config_reload.py::test_an_edited_config_is_used_from_the_next_cycle",
    ),
    ("WORKER", "workflow_mirror"): (
        "integration/test_init_downloads.py::"
        "test_init_downloads_pinned_workflows_once_and_a_run_uses_them",
    ),
    ("WORKER", "job_unseen_limit_s"): (
        "unit/test_waits.py::"
        "test_a_job_accounting_never_lists_fails_the_run_after_the_limit_even_across_restarts",
    ),
    ("WORKER", "step_attempts"): (
        "unit/test_config_key_effects.py::test_step_attempts_and_step_retry_s_set_the_retry_policy",
    ),
    ("WORKER", "step_retry_s"): (
        "unit/test_config_key_effects.py::test_step_attempts_and_step_retry_s_set_the_retry_policy",
    ),
    ("WORKER", "convert_on"): (
        "integration/test_workflow_runs.py::test_conversion_on_the_worker_when_configured",
    ),
    ("WORKER", "admins"): (
        "unit/test_tracking_access.py::test_admins_come_from_a_root_only_config_file",
    ),
    # [REST]
    **{
        ("REST", key): (
            "unit/test_config_key_effects.py::test_rest_keys_reach_the_slurmrestd_client",
        )
        for key in (
            "url",
            "user",
            "api_version",
            "token",
            "token_file",
            "token_command",
            "token_refresh_s",
            "request_timeout_s",
            "verify_tls",
        )
    },
    ("REST", "staging"): (
        "unit/test_config_key_effects.py::test_rest_shared_staging_copies_into_the_cluster_home",
        "unit/test_config_rest.py::test_ssh_staging_in_rest_mode_needs_the_ssh_host",
    ),
    ("REST", "home"): (
        "unit/test_config_key_effects.py::test_rest_keys_reach_the_slurmrestd_client",
        "unit/test_config_key_effects.py::test_rest_shared_staging_copies_into_the_cluster_home",
    ),
}

# Every upstream variable: the one parametrised test sets each and checks its key.
ENV_EFFECTS = ("unit/test_config.py::test_every_upstream_variable_sets_the_key_it_names",)

_SECTION = re.compile(r"^### \[(?P<section>[A-Z]+)\]")
_TOKEN = re.compile(r"`([^`]+)`")
_KEY = re.compile(r"[a-z<][a-z0-9_<>-]*")
_ENV = re.compile(r"[A-Z][A-Z0-9_]+")


def documented() -> tuple[set[tuple[str, str]], set[str]]:
    """(section, key) of every row of a `| Key |` table under a `### [SECTION]` heading,
    and every variable of the `| Upstream variable |` table."""
    keys: set[tuple[str, str]] = set()
    variables: set[str] = set()
    section: str | None = None
    table: str | None = None  # "keys", "env" or None
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            section = None
        heading = _SECTION.match(line)
        if heading:
            section = heading["section"]
        if not line.startswith("|"):
            table = None
            continue
        cells = [cell.strip() for cell in line.strip("|").split(" | ")]
        if cells[0] == "Key" and section:
            table = "keys"
            continue
        if cells[0] == "Upstream variable":
            table = "env"
            continue
        if table is None or set(line) <= set("|-: "):
            continue
        for token in _TOKEN.findall(cells[0]):
            name = token.split(" = ")[0].strip()
            if table == "env" and _ENV.fullmatch(name):
                variables.add(name)
            elif table == "keys" and section and _KEY.fullmatch(name):
                keys.add((section, name))
    return keys, variables


def declared() -> set[tuple[str, str]]:
    keys = {
        (section, key.name) for section, specs in config.FIXED_SECTIONS.items() for key in specs
    }
    keys.add(("SLURM", "sbatch_<flag>"))
    keys.add(("WORKFLOWS", "<wf>"))
    keys.add(("WORKFLOWS", "<wf>_job_<flag>"))
    keys |= {("WORKFLOWS", f"<wf>{suffix}") for suffix in config._WORKFLOW_SUFFIXES}
    keys.add(("CONVERTERS", config.ZARR_TO_TIFF))
    keys.add(("CONVERTERS", "<from>_to_<to>"))
    return keys


def collected_tests() -> set[str]:
    """ "file::name" of every test function under tests/."""
    found = set()
    for path in TESTS.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        where = path.relative_to(TESTS).as_posix()
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith(
                "test_"
            ):
                found.add(f"{where}::{node.name}")
    return found


def test_the_parser_finds_the_tables() -> None:
    keys, variables = documented()
    assert {section for section, _ in keys} == {
        "SSH",
        "SLURM",
        "WORKFLOWS",
        "CONVERTERS",
        "ANALYTICS",
        "WORKER",
        "REST",
    }
    assert "SQLALCHEMY_URL" in variables and ("SLURM", "gpu_gpus") in keys


def test_every_declared_key_is_documented_and_every_documented_key_declared() -> None:
    keys, _ = documented()
    assert sorted(declared() - keys) == [], "declared in config.py, missing from the docs"
    assert sorted(keys - declared()) == [], "documented, but config.py does not declare it"


def test_every_upstream_variable_is_documented_and_read() -> None:
    _, variables = documented()
    read = {name for name, _, _ in config.UPSTREAM_ENV}
    assert sorted(read - variables) == [], "read by config.py, missing from the docs"
    assert sorted(variables - read) == [], "documented, but config.py does not read it"


def test_every_documented_key_names_the_tests_proving_its_effect() -> None:
    keys, _ = documented()
    assert sorted(keys - EFFECTS.keys()) == [], "documented keys without a proving test"
    assert sorted(EFFECTS.keys() - keys) == [], "EFFECTS lists keys the docs do not have"
    existing = collected_tests()
    named = {name for names in EFFECTS.values() for name in names} | set(ENV_EFFECTS)
    assert all(EFFECTS.values())
    assert sorted(named - existing) == [], "named tests that do not exist"
