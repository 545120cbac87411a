"""Secrets out of every text a user, a log or the event store may see.

Three kinds are masked with ``***``: the password of any ``scheme://user:password@``
URL in the text, anything shaped like a JWT (three base64url segments, as Slurm's
``scontrol token`` prints), and every secret value this process was given (the
database password, a REST token, the OMERO password), registered with ``remember``
where it is read. Messages are redacted where they are made; the store, the CLI and
the supervisor's log handler redact again on the way out.
"""

from __future__ import annotations

import logging
import re
import threading

MASK = "***"
# The password runs to the last "@" before white space, so an unencoded "@" or "/"
# in it stays hidden; the user name stays readable.
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*:)[^\s]*(?=@)")
_B64 = r"[A-Za-z0-9_-]"
# A JWT header is base64url JSON, so it starts "eyJ"; other three-part tokens count
# when every part is long (version numbers and host names stay readable).
_JWT = re.compile(
    rf"(?<!{_B64})(?:eyJ{_B64}+\.{_B64}+\.{_B64}*|{_B64}{{16,}}\.{_B64}{{16,}}\.{_B64}{{16,}})"
)
# Shorter values are not secrets anyone would choose, and masking them would mangle text.
MIN_SECRET = 4

_lock = threading.Lock()
_secrets: set[str] = set()


def remember(secret: str | None) -> None:
    """Mask ``secret`` wherever ``redact`` sees it from now on (in this process)."""
    if secret and len(secret) >= MIN_SECRET:
        with _lock:
            _secrets.add(secret)


def redact(text: str) -> str:
    """``text`` with URL passwords, JWTs and remembered secrets replaced by ***."""
    text = _URL_PASSWORD.sub(lambda m: m["head"] + MASK, text)
    text = _JWT.sub(MASK, text)
    with _lock:
        known = sorted(_secrets, key=len, reverse=True)
    for secret in known:
        text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    """A handler filter: the formatted message (and traceback) redacted before output."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info:
            formatter = logging.Formatter()
            record.exc_text = redact(formatter.formatException(record.exc_info))
            record.exc_info = None
        return True


def redact_logs(logger: logging.Logger | None = None) -> None:
    """Put a RedactingFilter on every handler of ``logger`` (default: the root logger)."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
