"""Fixtures that reach the real services started by localslurm/ (Slurm, sshd)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest
import requests

from biomeroworker.config import load_settings
from biomeroworker.prepare import init_cluster
from biomeroworker.transport.local import LocalTransport
from biomeroworker.transport.ssh import SSHOptions, SSHTransport

REPO = Path(__file__).resolve().parents[2]
LOCALSLURM = REPO / "localslurm"
LOCALSLURM_RUN = Path(os.environ.get("LOCALSLURM_HOME", "/var/lib/biomero-localslurm"))


@dataclass(frozen=True)
class LocalCluster:
    alias: str
    user: str
    home: Path
    config_path: Path
    ssh_dir: Path

    def ctl(self, *args: str) -> None:
        subprocess.run([str(LOCALSLURM / "ctl"), *args], check=True, capture_output=True)


@pytest.fixture(scope="session")
def cluster() -> LocalCluster:
    """The local cluster, brought up (idempotently) if anything is missing, and prepared
    for localslurm's config (`biomero init`: folders, job scripts, the native workflow
    environment). Parallel test processes (tools/run-tests) each ask: the first does the
    work under a lock, so no two build the cluster's virtualenv at once on a fresh machine."""
    with _machine_lock("tests-init"):
        proc = subprocess.run([str(LOCALSLURM / "up")], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.fail(f"localslurm/up failed:\n{proc.stdout}\n{proc.stderr}")
        user = "hpcuser"
        cluster = LocalCluster(
            alias="localslurm",
            user=user,
            home=Path(pwd.getpwnam(user).pw_dir),
            config_path=LOCALSLURM / "run" / "slurm-config.ini",
            ssh_dir=LOCALSLURM_RUN / "ssh",
        )
        settings = load_settings(config_file=cluster.config_path)
        options = SSHOptions(cluster.alias, command_timeout_s=1800)
        with contextlib.closing(SSHTransport(options)) as transport:
            list(init_cluster(transport, settings))
    return cluster


@contextlib.contextmanager
def _machine_lock(name: str) -> Iterator[None]:
    """An exclusive lock shared by every test process on this machine (Python opens the
    file close-on-exec: daemons that localslurm/up starts under it do not keep it)."""
    LOCALSLURM_RUN.mkdir(parents=True, exist_ok=True)
    with open(LOCALSLURM_RUN / f"{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def peer_python() -> str:
    """The Python of biomero 2.8.3's own virtualenv (tools/install-peer-biomero, .venv-peer)."""
    proc = subprocess.run(
        [str(REPO / "tools" / "install-peer-biomero")], capture_output=True, text=True
    )
    if proc.returncode != 0:
        pytest.fail(f"tools/install-peer-biomero failed:\n{proc.stderr[-3000:]}")
    return proc.stdout.strip().splitlines()[-1]


REST_URL = "http://127.0.0.1:6820"


def _slurmrestd_pid() -> str | None:
    try:
        return (LOCALSLURM_RUN / "pids" / "slurmrestd.pid").read_text().strip() or None
    except OSError:
        return None


@pytest.fixture(scope="session")
def rest_cluster(cluster: LocalCluster) -> LocalCluster:
    """The cluster with slurmrestd running (idempotent, like localslurm/up)."""
    with _machine_lock("tests-init"):
        proc = subprocess.run([str(LOCALSLURM / "up"), "--rest"], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"localslurm/up --rest failed:\n{proc.stdout}\n{proc.stderr}")
    return cluster


@pytest.fixture(autouse=True)
def slurmrestd_survives(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test that talks to slurmrestd leaves it running: the same process still
    answers afterwards. slurmrestd 22.05 can corrupt its heap on a request and die a
    few requests later (docs/modes.md), so each test is checked, not the session."""
    if "rest_cluster" not in request.fixturenames:
        yield
        return
    request.getfixturevalue("rest_cluster")
    before = _slurmrestd_pid()
    yield
    after = _slurmrestd_pid()
    alive = after is not None and Path(f"/proc/{after}").exists()
    try:
        answered = requests.get(f"{REST_URL}/openapi/v3", timeout=10).status_code > 0
    except requests.RequestException:
        answered = False
    if not (alive and answered and before == after):
        log = LOCALSLURM_RUN / "log" / "slurmrestd.log"
        tail = log.read_text(errors="replace").splitlines()[-8:] if log.exists() else []
        pytest.fail(
            f"slurmrestd did not survive this test (pid {before} -> {after}, alive={alive}, "
            f"answered={answered}); log tail:\n" + "\n".join(tail)
        )


MODES = ("ssh", "local", "rest")


def config_for_mode(text: str, mode: str, shared_path: Path | None = None) -> str:
    """A slurm-config.ini text (localslurm's, with [WORKER]) switched to ``mode``:
    ssh as is; local runs Slurm here with the cluster tree under ``shared_path``;
    rest adds the [REST] section localslurm/rest-up wrote (staging over SSH)."""
    if mode == "ssh":
        return text
    if mode == "local":
        if shared_path is None:
            raise ValueError("local mode needs a shared_path")
        worker = f"[WORKER]\ntransport = local\nshared_path = {shared_path}\n"
        return text.replace("[WORKER]\n", worker, 1)
    overlay = (LOCALSLURM / "run" / "slurm-config-rest.ini").read_text()
    rest = overlay[overlay.index("[REST]") :]
    return text.replace("[WORKER]\n", "[WORKER]\ntransport = rest\n", 1) + "\n" + rest


@pytest.fixture(scope="session")
def ssh_transport(cluster: LocalCluster) -> Iterator[SSHTransport]:
    transport = SSHTransport(SSHOptions(cluster.alias, command_timeout_s=60))
    yield transport
    transport.close()


@pytest.fixture(scope="session")
def local_transport(
    cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> LocalTransport:
    return LocalTransport(home=tmp_path_factory.mktemp("local-home"), command_timeout_s=60)


@pytest.fixture(params=["ssh", "local"])
def transport(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """Each contract test runs over both transports."""
    return request.getfixturevalue(f"{request.param}_transport")


@pytest.fixture
def stopped_slurmdbd(cluster: LocalCluster):  # type: ignore[no-untyped-def]
    """A context manager that takes slurmdbd away and always brings it back."""

    @contextlib.contextmanager
    def stopped() -> Iterator[None]:
        cluster.ctl("stop", "slurmdbd")
        try:
            yield
        finally:
            cluster.ctl("start", "slurmdbd")

    return stopped


PG_SERVER = "postgresql+psycopg2://postgres@127.0.0.1:5432"


def admin_sql(statement: str) -> None:
    """Run one statement on the real PostgreSQL as postgres (autocommit)."""
    conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cursor:
            cursor.execute(statement)
    finally:
        conn.close()


@contextlib.contextmanager
def throwaway_database(prefix: str = "biomero_test") -> Iterator[str]:
    """A new PostgreSQL database for the caller; dropped afterwards."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    admin_sql(f"CREATE DATABASE {name}")
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        admin_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def new_database():  # type: ignore[no-untyped-def]
    """Factory: ``with new_database() as url:`` gives a throwaway PostgreSQL database."""
    return throwaway_database
