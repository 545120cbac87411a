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
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

from biomeroworker.errors import BiomeroError, ConfigError, ConnectError
from biomeroworker.redaction import remember

log = logging.getLogger(__name__)

DEFAULT_PORT = 4064
# A sudo session lives this long at most (ms); an export or import of one run must fit.
SESSION_TTL_MS = 6 * 3600 * 1000


class OmeroError(BiomeroError):
    """OMERO refused something (permissions, missing objects, bad data): not retried."""


class OmeroUnavailable(ConnectError):
    """OMERO could not be reached or the session broke: the step is retried later."""


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
    import Ice
    import omero
    import omero.clients  # defines omero.ConcurrencyException and the others

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
                    raise OmeroUnavailable(
                        f"cannot log in to OMERO as {where}: check OMERO_HOST, OMERO_PORT, "
                        "OMERO_USER and OMERO_PASSWORD"
                    )
                if not conn.isAdmin():
                    conn.close()
                    raise OmeroError(
                        f"OMERO_USER {self.server.user} is not an admin; it needs the Sudo "
                        "privilege to act for the users whose runs it imports"
                    )
            self._admin = conn
            return conn

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
        with omero_errors(f"opening a session for {user_name}"):
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
