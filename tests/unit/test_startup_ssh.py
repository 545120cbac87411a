"""startup/10-biomero-ssh.sh, run for real against temporary source and home trees."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

HOOK = Path(__file__).resolve().parents[2] / "startup" / "10-biomero-ssh.sh"

CONFIG = """Host cluster
    HostName login.example.org
    User alice
    IdentityFile /home/alice/.ssh/id_cluster
"""


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    paths = {
        "mount": tmp_path / "mount",
        "secrets": tmp_path / "secrets",
        "dest": tmp_path / "home" / ".ssh",
    }
    paths["mount"].mkdir()
    return paths


def populate(src: Path, config: str = CONFIG, keys: tuple[str, ...] = ("id_cluster",)) -> None:
    src.mkdir(parents=True, exist_ok=True)
    (src / "config").write_text(config)
    (src / "known_hosts").write_text("login.example.org ssh-ed25519 AAAAC3Nza\n")
    for key in keys:
        (src / key).write_text(f"PRIVATE {key}\n")
        (src / f"{key}.pub").write_text(f"ssh-ed25519 AAAA {key}\n")


def run_hook(tree: dict[str, Path], **extra: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ["PATH"],
        "BIOMERO_SSH_MOUNT": str(tree["mount"]),
        "BIOMERO_SSH_SECRETS_DIR": str(tree["secrets"]),
        "BIOMERO_SSH_DEST": str(tree["dest"]),
        **extra,
    }
    return subprocess.run([str(HOOK)], env=env, capture_output=True, text=True, check=False)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_copies_only_config_known_hosts_and_the_named_key_pair(tree: dict[str, Path]) -> None:
    populate(tree["mount"], keys=("id_cluster", "id_personal"))
    (tree["mount"] / "authorized_keys").write_text("ssh-rsa AAAA me\n")

    result = run_hook(tree)

    assert result.returncode == 0, result.stderr
    copied = sorted(p.name for p in tree["dest"].iterdir())
    assert copied == ["config", "id_cluster", "id_cluster.pub", "known_hosts"]


def test_sets_700_on_the_directory_600_on_keys_and_644_on_the_rest(
    tree: dict[str, Path],
) -> None:
    populate(tree["mount"])
    for path in tree["mount"].iterdir():
        path.chmod(0o400)

    assert run_hook(tree).returncode == 0
    dest = tree["dest"]
    assert mode(dest) == 0o700
    assert mode(dest / "id_cluster") == 0o600
    assert {mode(dest / n) for n in ("config", "known_hosts", "id_cluster.pub")} == {0o644}


def test_points_identity_files_at_the_copied_keys(tree: dict[str, Path]) -> None:
    populate(tree["mount"])

    assert run_hook(tree).returncode == 0
    config = (tree["dest"] / "config").read_text()
    assert "IdentityFile ~/.ssh/id_cluster" in config
    assert "/home/alice" not in config


def test_refuses_to_start_when_the_config_names_an_absent_key(tree: dict[str, Path]) -> None:
    populate(tree["mount"], keys=())

    result = run_hook(tree)

    assert result.returncode != 0
    assert "IdentityFile 'id_cluster'" in result.stderr
    assert not tree["dest"].exists()


def test_refuses_to_start_without_known_hosts(tree: dict[str, Path]) -> None:
    populate(tree["mount"])
    (tree["mount"] / "known_hosts").unlink()

    result = run_hook(tree)

    assert result.returncode != 0
    assert "known_hosts is missing" in result.stderr


@pytest.mark.parametrize("setting", ["StrictHostKeyChecking no", "  stricthostkeychecking=off"])
def test_refuses_a_config_that_turns_host_key_checking_off(
    tree: dict[str, Path], setting: str
) -> None:
    populate(tree["mount"], config=CONFIG + f"{setting}\n")

    result = run_hook(tree)

    assert result.returncode != 0
    assert "StrictHostKeyChecking no" in result.stderr


def test_accepts_host_key_checking_off_only_when_allowed_and_warns(tree: dict[str, Path]) -> None:
    populate(tree["mount"], config=CONFIG + "    StrictHostKeyChecking no\n")

    result = run_hook(tree, BIOMERO_SSH_ALLOW_NO_HOSTKEY_CHECK="1")

    assert result.returncode == 0, result.stderr
    assert "WARNING" in result.stderr


def test_reads_podman_secrets_when_nothing_is_mounted(tree: dict[str, Path]) -> None:
    populate(tree["secrets"])

    result = run_hook(tree)

    assert result.returncode == 0, result.stderr
    assert str(tree["secrets"]) in result.stderr
    assert (tree["dest"] / "id_cluster").read_text() == "PRIVATE id_cluster\n"


def test_copies_default_key_names_when_the_config_names_none(tree: dict[str, Path]) -> None:
    populate(tree["mount"], config="Host cluster\n    HostName h\n", keys=("id_ed25519",))

    assert run_hook(tree).returncode == 0
    assert (tree["dest"] / "id_ed25519").exists()


def test_explains_where_it_looked_when_no_config_exists(tree: dict[str, Path]) -> None:
    result = run_hook(tree)

    assert result.returncode != 0
    assert str(tree["mount"]) in result.stderr
    assert str(tree["secrets"]) in result.stderr


ACCEPT_NEW = (
    CONFIG + "    StrictHostKeyChecking accept-new\n    UserKnownHostsFile /home/alice/.ssh/kh\n"
)


def test_accept_new_starts_without_known_hosts_and_keeps_saved_keys_across_starts(
    tree: dict[str, Path], tmp_path: Path
) -> None:
    populate(tree["mount"], config=ACCEPT_NEW)
    (tree["mount"] / "known_hosts").unlink()
    state = tmp_path / "var" / "ssh"

    first = run_hook(tree, BIOMERO_SSH_STATE_DIR=str(state))

    assert first.returncode == 0, first.stderr
    link = tree["dest"] / "known_hosts"
    assert link.is_symlink()
    assert link.resolve() == (state / "known_hosts").resolve()
    assert mode(state / "known_hosts") == 0o600
    assert "UserKnownHostsFile ~/.ssh/known_hosts" in (tree["dest"] / "config").read_text()
    # The worker saves a key on first use; a later start (new container, same volume)
    # keeps it and adds the lines of a newly mounted known_hosts once.
    (state / "known_hosts").write_text("[login]:22 ssh-ed25519 SAVED\n")
    (tree["mount"] / "known_hosts").write_text("other ssh-ed25519 MOUNTED\n")
    for _ in range(2):
        again = run_hook(tree, BIOMERO_SSH_STATE_DIR=str(state))
        assert again.returncode == 0, again.stderr
    assert (state / "known_hosts").read_text().splitlines() == [
        "[login]:22 ssh-ed25519 SAVED",
        "other ssh-ed25519 MOUNTED",
    ]
    assert link.read_text() == (state / "known_hosts").read_text()


def test_missing_known_hosts_message_names_both_ways_forward(tree: dict[str, Path]) -> None:
    populate(tree["mount"])
    (tree["mount"] / "known_hosts").unlink()

    result = run_hook(tree)

    assert result.returncode != 0
    assert "biomero check prints it" in result.stderr
    assert "StrictHostKeyChecking accept-new" in result.stderr
