"""SSH transport: one fabric connection per process, wrapped, never subclassed.

fabric resolves the ~/.ssh/config alias (HostName, User, Port, IdentityFile,
ProxyJump); commands and streams then go straight through paramiko channels so
binary streams (tar) pass untouched and timeouts are ours.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import fabric
import paramiko

from biomeroworker.errors import CommandError, CommandTimeout, ConnectError, HostKeyError
from biomeroworker.transport.base import CommandResult, shell_join
from biomeroworker.transport.streams import Pump, send_all, sink

log = logging.getLogger(__name__)

_SOCKET_ERRORS = (paramiko.SSHException, EOFError, OSError)

# AES-GCM needs no separate MAC pass; through paramiko it moves data about 1.5x
# faster than its default aes128-ctr + hmac-sha2-256 (bench/bench_staging.py).
_FAST_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
# How much the server may send before we acknowledge, and its largest packet. Fewer,
# larger packets mean fewer passes through paramiko's Python per byte.
_WINDOW_BYTES = 8 << 20
_MAX_PACKET_BYTES = 256 << 10


@dataclass(frozen=True)
class SSHOptions:
    host: str
    connect_timeout_s: float = 15.0
    command_timeout_s: float = 120.0
    keepalive_s: int = 30
    ssh_config_path: str | None = None  # default: ~/.ssh/config


class _Dropped(Exception):
    """The connection went away while a command ran."""


class SSHTransport:
    """Commands and files on a cluster reached through an ~/.ssh/config alias."""

    def __init__(self, options: SSHOptions) -> None:
        self.options = options
        self.commands_run = 0
        self.reconnects = 0
        self._lock = threading.Lock()
        # paramiko's SFTPClient is not safe for concurrent requests: a thread waiting
        # for its answer can read and drop another thread's. One SFTP call at a time.
        self._sftp_lock = threading.Lock()
        self._conn: fabric.Connection | None = None
        self._sftp: paramiko.SFTPClient | None = None

    # -- connection -----------------------------------------------------------

    def _client(self) -> paramiko.SSHClient:
        with self._lock:
            conn = self._conn
            if conn is None or not _is_active(conn):
                if conn is not None:
                    log.info("ssh %s: connection lost; reconnecting", self.options.host)
                    self.reconnects += 1
                    self._drop_locked()
                conn = self._conn = self._connect()
            return conn.client

    def _connect(self) -> fabric.Connection:
        opts = self.options
        config = fabric.Config(runtime_ssh_path=opts.ssh_config_path)
        conn = fabric.Connection(
            opts.host,
            config=config,
            connect_timeout=opts.connect_timeout_s,
            connect_kwargs={"transport_factory": _prefer_fast_ciphers},
        )
        for c in _with_gateways(conn):
            _enforce_host_keys(c)
        try:
            conn.open()
        except Exception as exc:
            raise _connect_error(conn, opts, exc) from None
        transport = conn.client.get_transport()
        if transport is not None:
            transport.set_keepalive(opts.keepalive_s)
        return conn

    def _drop_locked(self) -> None:
        if self._sftp is not None:
            _quietly(self._sftp.close)
        if self._conn is not None:
            _quietly(self._conn.close)
        self._sftp = None
        self._conn = None

    def reconnect(self) -> None:
        """Throw the connection away; the next call opens a new one."""
        with self._lock:
            self.reconnects += 1
            self._drop_locked()

    def close(self) -> None:
        with self._lock:
            self._drop_locked()

    # -- commands -------------------------------------------------------------

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout_s: float | None = None,
        check: bool = True,
        idempotent: bool = False,
        stdin: BinaryIO | None = None,
        stdout: BinaryIO | None = None,
    ) -> CommandResult:
        args = list(argv)
        command = shell_join(args)
        timeout = timeout_s if timeout_s is not None else self.options.command_timeout_s
        # Streams cannot be replayed, so a command fed or read by one is never retried.
        may_retry = idempotent and stdin is None and stdout is None
        for attempt in (1, 2):
            try:
                chan = self._open_channel()
            except _SOCKET_ERRORS as exc:
                # Nothing has run yet: reopening is always safe.
                if attempt == 2:
                    raise ConnectError(
                        f"ssh {self.options.host}: cannot open a channel: {exc}"
                    ) from exc
                self.reconnect()
                continue
            try:
                result = self._execute(chan, args, command, timeout, stdin, stdout)
            except _Dropped as exc:
                if attempt == 2 or not may_retry:
                    raise ConnectError(
                        f"ssh {self.options.host}: connection dropped while running {args[0]}"
                    ) from exc
                log.warning("ssh %s: dropped during %s; retrying once", self.options.host, args[0])
                self.reconnect()
                continue
            if check and result.exit_code != 0:
                raise CommandError(args, result.exit_code, result.stdout, result.stderr)
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _open_channel(self) -> paramiko.Channel:
        transport = self._client().get_transport()
        if transport is None:
            raise paramiko.SSHException("no transport")
        return transport.open_session(window_size=_WINDOW_BYTES, max_packet_size=_MAX_PACKET_BYTES)

    def _execute(
        self,
        chan: paramiko.Channel,
        args: list[str],
        command: str,
        timeout: float,
        stdin: BinaryIO | None,
        stdout: BinaryIO | None,
    ) -> CommandResult:
        started = time.monotonic()
        out_buf, err_buf = bytearray(), bytearray()
        # Without a stdin stream the command reads /dev/null on the far side instead of
        # waiting for our EOF: sending EOF right after a quick command can reach sshd
        # after its CLOSE (paramiko sends it outside the channel lock), and OpenSSH drops
        # the whole connection for "ieof packet referred to nonexistent channel".
        remote = command if stdin is not None else f"{command} </dev/null"
        try:
            chan.exec_command(remote)
        except _SOCKET_ERRORS as exc:
            raise _Dropped(str(exc)) from exc
        self.commands_run += 1
        # Reading a whole window at a time empties paramiko's buffer in one piece; smaller
        # reads shift the rest of the buffer each time.
        pumps = [
            Pump(chan.recv, sink(stdout, out_buf), chunk_bytes=_WINDOW_BYTES),
            Pump(chan.recv_stderr, err_buf.extend, chunk_bytes=_WINDOW_BYTES),
        ]
        if stdin is not None:
            pumps.append(Pump(stdin.read, send_all(chan.send), chan.shutdown_write))
        for p in pumps:
            p.start()
        try:
            self._wait(chan, args, timeout, started)
        finally:
            for p in pumps:
                p.join(timeout=5)
        elapsed = time.monotonic() - started
        code = chan.recv_exit_status() if chan.exit_status_ready() else -1
        transport = chan.get_transport()
        chan.close()
        if code == -1 and (transport is None or not transport.is_active()):
            # No exit status and no connection: we cannot tell whether it finished.
            raise _Dropped("connection lost before the exit status arrived")
        for p in pumps:
            if p.error is not None and not isinstance(p.error, OSError):
                raise p.error
        log.debug("ssh %s: %s -> %s in %.3f s", self.options.host, command, code, elapsed)
        return CommandResult(
            tuple(args),
            code,
            out_buf.decode(errors="replace"),
            err_buf.decode(errors="replace"),
            elapsed,
        )

    def _wait(
        self, chan: paramiko.Channel, args: list[str], timeout: float, started: float
    ) -> None:
        deadline = started + timeout
        while not chan.status_event.wait(0.2):
            transport = chan.get_transport()
            if transport is None or not transport.is_active() or chan.closed:
                if not chan.exit_status_ready():
                    raise _Dropped("transport closed")
                return
            if time.monotonic() > deadline:
                chan.close()
                raise CommandTimeout(args, timeout)

    # -- files ----------------------------------------------------------------

    def _sftp_client(self) -> paramiko.SFTPClient:
        client = self._client()
        with self._lock:
            if self._sftp is None or self._sftp.sock.closed:
                self._sftp = client.open_sftp()
                self._sftp.get_channel().settimeout(self.options.command_timeout_s)
            return self._sftp

    def _sftp_call(self, what: str, fn):  # type: ignore[no-untyped-def]
        """Run an SFTP operation; all of ours are safe to repeat once after a drop."""
        for attempt in (1, 2):
            try:
                with self._sftp_lock:
                    return fn(self._sftp_client())
            except FileNotFoundError:
                raise
            except (TimeoutError, paramiko.SSHException, EOFError, ConnectionError) as exc:
                if attempt == 2:
                    raise ConnectError(f"ssh {self.options.host}: {what} failed: {exc}") from exc
                self.reconnect()
        return None  # pragma: no cover

    def put_file(self, local: Path, remote: str) -> None:
        self._sftp_call(f"put {remote}", lambda s: s.put(str(local), remote))

    def get_file(self, remote: str, local: Path) -> None:
        self._sftp_call(f"get {remote}", lambda s: s.get(remote, str(local)))

    def write_text(self, remote: str, text: str, *, mode: int = 0o600) -> None:
        tmp = f"{remote}.tmp-{uuid.uuid4().hex[:8]}"

        def write(s: paramiko.SFTPClient) -> None:
            with s.open(tmp, "w") as fh:
                fh.chmod(mode)
                fh.write(text.encode())
            s.posix_rename(tmp, remote)

        self._sftp_call(f"write {remote}", write)

    def read_text(self, remote: str) -> str:
        def read(s: paramiko.SFTPClient) -> str:
            with s.open(remote, "r") as fh:
                return fh.read().decode()

        return self._sftp_call(f"read {remote}", read)


def _prefer_fast_ciphers(sock: object, **kwargs: object) -> paramiko.Transport:
    """A paramiko Transport that offers AES-GCM first; the other ciphers stay as fallback."""
    transport = paramiko.Transport(sock, **kwargs)  # type: ignore[arg-type]
    options = transport.get_security_options()
    offered = tuple(options.ciphers)
    fast = tuple(c for c in _FAST_CIPHERS if c in offered)
    options.ciphers = fast + tuple(c for c in offered if c not in fast)
    return transport


def _is_active(conn: fabric.Connection) -> bool:
    transport = conn.client.get_transport()
    return transport is not None and transport.is_active()


def _with_gateways(conn: fabric.Connection) -> list[fabric.Connection]:
    """The connection and every ProxyJump hop fabric made for it."""
    chain = [conn]
    while isinstance(chain[-1].gateway, fabric.Connection):
        chain.append(chain[-1].gateway)
    return chain


def _enforce_host_keys(conn: fabric.Connection) -> None:
    """fabric accepts unknown host keys by default and loads no known_hosts; we do.

    Known keys come from the alias's UserKnownHostsFile (default ~/.ssh/known_hosts,
    as OpenSSH does) and /etc/ssh/ssh_known_hosts. Only an explicit
    ``StrictHostKeyChecking accept-new`` relaxes this.
    """
    client = conn.client
    user_files = str(conn.ssh_config.get("userknownhostsfile", "~/.ssh/known_hosts")).split()
    for path in [*user_files, "/etc/ssh/ssh_known_hosts"]:
        expanded = Path(os.path.expanduser(path))
        if expanded.is_file():
            client.load_system_host_keys(str(expanded))
    strict = str(conn.ssh_config.get("stricthostkeychecking", "yes")).lower()
    policy = paramiko.AutoAddPolicy() if strict == "accept-new" else paramiko.RejectPolicy()
    client.set_missing_host_key_policy(policy)


def _connect_error(conn: fabric.Connection, opts: SSHOptions, exc: Exception) -> ConnectError:
    where = f"{conn.user}@{conn.host}:{conn.port} (ssh alias '{opts.host}')"
    text = str(exc)
    if isinstance(exc, paramiko.BadHostKeyException):
        return HostKeyError(
            f"{where}: the host key does not match known_hosts. If the server was "
            f"reinstalled, verify its new fingerprint with the cluster admins, then run "
            f"`ssh-keygen -R '[{conn.host}]:{conn.port}'` and `ssh {opts.host}` once to accept it."
        )
    if "not found in known_hosts" in text:
        return HostKeyError(
            f"{where}: unknown host key. Verify the fingerprint with the cluster admins and "
            f"accept it once with `ssh {opts.host}` (or append `ssh-keyscan -p {conn.port} "
            f"{conn.host}` to ~/.ssh/known_hosts after checking it). Host key checking stays on."
        )
    if isinstance(exc, paramiko.AuthenticationException):
        keys = conn.connect_kwargs.get("key_filename") or "default keys"
        return ConnectError(f"{where}: authentication failed with {keys}; check IdentityFile")
    if isinstance(exc, socket.gaierror):
        return ConnectError(f"{where}: cannot resolve host name: {exc}")
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return ConnectError(f"{where}: no answer within {opts.connect_timeout_s:g} s")
    return ConnectError(f"{where}: cannot connect: {text or type(exc).__name__}")


def _quietly(fn) -> None:  # type: ignore[no-untyped-def]
    try:
        fn()
    except Exception as exc:  # closing a dead connection may fail; nothing to do
        log.debug("ignored while closing: %s", exc)
