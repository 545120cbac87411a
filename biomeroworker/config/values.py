"""Value parsers for slurm-config.ini keys: text in, typed value out, ValueError with
what is expected otherwise."""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Callable, Iterable
from datetime import date

from biomeroworker.redaction import redact

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- value parsers
# Each takes the stripped text and returns the typed value or raises ValueError
# whose message says what was expected.

_BOOLEANS = {
    "true": True,
    "yes": True,
    "on": True,
    "1": True,
    "false": False,
    "no": False,
    "off": False,
    "0": False,
}


def _text(text: str) -> str:
    return text


def _boolean(text: str) -> bool:
    try:
        return _BOOLEANS[text.lower()]
    except KeyError:
        raise ValueError("expected true or false (also yes/no, on/off, 1/0)") from None


def _count(text: str) -> int:
    """A whole number >= 0."""
    try:
        number = int(text)
    except ValueError:
        raise ValueError("expected a whole number >= 0") from None
    if number < 0:
        raise ValueError("expected a whole number >= 0")
    return number


_USER_NAME = re.compile(r"[A-Za-z0-9._@-]+")


def _user_names(text: str) -> tuple[str, ...]:
    """Account names separated by commas or spaces."""
    names = tuple(name for name in re.split(r"[,\s]+", text) if name)
    bad = [name for name in names if not _USER_NAME.fullmatch(name)]
    if bad:
        raise ValueError(f"expected account names separated by commas, not {bad[0]!r}")
    return names


def _positive_int(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise ValueError("expected a whole number > 0") from None
    if number <= 0:
        raise ValueError("expected a whole number > 0")
    return number


def _seconds(text: str) -> float:
    """A duration in seconds > 0."""
    try:
        number = float(text)
    except ValueError:
        raise ValueError("expected a number of seconds > 0") from None
    if not number > 0 or number == float("inf"):
        raise ValueError("expected a number of seconds > 0")
    return number


def _seconds_or_zero(text: str) -> float:
    try:
        number = float(text)
    except ValueError:
        raise ValueError("expected a number of seconds >= 0 (0 turns it off)") from None
    if not number >= 0 or number == float("inf"):
        raise ValueError("expected a number of seconds >= 0 (0 turns it off)")
    return number


def _absolute_path(text: str) -> str:
    if not text.startswith("/"):
        raise ValueError("expected an absolute path")
    return text


_API_VERSION = re.compile(r"v0\.0\.(3[6-9]|4[0-4])")


def _api_version(text: str) -> str:
    if not _API_VERSION.fullmatch(text):
        raise ValueError("expected a slurmrestd API version v0.0.36 ... v0.0.44, e.g. v0.0.38")
    return text


_HTTP_URL = re.compile(r"https?://[^\s/?#]+/?")


def _http_url(text: str) -> str:
    if not _HTTP_URL.fullmatch(text):
        raise ValueError("expected http(s)://host:port of slurmrestd, e.g. http://127.0.0.1:6820")
    return text.rstrip("/")


def _mirror_url(text: str) -> str:
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", text):
        raise ValueError("expected an http(s) URL, e.g. https://mirror.example.org/biomero")
    return text.rstrip("/")


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError("expected a date YYYY-MM-DD") from None


def _one_of(*options: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.lower()
        if value not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return value

    return parse


_DB_URL = re.compile(r"[A-Za-z][A-Za-z0-9_]*(\+[A-Za-z0-9_]+)?://\S*")


def _database_url(text: str) -> str:
    if not _DB_URL.fullmatch(text):
        raise ValueError(
            "expected a SQLAlchemy URL such as postgresql+psycopg2://user:password@host:5432/db"
        )
    return text


# Password part of dialect+driver://user:password@host/...; the password runs to
# the first "@" (which must be written %40 inside a password).
_URL_PASSWORD = re.compile(r"^(?P<head>[^:/?#]+://[^:/@?#]*:)(?P<password>[^@]*)(?P<tail>@.*)$")


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (and any JWT or remembered secret
    masked: ``redaction.redact``); anything else unchanged."""
    match = _URL_PASSWORD.match(url)
    if match:
        url = f"{match['head']}***{match['tail']}"
    return redact(url)


DEFAULT_SOURCE = "default"


def _did_you_mean(word: str, candidates: Iterable[str], cutoff: float = 0.6) -> str:
    match = difflib.get_close_matches(word, list(candidates), n=1, cutoff=cutoff)
    return f" (did you mean {match[0]}?)" if match else ""
