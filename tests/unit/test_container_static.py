"""Static checks of the container files: no Docker engine or registry runs here.

Linters and `docker compose config` come from tools/install-container-tools; a
test whose tool is missing is skipped with that hint. The podman deployment is run
against FakePodman, a stand-in that records every call.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
POD_SCRIPT = ROOT / "deploy" / "podman" / "biomero-pod.sh"
INSTALL_HINT = "run tools/install-container-tools"
SHELL_SCRIPTS = sorted(
    [
        *(ROOT / "startup").iterdir(),
        *(ROOT / "deploy" / "podman").glob("*.sh"),
        ROOT / "tools" / "install-container-tools",
        ROOT / "tools" / "install-omero-py",
    ]
)


def tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip(f"{name} is not installed: {INSTALL_HINT}")
    return found


@cache
def compose_argv() -> tuple[str, ...] | None:
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return (docker, "compose")
    legacy = shutil.which("docker-compose")
    return (legacy,) if legacy else None


def compose(*args: str) -> subprocess.CompletedProcess[str]:
    argv = compose_argv()
    if argv is None:
        pytest.skip(f"no docker compose: {INSTALL_HINT}")
    return subprocess.run(
        [*argv, "--env-file", str(ROOT / ".env.example"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    pairs = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            word, _, rest = stripped.partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


def copy_sources() -> list[str]:
    sources = []
    for word, rest in instructions():
        if word == "COPY":
            parts = [p for p in rest.split() if not p.startswith("--")]
            sources.extend(parts[:-1])
    return sources


def ignored_by_dockerignore(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matches a path or a parent."""
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
    parts = path.rstrip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern.lstrip("!").rstrip("/")
        globs = [body, body.removeprefix("**/")] if body.startswith("**/") else [body]
        for candidate in candidates:
            names = [candidate, *candidate.split("/")] if body.startswith("**/") else [candidate]
            if any(fnmatch.fnmatchcase(n, g) for n in names for g in globs):
                ignored = not negate
                break
    return ignored


# --- Dockerfile -------------------------------------------------------------------


def test_dockerfile_is_clean_under_hadolint() -> None:
    hadolint = tool("hadolint")
    result = subprocess.run(
        [hadolint, "--config", str(ROOT / ".hadolint.yaml"), str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.name)
def test_shell_scripts_are_clean_under_shellcheck(script: Path) -> None:
    result = subprocess.run(
        [tool("shellcheck"), str(script)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout


def test_builds_from_a_pinned_omero_server_5_6_tag() -> None:
    bases = [rest for word, rest in instructions() if word == "FROM"]
    assert len(bases) == 1
    assert re.fullmatch(r"openmicroscopy/omero-server:5\.6\.\d+", bases[0])


def test_removes_the_database_hook_and_ends_as_omero_server() -> None:
    runs = " ".join(rest for word, rest in instructions() if word == "RUN")
    users = [rest for word, rest in instructions() if word == "USER"]
    assert "rm -f /startup/60-database.sh" in runs
    assert users[-1] == "omero-server"


def test_installs_our_processor_py_inside_the_omero_package() -> None:
    runs = [rest for word, rest in instructions() if word == "RUN"]
    assert "processor.py" in copy_sources()
    assert any("biomeroworker.omero.processor_env install" in run for run in runs)
    assert any("BiomeroProcessI" in run for run in runs)


def test_bioformats2raw_comes_from_a_pinned_release_and_is_checksummed() -> None:
    run = next(rest for word, rest in instructions() if word == "RUN" and "bioformats2raw" in rest)
    args = dict(
        rest.split("=", 1) for word, rest in instructions() if word == "ARG" and "=" in rest
    )
    assert re.fullmatch(r"\d+\.\d+\.\d+", args["BIOFORMATS2RAW_VERSION"])
    assert "/releases/download/v${BIOFORMATS2RAW_VERSION}/" in run
    assert "sha256sum --check" in run
    assert '[ -z "${BIOFORMATS2RAW_SHA256}" ]' in run


def test_has_a_healthcheck_and_oci_labels() -> None:
    words = {word for word, _ in instructions()}
    labels = " ".join(rest for word, rest in instructions() if word == "LABEL")
    assert "HEALTHCHECK" in words
    for key in ("title", "description", "version", "licenses", "base.name"):
        assert f"org.opencontainers.image.{key}=" in labels


def test_every_startup_hook_is_copied_into_the_image() -> None:
    copied = {Path(s).name for s in copy_sources() if s.startswith("startup/")}
    assert copied == {p.name for p in (ROOT / "startup").iterdir()}


@pytest.mark.parametrize("source", copy_sources())
def test_every_copy_source_exists_and_is_in_the_build_context(source: str) -> None:
    assert (ROOT / source).exists(), f"{source} is missing from the repository"
    assert not ignored_by_dockerignore(source), f".dockerignore leaves out {source}"


@pytest.mark.parametrize(
    "path",
    [
        ".env",
        ".ssh/id_rsa",
        "ssh/id_ed25519",
        "startup/id_rsa",
        "tools/install-container-tools",
        "tests/unit",
        ".venv",
        ".git",
    ],
)
def test_build_context_leaves_out_secrets_and_development_files(path: str) -> None:
    assert ignored_by_dockerignore(path)


# --- docker compose ------------------------------------------------------------------


def compose_model() -> dict:
    result = compose("config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_compose_file_validates() -> None:
    result = compose("config", "--quiet")
    assert result.returncode == 0, result.stderr


def test_master_gives_processor_0_to_the_worker() -> None:
    services = compose_model()["services"]
    worker = services["biomeroworker"]["environment"]["OMERO_WORKER_NAME"]
    descriptors = services["omeroserver"]["environment"]["CONFIG_omero_server_nodedescriptors"]
    assert f"{worker}:Processor-0" in descriptors.split()
    assert services["biomeroworker"]["hostname"] == worker


def test_worker_reads_ssh_material_read_only_at_tmp_ssh() -> None:
    mounts = compose_model()["services"]["biomeroworker"]["volumes"]
    ssh = [m for m in mounts if m["target"] == "/tmp/.ssh"]
    assert len(ssh) == 1
    assert ssh[0]["read_only"] is True


def test_data_lives_in_named_volumes() -> None:
    model = compose_model()
    for name, service in model["services"].items():
        for mount in service.get("volumes", []):
            if mount["target"] != "/tmp/.ssh":
                assert mount["type"] == "volume", f"{name}: {mount}"
                assert mount["source"] in model["volumes"]


def test_every_compose_variable_is_in_env_example_and_the_docs() -> None:
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", (ROOT / "docker-compose.yml").read_text()))
    example = (ROOT / ".env.example").read_text()
    docs = (ROOT / "docs" / "deployment.md").read_text()
    assert used
    assert {v for v in used if not re.search(rf"^{v}=", example, re.MULTILINE)} == set()
    assert {v for v in used if f"`{v}`" not in docs} == set()


# --- podman ------------------------------------------------------------------------

FAKE_PODMAN = """#!/usr/bin/env bash
# FakePodman: records each call's argv (NUL-separated, one file per call) and
# what arrives on stdin for `secret create NAME -`.
n=$(find "$FAKE_PODMAN_CALLS" -type f | wc -l)
printf '%s\\0' "$@" > "$FAKE_PODMAN_CALLS/$(printf %04d "$n")"
if [[ "${1:-} ${2:-}" == "secret create" && "${4:-}" == "-" ]]; then
    cat > "$FAKE_PODMAN_STDIN/$3"
fi
exit 0
"""


@pytest.fixture
def pod_env(tmp_path: Path) -> dict[str, str]:
    ssh = tmp_path / "host-ssh"
    ssh.mkdir()
    for name in ("config", "known_hosts", "id_cluster", "id_cluster.pub"):
        (ssh / name).write_text(f"content of {name}\n")
    fake = tmp_path / "podman"
    fake.write_text(FAKE_PODMAN)
    fake.chmod(0o755)
    (tmp_path / "stdin").mkdir()
    (tmp_path / "calls").mkdir()
    return {
        "PATH": os.environ["PATH"],
        "PODMAN": str(fake),
        "FAKE_PODMAN_CALLS": str(tmp_path / "calls"),
        "FAKE_PODMAN_STDIN": str(tmp_path / "stdin"),
        "BIOMERO_SSH_CONFIG": str(ssh / "config"),
        "BIOMERO_SSH_KNOWN_HOSTS": str(ssh / "known_hosts"),
        "BIOMERO_SSH_KEY": str(ssh / "id_cluster"),
        "OMERO_DB_PASSWORD": "db-pw-1",
        "OMERO_ROOT_PASSWORD": "root-pw-2",
        "BIOMERO_DB_PASSWORD": "track-pw-3",
    }


def run_pod(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(POD_SCRIPT), *args], env=env, capture_output=True, text=True, check=False
    )


def calls(env: dict[str, str]) -> list[list[str]]:
    records = sorted(Path(env["FAKE_PODMAN_CALLS"]).iterdir())
    return [r.read_text().split("\0")[:-1] for r in records]


def worker_run(env: dict[str, str]) -> list[str]:
    return next(c for c in calls(env) if c[0] == "run" and "biomero-worker" in c)


def test_podman_up_hands_the_ssh_material_to_the_worker_as_secrets(
    pod_env: dict[str, str],
) -> None:
    assert run_pod(pod_env, "up").returncode == 0

    argv = worker_run(pod_env)
    secrets = [argv[i + 1] for i, a in enumerate(argv) if a == "--secret"]
    targets = {s.split(",")[0]: s for s in secrets}
    assert "target=/run/secrets/biomero-ssh/id_cluster," in targets["biomero-ssh-key"]
    assert "target=/run/secrets/biomero-ssh/config," in targets["biomero-ssh-config"]
    assert "target=/run/secrets/biomero-ssh/known_hosts," in targets["biomero-ssh-known-hosts"]
    assert "biomero-ssh-key-pub" in targets


def test_podman_up_mounts_no_key_and_builds_or_copies_nothing(pod_env: dict[str, str]) -> None:
    assert run_pod(pod_env, "up").returncode == 0

    key_dir = str(Path(pod_env["BIOMERO_SSH_KEY"]).parent)
    for call in calls(pod_env):
        assert call[0] not in {"build", "cp", "commit", "push"}
        if call[:2] != ["secret", "create"]:
            assert not any(key_dir in arg for arg in call), call


def test_podman_passwords_travel_on_stdin_never_on_a_command_line(
    pod_env: dict[str, str], tmp_path: Path
) -> None:
    assert run_pod(pod_env, "up").returncode == 0

    everything = " ".join(" ".join(c) for c in calls(pod_env))
    for name in ("OMERO_DB_PASSWORD", "OMERO_ROOT_PASSWORD", "BIOMERO_DB_PASSWORD"):
        assert pod_env[name] not in everything
    assert (tmp_path / "stdin" / "omero-db-password").read_text() == "db-pw-1"


def test_podman_up_refuses_a_missing_key_file(pod_env: dict[str, str]) -> None:
    pod_env["BIOMERO_SSH_KEY"] += ".absent"

    result = run_pod(pod_env, "up")

    assert result.returncode != 0
    assert "BIOMERO_SSH_KEY" in result.stderr
    assert calls(pod_env) == []


def test_podman_env_file_is_read_as_data_not_run(pod_env: dict[str, str], tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    env_file = tmp_path / "biomero.env"
    env_file.write_text(f"OMERO_ROOT_PASSWORD=$(touch {marker})\n")
    del pod_env["OMERO_ROOT_PASSWORD"]

    result = run_pod({**pod_env, "BIOMERO_ENV_FILE": str(env_file)}, "up")

    assert result.returncode == 0, result.stderr
    assert not marker.exists()
    root_pw = (tmp_path / "stdin" / "omero-root-password").read_text()
    assert root_pw == f"$(touch {marker})"


def test_podman_down_removes_the_pod_and_the_secrets(pod_env: dict[str, str]) -> None:
    assert run_pod(pod_env, "down").returncode == 0

    made = calls(pod_env)
    assert ["pod", "rm", "--force", "--ignore", "biomero"] in made
    assert ["secret", "rm", "biomero-ssh-key"] in made
