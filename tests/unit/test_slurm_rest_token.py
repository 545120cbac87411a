"""JWT sources: expiry is read from the token, files are re-read, commands are re-run."""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path

import pytest

from biomeroworker.slurm.rest import RestAuthError, StaticToken, TokenCommand, TokenFile
from biomeroworker.slurm.rest.token import jwt_expiry

NOW = 1_800_000_000.0


def make_jwt(exp: float | None, user: str = "hpcuser") -> str:
    """An unsigned-looking HS256 token with the claims ``scontrol token`` sets."""

    def part(obj: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    claims: dict[str, object] = {"iat": int(NOW) - 10, "sun": user}
    if exp is not None:
        claims["exp"] = int(exp)
    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_expiry_is_read_from_the_exp_claim() -> None:
    assert jwt_expiry(make_jwt(NOW + 600)) == NOW + 600
    assert jwt_expiry(make_jwt(None)) is None


def test_a_value_that_is_not_a_jwt_is_refused() -> None:
    with pytest.raises(RestAuthError, match="three dot-separated"):
        jwt_expiry("not-a-token")


def test_static_token_accepts_scontrol_output_form() -> None:
    token = make_jwt(NOW + 600)
    assert StaticToken(f"SLURM_JWT={token}\n", clock=Clock(NOW)).token() == token


def test_expired_static_token_says_how_to_get_renewal() -> None:
    source = StaticToken(make_jwt(NOW - 1), clock=Clock(NOW))
    with pytest.raises(RestAuthError, match="token_file or token_command"):
        source.token()


def test_token_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "jwt"
    first, second = make_jwt(NOW + 3600), make_jwt(NOW + 7200)
    path.write_text(first)
    source = TokenFile(path, clock=Clock(NOW))
    assert source.token() == first
    path.write_text(f"SLURM_JWT={second}\n")
    os.utime(path, ns=(1, 2))  # a new mtime even on coarse-clock filesystems
    assert source.token() == second


def test_token_file_near_expiry_is_reread_and_an_unrenewed_one_fails(tmp_path: Path) -> None:
    path = tmp_path / "jwt"
    path.write_text(make_jwt(NOW + 30))
    clock = Clock(NOW)
    source = TokenFile(path, refresh_s=60, clock=clock)
    assert source.token()  # near expiry but still valid: usable
    clock.now = NOW + 31
    with pytest.raises(RestAuthError, match="was not renewed"):
        source.token()


def test_missing_token_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(RestAuthError, match=r"token_file .*missing"):
        TokenFile(tmp_path / "missing").token()


def _printer(tmp_path: Path, tokens: list[str]) -> list[str]:
    """A real command that prints the next token of ``tokens`` on each run."""
    queue = tmp_path / "queue.json"
    queue.write_text(json.dumps(tokens))
    code = (
        "import json,sys; p=sys.argv[1]; q=json.load(open(p)); "
        "print('SLURM_JWT=' + q.pop(0)); json.dump(q, open(p, 'w'))"
    )
    return [sys.executable, "-c", code, str(queue)]


def test_token_command_runs_once_while_the_token_is_fresh(tmp_path: Path) -> None:
    token = make_jwt(NOW + 900)
    source = TokenCommand(_printer(tmp_path, [token]), clock=Clock(NOW))
    assert [source.token(), source.token()] == [token, token]
    assert source.runs == 1


def test_token_command_runs_again_before_the_token_expires(tmp_path: Path) -> None:
    first, second = make_jwt(NOW + 100), make_jwt(NOW + 1000)
    clock = Clock(NOW)
    source = TokenCommand(_printer(tmp_path, [first, second]), refresh_s=60, clock=clock)
    assert source.token() == first
    clock.now = NOW + 45  # 55 s left, inside the refresh window
    assert source.token() == second


def test_token_command_runs_again_after_the_server_refused_the_token(tmp_path: Path) -> None:
    first, second = make_jwt(NOW + 900), make_jwt(NOW + 900, user="other")
    source = TokenCommand(_printer(tmp_path, [first, second]), clock=Clock(NOW))
    assert source.token() == first
    source.invalidate()
    assert source.token() == second


def test_failing_token_command_reports_its_stderr() -> None:
    argv = [sys.executable, "-c", "import sys; sys.exit('scontrol: Invalid user')"]
    with pytest.raises(RestAuthError, match="exited 1: scontrol: Invalid user"):
        TokenCommand(argv).token()
