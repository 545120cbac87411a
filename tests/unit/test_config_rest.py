"""[WORKER] transport = rest | local and the [REST] section."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from biomeroworker.config import RestSettings, load_settings
from biomeroworker.errors import ConfigError
from biomeroworker.slurm.rest import StaticToken, TokenCommand, TokenFile
from biomeroworker.slurm.rest.modes import staging_transport, token_source
from biomeroworker.transport.local import LocalTransport

# A well-formed JWT with no exp claim ({"alg":"HS256"}.{"sun":"u"}.sig).
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdW4iOiJ1In0.c2ln"

SLURM = """
[SLURM]
slurm_data_path = data
slurm_images_path = images
slurm_converters_path = converters
slurm_script_path = scripts
"""


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None):
    path = tmp_path / "slurm-config.ini"
    path.write_text(SLURM + textwrap.dedent(text))
    return load_settings([path], env=env or {})


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, env)
    return info.value.problems


REST_OK = """
[WORKER]
transport = rest
[REST]
url = http://127.0.0.1:6820/
user = hpcuser
token_command = scontrol token username=hpcuser lifespan=900
[SSH]
host = localslurm
"""


def test_rest_section_loads_with_defaults(tmp_path: Path) -> None:
    rest = load(tmp_path, REST_OK).rest
    assert (rest.url, rest.user, rest.api_version, rest.staging) == (
        "http://127.0.0.1:6820",
        "hpcuser",
        "v0.0.38",
        "ssh",
    )
    assert rest.token_refresh_s == 60 and rest.verify_tls is True


def test_rest_transport_without_url_user_or_token_lists_each(tmp_path: Path) -> None:
    found = problems(tmp_path, "[WORKER]\ntransport = rest\n[SSH]\nhost = h\n")
    assert any("[REST] url: missing" in line for line in found)
    assert any("[REST] user: missing" in line for line in found)
    assert any("[REST] token: missing" in line for line in found)


def test_unknown_api_version_is_refused(tmp_path: Path) -> None:
    found = problems(tmp_path, REST_OK + "[REST]\n", {"BIOMERO__REST__API_VERSION": "v1"})
    assert any("api_version" in line and "v0.0.36" in line for line in found)


def test_slurm_jwt_environment_variable_is_a_token_source(tmp_path: Path) -> None:
    text = "[WORKER]\ntransport = rest\n[REST]\nurl = http://h:6820\nuser = u\n[SSH]\nhost = h\n"
    settings = load(tmp_path, text, {"SLURM_JWT": "a.b.c"})
    assert settings.rest.token == "a.b.c"
    assert settings.source_of("REST", "token") == "env SLURM_JWT"


def test_token_is_kept_out_of_the_repr(tmp_path: Path) -> None:
    assert "secret-token" not in repr(RestSettings(token="secret-token"))


def test_shared_staging_needs_no_ssh_host_but_a_cluster_home(tmp_path: Path) -> None:
    text = "[WORKER]\ntransport = rest\n[REST]\nurl = http://h:1\nuser = u\ntoken = a.b.c\n"
    found = problems(tmp_path, text + "staging = shared\n")
    assert not any("[SSH] host" in line for line in found)
    assert any("[REST] home: missing" in line for line in found)


def test_ssh_staging_in_rest_mode_needs_the_ssh_host(tmp_path: Path) -> None:
    text = "[WORKER]\ntransport = rest\n[REST]\nurl = http://h:1\nuser = u\ntoken = a.b.c\n"
    assert any("[SSH] host: missing" in line for line in problems(tmp_path, text))


def test_relative_shared_path_is_refused(tmp_path: Path) -> None:
    found = problems(tmp_path, "[WORKER]\ntransport = local\nshared_path = cluster/home\n")
    assert any("shared_path: expected an absolute path" in line for line in found)


def test_local_mode_stages_into_the_shared_path(tmp_path: Path) -> None:
    text = f"[WORKER]\ntransport = local\nshared_path = {tmp_path}\n"
    transport = staging_transport(load(tmp_path, text))
    assert isinstance(transport, LocalTransport) and transport.home == tmp_path


def test_rest_with_shared_staging_copies_locally_into_the_cluster_home(tmp_path: Path) -> None:
    text = (
        "[WORKER]\ntransport = rest\n[REST]\nurl = http://h:1\nuser = u\ntoken = a.b.c\n"
        f"staging = shared\nhome = {tmp_path}\n"
    )
    transport = staging_transport(load(tmp_path, text))
    assert isinstance(transport, LocalTransport) and transport.home == tmp_path


@pytest.mark.parametrize(
    ("keys", "kind"),
    [
        ({"token_command": "scontrol token", "token_file": "/t", "token": "a.b.c"}, TokenCommand),
        ({"token_file": "/t", "token": "a.b.c"}, TokenFile),
        ({"token": JWT}, StaticToken),
    ],
)
def test_token_source_prefers_command_then_file_then_token(keys, kind) -> None:
    assert isinstance(token_source(RestSettings(**keys)), kind)


def test_token_command_is_split_into_arguments_not_run_by_a_shell() -> None:
    source = token_source(RestSettings(token_command="scontrol token 'username=a b'; rm -rf /"))
    assert isinstance(source, TokenCommand)
    assert source.argv == ["scontrol", "token", "username=a b;", "rm", "-rf", "/"]


def _flags_config(tmp_path: Path, transport: str) -> str:
    (tmp_path / "wf").mkdir(exist_ok=True)
    return (
        "sbatch_licenses = matlab:1\n"
        "sbatch_mail_type = END\n"
        + REST_OK.replace("transport = rest", f"transport = {transport}")
        + textwrap.dedent(
            f"""
            [WORKFLOWS]
            cellpose = cellpose
            cellpose_repo = {tmp_path / "wf"}
            cellpose_job_mem = lots
            cellpose_job_gres = gpu:1
            cellpose_job_time = 01:00:00
            cellpose_job_x11 = all
            cellpose_job_mail_type = END,SOMETIMES
            """
        )
    )


def test_rest_mode_refuses_flags_it_cannot_submit_at_load_naming_each_key(tmp_path: Path) -> None:
    found = problems(tmp_path, _flags_config(tmp_path, "rest"))
    assert len(found) == 4, found
    assert any(
        "[WORKFLOWS] cellpose_job_mail_type: sbatch --mail-type=END,SOMETIMES" in p for p in found
    )
    assert any(
        "[SLURM] sbatch_licenses: sbatch --licenses has no slurmrestd mapping (API v0.0.38)" in p
        for p in found
    )
    assert any(
        "[WORKFLOWS] cellpose_job_mem: sbatch --mem=lots: not a memory size" in p for p in found
    )
    assert any(
        "[WORKFLOWS] cellpose_job_x11: sbatch --x11 has no slurmrestd mapping" in p for p in found
    )


def test_the_same_flags_load_in_ssh_mode_where_sbatch_reads_them(tmp_path: Path) -> None:
    settings = load(tmp_path, _flags_config(tmp_path, "ssh"))
    assert settings.workflows["cellpose"].job_flags["mem"] == "lots"


def test_rest_mode_loads_every_mapped_flag_of_a_gpu_workflow(tmp_path: Path) -> None:
    (tmp_path / "wf").mkdir()
    text = (
        "gpu_gres = gpu:1\nsbatch_account = lab\nsbatch_qos = normal\nsbatch_exclusive = user\n"
        + REST_OK.replace("url = ", "api_version = v0.0.42\nurl = ")
        + textwrap.dedent(
            f"""
            [WORKFLOWS]
            cellpose = cellpose
            cellpose_repo = {tmp_path / "wf"}
            cellpose_use_gpu = true
            cellpose_job_mem_per_cpu = 4G
            cellpose_job_cpus_per_task = 4
            cellpose_job_time = 2-00:00:00
            cellpose_job_mail_type = END,FAIL
            cellpose_job_mail_user = me@example.org
            cellpose_job_constraint = avx2
            """
        )
    )
    settings = load(tmp_path, text)
    assert settings.sbatch_flags_for("cellpose")["gres"] == "gpu:1"
