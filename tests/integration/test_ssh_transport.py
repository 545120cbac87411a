"""SSH-only behaviour against the real sshd of localslurm: reuse, drops, host keys, aliases."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from pathlib import Path

import pytest

from biomeroworker.errors import ConnectError, HostKeyError
from biomeroworker.transport.ssh import SSHOptions, SSHTransport


def _alias_config(tmp_path: Path, cluster, body: str) -> str:  # type: ignore[no-untyped-def]
    path = tmp_path / "ssh_config"
    path.write_text(body.format(ssh=cluster.ssh_dir))
    return str(path)


def _drop_socket(transport: SSHTransport) -> None:
    """Cut the TCP connection under paramiko, as a network blip would."""
    client = transport._client()
    client.get_transport().sock.close()  # type: ignore[union-attr]


def test_commands_share_one_tcp_connection(cluster) -> None:  # type: ignore[no-untyped-def]
    transport = SSHTransport(SSHOptions(cluster.alias))
    try:
        seen = {transport.run(["printenv", "SSH_CONNECTION"]).stdout for _ in range(5)}
        assert len(seen) == 1
        assert transport.reconnects == 0
    finally:
        transport.close()


def test_messages_leave_at_once_without_waiting_for_acks(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """TCP_NODELAY on the connection's socket (and on a ProxyJump gateway's): with Nagle
    on, every channel open waited for the server's delayed ACK (about 40 ms)."""
    direct = SSHTransport(SSHOptions(cluster.alias))
    config = _alias_config(
        tmp_path,
        cluster,
        "Host jumped\n  HostName 127.0.0.1\n  Port 2222\n  User hpcuser\n"
        "  IdentityFile {ssh}/id_ed25519\n  ProxyJump localslurm\n"
        "Host localslurm\n  HostName 127.0.0.1\n  Port 2222\n  User hpcuser\n"
        "  IdentityFile {ssh}/id_ed25519\n",
    )
    jumped = SSHTransport(SSHOptions("jumped", ssh_config_path=config))
    try:
        direct.run(["true"])
        jumped.run(["true"])
        sock = direct._client().get_transport().sock
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        gateway = jumped._conn.gateway  # type: ignore[union-attr]
        gateway_sock = gateway.client.get_transport().sock
        assert gateway_sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        direct.close()
        jumped.close()


def test_alias_supplies_host_port_user_and_key(cluster) -> None:  # type: ignore[no-untyped-def]
    transport = SSHTransport(SSHOptions(cluster.alias))
    try:
        assert transport.run(["whoami"]).stdout.strip() == cluster.user
        assert transport.run(["printenv", "SSH_CONNECTION"]).stdout.split()[-1] == "2222"
    finally:
        transport.close()


def test_proxyjump_in_the_alias_is_followed(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = _alias_config(
        tmp_path,
        cluster,
        "Host jumped\n  HostName 127.0.0.1\n  Port 2222\n  User hpcuser\n"
        "  IdentityFile {ssh}/id_ed25519\n  ProxyJump localslurm\n"
        "Host localslurm\n  HostName 127.0.0.1\n  Port 2222\n  User hpcuser\n"
        "  IdentityFile {ssh}/id_ed25519\n",
    )
    transport = SSHTransport(SSHOptions("jumped", ssh_config_path=config))
    try:
        # Through the jump host, sshd sees the connection coming from itself.
        assert transport.run(["whoami"]).stdout.strip() == cluster.user
    finally:
        transport.close()


def test_unknown_host_key_is_refused_with_a_hint(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # "localhost" is the same server under a name known_hosts has never seen.
    config = _alias_config(
        tmp_path,
        cluster,
        "Host stranger\n  HostName localhost\n  Port 2222\n  User hpcuser\n"
        "  IdentityFile {ssh}/id_ed25519\n",
    )
    transport = SSHTransport(SSHOptions("stranger", ssh_config_path=config))
    with pytest.raises(HostKeyError) as info:
        transport.run(["true"])
    message = str(info.value)
    assert "unknown host key" in message
    assert "`Host stranger`" in message
    assert "add this line to" in message


def test_strict_host_key_checking_no_in_the_config_does_not_disable_checks(
    cluster, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    config = _alias_config(
        tmp_path,
        cluster,
        "Host careless\n  HostName localhost\n  Port 2222\n  User hpcuser\n"
        "  IdentityFile {ssh}/id_ed25519\n  StrictHostKeyChecking no\n",
    )
    with pytest.raises(HostKeyError):
        SSHTransport(SSHOptions("careless", ssh_config_path=config)).run(["true"])


def test_refused_connection_names_the_endpoint(tmp_path: Path, cluster) -> None:  # type: ignore[no-untyped-def]
    config = _alias_config(tmp_path, cluster, "Host nothing\n  HostName 127.0.0.1\n  Port 1\n")
    transport = SSHTransport(SSHOptions("nothing", ssh_config_path=config, connect_timeout_s=3))
    with pytest.raises(ConnectError) as info:
        transport.run(["true"])
    assert "127.0.0.1:1" in str(info.value)


def test_dropped_socket_between_commands_is_reopened(cluster) -> None:  # type: ignore[no-untyped-def]
    transport = SSHTransport(SSHOptions(cluster.alias))
    try:
        transport.run(["true"])
        _drop_socket(transport)
        time.sleep(0.3)
        assert transport.run(["echo", "back"]).stdout == "back\n"
        assert transport.reconnects == 1
    finally:
        transport.close()


def _count_runs_when_dropped_mid_command(
    cluster, *, idempotent: bool
) -> tuple[int, Exception | None]:  # type: ignore[no-untyped-def]
    transport = SSHTransport(SSHOptions(cluster.alias))
    name = f"drop-{uuid.uuid4().hex[:8]}"
    # A fixed test command (no user input): record that it ran, then take a while.
    script = f"echo ran >> {name}; sleep 2"
    transport.run(["true"])
    timer = threading.Timer(0.7, _drop_socket, args=(transport,))
    timer.start()
    error: Exception | None = None
    try:
        transport.run(["sh", "-c", script], idempotent=idempotent)
    except ConnectError as exc:
        error = exc
    timer.join()
    time.sleep(2.5)
    runs = len(transport.run(["cat", name]).stdout.split())
    transport.close()
    return runs, error


def test_unsafe_command_is_not_retried_after_a_drop(cluster) -> None:  # type: ignore[no-untyped-def]
    runs, error = _count_runs_when_dropped_mid_command(cluster, idempotent=False)
    assert isinstance(error, ConnectError)
    assert runs == 1


def test_idempotent_command_is_retried_once_after_a_drop(cluster) -> None:  # type: ignore[no-untyped-def]
    runs, error = _count_runs_when_dropped_mid_command(cluster, idempotent=True)
    assert error is None
    assert runs == 2
