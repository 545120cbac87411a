"""Where the JWT for slurmrestd comes from, and when it is renewed.

Three sources, one protocol: a fixed token (config or $SLURM_JWT), a token file that
something else keeps fresh, and a command that issues a new token (for example
``scontrol token username=<u> lifespan=<s>`` where the worker may run it). The token's
``exp`` claim is read, not verified: checking the signature is Slurm's job.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from biomeroworker.redaction import redact, remember
from biomeroworker.slurm.rest.errors import RestAuthError

log = logging.getLogger(__name__)

Clock = Callable[[], float]


class TokenSource(Protocol):
    def token(self) -> str:
        """A token that is not about to expire; RestAuthError when there is none."""
        ...

    def invalidate(self) -> None:
        """The server refused the last token: fetch a new one next time, if possible."""
        ...


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim (seconds since the epoch) of a JWT, or None if it has none."""
    parts = token.split(".")
    if len(parts) != 3:
        raise RestAuthError(
            "the configured JWT is not a token (expected three dot-separated parts)"
        )
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError) as exc:
        raise RestAuthError(f"the configured JWT has an unreadable payload: {exc}") from None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) else None


def _clean(text: str) -> str:
    """A token from ``scontrol token`` output ("SLURM_JWT=...") or a bare token."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    last = lines[-1]
    return last.split("=", 1)[1] if last.startswith("SLURM_JWT=") else last


def _expired_message(exp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(exp))


class StaticToken:
    """A token given once; it cannot be renewed, so an expired one is an error."""

    def __init__(self, token: str, *, clock: Clock = time.time) -> None:
        self._token = _clean(token)
        remember(self._token)
        self._exp = jwt_expiry(self._token)
        self._clock = clock

    def token(self) -> str:
        if self._exp is not None and self._exp <= self._clock():
            raise RestAuthError(
                f"[REST] token expired at {_expired_message(self._exp)}; "
                "use token_file or token_command so the worker can renew it"
            )
        return self._token

    def invalidate(self) -> None:
        """Nothing to renew."""


class TokenFile:
    """A file holding the token. Re-read when it changes, when the token is within
    ``refresh_s`` of its ``exp``, and after the server refused it."""

    def __init__(self, path: str | Path, *, refresh_s: float = 60.0, clock: Clock = time.time):
        self.path = Path(path)
        self.refresh_s = refresh_s
        self._clock = clock
        self._seen: tuple[int, int] | None = None
        self._token = ""
        self._exp: float | None = None

    def _stat(self) -> tuple[int, int]:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise RestAuthError(f"[REST] token_file {self.path}: {exc.strerror or exc}") from None
        return st.st_mtime_ns, st.st_size

    def token(self) -> str:
        stat = self._stat()
        near = self._exp is not None and self._exp - self._clock() < self.refresh_s
        if stat != self._seen or near or not self._token:
            self._read(stat)
        if self._exp is not None and self._exp <= self._clock():
            raise RestAuthError(
                f"[REST] token_file {self.path}: token expired at "
                f"{_expired_message(self._exp)} and the file was not renewed"
            )
        return self._token

    def _read(self, stat: tuple[int, int]) -> None:
        try:
            text = self.path.read_text()
        except OSError as exc:
            raise RestAuthError(f"[REST] token_file {self.path}: {exc.strerror or exc}") from None
        token = _clean(text)
        remember(token)
        if not token:
            raise RestAuthError(f"[REST] token_file {self.path}: file is empty")
        self._token, self._exp, self._seen = token, jwt_expiry(token), stat

    def invalidate(self) -> None:
        self._seen = None


class TokenCommand:
    """Runs ``argv`` (no shell) for a new token whenever the current one is within
    ``refresh_s`` of its ``exp`` or was refused."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        refresh_s: float = 60.0,
        timeout_s: float = 30.0,
        clock: Clock = time.time,
    ) -> None:
        if not argv:
            raise ValueError("token command is empty")
        self.argv = list(argv)
        self.refresh_s = refresh_s
        self.timeout_s = timeout_s
        self._clock = clock
        self._token = ""
        self._exp: float | None = None
        self.runs = 0

    def token(self) -> str:
        stale = self._exp is not None and self._exp - self._clock() < self.refresh_s
        if not self._token or stale:
            self._renew()
        return self._token

    def _renew(self) -> None:
        self.runs += 1
        try:
            proc = subprocess.run(
                self.argv, capture_output=True, text=True, timeout=self.timeout_s, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RestAuthError(
                f"[REST] token_command {self.argv[0]!r} did not run: {redact(str(exc))}"
            ) from None
        token = _clean(proc.stdout)
        remember(token)
        if proc.returncode != 0 or not token:
            # Its stdout is (or holds) the token: only stderr may be shown, redacted.
            tail = proc.stderr.strip().splitlines()[-1:] or ["no message on stderr"]
            raise RestAuthError(
                f"[REST] token_command {self.argv[0]!r} exited {proc.returncode}: {redact(tail[0])}"
            )
        self._token, self._exp = token, jwt_expiry(token)
        log.debug("new slurmrestd token, expires %s", self._exp)

    def invalidate(self) -> None:
        self._token = ""
