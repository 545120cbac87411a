"""Secrets never reach a message: URL passwords, JWTs and remembered values."""

from __future__ import annotations

import logging
import sys

import pytest

from biomeroworker.redaction import RedactingFilter, redact, remember
from biomeroworker.slurm.rest.errors import RestAuthError
from biomeroworker.slurm.rest.token import TokenCommand
from biomeroworker.tracking.store import redact as redact_url

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJleHAiOjQxMDI0NDQ4MDAsImlhdCI6MTcwMDAwMDAwMCwic3VuIjoiaHBjdXNlciJ9."
    "c2lnbmF0dXJlLWNhbmFyeS0xMjM0NTY3ODkw"
)


@pytest.mark.parametrize(
    "text",
    [
        f"token {JWT} refused",
        f"SLURM_JWT={JWT}",
        f"header X-SLURM-USER-TOKEN:{JWT}",
        f"{JWT[3:]}",  # no eyJ header, three long base64url parts
    ],
)
def test_jwts_are_masked_wherever_they_appear(text: str) -> None:
    assert "c2lnbmF0dXJl" not in redact(text)
    assert "***" in redact(text)


@pytest.mark.parametrize(
    ("text", "hidden"),
    [
        ("connect postgresql+psycopg2://bio:s3cr3t@db:5432/x failed", "s3cr3t"),
        ("to https://user:p@ss/w0rd@host/path: refused", "p@ss/w0rd"),
        ("two: a://u:one1@h and b://v:two2@k", "one1"),
        ("two: a://u:one1@h and b://v:two2@k", "two2"),
    ],
)
def test_passwords_in_urls_inside_text_are_masked(text: str, hidden: str) -> None:
    out = redact(text)
    assert hidden not in out
    assert "://" in out and "@" in out  # the rest stays readable


def test_ordinary_text_is_left_alone() -> None:
    text = "job 12.3 ended on login01.cluster.example (v1.2.3) at https://host/path"
    assert redact(text) == text


def test_the_url_redactor_covers_jwts_too() -> None:
    assert JWT not in redact_url(f"https://host/?token={JWT}")


def test_remembered_secrets_are_masked_anywhere() -> None:
    remember("omero-Canary-pw-77")
    assert redact("login with omero-Canary-pw-77 failed") == "login with *** failed"


def test_a_token_commands_stdout_never_reaches_its_error() -> None:
    # The command prints a token and then fails: the token must not be in the message.
    script = f"import sys; print('SLURM_JWT={JWT}'); sys.exit(1)"
    with pytest.raises(RestAuthError) as caught:
        TokenCommand([sys.executable, "-c", script]).token()
    assert "c2lnbmF0dXJl" not in str(caught.value)
    assert "exited 1" in str(caught.value)


def test_a_token_on_the_commands_stderr_is_masked() -> None:
    script = f"import sys; sys.exit('bad token {JWT}')"
    with pytest.raises(RestAuthError) as caught:
        TokenCommand([sys.executable, "-c", script]).token()
    assert "c2lnbmF0dXJl" not in str(caught.value)


def test_the_log_filter_redacts_messages_arguments_and_tracebacks() -> None:
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "url %s", ("a://u:pw12@h",), None)
    try:
        raise ValueError(f"boom {JWT}")
    except ValueError:
        record.exc_info = sys.exc_info()
    RedactingFilter().filter(record)
    text = logging.Formatter().format(record)
    assert "pw12" not in text and "c2lnbmF0dXJl" not in text
    assert "boom ***" in text
