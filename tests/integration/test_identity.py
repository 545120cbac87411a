"""Who is asking, and what the supervisor may touch for them: two real OS accounts.

The `biomero` command runs as throwaway accounts (``setpriv`` to their uid, with their
environment saying someone else); the engine that drives the runs runs as root, as a
shared supervisor would.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tifffile

from biomeroworker.config import load_settings
from biomeroworker.prepare import init_cluster
from biomeroworker.runs import RunEngine, RunFailed
from biomeroworker.tracking.application import Tracker
from biomeroworker.transport.ssh import SSHOptions, SSHTransport

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("useradd") or not shutil.which("setpriv"),
    reason="creating OS accounts needs root, useradd and setpriv",
)


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int


@pytest.fixture(scope="module")
def accounts() -> Iterator[tuple[Account, Account]]:
    import pwd

    names = [f"bmid{secrets.token_hex(3)}{tag}" for tag in ("a", "b")]
    made = []
    try:
        for name in names:
            subprocess.run(
                ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                check=True,
                capture_output=True,
            )
            made.append(name)
        found = [pwd.getpwnam(n) for n in names]
        yield tuple(Account(p.pw_name, p.pw_uid, p.pw_gid) for p in found)  # type: ignore[misc]
    finally:
        for name in made:
            subprocess.run(["userdel", name], check=False, capture_output=True)


@pytest.fixture(scope="module")
def env(cluster, new_database, accounts) -> Iterator[dict[str, object]]:  # type: ignore[no-untyped-def]
    # Not under pytest's tmp dir: that is private to root, and the accounts must read it.
    root = Path(tempfile.mkdtemp(prefix="biomero-identity-"))
    root.chmod(0o755)
    with new_database("biomero_identity") as url:
        extra = (
            "[WORKFLOWS]\n"
            "misbehave = misbehave\n"
            f"misbehave_repo = {REPO}/tests/fixtures/misbehave\n"
            "misbehave_job_mem = 100M\n"
        )
        text = cluster.config_path.read_text().replace("[WORKFLOWS]\n", extra, 1)
        text = text.replace("[ANALYTICS]\n", f"[ANALYTICS]\nsqlalchemy_url = {url}\n")
        config = root / "slurm-config.ini"
        config.write_text(text)
        config.chmod(0o644)
        admin_config = root / "admins.ini"
        admin_config.write_text(
            text.replace("[WORKER]\n", f"[WORKER]\nadmins = {accounts[1].name}\n", 1)
        )
        admin_config.chmod(0o644)
        settings = load_settings(config_file=config)
        transport = SSHTransport(SSHOptions(cluster.alias, command_timeout_s=600))
        list(init_cluster(transport, settings))
        tracker = Tracker(url)
        yield {
            "root": root,
            "config": config,
            "admin_config": admin_config,
            "settings": settings,
            "transport": transport,
            "tracker": tracker,
        }
        tracker.close()
        transport.close()
    shutil.rmtree(root, ignore_errors=True)


def _folder(env, name: str, owner: Account, mode: int = 0o755) -> Path:  # type: ignore[no-untyped-def]
    path = env["root"] / f"{name}-{secrets.token_hex(3)}"
    path.mkdir()
    os.chown(path, owner.uid, owner.gid)
    path.chmod(mode)
    return path


def _input(env, owner: Account, mode: int = 0o644) -> Path:  # type: ignore[no-untyped-def]
    folder = _folder(env, "in", owner)
    image = folder / "image.tif"
    tifffile.imwrite(image, np.zeros((8, 8), dtype=np.uint8))
    os.chown(image, owner.uid, owner.gid)
    image.chmod(mode)
    return image


def biomero_as(
    who: Account, *argv: str, config: Path | None = None, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    """`biomero ARGV` as ``who`` (its uid, gid and groups), with only the environment given."""
    environ = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(REPO),
        "HOME": "/nonexistent",
        "LOGNAME": who.name,
        "USER": who.name,
        **extra_env,
    }
    cmd = [
        "setpriv",
        f"--reuid={who.uid}",
        f"--regid={who.gid}",
        "--init-groups",
        sys.executable,
        "-m",
        "biomeroworker",
        *(["--config", str(config)] if config else []),
        *argv,
    ]
    return subprocess.run(cmd, env=environ, capture_output=True, text=True, timeout=120)


def _request_as(env, who: Account, image: Path, output: Path | None = None) -> str:  # type: ignore[no-untyped-def]
    argv = ["run", "misbehave", str(image), "--param", "mode=ok"]
    if output is not None:
        argv += ["--output", str(output)]
    proc = biomero_as(who, *argv, config=env["config"])
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()[1]


def test_a_run_belongs_to_the_os_account_whatever_logname_says(env, accounts) -> None:  # type: ignore[no-untyped-def]
    alice, bob = accounts
    image = _input(env, alice)
    proc = biomero_as(
        alice,
        "run",
        "misbehave",
        str(image),
        config=env["config"],
        LOGNAME=bob.name,
        USER=bob.name,
    )
    assert proc.returncode == 0, proc.stderr
    run_id = proc.stdout.split()[1]
    assert env["tracker"].get_run(run_id)["user"] == alice.name
    # Pretending to be alice through the environment does not make bob her.
    shown = biomero_as(bob, "status", run_id, config=env["config"], LOGNAME=alice.name)
    assert shown.returncode == 2 and "not one of your runs" in shown.stderr
    assert biomero_as(alice, "status", run_id, config=env["config"]).returncode == 0


def test_results_and_cancel_of_someone_elses_run_are_refused(env, accounts) -> None:  # type: ignore[no-untyped-def]
    alice, bob = accounts
    run_id = _request_as(env, alice, _input(env, alice))
    out = _folder(env, "bob-out", bob)
    for argv in (["cancel", run_id], ["results", run_id, "--output", str(out)]):
        proc = biomero_as(bob, *argv, config=env["config"], LOGNAME=alice.name)
        assert proc.returncode == 2, proc
        assert "not one of your runs" in proc.stderr
    assert env["tracker"].get_run(run_id)["state"] == "REQUESTED"
    assert os.listdir(out) == []
    # Her own cancel goes through (no job yet: nothing to scancel, no cluster needed).
    engine = RunEngine(env["settings"], env["transport"], env["tracker"])
    engine.cancel(run_id)


def test_admins_come_from_a_root_owned_config_not_the_environment(env, accounts) -> None:  # type: ignore[no-untyped-def]
    alice, bob = accounts
    run_id = _request_as(env, alice, _input(env, alice))
    tried = biomero_as(
        bob, "status", "--all", "--json", config=env["config"], BIOMERO_ADMINS=bob.name
    )
    assert tried.returncode == 2
    assert "$BIOMERO_ADMINS is ignored" in tried.stderr
    assert "--all needs an admin" in tried.stderr
    # The same key in a config file bob wrote himself counts for nothing.
    own = _folder(env, "bob-config", bob) / "mine.ini"
    shutil.copy(env["admin_config"], own)
    os.chown(own, bob.uid, bob.gid)
    mine = biomero_as(bob, "status", "--all", config=own)
    assert mine.returncode == 2 and "is ignored" in mine.stderr
    # Root's file makes bob an admin: he sees alice's runs.
    granted = biomero_as(bob, "status", run_id, "--json", config=env["admin_config"])
    assert granted.returncode == 0, granted.stderr
    assert alice.name in granted.stdout
    stats = biomero_as(bob, "stats", "--all", "--json", config=env["admin_config"])
    assert stats.returncode == 0 and alice.name in stats.stdout
    refused = biomero_as(alice, "stats", "--all", config=env["admin_config"])
    assert refused.returncode == 2


def test_the_supervisor_refuses_an_output_folder_the_user_may_not_write(env, accounts) -> None:  # type: ignore[no-untyped-def]
    alice, bob = accounts
    bobs = _folder(env, "bob-private", bob, 0o700)
    (bobs / "keep.txt").write_text("bob's")
    # alice cannot even look inside, so she names a folder in it.
    run_id = _request_as(env, alice, _input(env, alice), output=bobs / "results")
    engine = RunEngine(env["settings"], env["transport"], env["tracker"])
    with pytest.raises(RunFailed, match="PathNotAllowed"):
        engine.drive(run_id)
    run = env["tracker"].get_run(run_id)
    assert run["state"] == "FAILED" and run["error_type"] == "PathNotAllowed"
    assert "may not write" in run["error"]
    assert sorted(os.listdir(bobs)) == ["keep.txt"]


def test_the_supervisor_refuses_inputs_the_user_may_not_read(env, accounts) -> None:  # type: ignore[no-untyped-def]
    alice, bob = accounts
    # bob's file is readable when alice names it (the request checks that, as alice)...
    shared = _input(env, bob, mode=0o644)
    run_id = _request_as(env, alice, shared)
    # ...and private by the time the supervisor, running as root, would read it.
    shared.chmod(0o600)
    engine = RunEngine(env["settings"], env["transport"], env["tracker"])
    with pytest.raises(RunFailed, match="PathNotAllowed"):
        engine.drive(run_id)
    run = env["tracker"].get_run(run_id)
    assert "may not read" in run["error"]
    assert [t["kind"] for t in run["tasks"]] == ["stage_up"]


def test_results_in_the_users_own_folder_are_handed_to_the_user(env, accounts) -> None:  # type: ignore[no-untyped-def]
    alice, _ = accounts
    mine = _folder(env, "alice-out", alice)
    (mine / "earlier.txt").write_text("root's, left alone")
    run_id = _request_as(env, alice, _input(env, alice), output=mine / "new" / "results")
    engine = RunEngine(env["settings"], env["transport"], env["tracker"])
    dest = engine.drive(run_id)
    assert (dest / "echo.json").is_file()
    made = [mine / "new", dest, *dest.rglob("*")]
    assert {p.stat().st_uid for p in made} == {alice.uid}
    assert (mine / "earlier.txt").stat().st_uid == 0
