"""Host key checking against the real sshd of localslurm, with throwaway known_hosts files.

The server is reached as `localhost`, a name the shared known_hosts has never seen, so
every test starts from an unknown host and nothing here touches the shared files.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from biomeroworker.cli import main
from biomeroworker.errors import HostKeyError
from biomeroworker.transport.ssh import SSHOptions, SSHTransport

HOST_ENTRY = "[localhost]:2222"


def _alias(tmp_path: Path, cluster, known_hosts: Path, extra: str = "") -> str:  # type: ignore[no-untyped-def]
    config = tmp_path / "ssh_config"
    config.write_text(
        "Host fresh\n  HostName localhost\n  Port 2222\n  User hpcuser\n"
        f"  IdentityFile {cluster.ssh_dir}/id_ed25519\n"
        f"  UserKnownHostsFile {known_hosts}\n{extra}"
    )
    return str(config)


def _run_once(config: str) -> str:
    transport = SSHTransport(SSHOptions("fresh", ssh_config_path=config, connect_timeout_s=5))
    try:
        return transport.run(["whoami"]).stdout.strip()
    finally:
        transport.close()


def _server_lines() -> set[str]:
    """The server's own keys, as `ssh-keyscan` reports them (one line per key type)."""
    out = subprocess.run(
        ["ssh-keyscan", "-p", "2222", "localhost"], capture_output=True, text=True, check=True
    ).stdout
    return {ln.strip() for ln in out.splitlines() if ln and not ln.startswith("#")}


def _other_key_line(tmp_path: Path, key_type: str) -> str:
    """A known_hosts line for localhost holding a freshly made key: a 'changed' server."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")],
        check=True,
    )
    blob = (tmp_path / "other.pub").read_text().split()[1]
    assert key_type == "ssh-ed25519"
    return f"{HOST_ENTRY} {key_type} {blob}\n"


def test_accept_new_saves_the_key_on_first_use_and_reuses_it(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    known = tmp_path / "state" / "known_hosts"  # neither the folder nor the file exists yet
    config = _alias(tmp_path, cluster, known, "  StrictHostKeyChecking accept-new\n")

    assert _run_once(config) == cluster.user

    saved = known.read_text()
    assert len(saved.splitlines()) == 1
    assert saved.strip() in _server_lines()
    assert saved.startswith(f"{HOST_ENTRY} ")
    assert known.stat().st_mode & 0o777 == 0o600
    # A new connection (as a new process would make) verifies against the saved key and
    # adds nothing.
    assert _run_once(config) == cluster.user
    assert known.read_text() == saved


def test_accept_new_refuses_a_changed_key_and_keeps_the_saved_one(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    known = tmp_path / "known_hosts"
    planted = _other_key_line(tmp_path, "ssh-ed25519")
    known.write_text(planted)
    config = _alias(tmp_path, cluster, known, "  StrictHostKeyChecking accept-new\n")

    with pytest.raises(HostKeyError) as info:
        _run_once(config)

    message = str(info.value)
    assert "does not match known_hosts" in message
    assert "never replaces a saved key" in message
    assert "ssh-keygen -R" in message
    assert known.read_text() == planted


def test_accept_new_refuses_when_the_key_cannot_be_saved(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    config = _alias(
        tmp_path, cluster, blocker / "known_hosts", "  StrictHostKeyChecking accept-new\n"
    )

    with pytest.raises(HostKeyError) as info:
        _run_once(config)

    assert "cannot save the key" in str(info.value)
    assert str(blocker / "known_hosts") in str(info.value)


def test_accept_new_keeps_unrelated_lines_and_a_missing_final_newline(
    cluster, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    known = tmp_path / "known_hosts"
    blob = "AAAAC3NzaC1lZDI1NTE5AAAAIHVuLXJlbGF0ZWQta2V5LWJ5dGVzLTAwMDAw"
    other = f"other.example.org ssh-ed25519 {blob}"
    known.write_text("# a comment\n" + other)  # no newline at the end
    config = _alias(tmp_path, cluster, known, "  StrictHostKeyChecking accept-new\n")

    assert _run_once(config) == cluster.user

    lines = known.read_text().splitlines()
    assert lines[:2] == ["# a comment", other]
    assert len(lines) == 3
    assert lines[2] in _server_lines()


def test_unknown_host_is_refused_with_the_exact_line_to_add(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    known = tmp_path / "known_hosts"
    config = _alias(tmp_path, cluster, known)

    with pytest.raises(HostKeyError) as info:
        _run_once(config)

    message = str(info.value)
    assert f"add this line to {known}:" in message
    line = message.split(f"add this line to {known}:\n", 1)[1].splitlines()[0].strip()
    assert line in _server_lines()
    assert "SHA256:" in message
    assert "StrictHostKeyChecking accept-new" in message
    assert not known.exists()
    # The line it names is the one that works.
    known.write_text(line + "\n")
    assert _run_once(config) == cluster.user


def test_biomero_check_names_the_line_to_add(cluster, tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    known = home / ".ssh" / "known_hosts"
    (home / ".ssh" / "config").write_text(Path(_alias(tmp_path, cluster, known)).read_text())
    monkeypatch.setenv("HOME", str(home))
    config = tmp_path / "slurm-config.ini"
    config.write_text(cluster.config_path.read_text().replace("host = localslurm", "host = fresh"))

    assert main(["--config", str(config), "check"]) == 1

    out = capsys.readouterr().out
    assert "FAIL  connect" in out
    assert f"add this line to {known}:" in out
    assert any(line in out for line in _server_lines())
