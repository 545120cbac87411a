"""Where the tracking database is, and how its failures reach the user.

One rule for the URL: an explicit URL, else env ``SQLALCHEMY_URL``, else
``[ANALYTICS] sqlalchemy_url``, else an SQLite file in the user's data directory.
Every message that names the database goes through ``redact``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import platformdirs
import sqlalchemy.exc
from eventsourcing.persistence import PersistenceError, RecordConflictError
from sqlalchemy.engine import URL, make_url

from biomeroworker.redaction import redact as redact_secrets
from biomeroworker.redaction import remember
from biomeroworker.tracking.errors import TrackingStoreError

ENV_URL = "SQLALCHEMY_URL"


def default_sqlite_url() -> str:
    """The SQLite file used when no database is configured, in the user's data folder."""
    folder = Path(platformdirs.user_data_dir("biomero"))
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrackingStoreError(
            f"no tracking database is configured and the default one cannot be made in "
            f"{folder} ({exc.strerror}); set SQLALCHEMY_URL or [ANALYTICS] sqlalchemy_url"
        ) from None
    return f"sqlite:///{folder / 'tracking.sqlite'}"


def resolve_url(
    explicit: str | None = None,
    *,
    settings_url: str | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """Pick the tracking database URL: explicit > env > settings > SQLite file."""
    environ = os.environ if env is None else env
    for candidate in (explicit, environ.get(ENV_URL), settings_url):
        if candidate and candidate.strip():
            return candidate.strip()
    return default_sqlite_url()


def _split_userinfo(url: str) -> tuple[str, str, str | None, str]:
    """(before user, user, password or None, from '@' on), tolerant of malformed URLs.

    The password runs to the last '@', so an unencoded '@' or '/' in it stays hidden.
    """
    left, at, right = url.rpartition("@")
    if not at:
        return url, "", None, ""
    slashes = left.find("//")
    start = slashes + 2 if slashes >= 0 else 0
    user, colon, password = left[start:].partition(":")
    return left[:start], user, (password if colon else None), at + right


def redact(url: str) -> str:
    """The URL with its password replaced by ***, even when the URL does not parse
    (and any other secret in it masked: ``redaction.redact``)."""
    head, user, password, tail = _split_userinfo(url)
    return redact_secrets(url if password is None else f"{head}{user}:***{tail}")


def _passwords(url: str) -> list[str]:
    """The URL's password as written and as decoded (%40 -> @), when it has one."""
    password = _split_userinfo(url)[2]
    if not password:
        return []
    try:
        decoded = make_url(url).password
    except (sqlalchemy.exc.ArgumentError, ValueError):
        decoded = None
    return [password, *([str(decoded)] if decoded else [])]


def remember_url_password(url: str) -> None:
    """Have ``redaction.redact`` mask this URL's password anywhere from now on."""
    for password in _passwords(url):
        remember(password)


def scrub(text: str, url: str) -> str:
    """``text`` with the URL redacted and every other occurrence of its password masked."""
    text = text.replace(url, redact(url))
    for password in _passwords(url):
        text = text.replace(password, "***")
    return redact_secrets(text)


def parse_url(url: str) -> URL:
    """Parse and check the URL names a dialect we can load, or raise TrackingStoreError."""
    try:
        parsed = make_url(url)
        parsed.get_dialect()
    except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError, ValueError):
        raise TrackingStoreError(
            f"tracking database URL {redact(url)!r} is not a valid SQLAlchemy URL; expected "
            "e.g. postgresql+psycopg2://user:password@host:5432/db or sqlite:///path "
            f"(set {ENV_URL} or [ANALYTICS] sqlalchemy_url)"
        ) from None
    if parsed.get_backend_name() not in ("postgresql", "sqlite"):
        raise TrackingStoreError(
            f"tracking database {redact(url)!r}: only postgresql and sqlite are supported"
        )
    return parsed


def _first_line(exc: BaseException) -> str:
    cause: BaseException = exc
    while cause.__cause__ is not None:
        cause = cause.__cause__
    orig = getattr(cause, "orig", None) or cause
    lines = [line.strip() for line in str(orig).splitlines() if line.strip()]
    return lines[0] if lines else type(orig).__name__


@contextmanager
def store_errors(url: str, doing: str) -> Iterator[None]:
    """Turn database failures into TrackingStoreError with a password-free message.

    Conflicts between concurrent writers pass through: callers retry them.
    """
    try:
        yield
    except RecordConflictError:
        raise
    except (PersistenceError, sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
        detail = scrub(_first_line(exc), url)
        raise TrackingStoreError(
            f"tracking database {redact(url)}: {doing} failed: {detail} "
            f"(check that the database is up and {ENV_URL} or [ANALYTICS] sqlalchemy_url)"
        ) from None
