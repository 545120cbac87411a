"""Sessions on the OMERO server, opened as the user a run belongs to.

The supervisor has no user session of its own. It logs in once with an admin account
that holds the Sudo privilege (a full admin, or better a restricted admin with only
Sudo) and opens a short session *as the run's user, in the run's group* for each
export or import (``BlitzGateway.suConn``). Everything a run reads or writes goes
through that session, so OMERO's own permissions apply: a user's results land in
their group and nobody reads images they could not read themselves.

Settings come from the environment: ``OMERO_HOST``, ``OMERO_PORT`` (default 4064),
``OMERO_USER``, ``OMERO_PASSWORD``. The password is never logged, printed or put in
an error message.

This module loads omero-py's generated Ice modules itself (``import omero.clients``):
a bare ``import omero`` defines neither ``omero.ServerError`` nor ``omero.model.ImageI``,
and a fresh ``biomero supervise`` must not depend on something else importing them first.
Every module here that uses omero-py imports this one.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import Glacier2
import Ice
import omero
import omero.clients  # loads omero.all: ServerError, SecurityViolation, the model classes

from biomeroworker.errors import ConfigError
from biomeroworker.omero.errors import (
    OmeroError,
    OmeroLoginRefused,
    OmeroRefused,
    OmeroUnavailable,
)
from biomeroworker.redaction import remember

log = logging.getLogger(__name__)

DEFAULT_PORT = 4064
# A sudo session lives this long at most (ms); an export or import of one run must fit.
SESSION_TTL_MS = 6 * 3600 * 1000


# A factory: (user name, group id) -> a context manager yielding a connected gateway.
Connector = Callable[[str, int | None], AbstractContextManager[Any]]


@dataclass(frozen=True)
class OmeroServer:
    host: str
    port: int
    user: str
    password: str = field(repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OmeroServer:
        environ = os.environ if env is None else env
        missing = [n for n in ("OMERO_HOST", "OMERO_USER", "OMERO_PASSWORD") if not environ.get(n)]
        if missing:
            raise ConfigError(
                [f"environment: {name} is not set (needed to reach OMERO)" for name in missing]
            )
        port_text = environ.get("OMERO_PORT", str(DEFAULT_PORT))
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ConfigError(f"environment: OMERO_PORT must be a port number, not {port_text!r}")
        remember(environ["OMERO_PASSWORD"])
        return cls(
            host=environ["OMERO_HOST"],
            port=int(port_text),
            user=environ["OMERO_USER"],
            password=environ["OMERO_PASSWORD"],
        )


def configured(env: Mapping[str, str] | None = None) -> bool:
    """True when the environment names an OMERO server (the supervisor then serves OMERO runs)."""
    environ = os.environ if env is None else env
    return bool(environ.get("OMERO_HOST"))


@contextmanager
def omero_errors(doing: str) -> Iterator[None]:
    """Turn omero-py and Ice exceptions into OmeroUnavailable (retry) or OmeroError."""
    transient = (
        Ice.ConnectionRefusedException,
        Ice.ConnectFailedException,
        Ice.ConnectionLostException,
        Ice.TimeoutException,
        Ice.CommunicatorDestroyedException,
        Ice.ObjectNotExistException,
        omero.ClientError,
        omero.ConcurrencyException,
        omero.SessionTimeoutException,
        omero.RemovedSessionException,
    )
    try:
        yield
    except OmeroError:
        raise
    except transient as exc:
        raise OmeroUnavailable(f"{doing}: OMERO unavailable ({type(exc).__name__})") from exc
    except omero.SecurityViolation as exc:
        message = getattr(exc, "message", "") or "not allowed"
        raise OmeroRefused(f"{doing}: OMERO refused it (SecurityViolation: {message})") from exc
    except omero.ServerError as exc:
        message = getattr(exc, "message", "") or type(exc).__name__
        raise OmeroError(f"{doing}: {type(exc).__name__}: {message}") from exc
    except Ice.Exception as exc:
        raise OmeroUnavailable(f"{doing}: {type(exc).__name__}") from exc


class SudoConnector:
    """Opens sessions as other users through one admin login, reused across runs."""

    def __init__(
        self,
        server: OmeroServer,
        *,
        gateway: Callable[..., Any] | None = None,
        session_ttl_ms: int = SESSION_TTL_MS,
    ) -> None:
        self.server = server
        self._gateway = gateway
        self.session_ttl_ms = session_ttl_ms
        self._admin: Any = None
        self._lock = threading.Lock()

    def _new_gateway(self) -> Any:
        if self._gateway is not None:
            return self._gateway(self.server)
        from omero.gateway import BlitzGateway

        return BlitzGateway(
            self.server.user,
            self.server.password,
            host=self.server.host,
            port=self.server.port,
            secure=True,
        )

    def admin(self) -> Any:
        """The admin connection, logged in again if its session was lost."""
        with self._lock:
            if self._admin is not None and self._admin.keepAlive():
                return self._admin
            where = f"{self.server.user}@{self.server.host}:{self.server.port}"
            with omero_errors(f"logging in to OMERO as {where}"):
                conn = self._new_gateway()
                if not conn.connect():
                    raise login_failure(where, conn.getLastError())
                missing = missing_privileges(conn)
                if missing:
                    conn.close()
                    raise OmeroError(
                        f"OMERO_USER {self.server.user} {missing}; the worker acts for the "
                        "users whose runs it exports and imports, so it needs to be a full "
                        "admin or a restricted admin with the Sudo privilege"
                    )
            self._admin = conn
            return conn

    def check(self) -> str:
        """Log in once and say what the account may do (for ``biomero check``)."""
        admin = self.admin()
        with omero_errors("reading the worker account's privileges"):
            privileges = sorted(str(p) for p in admin_privileges(admin))
        where = f"{self.server.user}@{self.server.host}:{self.server.port}"
        return f"{where} may act for users (admin privileges: {', '.join(privileges)})"

    def group_name(self, admin: Any, group_id: int | None) -> str | None:
        if group_id is None:
            return None
        group = admin.getObject("ExperimenterGroup", int(group_id))
        if group is None:
            raise OmeroError(f"OMERO group {group_id} does not exist")
        return str(group.getName())

    @contextmanager
    def __call__(self, user_name: str, group_id: int | None) -> Iterator[Any]:
        admin = self.admin()
        with omero_errors(f"opening a session for {user_name}"), self._lock:
            # suConn uses the admin connection's service proxies: one thread at a time.
            group = self.group_name(admin, group_id)
            conn = admin.suConn(user_name, group, ttl=self.session_ttl_ms)
        if conn is None:
            raise OmeroError(
                f"cannot open a session for OMERO user {user_name!r} in group {group!r}: "
                f"the user does not exist or {self.server.user} lacks the Sudo privilege"
            )
        log.debug("session for %s in group %s opened", user_name, group)
        try:
            yield conn
        finally:
            try:
                conn.close(hard=True)
            except Exception as exc:  # closing must not hide the real outcome
                log.warning("closing the session of %s failed: %r", user_name, exc)

    def close(self) -> None:
        with self._lock:
            if self._admin is not None:
                self._admin.close()
                self._admin = None


def login_failure(where: str, error: Any) -> OmeroError:
    """What BlitzGateway.connect() returning False means, from its last error.

    A refused password (Glacier2.PermissionDeniedException) is permanent; everything
    else (DNS, timeouts, a server that cannot create sessions yet) is worth a retry."""
    if isinstance(error, Glacier2.PermissionDeniedException):
        return OmeroLoginRefused(
            f"OMERO refused the login of {where}: check OMERO_USER and OMERO_PASSWORD "
            "(not retried until they are fixed and the supervisor restarted)"
        )
    detail = type(error).__name__ if error is not None else "no answer"
    return OmeroUnavailable(
        f"cannot log in to OMERO as {where}: OMERO unavailable ({detail}); check "
        "OMERO_HOST and OMERO_PORT"
    )


def admin_privileges(conn: Any) -> list[str]:
    """The admin privileges of the logged-in account (empty for a non-admin)."""
    return [str(p) for p in conn.getCurrentAdminPrivileges()]


def missing_privileges(conn: Any) -> str | None:
    """None when the account may open sessions as other users, else what it lacks."""
    if not conn.isAdmin():
        return "is not an admin"
    if "Sudo" not in admin_privileges(conn):
        return "is a restricted admin without the Sudo privilege"
    return None
