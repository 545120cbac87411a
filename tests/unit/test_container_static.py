"""Static checks of the container files: no Docker engine or registry runs here.

Linters and `docker compose config` come from tools/install-container-tools; a
test whose tool is missing is skipped with that hint. The podman deployment is run
against FakePodman, a stand-in that records every call.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
POD_SCRIPT = ROOT / "deploy" / "podman" / "biomero-pod.sh"
REQUIREMENTS = ROOT / "deploy" / "requirements"
INSTALL_HINT = "run tools/install-container-tools"
SHELL_SCRIPTS = sorted(
    [
        *(ROOT / "startup").iterdir(),
        *(ROOT / "deploy" / "podman").glob("*.sh"),
        ROOT / "tools" / "install-container-tools",
        ROOT / "tools" / "install-omero-py",
        ROOT / "tools" / "build-zeroc-ice",
        ROOT / "tools" / "lock-requirements",
    ]
)
SCRIPTS_IN_OMERO = "/opt/omero/server/OMERO.server/lib/scripts/biomero/"

_spec = importlib.util.spec_from_file_location(
    "deploy_versions", ROOT / "tests" / "deploy_versions.py"
)
assert _spec and _spec.loader
deploy_versions = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(deploy_versions)
pinned = deploy_versions.pinned


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
    lines = [ln for ln in DOCKERFILE.read_text().splitlines() if not ln.strip().startswith("#")]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    pairs = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped:
            word, _, rest = stripped.partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


def stages() -> dict[str, tuple[str, list[tuple[str, str]]]]:
    """Stage name -> (base image, its instructions), in Dockerfile order."""
    found: dict[str, tuple[str, list[tuple[str, str]]]] = {}
    current: list[tuple[str, str]] = []
    for word, rest in instructions():
        if word == "FROM":
            base, _, name = rest.partition(" AS ")
            current = []
            found[name.strip()] = (base.strip(), current)
        elif found:
            current.append((word, rest))
    return found


def stage(name: str) -> list[tuple[str, str]]:
    return stages()[name][1]


def copy_sources(of: list[tuple[str, str]] | None = None) -> list[str]:
    """Build-context sources of the COPY instructions (not COPY --from=stage)."""
    sources = []
    for word, rest in of if of is not None else instructions():
        if word == "COPY" and "--from=" not in rest:
            parts = [p for p in rest.split() if not p.startswith("--")]
            sources.extend(parts[:-1])
    return sources


def copies(of: list[tuple[str, str]]) -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY in a stage."""
    found = []
    for word, rest in of:
        if word == "COPY":
            parts = [p for p in rest.split() if not p.startswith("--")]
            found.append((parts[:-1], parts[-1]))
    return found


def arg_defaults() -> dict[str, str]:
    """ARG NAME=default, from every stage (the tests require one value per name)."""
    found: dict[str, str] = {}
    for word, rest in instructions():
        if word == "ARG" and "=" in rest:
            name, value = rest.split("=", 1)
            assert found.get(name, value) == value, f"ARG {name} has two defaults"
            found[name] = value
    return found


def shell_commands(run: str) -> list[list[str]]:
    """The simple commands of a RUN line (split on && ; |), as argument lists."""
    commands = []
    for part in re.split(r"&&|\|\||;|\|", run):
        try:
            words = shlex.split(part)
        except ValueError:
            words = part.split()
        if words:
            commands.append(words)
    return commands


def requirement_lines(path: Path) -> list[str]:
    """Requirement entries of a pip requirements file, continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def requirement_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in requirement_lines(path):
        name, _, rest = line.partition("==")
        pins[name.strip().lower()] = rest.split()[0]
    return pins


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


def test_every_stage_builds_from_the_pinned_base_image_tags() -> None:
    bases = {name: base for name, (base, _) in stages().items()}
    server = f"openmicroscopy/omero-server:{pinned('OMERO_SERVER_VERSION')}"
    web = f"openmicroscopy/omero-web-standalone:{pinned('OMERO_WEB_VERSION')}"
    assert re.fullmatch(r"5\.6\.\d+", pinned("OMERO_SERVER_VERSION"))
    assert bases == {
        "ice-build": server,
        "web-build": web,
        "server": server,
        "web": web,
        "worker": server,
    }
    # `docker build .` without --target must give the worker.
    assert list(bases)[-1] == "worker"
    assert stages()["worker"][0] in (
        rest.split(" AS ")[0] for word, rest in instructions() if word == "FROM"
    )


def test_worker_removes_the_database_hook_and_ends_as_omero_server() -> None:
    worker = stage("worker")
    runs = " ".join(rest for word, rest in worker if word == "RUN")
    users = [rest for word, rest in worker if word == "USER"]
    assert "rm -f /startup/60-database.sh" in runs
    assert users[-1] == "omero-server"
    assert [rest for word, rest in stage("server") if word == "USER"][-1] == "omero-server"
    assert [rest for word, rest in stage("web") if word == "USER"][-1] == "omero-web"


def test_installs_our_processor_py_inside_the_omero_package() -> None:
    runs = [rest for word, rest in stage("worker") if word == "RUN"]
    assert "processor.py" in copy_sources(stage("worker"))
    assert any("biomeroworker.omero.processor_env install" in run for run in runs)
    assert any("BiomeroProcessI" in run for run in runs)


def test_no_build_argument_is_left_empty() -> None:
    declared = [rest for word, rest in instructions() if word == "ARG"]
    defaults = arg_defaults()
    for arg in declared:
        name, _, value = arg.partition("=")
        # A bare `ARG NAME` in a stage re-declares a global ARG: it takes that default.
        assert value or defaults.get(name), (
            f"ARG {name} has no default: a build without --build-arg fails"
        )
    compose_args = {
        name: service["build"].get("args", {})
        for name, service in compose_model()["services"].items()
        if "build" in service
    }
    for service, args in compose_args.items():
        assert all(str(v).strip() for v in args.values()), f"{service}: empty build arg {args}"
    # Optional settings may be empty in .env.example, but never a build input.
    example = (ROOT / ".env.example").read_text()
    empty = set(re.findall(r"^([A-Z0-9_]+)=\s*$", example, re.MULTILINE))
    assert empty.isdisjoint(defaults), empty & set(defaults)


def test_every_curl_and_pip_in_the_dockerfile_verifies_what_it_fetches() -> None:
    defaults = arg_defaults()
    runs = [rest for word, rest in instructions() if word == "RUN"]
    assert not [r for w, r in instructions() if w == "ADD"], "ADD fetches without a checksum"
    seen = {"curl": 0, "pip": 0}
    for run in runs:
        commands = shell_commands(run)
        for argv in commands:
            tool_name = Path(argv[0].strip('"')).name
            assert tool_name not in {"wget", "git"}, f"unverified fetch: {argv}"
            if tool_name == "curl":
                seen["curl"] += 1
                target = argv[argv.index("-o") + 1]
                checks = [c for c in commands if "sha256sum" in c and "--check" in c]
                assert checks, f"curl without sha256sum --check: {run}"
                assert target in run.split("sha256sum")[0].split("echo")[-1] or target in run
                sha = re.search(r'echo "\$\{(\w+)\}  ' + re.escape(target), run)
                assert sha, f"the checksum of {target} must come from an ARG: {run}"
                assert re.fullmatch(r"[0-9a-f]{64}", defaults[sha[1]]), sha[1]
            if tool_name == "pip" and argv[1] in {"install", "download", "wheel"}:
                seen["pip"] += 1
                assert "--require-hashes" in argv or "--no-index" in argv, f"unverified pip: {argv}"
                if "--require-hashes" in argv:
                    files = [argv[i + 1] for i, a in enumerate(argv) if a == "-r"]
                    assert files, f"--require-hashes without a requirements file: {argv}"
                    assert all(f.startswith("/tmp/requirements/") for f in files)
                    assert all((REQUIREMENTS / Path(f).name).is_file() for f in files)
                    assert not [a for a in argv[2:] if "==" in a], f"pin outside the file: {argv}"
    assert seen["curl"] >= 1 and seen["pip"] >= 5, seen


@pytest.mark.parametrize("path", sorted(REQUIREMENTS.glob("*.txt")), ids=lambda p: p.name)
def test_requirement_files_pin_every_package_with_its_hashes(path: Path) -> None:
    lines = requirement_lines(path)
    assert lines
    for line in lines:
        assert re.match(r"^[A-Za-z0-9._-]+==[^ ]+ ", line), f"{path.name}: not pinned: {line}"
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", line), f"{path.name}: no hash: {line}"


def test_one_zeroc_ice_build_script_for_the_image_and_the_dev_venv() -> None:
    runs = " ".join(rest for word, rest in stage("ice-build") if word == "RUN")
    assert "build-zeroc-ice" in runs
    assert "tools/build-zeroc-ice" in copy_sources(stage("ice-build"))
    install = (ROOT / "tools" / "install-omero-py").read_text()
    assert '"$script_dir/build-zeroc-ice"' in install
    assert "deploy/requirements/zeroc-ice.txt" in install
    assert "--require-hashes" in install
    # The source edits live in build-zeroc-ice only.
    assert "PyEval_GetFrame" not in install
    assert "PyEval_GetFrame" in (ROOT / "tools" / "build-zeroc-ice").read_text()


def test_image_pins_equal_deploy_versions_env() -> None:
    args = arg_defaults()
    for name in (
        "ZEROC_ICE_VERSION",
        "BIOFORMATS2RAW_VERSION",
        "BIOFORMATS2RAW_SHA256",
        "OMERO_BIOMERO_VERSION",
    ):
        assert args[name] == pinned(name), name
    assert pinned("BIOFORMATS2RAW_SHA256") == (
        "855e13599df9643f8abdc861e7bada1f3e4e32cc519f684036b9581819eb9319"
    )
    assert requirement_pins(REQUIREMENTS / "zeroc-ice.txt") == {
        "zeroc-ice": pinned("ZEROC_ICE_VERSION")
    }
    worker = requirement_pins(REQUIREMENTS / "worker.txt")
    assert worker["omero-py"] == pinned("OMERO_PY_VERSION")
    assert worker["omero-cli-zarr"] == pinned("OMERO_CLI_ZARR_VERSION")
    assert "zeroc-ice" not in worker  # built from the sdist, installed before this file
    assert re.search(
        rf"^POSTGRES_VERSION={pinned('POSTGRES_VERSION')}$",
        (ROOT / ".env.example").read_text(),
        re.MULTILINE,
    )


def test_worker_requirements_cover_the_project_dependencies() -> None:
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    worker = requirement_pins(REQUIREMENTS / "worker.txt")
    names = {re.split(r"[<>=!~ \[;]", d, maxsplit=1)[0].lower() for d in deps}
    assert names - set(worker) == set(), "run tools/lock-requirements"


def test_master_and_web_images_get_the_scripts_and_the_plugin_the_tests_use() -> None:
    # The master and the worker copy the one scripts/ tree to the same place.
    for name in ("server", "worker"):
        assert (["scripts/"], SCRIPTS_IN_OMERO) in copies(stage(name)), name
    # OMERO.web installs the plugin and biomero at the pinned versions, hash-checked in
    # web-build, and checks the installed version.
    web = requirement_pins(REQUIREMENTS / "web.txt")
    assert web["omero-biomero"] == pinned("OMERO_BIOMERO_VERSION")
    assert web["biomero"] == pinned("BIOMERO_VERSION")
    assert not {"omero-web", "omero-py", "zeroc-ice"} & set(web), "the base image's own"
    web_runs = " ".join(rest for word, rest in stage("web") if word == "RUN")
    build_runs = " ".join(rest for word, rest in stage("web-build") if word == "RUN")
    assert "-r /tmp/requirements/web.txt" in build_runs
    assert "omero-biomero-setup" in web_runs
    web_env = " ".join(rest for word, rest in stage("web") if word == "ENV")
    for name in ("BIOMERO_SLURM_CONFIG_FILE", "OMERO_BIOMERO_CONFIG_FILE"):
        assert re.search(rf"{name}=/opt/biomero/config/", web_env), name
    assert "v('omero-biomero') == '${OMERO_BIOMERO_VERSION}'" in web_runs
    # The compatibility tests read the same pin (tests/deploy_versions.py); where the
    # plugin is installed in the test environment, it is that version.
    try:
        from importlib.metadata import PackageNotFoundError, version

        installed = version("omero-biomero")
    except PackageNotFoundError:
        installed = None
    assert installed in (None, pinned("OMERO_BIOMERO_VERSION"))


def test_bioformats2raw_comes_from_a_pinned_release_and_is_checksummed() -> None:
    run = next(rest for word, rest in stage("worker") if word == "RUN" and "bioformats2raw" in rest)
    args = arg_defaults()
    assert re.fullmatch(r"\d+\.\d+\.\d+", args["BIOFORMATS2RAW_VERSION"])
    assert "/releases/download/v${BIOFORMATS2RAW_VERSION}/" in run
    assert "sha256sum --check" in run
    assert re.fullmatch(r"[0-9a-f]{64}", args["BIOFORMATS2RAW_SHA256"])


@pytest.mark.parametrize("name", ["server", "web", "worker"])
def test_has_oci_labels(name: str) -> None:
    labels = " ".join(rest for word, rest in stage(name) if word == "LABEL")
    for key in ("title", "description", "version", "licenses", "base.name"):
        assert f"org.opencontainers.image.{key}=" in labels


def test_worker_and_web_have_healthchecks() -> None:
    assert "HEALTHCHECK" in {word for word, _ in stage("worker")}
    web = next(rest for word, rest in stage("web") if word == "HEALTHCHECK")
    assert "/opt/biomero/config/slurm-config.ini" in web


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


def test_worker_mounts_only_the_ssh_files_the_config_names() -> None:
    mounts = compose_model()["services"]["biomeroworker"]["volumes"]
    binds = [m for m in mounts if m["type"] == "bind"]
    key = re.search(r"^BIOMERO_SSH_KEY=(.+)$", (ROOT / ".env.example").read_text(), re.MULTILINE)
    assert key
    assert sorted(m["target"] for m in binds) == sorted(
        ["/tmp/.ssh/config", "/tmp/.ssh/known_hosts", f"/tmp/.ssh/{key[1]}"]
    )
    for mount in binds:
        assert mount["read_only"] is True
        # A missing file must fail the start, not turn into an empty folder (the long
        # syntax default, unlike the short one; compose prints it only when true).
        assert mount.get("bind", {}).get("create_host_path", False) is False
        assert Path(mount["source"]).name == Path(mount["target"]).name
    assert not [m for m in mounts if m["target"] == "/tmp/.ssh"], "never the whole ~/.ssh"


def test_data_lives_in_named_volumes() -> None:
    model = compose_model()
    for name, service in model["services"].items():
        for mount in service.get("volumes", []):
            if not mount["target"].startswith("/tmp/.ssh/"):
                assert mount["type"] == "volume", f"{name}: {mount}"
                assert mount["source"] in model["volumes"]


def test_worker_container_has_the_name_people_type() -> None:
    assert compose_model()["services"]["biomeroworker"]["container_name"] == "biomeroworker"


def test_master_and_web_are_built_from_this_repository() -> None:
    services = compose_model()["services"]
    assert services["omeroserver"]["build"]["target"] == "server"
    assert services["omeroweb"]["build"]["target"] == "web"
    assert services["biomeroworker"]["build"].get("target") in (None, "worker")
    for name in ("omeroserver", "omeroweb", "biomeroworker"):
        assert Path(services[name]["build"]["context"]) == ROOT


def test_plugin_edits_the_config_file_the_worker_reads() -> None:
    services = compose_model()["services"]
    web, worker = services["omeroweb"], services["biomeroworker"]
    shared = web["environment"]["BIOMERO_SLURM_CONFIG_FILE"]
    # biomero's authoritative-file mode: the worker reads this file alone.
    assert worker["environment"]["BIOMERO_SLURM_CONFIG_FILE"] == shared
    assert "BIOMERO_CONFIG" not in worker["environment"]
    web_mount = next(m for m in web["volumes"] if m["source"] == "biomero-config")
    worker_mount = next(m for m in worker["volumes"] if m["source"] == "biomero-config")
    assert web_mount["target"] == worker_mount["target"] == str(Path(shared).parent)
    assert not web_mount.get("read_only") and worker_mount["read_only"] is True
    # The worker starts once OMERO.web (its healthcheck: the seeded file) is up.
    assert worker["depends_on"]["omeroweb"]["condition"] == "service_healthy"


def test_dashboards_profile_runs_a_pinned_metabase_next_to_the_tracking_database() -> None:
    assert "metabase" not in compose_model()["services"]
    result = compose("--profile", "dashboards", "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert re.fullmatch(r"metabase/metabase@sha256:[0-9a-f]{64}", services["metabase"]["image"])
    assert "omero" in services["metabase"]["networks"]
    assert "biomero-database" in services["metabase"]["depends_on"]


def test_metabase_setup_provisions_from_the_worker_image_with_the_workers_database() -> None:
    assert "metabase-setup" not in compose_model()["services"]
    result = compose("--profile", "dashboards", "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    setup, worker = services["metabase-setup"], services["biomeroworker"]

    assert setup["image"] == worker["image"]
    assert setup["build"]["context"] == worker["build"]["context"]
    assert setup["entrypoint"] == [
        "/opt/omero/server/venv3/bin/python",
        "-m",
        "biomeroworker.deploy.metabase",
    ]
    assert ("ENV", "VIRTUAL_ENV=/opt/omero/server/venv3") in stage("worker")
    env = setup["environment"]
    assert env["SQLALCHEMY_URL"] == worker["environment"]["SQLALCHEMY_URL"]
    assert env["METABASE_URL"] == "http://metabase:3000"
    assert {"METABASE_ADMIN_EMAIL", "METABASE_ADMIN_PASSWORD", "METABASE_SECRET_KEY"} <= set(env)
    assert setup["depends_on"]["metabase"]["condition"] == "service_started"
    assert setup["restart"] == "no"
    assert setup["healthcheck"]["disable"] is True
    assert "omero" in setup["networks"]


def test_web_gets_dashboard_settings_the_plugin_can_sign_even_without_dashboards() -> None:
    # omero_biomero/biomero_views.py (1.6.1) computes int(<dashboard id>) for both ids
    # and jwt.encode(..., METABASE_SECRET_KEY, "HS256") on every load of the BIOMERO
    # page: an empty or missing value is an HTTP 500 (PyJWT: "HMAC key must not be
    # empty"; below 32 bytes it warns on every load).
    web = compose_model()["services"]["omeroweb"]["environment"]
    for name in (
        "METABASE_WORKFLOWS_DB_PAGE_DASHBOARD_ID",
        "METABASE_IMPORTS_DB_PAGE_DASHBOARD_ID",
    ):
        assert int(web[name]) == 0
    assert len(web["METABASE_SECRET_KEY"].encode()) >= 32
    assert web["METABASE_SITE_URL"] == ""


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


def container_run(env: dict[str, str], name: str) -> list[str]:
    return next(c for c in calls(env) if c[0] == "run" and c[c.index("--name") + 1] == name)


def worker_run(env: dict[str, str]) -> list[str]:
    return container_run(env, "biomeroworker")


def option_values(argv: list[str], option: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == option]


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


def test_podman_ssh_secrets_are_readable_by_omero_server_alone(pod_env: dict[str, str]) -> None:
    assert run_pod(pod_env, "up").returncode == 0

    ssh = [s for s in option_values(worker_run(pod_env), "--secret") if "biomero-ssh" in s]
    assert len(ssh) == 4
    for secret in ssh:
        options = dict(o.split("=", 1) for o in secret.split(",")[1:])
        # omero-server is uid/gid 1000 in openmicroscopy/omero-server (its playbook's
        # omero_server_system_uid); the hooks run as that user.
        assert options["uid"] == "1000"
        assert options["gid"] == "1000"
        assert options["mode"] == "0400"


def test_podman_secret_owner_can_be_moved_for_another_base_image(pod_env: dict[str, str]) -> None:
    env = {**pod_env, "BIOMERO_SECRET_UID": "1500", "BIOMERO_SECRET_GID": "1501"}
    assert run_pod(env, "up").returncode == 0

    ssh = [s for s in option_values(worker_run(env), "--secret") if "biomero-ssh" in s]
    assert all(",uid=1500,gid=1501," in s for s in ssh)


def test_podman_runs_our_master_and_web_images_and_names_the_worker(
    pod_env: dict[str, str],
) -> None:
    assert run_pod(pod_env, "up").returncode == 0

    assert container_run(pod_env, "biomero-omeroserver")[-1] == (
        "localhost/biomero-omeroserver:latest"
    )
    web = container_run(pod_env, "biomero-omeroweb")
    assert web[-1] == "localhost/biomero-omeroweb:latest"
    worker = worker_run(pod_env)
    shared = "BIOMERO_SLURM_CONFIG_FILE=/opt/biomero/config/slurm-config.ini"
    assert shared in option_values(web, "-e")
    assert shared in option_values(worker, "-e")
    assert not [e for e in option_values(worker, "-e") if e.startswith("BIOMERO_CONFIG=")]
    assert "biomero-config:/opt/biomero/config" in option_values(web, "-v")
    assert "biomero-config:/opt/biomero/config:ro" in option_values(worker, "-v")
    # The worker starts only after OMERO.web has seeded the shared config.
    made = calls(pod_env)
    seeded = made.index(["exec", "biomero-omeroweb", "test", "-f", shared.split("=")[1]])
    assert seeded < made.index(worker)


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
    assert ["secret", "rm", "metabase-admin-password"] in made


def dashboards_env(pod_env: dict[str, str]) -> dict[str, str]:
    return {
        **pod_env,
        "BIOMERO_DASHBOARDS": "1",
        "METABASE_ADMIN_EMAIL": "admin@biomero.example.org",
        "METABASE_ADMIN_PASSWORD": "mb-admin-pw-4",
        "METABASE_SECRET_KEY": "5f" * 32,
        "METABASE_WORKFLOWS_DB_PAGE_DASHBOARD_ID": "7",
    }


def test_podman_dashboards_run_the_pinned_metabase_and_provision_it(
    pod_env: dict[str, str], tmp_path: Path
) -> None:
    env = dashboards_env(pod_env)
    assert run_pod(env, "up").returncode == 0

    made = calls(env)
    [pod] = [c for c in made if c[:2] == ["pod", "create"]]
    assert "3000:3000" in option_values(pod, "--publish")
    metabase = container_run(env, "biomero-metabase")
    compose_image = json.loads(
        compose("--profile", "dashboards", "config", "--format", "json").stdout
    )["services"]["metabase"]["image"]
    assert metabase[-1] == f"docker.io/{compose_image}"
    assert "metabase-data:/metabase-data" in option_values(metabase, "-v")

    setup = container_run(env, "biomero-metabase-setup")
    assert "--rm" in setup and "-d" not in setup
    assert setup[-3:] == ["localhost/biomeroworker:latest", "-m", "biomeroworker.deploy.metabase"]
    assert option_values(setup, "--entrypoint") == ["/opt/omero/server/venv3/bin/python"]
    assert "--no-healthcheck" in setup
    assert sorted(option_values(setup, "--secret")) == [
        "biomero-sqlalchemy-url,type=env,target=SQLALCHEMY_URL",
        "metabase-admin-password,type=env,target=METABASE_ADMIN_PASSWORD",
        "metabase-secret-key,type=env,target=METABASE_SECRET_KEY",
    ]
    assert "METABASE_URL=http://127.0.0.1:3000" in option_values(setup, "-e")
    # Provisioned once the rest of the pod runs; the key reaches OMERO.web as a secret.
    assert made.index(setup) > made.index(worker_run(env))
    web = container_run(env, "biomero-omeroweb")
    assert "metabase-secret-key,type=env,target=METABASE_SECRET_KEY" in option_values(
        web, "--secret"
    )
    assert "METABASE_WORKFLOWS_DB_PAGE_DASHBOARD_ID=7" in option_values(web, "-e")
    everything = " ".join(" ".join(c) for c in made)
    for name in ("METABASE_ADMIN_PASSWORD", "METABASE_SECRET_KEY"):
        assert env[name] not in everything
    assert (tmp_path / "stdin" / "metabase-admin-password").read_text() == "mb-admin-pw-4"


def test_podman_without_dashboards_runs_no_metabase_and_web_still_signs(
    pod_env: dict[str, str],
) -> None:
    assert run_pod(pod_env, "up").returncode == 0

    names = [c[c.index("--name") + 1] for c in calls(pod_env) if c[0] == "run"]
    assert not [n for n in names if "metabase" in n]
    web = option_values(container_run(pod_env, "biomero-omeroweb"), "-e")
    key = next(e.split("=", 1)[1] for e in web if e.startswith("METABASE_SECRET_KEY="))
    assert len(key) >= 32
    assert "METABASE_IMPORTS_DB_PAGE_DASHBOARD_ID=0" in web


def test_podman_dashboards_need_the_metabase_admin(pod_env: dict[str, str]) -> None:
    env = dashboards_env(pod_env)
    del env["METABASE_ADMIN_PASSWORD"]

    result = run_pod(env, "up")

    assert result.returncode != 0
    assert "METABASE_ADMIN_PASSWORD is not set" in result.stderr
    assert calls(env) == []


def test_podman_metabase_provisions_again_in_the_running_pod(pod_env: dict[str, str]) -> None:
    env = dashboards_env(pod_env)
    assert run_pod(env, "metabase").returncode == 0

    made = calls(env)
    assert [c[:2] for c in made if c[0] == "run"] == [["run", "--rm"]]
    assert ["secret", "rm", "metabase-admin-password"] in made


def test_peer_biomero_of_the_tests_is_the_biomero_the_web_image_installs() -> None:
    peer = (ROOT / "tools" / "install-peer-biomero").read_text()
    assert re.search(rf"^VERSION={re.escape(pinned('BIOMERO_VERSION'))}$", peer, re.MULTILINE)
