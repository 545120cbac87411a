"""SSH transport: one fabric connection per process, wrapped, never subclassed.

fabric resolves the ~/.ssh/config alias (HostName, User, Port, IdentityFile,
ProxyJump); commands and streams then go straight through paramiko channels so
binary streams (tar) pass untouched and timeouts are ours.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
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

from biomeroworker.errors import CommandError, ConnectError, HostKeyError
from biomeroworker.transport.base import CommandResult, shell_join
from biomeroworker.transport.streams import Activity, Pump, TimeLimit, send_all, sink

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
        for c in _with_gateways(conn):
            _no_delay(c)
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
        idle_timeout_s: float | None = None,
    ) -> CommandResult:
        args = list(argv)
        command = shell_join(args)
        timeout = timeout_s if timeout_s is not None else self.options.command_timeout_s
        limit = TimeLimit(timeout, idle_timeout_s)
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
                result = self._execute(chan, args, command, limit, stdin, stdout)
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
        limit: TimeLimit,
        stdin: BinaryIO | None,
        stdout: BinaryIO | None,
    ) -> CommandResult:
        started = time.monotonic()
        activity = Activity()
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
            Pump(chan.recv, sink(stdout, out_buf), chunk_bytes=_WINDOW_BYTES, activity=activity),
            Pump(chan.recv_stderr, err_buf.extend, chunk_bytes=_WINDOW_BYTES, activity=activity),
        ]
        if stdin is not None:
            pumps.append(
                Pump(
                    stdin.read,
                    send_all(chan.send, activity),
                    chan.shutdown_write,
                    activity=activity,
                )
            )
        for p in pumps:
            p.start()
        try:
            self._wait(chan, args, limit, started, activity)
        except BaseException:
            for p in pumps:  # a stalled producer may never return: do not wait long
                p.join(timeout=1)
            raise
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
        self,
        chan: paramiko.Channel,
        args: list[str],
        limit: TimeLimit,
        started: float,
        activity: Activity,
    ) -> None:
        while not chan.status_event.wait(0.2):
            transport = chan.get_transport()
            if transport is None or not transport.is_active() or chan.closed:
                if not chan.exit_status_ready():
                    raise _Dropped("transport closed")
                return
            problem = limit.exceeded(args, started, activity)
            if problem is not None:
                chan.close()
                raise problem

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


def _no_delay(conn: fabric.Connection) -> None:
    """Send each SSH message at once (TCP_NODELAY), as OpenSSH does.

    paramiko leaves Nagle's algorithm on, so a small message written in two pieces waits
    for the server's delayed ACK: every command paid about 40 ms to open its channel
    (44 ms a command against 3 ms with it, on localslurm). A hop through a ProxyJump
    gateway is a channel, not a socket: its gateway's own socket gets it instead.
    """
    transport = conn.client.get_transport()
    sock = getattr(transport, "sock", None)
    if isinstance(sock, socket.socket):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:  # not TCP (a Unix socket from a ProxyCommand): nothing to do
            log.debug("ssh: TCP_NODELAY not set: %s", exc)


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
    as OpenSSH does) and /etc/ssh/ssh_known_hosts. A host with a known key is always
    verified against it. An unknown host is refused, unless the alias says
    ``StrictHostKeyChecking accept-new``: then its key is saved to the first
    UserKnownHostsFile on first use and verified like any other from then on.
    """
    client = conn.client
    user_files = str(conn.ssh_config.get("userknownhostsfile", "~/.ssh/known_hosts")).split()
    for path in [*user_files, "/etc/ssh/ssh_known_hosts"]:
        expanded = Path(os.path.expanduser(path))
        if expanded.is_file():
            client.load_system_host_keys(str(expanded))
    save_to = Path(os.path.expanduser(user_files[0] if user_files else "~/.ssh/known_hosts"))
    strict = str(conn.ssh_config.get("stricthostkeychecking", "yes")).lower()
    policy: paramiko.MissingHostKeyPolicy
    if strict == "accept-new":
        hashed = str(conn.ssh_config.get("hashknownhosts", "no")).lower() == "yes"
        policy = _SaveOnFirstUse(save_to, hashed=hashed)
    else:
        policy = _RefuseUnknown(save_to)
    client.set_missing_host_key_policy(policy)


def _fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's form: SHA256:<unpadded base64 of the key blob's sha256>."""
    digest = base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode()
    return f"SHA256:{digest.rstrip('=')}"


def _known_hosts_line(hostname: str, key: paramiko.PKey, *, hashed: bool = False) -> str:
    name = paramiko.HostKeys.hash_host(hostname) if hashed else hostname
    return f"{name} {key.get_name()} {key.get_base64()}"


class _UnknownHostKey(paramiko.SSHException):
    """The server offered a key for a host no known_hosts file names."""

    def __init__(self, hostname: str, key: paramiko.PKey, known_hosts: Path) -> None:
        self.hostname = hostname
        self.key = key
        self.known_hosts = known_hosts
        super().__init__(f"Server {hostname!r} not found in known_hosts")


class _HostKeyNotSaved(paramiko.SSHException):
    """accept-new could not write the new key down, so it is not trusted either."""


class _RefuseUnknown(paramiko.MissingHostKeyPolicy):
    def __init__(self, known_hosts: Path) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(self, client, hostname, key) -> None:  # type: ignore[no-untyped-def]
        raise _UnknownHostKey(hostname, key, self.known_hosts)


class _SaveOnFirstUse(paramiko.MissingHostKeyPolicy):
    """``StrictHostKeyChecking accept-new``, as OpenSSH means it: trust an unknown
    host's key once, write it to the known_hosts file, and from then on verify it."""

    def __init__(self, known_hosts: Path, *, hashed: bool) -> None:
        self.known_hosts = known_hosts
        self.hashed = hashed

    def missing_host_key(self, client, hostname, key) -> None:  # type: ignore[no-untyped-def]
        try:
            _save_host_key(self.known_hosts, hostname, key, hashed=self.hashed)
        except OSError as exc:
            raise _HostKeyNotSaved(
                f"StrictHostKeyChecking accept-new: cannot save the key of {hostname} to "
                f"{self.known_hosts} ({exc.strerror or exc}); refusing a key that would "
                f"be trusted again unchecked next time. Make that file writable."
            ) from None
        client.get_host_keys().add(hostname, key.get_name(), key)
        log.warning(
            "ssh: first connection to %s: saved its %s key %s to %s "
            "(StrictHostKeyChecking accept-new); it is verified from now on",
            hostname,
            key.get_name(),
            _fingerprint(key),
            self.known_hosts,
        )


def _save_host_key(path: Path, hostname: str, key: paramiko.PKey, *, hashed: bool) -> None:
    """Append one known_hosts line, under a lock; another process may have saved a key
    for the same host meanwhile: the same key is fine, a different one is refused."""
    if not path.parent.is_dir():
        path.parent.mkdir(mode=0o700, parents=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "r+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        existing = f.read()
        known = paramiko.HostKeys()
        for line in existing.decode("utf-8", "replace").splitlines():
            entry = _parse_known_host(line)
            if entry is not None:
                for name in entry.hostnames:
                    known.add(name, entry.key.get_name(), entry.key)
        saved = known.lookup(hostname)
        if saved is not None:
            same = saved.get(key.get_name())
            if same == key:
                return
            raise paramiko.BadHostKeyException(hostname, key, same or next(iter(saved.values())))
        prefix = b"\n" if existing and not existing.endswith(b"\n") else b""
        f.write(prefix + _known_hosts_line(hostname, key, hashed=hashed).encode() + b"\n")
        f.flush()
        os.fsync(f.fileno())


def _parse_known_host(line: str) -> paramiko.hostkeys.HostKeyEntry | None:
    try:
        return paramiko.hostkeys.HostKeyEntry.from_line(line)
    except Exception:  # a line paramiko cannot read is skipped, as OpenSSH skips it
        return None


def _connect_error(conn: fabric.Connection, opts: SSHOptions, exc: Exception) -> ConnectError:
    where = f"{conn.user}@{conn.host}:{conn.port} (ssh alias '{opts.host}')"
    text = str(exc)
    if isinstance(exc, paramiko.BadHostKeyException):
        return HostKeyError(
            f"{where}: the host key of {exc.hostname} does not match known_hosts: it offered "
            f"{exc.key.get_name()} {_fingerprint(exc.key)}, known_hosts has "
            f"{exc.expected_key.get_name()} {_fingerprint(exc.expected_key)}. Refusing to "
            f"connect (StrictHostKeyChecking accept-new never replaces a saved key). If the "
            f"server was reinstalled, verify its new fingerprint with the cluster admins, "
            f"then run `ssh-keygen -R '{exc.hostname}'` and connect again."
        )
    if isinstance(exc, _UnknownHostKey):
        line = _known_hosts_line(exc.hostname, exc.key)
        return HostKeyError(
            f"{where}: unknown host key for {exc.hostname}: {exc.key.get_name()} "
            f"{_fingerprint(exc.key)}. Check this fingerprint with the cluster admins, "
            f"then add this line to {exc.known_hosts}:\n    {line}\n"
            f"or set `StrictHostKeyChecking accept-new` under `Host {opts.host}` in the ssh "
            f"config to save it on first use. Host key checking stays on."
        )
    if isinstance(exc, _HostKeyNotSaved):
        return HostKeyError(f"{where}: {text}")
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
