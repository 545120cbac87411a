"""Metabase made ready for OMERO.biomero's dashboards, on every start, changing only
what is missing.

    python -m biomeroworker.deploy.metabase

Run by the one-shot compose service ``metabase-setup`` (profile ``dashboards``) and by
``deploy/podman/biomero-pod.sh up`` with dashboards on. Steps:

1. wait for ``GET /api/health`` to answer 200 ``{"status": "ok"}`` (Metabase migrates its
   application database first; ``METABASE_WAIT_S`` bounds the wait);
2. ``GET /api/session/properties``: while ``has-user-setup`` is false, create the first
   admin with ``POST /api/setup`` and the ``setup-token`` given there; otherwise log in
   as that admin (``POST /api/session``);
3. add the tracking database (``SQLALCHEMY_URL``, the worker's own) with
   ``POST /api/database`` unless a database of that name, or a PostgreSQL one on that
   host and database name, is already there;
4. with ``METABASE_SECRET_KEY`` set: the embedding secret key (only where Metabase has
   none) and static embedding switched on, so the dashboards OMERO.biomero signs with
   that key open.

Every request carries ``Origin: METABASE_SITE_URL`` when that is set: Metabase records
its "site URL" from the first API request it gets while it has none (the ``Origin``,
else ``X-Forwarded-Host``, else ``Host`` header; maybe-set-site-url in its middleware),
and without it that would be the internal ``http://metabase:3000`` this step uses.

Nothing an admin made is changed or deleted: an existing database entry is left as it
is, and an embedding key that differs from ``METABASE_SECRET_KEY`` is reported, not
replaced. Passwords, the key, the setup token and session ids never reach the output
(``biomeroworker.redaction``).

API facts used (Metabase's source and API reference): the setup endpoint
(src/metabase/setup/api.clj) reads ``token``, ``user {email password first_name
last_name}`` and ``prefs {site_name}``, answers ``{"id": <session>}``, and answers 403 once
any user exists; in current releases it takes no database, so the database is added with
``POST /api/database`` in both paths. Settings are named in kebab-case in
``/api/session/properties``. Authenticated calls carry the session in the
``X-Metabase-Session`` header. ``GET /api/database`` answers ``{"data": [...]}`` (a bare list
before 0.41). ``embedding-secret-key`` must be 64 hexadecimal characters and
``enable-embedding-static`` replaced ``enable-embedding`` in 0.51
(src/metabase/embedding/settings.clj).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from biomeroworker.errors import BiomeroError
from biomeroworker.redaction import redact, redact_logs, remember

log = logging.getLogger("biomeroworker.deploy.metabase")

DEFAULT_URL = "http://metabase:3000"
# The data source name NL-BIOMERO's dashboards refer to, and Metabase's site name.
DATABASE_NAME = "BIOMERO"
SITE_NAME = "BIOMERO"
DEFAULT_WAIT_S = 300.0
POLL_S = 2.0
REQUEST_TIMEOUT_S = 30.0
SESSION_HEADER = "X-Metabase-Session"
_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")


class MetabaseError(BiomeroError):
    """Metabase could not be reached or refused a step; the message says which and why."""


@dataclass(frozen=True)
class TrackingDatabase:
    """The tracking database as Metabase connects to it."""

    name: str
    host: str
    port: int
    dbname: str
    user: str
    password: str

    @classmethod
    def from_url(cls, url: str, name: str) -> TrackingDatabase:
        """From the worker's ``SQLALCHEMY_URL`` (``postgresql+psycopg2://u:p@host:5432/db``)."""
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise MetabaseError(f"SQLALCHEMY_URL is not a database URL: {redact(url)}") from None
        if parsed.get_backend_name() != "postgresql":
            raise MetabaseError(
                f"SQLALCHEMY_URL names a {parsed.get_backend_name()} database; "
                "Metabase is given the PostgreSQL tracking database only"
            )
        if not (parsed.host and parsed.database and parsed.username):
            raise MetabaseError("SQLALCHEMY_URL needs a user, a host and a database name")
        return cls(
            name=name,
            host=parsed.host,
            port=parsed.port or 5432,
            dbname=parsed.database,
            user=parsed.username,
            password=parsed.password or "",
        )

    def payload(self) -> dict[str, Any]:
        """The body of ``POST /api/database``."""
        return {
            "name": self.name,
            "engine": "postgres",
            "details": {
                "host": self.host,
                "port": self.port,
                "dbname": self.dbname,
                "user": self.user,
                "password": self.password,
            },
        }

    def is_listed_as(self, entry: Mapping[str, Any]) -> bool:
        """True when ``entry`` (from ``GET /api/database``) is this database, by name or
        by where it points."""
        if entry.get("name") == self.name:
            return True
        details = entry.get("details") or {}
        return (
            entry.get("engine") == "postgres"
            and details.get("host") == self.host
            and details.get("dbname") == self.dbname
        )


@dataclass(frozen=True)
class Target:
    """What the provisioned Metabase must have, read from the environment."""

    url: str
    admin_email: str
    admin_password: str
    database: TrackingDatabase
    embedding_key: str | None
    site_url: str | None
    site_name: str
    wait_s: float

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Target:
        missing = [
            name
            for name in ("METABASE_ADMIN_EMAIL", "METABASE_ADMIN_PASSWORD", "SQLALCHEMY_URL")
            if not env.get(name)
        ]
        if missing:
            raise MetabaseError(
                f"{', '.join(missing)} not set: Metabase's first admin and the tracking "
                "database come from them (.env, see docs/deployment.md)"
            )
        password = env["METABASE_ADMIN_PASSWORD"]
        remember(password)
        key = env.get("METABASE_SECRET_KEY") or None
        remember(key)
        if key is not None and not _HEX_KEY.fullmatch(key):
            raise MetabaseError(
                "METABASE_SECRET_KEY must be 64 hexadecimal characters (Metabase refuses "
                "any other embedding key); make one with `openssl rand -hex 32`"
            )
        database = TrackingDatabase.from_url(env["SQLALCHEMY_URL"], DATABASE_NAME)
        remember(database.password)
        try:
            wait_s = float(env.get("METABASE_WAIT_S") or DEFAULT_WAIT_S)
        except ValueError:
            raise MetabaseError("METABASE_WAIT_S must be a number of seconds") from None
        return cls(
            url=(env.get("METABASE_URL") or DEFAULT_URL).rstrip("/"),
            admin_email=env["METABASE_ADMIN_EMAIL"],
            admin_password=password,
            database=database,
            embedding_key=key,
            site_url=(env.get("METABASE_SITE_URL") or "").rstrip("/") or None,
            site_name=SITE_NAME,
            wait_s=wait_s,
        )


class Client:
    """Metabase's REST API: JSON in and out, errors as MetabaseError with secrets masked."""

    def __init__(self, url: str, *, origin: str | None = None) -> None:
        self.url = url
        self.http = requests.Session()
        if origin:
            self.http.headers["Origin"] = origin
        self.session_id: str | None = None

    def call(self, method: str, path: str, body: Any = None) -> Any:
        headers = {SESSION_HEADER: self.session_id} if self.session_id else {}
        try:
            response = self.http.request(
                method, self.url + path, json=body, headers=headers, timeout=REQUEST_TIMEOUT_S
            )
        except requests.RequestException as exc:
            raise MetabaseError(f"{method} {path}: {redact(str(exc))}") from None
        if not response.ok:
            raise MetabaseError(f"{method} {path}: HTTP {response.status_code}: {_why(response)}")
        if not response.content:
            return None
        # Metabase sends maps and lists as JSON, anything else (a setting's string
        # value) as it is (its wrap-streamed-json-response encodes only collections).
        if "json" not in response.headers.get("Content-Type", ""):
            return response.text
        try:
            return response.json()
        except ValueError:
            raise MetabaseError(f"{method} {path}: unreadable JSON: {_why(response)}") from None

    def call_for_map(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        """``call`` for an answer that must be a JSON object."""
        answer = self.call(method, path, body)
        if not isinstance(answer, dict):
            shown = redact(str(answer))[:200]
            raise MetabaseError(f"{method} {path}: expected a JSON object, got {shown!r}")
        return answer

    def log_in(self, session_id: str) -> None:
        remember(session_id)
        self.session_id = session_id


def _why(response: requests.Response) -> str:
    """Metabase's own reason for refusing a request, masked, in one line."""
    try:
        body = response.json()
    except ValueError:
        return redact(response.text.strip()[:300]) or response.reason
    if isinstance(body, dict) and (body.get("message") or body.get("errors")):
        parts = [body.get("message"), body.get("errors")]
        reason = " ".join(str(p) for p in parts if p)
    else:
        reason = str(body)
    return redact(reason)[:300]


def wait_until_up(
    client: Client,
    wait_s: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Return once ``GET /api/health`` says ok; MetabaseError after ``wait_s`` seconds."""
    deadline = clock() + wait_s
    while True:
        try:
            health = client.call("GET", "/api/health")
            if isinstance(health, dict) and health.get("status") == "ok":
                return
            last = f"health is {health!r}"
        except MetabaseError as exc:
            last = str(exc)
        if clock() >= deadline:
            raise MetabaseError(
                f"Metabase at {client.url} is not up after {wait_s:g} s (METABASE_WAIT_S); "
                f"last answer: {last}. Its own log says why (docker compose logs metabase)"
            )
        sleep(POLL_S)


def provision(target: Target, client: Client | None = None, **wait: Any) -> list[str]:
    """Bring Metabase to ``target``; returns what was changed (empty: nothing was).

    Raises MetabaseError for a step that could not be done. ``wait`` passes ``clock``
    and ``sleep`` to ``wait_until_up``.
    """
    client = client or Client(target.url, origin=target.site_url)
    wait_until_up(client, target.wait_s, **wait)
    changed = [_sign_in(client, target)]
    changed.append(_add_database(client, target.database))
    if target.embedding_key is None:
        log.info("METABASE_SECRET_KEY is empty: embedding left as it is")
    else:
        changed.extend(_enable_embedding(client, target.embedding_key))
    return [c for c in changed if c]


def _sign_in(client: Client, target: Target) -> str:
    properties = client.call_for_map("GET", "/api/session/properties")
    if properties.get("has-user-setup"):
        try:
            answer = client.call_for_map(
                "POST",
                "/api/session",
                {"username": target.admin_email, "password": target.admin_password},
            )
        except MetabaseError as exc:
            raise MetabaseError(
                f"Metabase is set up, but logging in as {target.admin_email} failed ({exc}). "
                "METABASE_ADMIN_EMAIL and METABASE_ADMIN_PASSWORD must be an admin's login "
                "there (Metabase keeps the first admin it was given)"
            ) from None
        client.log_in(_session_id(answer))
        log.info("Metabase was set up before; logged in as %s", target.admin_email)
        return ""
    token = properties.get("setup-token")
    if not token:
        raise MetabaseError("Metabase is not set up and offers no setup token")
    remember(token)
    answer = client.call_for_map(
        "POST",
        "/api/setup",
        {
            "token": token,
            "user": {
                "email": target.admin_email,
                "password": target.admin_password,
                "first_name": "BIOMERO",
                "last_name": "Admin",
            },
            "prefs": {"site_name": target.site_name},
        },
    )
    client.log_in(_session_id(answer))
    log.info("created Metabase's first admin, %s", target.admin_email)
    return f"admin {target.admin_email} created"


def _session_id(answer: dict[str, Any]) -> str:
    if not answer.get("id"):
        raise MetabaseError("Metabase answered a login without a session id")
    return str(answer["id"])


def _add_database(client: Client, database: TrackingDatabase) -> str:
    listed = client.call("GET", "/api/database")
    entries = listed.get("data") if isinstance(listed, dict) else listed
    if not isinstance(entries, list):
        raise MetabaseError("GET /api/database: expected the list of databases")
    for entry in entries:
        if database.is_listed_as(entry):
            log.info(
                "Metabase already has database %r (id %s, host %s): left as it is",
                entry.get("name"),
                entry.get("id"),
                (entry.get("details") or {}).get("host", "?"),
            )
            return ""
    added = client.call_for_map("POST", "/api/database", database.payload())
    log.info(
        "added the tracking database to Metabase as %r (id %s): %s:%s/%s as %s",
        database.name,
        added.get("id"),
        database.host,
        database.port,
        database.dbname,
        database.user,
    )
    return f"database {database.name} added"


def _enable_embedding(client: Client, key: str) -> list[str]:
    changed = []
    current = client.call("GET", "/api/setting/embedding-secret-key")
    if not current:
        client.call("PUT", "/api/setting/embedding-secret-key", {"value": key})
        log.info("set Metabase's embedding secret key to METABASE_SECRET_KEY")
        changed.append("embedding secret key set")
    elif current != key:
        raise MetabaseError(
            "Metabase has an embedding secret key that is not METABASE_SECRET_KEY, so the "
            "dashboards OMERO.biomero signs will not open. It was left as it is: put "
            "Metabase's key (Admin settings > Embedding > Static embedding) in "
            "METABASE_SECRET_KEY and recreate omeroweb, or clear it in Metabase"
        )
    # Settings readable by a logged-in user; the static switch exists from 0.51 on.
    properties = client.call_for_map("GET", "/api/session/properties")
    switch = (
        "enable-embedding-static" if "enable-embedding-static" in properties else "enable-embedding"
    )
    if properties.get(switch) is not True:
        client.call("PUT", f"/api/setting/{switch}", {"value": True})
        log.info("switched on Metabase's %s", switch)
        changed.append(f"{switch} on")
    return changed


def main(env: Mapping[str, str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s metabase-setup %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    redact_logs()
    try:
        target = Target.from_env(os.environ if env is None else env)
        log.info("provisioning Metabase at %s", target.url)
        changed = provision(target)
    except MetabaseError as exc:
        log.error("%s", exc)
        return 1
    log.info("done: %s", "; ".join(changed) if changed else "nothing to change")
    return 0


if __name__ == "__main__":
    sys.exit(main())
