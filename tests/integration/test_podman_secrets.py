"""The SSH secrets of deploy/podman/biomero-pod.sh, handed to a real podman.

The `--secret` options the script generates for the worker are given to the real
`podman create`/`podman init`, which stage each secret file as the container will see it
(owner and mode included) and write the OCI config that bind-mounts them. The SSH
start-up hook then runs for real as the omero-server account (uid/gid 1000) over exactly
those files, bind-mounted at their targets in a private mount namespace. Only the last
step, the container process itself, is not started by podman: on this machine its
runtime cannot start containers (crun: `setrlimit RLIMIT_NOFILE: Operation not
permitted`, the sandbox lacks CAP_SYS_RESOURCE), but the files and their permissions are
podman's own.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
POD_SCRIPT = ROOT / "deploy" / "podman" / "biomero-pod.sh"
SSH_HOOK = ROOT / "startup" / "10-biomero-ssh.sh"
OMERO_SERVER_UID = 1000

FAKE_PODMAN = """#!/usr/bin/env bash
# FakePodman: records each call's argv, NUL-separated, one file per call.
n=$(find "$FAKE_PODMAN_CALLS" -type f | wc -l)
printf '%s\\0' "$@" > "$FAKE_PODMAN_CALLS/$(printf %04d "$n")"
exit 0
"""


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=check)


@pytest.fixture(scope="module")
def real_podman() -> str:
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed: run tools/install-system-packages")
    if os.geteuid() != 0:
        pytest.skip("needs root (podman storage, mount namespaces)")
    return "podman"


@pytest.fixture
def work() -> Iterator[Path]:
    """A folder uid 1000 can walk into (pytest's tmp_path is root's, mode 0700)."""
    path = Path(tempfile.mkdtemp(prefix="biomero-podman-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def ssh_files(tmp_path: Path) -> dict[str, Path]:
    src = tmp_path / "host-ssh"
    src.mkdir()
    (src / "config").write_text(
        "Host cluster\n  HostName login.example.org\n  User alice\n"
        "  IdentityFile /home/alice/.ssh/id_cluster\n"
    )
    (src / "known_hosts").write_text("login.example.org ssh-ed25519 AAAAC3Nza\n")
    (src / "id_cluster").write_text("PRIVATE KEY\n")
    (src / "id_cluster.pub").write_text("ssh-ed25519 AAAA alice\n")
    for path in src.iterdir():
        path.chmod(0o600)
    return {"config": src / "config", "known_hosts": src / "known_hosts", "key": src / "id_cluster"}


def generated_ssh_secret_options(tmp_path: Path, ssh_files: dict[str, Path]) -> list[str]:
    """The worker's --secret values for the SSH material, as biomero-pod.sh writes them."""
    calls = tmp_path / "calls"
    calls.mkdir()
    fake = tmp_path / "fake-podman"
    fake.write_text(FAKE_PODMAN)
    fake.chmod(0o755)
    env = {
        "PATH": os.environ["PATH"],
        "PODMAN": str(fake),
        "FAKE_PODMAN_CALLS": str(calls),
        "BIOMERO_SSH_CONFIG": str(ssh_files["config"]),
        "BIOMERO_SSH_KNOWN_HOSTS": str(ssh_files["known_hosts"]),
        "BIOMERO_SSH_KEY": str(ssh_files["key"]),
        "OMERO_DB_PASSWORD": "a",
        "OMERO_ROOT_PASSWORD": "b",
        "BIOMERO_DB_PASSWORD": "c",
    }
    result = subprocess.run(
        [str(POD_SCRIPT), "up"], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    for record in sorted(calls.iterdir()):
        argv = record.read_text().split("\0")[:-1]
        if argv[0] == "run" and argv[argv.index("--name") + 1] == "biomeroworker":
            return [
                argv[i + 1]
                for i, a in enumerate(argv)
                if a == "--secret" and argv[i + 1].startswith("biomero-ssh")
            ]
    raise AssertionError("biomero-pod.sh up ran no worker")


@pytest.fixture
def standin_image(real_podman: str, tmp_path: Path) -> Iterator[str]:
    """An empty local image: podman create needs one, nothing runs from it."""
    name = f"localhost/biomero-test-standin:{uuid.uuid4().hex[:8]}"
    empty = tmp_path / "empty.tar"
    subprocess.run(["tar", "-cf", str(empty), "-T", "/dev/null"], check=True)
    podman("import", str(empty), name)
    yield name
    podman("rmi", "-f", name, check=False)


@contextlib.contextmanager
def staged_secrets(image: str, options: list[str], tmp_path: Path) -> Iterator[dict[str, Path]]:
    """Create real secrets under test-only names, create and init a container with the
    generated options, and give target path -> the file podman staged for it (while the
    container exists)."""
    tag = uuid.uuid4().hex[:8]
    sources = {
        "biomero-ssh-config": tmp_path / "host-ssh" / "config",
        "biomero-ssh-known-hosts": tmp_path / "host-ssh" / "known_hosts",
        "biomero-ssh-key": tmp_path / "host-ssh" / "id_cluster",
        "biomero-ssh-key-pub": tmp_path / "host-ssh" / "id_cluster.pub",
    }
    argv: list[str] = []
    created: list[str] = []
    for option in options:
        name, _, rest = option.partition(",")
        test_name = f"t{tag}-{name}"
        podman("secret", "create", test_name, str(sources[name]))
        created.append(test_name)
        argv += ["--secret", f"{test_name},{rest}"]
    container = podman("create", *argv, image, "true").stdout.strip()
    try:
        # Staging happens here; the runtime may then refuse to start (see module doc).
        podman("init", container, check=False)
        static_dir = podman("inspect", container, "--format", "{{.StaticDir}}").stdout.strip()
        spec = json.loads((Path(static_dir) / "config.json").read_text())
        yield {
            m["destination"]: Path(m["source"])
            for m in spec["mounts"]
            if m["destination"].startswith("/run/secrets/biomero-ssh/")
        }
    finally:
        podman("rm", "-f", container, check=False)
        for name in created:
            podman("secret", "rm", name, check=False)


def run_hook_as_omero_server(
    staged: dict[str, Path], work: Path
) -> subprocess.CompletedProcess[str]:
    """10-biomero-ssh.sh as uid/gid 1000, the staged files bind-mounted at their targets.

    ``work`` must be reachable by that user (pytest's own tmp folders are root's, 0700),
    as the container's /run/secrets is."""
    root = work / "container"
    secrets = root / "run" / "secrets" / "biomero-ssh"
    secrets.mkdir(parents=True)
    for folder in (root, root / "run", root / "run" / "secrets", secrets):
        folder.chmod(0o755)
    home = root / "home"
    home.mkdir()
    os.chown(home, OMERO_SERVER_UID, OMERO_SERVER_UID)
    binds = []
    for target, source in staged.items():
        inside = secrets / Path(target).name
        inside.touch()
        binds.append(f"mount --bind {shlex.quote(str(source))} {shlex.quote(str(inside))}")
    as_omero_server = shlex.join(
        [
            "setpriv",
            f"--reuid={OMERO_SERVER_UID}",
            f"--regid={OMERO_SERVER_UID}",
            "--clear-groups",
            "env",
            f"PATH={os.environ['PATH']}",
            f"BIOMERO_SSH_MOUNT={root / 'nothing-mounted'}",
            f"BIOMERO_SSH_SECRETS_DIR={secrets}",
            f"BIOMERO_SSH_DEST={home / '.ssh'}",
            str(SSH_HOOK),
        ]
    )
    script = " && ".join([*binds, as_omero_server])
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "bash", "-c", script],
        capture_output=True,
        text=True,
        check=False,
    )


def test_generated_secrets_are_staged_for_omero_server_and_the_ssh_hook_reads_them(
    standin_image: str, tmp_path: Path, work: Path, ssh_files: dict[str, Path]
) -> None:
    options = generated_ssh_secret_options(tmp_path, ssh_files)

    with staged_secrets(standin_image, options, tmp_path) as staged:
        assert sorted(Path(t).name for t in staged) == [
            "config",
            "id_cluster",
            "id_cluster.pub",
            "known_hosts",
        ]
        for path in staged.values():
            st = path.stat()
            assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (1000, 1000, 0o400)
        result = run_hook_as_omero_server(staged, work)

    assert result.returncode == 0, result.stderr
    dest = work / "container" / "home" / ".ssh"
    assert (dest / "id_cluster").read_text() == "PRIVATE KEY\n"
    assert "IdentityFile ~/.ssh/id_cluster" in (dest / "config").read_text()


def test_without_an_owner_the_hook_cannot_read_the_secrets(
    standin_image: str, tmp_path: Path, work: Path, ssh_files: dict[str, Path]
) -> None:
    # What biomero-pod.sh used to generate: mode 0400 and no uid, so root's files.
    options = [
        ",".join(o for o in option.split(",") if not o.startswith(("uid=", "gid=")))
        for option in generated_ssh_secret_options(tmp_path, ssh_files)
    ]

    with staged_secrets(standin_image, options, tmp_path) as staged:
        assert {p.stat().st_uid for p in staged.values()} == {0}
        result = run_hook_as_omero_server(staged, work)

    assert result.returncode != 0
    assert "Permission denied" in result.stderr
