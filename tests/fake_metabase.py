"""FakeMetabase: a stand-in for Metabase's REST API, because Metabase itself (a JVM
application from its own image or JAR) cannot run here.

As thin as the provisioning needs, and as strict as the real API on what it checks
(src/metabase/setup/api.clj, src/metabase/embedding/settings.clj, the API reference):

- ``GET /api/health``: 503 ``{"status": "initializing"}`` until ``ready``, then 200 ok;
- ``POST /api/setup``: the setup token must match, ``user.email`` and ``user.password`` and
  ``prefs.site_name`` must be there (400 otherwise), and once a user exists it answers 403;
- every other call but ``/api/session/properties`` and ``POST /api/session`` needs a live
  session in ``X-Metabase-Session`` (401 otherwise);
- ``POST /api/database`` needs ``name``, ``engine`` and a ``details`` map (400 otherwise);
- ``PUT /api/setting/<key>`` needs ``{"value": ...}``; ``embedding-secret-key`` must be 64
  hexadecimal characters; enabling embedding with no key generates one, as Metabase does;
- answers are JSON only when they are maps or lists: a setting's string value comes back
  as plain text, an unset one as an empty body (Metabase's JSON middleware);
- the first request other than the health check sets ``site-url`` from its ``Origin``
  (else ``Host``) header while none is set, as Metabase's maybe-set-site-url does.

Every request is recorded in ``requests`` as (method, path) so tests can say which calls
changed something.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")
PUBLIC = {
    ("GET", "/api/health"),
    ("GET", "/api/session/properties"),
    ("POST", "/api/setup"),
    ("POST", "/api/session"),
}


class FakeMetabase:
    """State of one fake instance; ``serve()`` puts it on a local port."""

    def __init__(self, *, static_switch: bool = True) -> None:
        self.ready = True
        self.setup_token = str(uuid.uuid4())
        self.users: dict[str, str] = {}
        self.sessions: set[str] = set()
        self.databases: list[dict[str, Any]] = []
        self.switch = "enable-embedding-static" if static_switch else "enable-embedding"
        self.settings: dict[str, Any] = {
            "embedding-secret-key": None,
            self.switch: False,
            "site-url": None,
        }
        self.requests: list[tuple[str, str]] = []
        # What POST /api/database answers instead of adding (a failed connection test).
        self.database_refusal: str | None = None
        self.url = ""

    # --- what an admin would have done by hand -------------------------------------
    def admin_setup(self, email: str, password: str) -> None:
        self.users[email] = password

    def admin_adds_database(self, name: str, host: str, dbname: str) -> dict[str, Any]:
        entry = {
            "id": len(self.databases) + 1,
            "name": name,
            "engine": "postgres",
            "details": {"host": host, "port": 5432, "dbname": dbname, "user": "someone"},
        }
        self.databases.append(entry)
        return entry

    def writes(self) -> list[tuple[str, str]]:
        """Requests that change state (a login is not one)."""
        return [r for r in self.requests if r[0] != "GET" and r != ("POST", "/api/session")]

    # --- the API --------------------------------------------------------------------
    def handle(self, method: str, path: str, headers: dict[str, str], body: Any) -> tuple[int, Any]:
        self.requests.append((method, path))
        if (method, path) == ("GET", "/api/health"):
            return (200, {"status": "ok"}) if self.ready else (503, {"status": "initializing"})
        if not self.ready:
            return 503, {"status": "initializing"}
        if self.settings["site-url"] is None:
            origin = headers.get("Origin") or f"http://{headers.get('Host')}"
            self.settings["site-url"] = origin
        session = headers.get("X-Metabase-Session")
        if (method, path) not in PUBLIC and session not in self.sessions:
            return 401, "Unauthenticated"
        if (method, path) == ("GET", "/api/session/properties"):
            props: dict[str, Any] = {
                "setup-token": self.setup_token,
                "has-user-setup": bool(self.users),
            }
            if session in self.sessions:
                props[self.switch] = self.settings[self.switch]
            return 200, props
        if (method, path) == ("POST", "/api/setup"):
            return self._setup(body)
        if (method, path) == ("POST", "/api/session"):
            return self._login(body)
        if (method, path) == ("GET", "/api/database"):
            return 200, {"data": self.databases, "total": len(self.databases)}
        if (method, path) == ("POST", "/api/database"):
            return self._add_database(body)
        if path.startswith("/api/setting/"):
            return self._setting(method, path.removeprefix("/api/setting/"), body)
        return 404, "API endpoint does not exist."

    def _session(self) -> str:
        session = str(uuid.uuid4())
        self.sessions.add(session)
        return session

    def _setup(self, body: Any) -> tuple[int, Any]:
        if self.users:
            return 403, {
                "message": "The /api/setup route can only be used to create the first user"
            }
        errors = {}
        if not isinstance(body, dict) or body.get("token") != self.setup_token:
            errors["token"] = "Token does not match the setup token."
        user = body.get("user") if isinstance(body, dict) else None
        user = user if isinstance(user, dict) else {}
        if "@" not in str(user.get("email", "")):
            errors["email"] = "value must be a valid email address."
        if not str(user.get("password", "")).strip():
            errors["password"] = "password is too common."
        prefs = body.get("prefs") if isinstance(body, dict) else None
        if not isinstance(prefs, dict) or not str(prefs.get("site_name", "")).strip():
            errors["site_name"] = "value must be a non-blank string."
        if errors:
            return 400, {"errors": errors}
        self.users[user["email"]] = user["password"]
        return 200, {"id": self._session()}

    def _login(self, body: Any) -> tuple[int, Any]:
        if not isinstance(body, dict) or not body.get("username") or not body.get("password"):
            return 400, {"errors": {"username": "value must be a non-blank string."}}
        if self.users.get(body["username"]) != body["password"]:
            return 401, {"errors": {"password": "did not match stored password"}}
        return 200, {"id": self._session()}

    def _add_database(self, body: Any) -> tuple[int, Any]:
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("name"), str)
            or not isinstance(body.get("engine"), str)
            or not isinstance(body.get("details"), dict)
        ):
            return 400, {"errors": {"name": "non-blank string", "details": "a map"}}
        if self.database_refusal is not None:
            return 400, {"message": self.database_refusal.format(**body["details"])}
        details = {k: v for k, v in body["details"].items() if k != "password"}
        details["password"] = "**MetabasePass**"
        entry = {
            "id": len(self.databases) + 1,
            "name": body["name"],
            "engine": body["engine"],
            "details": details,
            "_password": body["details"].get("password"),
        }
        self.databases.append(entry)
        return 200, {k: v for k, v in entry.items() if k != "_password"}

    def _setting(self, method: str, key: str, body: Any) -> tuple[int, Any]:
        if key not in self.settings:
            return 400, {"message": f"Unknown setting: :{key}"}
        if method == "GET":
            return 200, self.settings[key]
        if method != "PUT" or not isinstance(body, dict) or "value" not in body:
            return 400, {"errors": {"value": "missing"}}
        value = body["value"]
        if key == "embedding-secret-key" and value and not HEX_KEY.fullmatch(str(value)):
            return 400, {
                "message": "Invalid embedding-secret-key! Secret key must be a "
                "hexadecimal-encoded 256-bit key (i.e., a 64-character string)."
            }
        if key == self.switch and value and not self.settings["embedding-secret-key"]:
            self.settings["embedding-secret-key"] = secrets.token_hex(32)
        self.settings[key] = value
        return 204, None

    @contextmanager
    def serve(self) -> Iterator[str]:
        """Serve on 127.0.0.1 (a free port) for the ``with`` block; yields the base URL."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
                status, answer = fake.handle(self.command, self.path, dict(self.headers), body)
                # Metabase encodes only maps and lists as JSON (wrap-streamed-json-response
                # encodes `coll?` bodies); a string, such as a setting's value, goes as it
                # is, and nothing as an empty body.
                if isinstance(answer, dict | list):
                    data, kind = json.dumps(answer).encode(), "application/json"
                else:
                    data, kind = ("" if answer is None else str(answer)).encode(), "text/plain"
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._any()

            def do_POST(self) -> None:
                self._any()

            def do_PUT(self) -> None:
                self._any()

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            yield self.url
        finally:
            server.shutdown()
            server.server_close()
