"""Canaries: a database password, a JWT and an OMERO password that must never show.

Every error path these secrets can reach is driven for real (a refused and a missing
database, a bad URL, slurmrestd refusing the token from a token file, a token command
that prints its token and fails, an unreachable OMERO), and then every place a person
or a log could read is searched: exception messages, the stored events (the events
table itself), the read models, logs (caplog and the supervisor's own output),
`biomero status`, `biomero check`, and what the OMERO status script shows.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg2
import pytest
import tifffile

from biomeroworker.errors import BiomeroError
from biomeroworker.tracking.application import Tracker

REPO = Path(__file__).resolve().parents[2]
LOCALSLURM = REPO / "localslurm"
TAG = secrets.token_hex(4)
DB_PASSWORD = f"dbCanary{TAG}"
OMERO_PASSWORD = f"omeroCanary{TAG}"
SIGNATURE = f"jwtCanarySignature{TAG}"


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


# Well formed, never expiring, signed by nobody: slurmrestd refuses it.
JWT = ".".join(
    [_b64({"alg": "HS256", "typ": "JWT"}), _b64({"exp": 4102444800, "sun": "hpcuser"}), SIGNATURE]
)
CANARIES = (DB_PASSWORD, OMERO_PASSWORD, SIGNATURE, JWT.split(".")[1])


def assert_no_canary(texts: list[str]) -> None:
    for number, text in enumerate(texts):
        for canary in CANARIES:
            assert canary not in text, f"secret {canary[:12]}... in text #{number}: {text[:2000]}"


def _with_password(url: str, host: str = "127.0.0.1:5432") -> str:
    return url.replace("postgres@127.0.0.1:5432", f"postgres:{DB_PASSWORD}@{host}")


@pytest.fixture(scope="module")
def env(cluster, new_database, tmp_path_factory) -> Iterator[dict[str, object]]:  # type: ignore[no-untyped-def]
    proc = subprocess.run([str(LOCALSLURM / "up"), "--rest"], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"localslurm/up --rest failed:\n{proc.stdout}\n{proc.stderr}")
    root = tmp_path_factory.mktemp("canary")
    with new_database("biomero_canary") as plain:
        url = _with_password(plain)  # the server trusts 127.0.0.1, so any password works
        token_file = root / "slurm-jwt"
        token_file.write_text(f"SLURM_JWT={JWT}\n")
        script = f"import sys; print('SLURM_JWT={JWT}'); sys.exit(1)"
        configs = {}
        for name, source in {
            "file": f"token_file = {token_file}",
            "command": f'token_command = {sys.executable} -c "{script}"',
        }.items():
            extra = (
                "[WORKFLOWS]\n"
                "misbehave = misbehave\n"
                f"misbehave_repo = {REPO}/tests/fixtures/misbehave\n"
            )
            text = cluster.config_path.read_text().replace("[WORKFLOWS]\n", extra, 1)
            text = text.replace("[ANALYTICS]\n", f"[ANALYTICS]\nsqlalchemy_url = {url}\n")
            text = text.replace(
                "[WORKER]\n",
                "[WORKER]\ntransport = rest\nstep_attempts = 2\nstep_retry_s = 0.2\n",
                1,
            )
            text = text.replace("transport = ssh\n", "")
            text += (
                f"\n[REST]\nurl = http://127.0.0.1:6820\nuser = {cluster.user}\n"
                f"staging = ssh\n{source}\n"
            )
            config = root / f"slurm-config-{name}.ini"
            config.write_text(text)
            configs[name] = config
        image = root / "image.tif"
        tifffile.imwrite(image, np.zeros((8, 8), dtype=np.uint8))
        tracker = Tracker(url)
        yield {"url": url, "plain": plain, "configs": configs, "root": root, "image": image}
        tracker.close()


def biomero(*argv: str, **extra_env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k != "SQLALCHEMY_URL"}
    environ.update(PYTHONPATH=str(REPO), **extra_env)
    proc = subprocess.run(
        [sys.executable, "-m", "biomeroworker", *argv],
        capture_output=True,
        text=True,
        env=environ,
        timeout=300,
    )
    return proc.stdout + proc.stderr


def _events_and_read_models(plain_url: str) -> list[str]:
    """Every stored event (state bytes decoded) and every read-model row, as text."""
    name = plain_url.rsplit("/", 1)[1]
    conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname=name)
    texts = []
    try:
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
            tables = [row[0] for row in cursor.fetchall()]
            assert "workflowtracker_events" in tables
            for table in tables:
                cursor.execute(f'SELECT * FROM "{table}"')  # noqa: S608 (names from the catalogue)
                for row in cursor.fetchall():
                    for value in row:
                        if isinstance(value, bytes | memoryview):
                            texts.append(bytes(value).decode("utf-8", "replace"))
                        else:
                            texts.append(str(value))
    finally:
        conn.close()
    # The events are stored as readable JSON (no compression), so a search means something.
    assert any("misbehave" in text for text in texts)
    return texts


def test_the_database_password_never_shows(env, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG)
    seen = []
    for url in (
        _with_password(env["plain"], host="127.0.0.1:1"),  # refused
        _with_password(env["plain"]) + "_missing",  # no such database
        f"nosuch+driver://postgres:{DB_PASSWORD}@127.0.0.1/x",  # not a URL we can use
        f"postgresql+psycopg2://postgres:{DB_PASSWORD}@no-such-host.invalid/x",
    ):
        with pytest.raises(BiomeroError) as caught:
            Tracker(url)
        seen += [str(caught.value), repr(caught.value)]
    for url in (_with_password(env["plain"], host="127.0.0.1:1"), f"x+y://u:{DB_PASSWORD}@h/d"):
        refused = biomero("status", SQLALCHEMY_URL=url)
        assert "biomero status:" in refused
        seen.append(refused)
    checked = biomero("--config", str(env["configs"]["file"]), "check")
    assert "config" in checked
    seen.append(checked)
    seen += [r.getMessage() for r in caplog.records]
    assert_no_canary(seen)


def _drive_until_failed(env, config: Path) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """Request a run with ``config`` and let `biomero supervise` fail it; (run id, log)."""
    requested = biomero("--config", str(config), "run", "misbehave", str(env["image"]))
    assert requested.startswith("run "), requested
    run_id = requested.split()[1]
    log_path = env["root"] / f"supervise-{run_id}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "biomeroworker", "--config", str(config), "supervise"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        tracker = Tracker(env["url"])
        try:
            deadline = time.monotonic() + 120
            while tracker.get_run(run_id)["state"] != "FAILED":
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.3)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
            tracker.close()
    return run_id, log_path.read_text()


def _drive_in_process_until_failed(env, config: Path) -> str:  # type: ignore[no-untyped-def]
    """The same as a supervisor in this process, so caplog hears every log line."""
    from biomeroworker.config import load_settings
    from biomeroworker.runs import RunEngine
    from biomeroworker.supervisor.leases import LeaseStore
    from biomeroworker.supervisor.loop import Supervisor
    from biomeroworker.transport.ssh import SSHOptions, SSHTransport

    settings = load_settings(config_file=config)
    transport = SSHTransport(SSHOptions("localslurm"))
    with Tracker(env["url"]) as tracker:
        engine = RunEngine(settings, transport, tracker)
        run_id = engine.request("misbehave", [env["image"]], {})
        sup = Supervisor(engine, LeaseStore(tracker.engine, "canary", ttl_s=30), workers=1)
        try:
            deadline = time.monotonic() + 120
            while tracker.get_run(run_id)["state"] != "FAILED":
                assert time.monotonic() < deadline
                sup.cycle()
                time.sleep(0.2)
        finally:
            sup.shutdown()
            transport.close()
    return run_id


def test_the_jwt_never_shows(env, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG)
    # A token file slurmrestd refuses, under `biomero supervise`.
    by_file, log = _drive_until_failed(env, env["configs"]["file"])
    assert "submit job failed" in log  # the refusal was logged (without the token)
    seen = [log, biomero("status", by_file, SQLALCHEMY_URL=env["url"])]
    # A token command that prints its token and fails, in this process.
    by_command = _drive_in_process_until_failed(env, env["configs"]["command"])
    shown = biomero("status", by_command, "--json", SQLALCHEMY_URL=env["url"])
    assert "token_command" in shown and "exited 1" in shown
    seen.append(shown)
    seen += _events_and_read_models(env["plain"])
    seen.append(caplog.text)  # with the tracebacks the supervisor logs
    assert "submit job failed" in caplog.text
    assert_no_canary(seen)
