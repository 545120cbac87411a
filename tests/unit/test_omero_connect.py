"""Logging in to OMERO: fresh processes, refused logins, unreachable servers, privileges.

The connector runs omero-py's real BlitzGateway.connect() and suConn(); the server is
tests/omero_standins.py, or nothing at all (a closed local port) in the subprocess tests.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from omero_standins import StandInServer

from biomeroworker.checks import omero_check
from biomeroworker.errors import ConfigError, ConnectError
from biomeroworker.omero.connect import (
    OmeroError,
    OmeroLoginRefused,
    OmeroServer,
    OmeroUnavailable,
    SudoConnector,
)

REPO = Path(__file__).resolve().parents[2]
GROUP = 3


@pytest.fixture
def server() -> StandInServer:
    s = StandInServer()
    s.add_user("biomero-sudo", 0, password="s3cret", privileges=("Sudo",))
    s.add_user("alice", GROUP, "lab")
    return s


def connector(server: StandInServer, user: str = "biomero-sudo", pw: str = "s3cret") -> Any:
    gateway = server.gateway_class()
    return SudoConnector(
        OmeroServer("omero.example", 4064, user, pw),
        gateway=lambda s: gateway(s.user, s.password, host=s.host, port=s.port, secure=True),
    )


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fresh_python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        check=False,
    )


# -- a fresh interpreter ----------------------------------------------------------------


def test_connect_maps_omero_exceptions_in_a_fresh_interpreter() -> None:
    """Nothing imported omero.gateway before: the exception classes must still exist."""
    done = fresh_python("""
        import omero
        from biomeroworker.omero.connect import OmeroRefused, OmeroUnavailable, omero_errors
        for exc, expected in [
            (omero.ConcurrencyException(), OmeroUnavailable),
            (omero.SessionTimeoutException(), OmeroUnavailable),
            (omero.SecurityViolation(message="no"), OmeroRefused),
        ]:
            try:
                with omero_errors("x"):
                    raise exc
            except expected:
                pass
        print("mapped")
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "mapped"


def test_every_omero_module_imports_alone_in_a_fresh_interpreter() -> None:
    for module in ("importer", "exporter", "actions"):  # connect: the test above
        done = fresh_python(f"import biomeroworker.omero.{module}")
        assert done.returncode == 0, (module, done.stderr)


def test_the_forms_and_result_handling_import_without_omero_py() -> None:
    """The non-OMERO test phase (and the fuzz tests) import these before omero-py exists."""
    done = fresh_python("""
        import sys
        for name in ("omero", "Ice", "Glacier2"):
            sys.modules[name] = None  # any import of them fails
        import biomeroworker.omero.forms, biomeroworker.omero.options
        import biomeroworker.omero.results, biomeroworker.omero.labels
    """)
    assert done.returncode == 0, done.stderr


def test_a_real_login_to_a_closed_port_is_omero_unavailable_in_a_fresh_interpreter() -> None:
    done = fresh_python(f"""
        from biomeroworker.omero.connect import OmeroServer, OmeroUnavailable, SudoConnector
        connector = SudoConnector(OmeroServer("127.0.0.1", {closed_port()}, "sudo", "s3cret"))
        try:
            with connector("alice", None):
                pass
        except OmeroUnavailable as exc:
            print(exc)
    """)
    assert done.returncode == 0, done.stderr
    assert "OMERO unavailable" in done.stdout
    assert "s3cret" not in done.stdout + done.stderr


def test_supervise_with_omero_pointing_nowhere_logs_unavailable_not_a_traceback(
    tmp_path: Path,
) -> None:
    database = tmp_path / "tracking.sqlite"
    config = tmp_path / "slurm-config.ini"
    config.write_text(
        "[SSH]\nhost = nowhere\n[SLURM]\nslurm_data_path = d\nslurm_images_path = i\n"
        "slurm_converters_path = c\nslurm_script_path = s\n"
        f"[ANALYTICS]\nsqlalchemy_url = sqlite:///{database}\n"
    )
    recorded = fresh_python(f"""
        from biomeroworker.tracking.application import Tracker
        with Tracker("sqlite:///{database}") as tracker:
            print(tracker.record_run_requested(
                workflow="nuclei", version="v1", user_name="alice",
                inputs={{"source": "omero", "data_type": "Image", "ids": [1], "outputs": {{}}}},
                omero_user_id=2, omero_group_id={GROUP}))
    """)
    assert recorded.returncode == 0, recorded.stderr
    env = {
        "OMERO_HOST": "127.0.0.1",
        "OMERO_PORT": str(closed_port()),
        "OMERO_USER": "biomero-sudo",
        "OMERO_PASSWORD": "s3cret",
        "XDG_DATA_HOME": str(tmp_path / "data"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "biomeroworker", "--config", str(config), "supervise", "--once"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
        check=False,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log
    assert "OMERO unavailable" in log
    assert "Traceback" not in log and "AttributeError" not in log
    assert "s3cret" not in log


# -- the admin login --------------------------------------------------------------------


def test_a_wrong_password_is_a_permanent_error_that_names_the_setting(
    server: StandInServer,
) -> None:
    refused = connector(server, pw="wrong-pw")
    with pytest.raises(OmeroLoginRefused, match="OMERO_PASSWORD") as info, refused("alice", GROUP):
        pass
    assert not isinstance(info.value, ConnectError)  # ConnectError would be retried forever
    assert "wrong-pw" not in str(info.value)


def test_an_unreachable_omero_is_a_transient_connect_error(server: StandInServer) -> None:
    server.reachable = False
    unreachable = connector(server)
    with (
        pytest.raises(OmeroUnavailable, match="OMERO unavailable") as info,
        unreachable("alice", 3),
    ):
        pass
    assert isinstance(info.value, ConnectError)
    assert "s3cret" not in str(info.value)


@pytest.mark.parametrize(
    ("privileges", "problem"),
    [((), "is not an admin"), (("ModifyUser",), "restricted admin without the Sudo privilege")],
)
def test_an_account_that_cannot_sudo_is_refused(
    server: StandInServer, privileges: tuple[str, ...], problem: str
) -> None:
    server.add_user("helper", 0, password="pw", privileges=privileges)
    helper = connector(server, "helper", "pw")
    with pytest.raises(OmeroError, match=problem), helper("alice", GROUP):
        pass


def test_the_user_session_is_in_the_runs_group_and_closed_after_use(server: StandInServer) -> None:
    with connector(server)("alice", GROUP) as conn:
        context = conn.getEventContext()
        assert (context.userName, context.groupId) == ("alice", GROUP)
    assert ("alice", "close", None) in server.calls


def test_the_password_never_shows_in_the_server_settings() -> None:
    server = OmeroServer.from_env(
        {"OMERO_HOST": "h", "OMERO_USER": "sudo", "OMERO_PASSWORD": "s3cret", "OMERO_PORT": "4064"}
    )
    assert "s3cret" not in repr(server)


def test_missing_omero_settings_are_named_without_values() -> None:
    with pytest.raises(ConfigError) as info:
        OmeroServer.from_env({"OMERO_HOST": "h", "OMERO_PASSWORD": "s3cret"})
    assert info.value.problems == ["environment: OMERO_USER is not set (needed to reach OMERO)"]


# -- biomero check ----------------------------------------------------------------------

ENV = {"OMERO_HOST": "omero.example", "OMERO_USER": "biomero-sudo", "OMERO_PASSWORD": "s3cret"}


def gateway_of(server: StandInServer) -> Any:
    gateway = server.gateway_class()
    return lambda s: gateway(s.user, s.password, host=s.host, port=s.port, secure=True)


def test_check_passes_for_an_account_with_sudo(server: StandInServer) -> None:
    check = omero_check(ENV, gateway=gateway_of(server))
    assert check is not None and check.ok, check
    assert "Sudo" in check.detail


def test_check_fails_and_says_which_privilege_is_needed(server: StandInServer) -> None:
    server.add_user("plain", 0, password="pw")
    env = {**ENV, "OMERO_USER": "plain", "OMERO_PASSWORD": "pw"}
    check = omero_check(env, gateway=gateway_of(server))
    assert check is not None and not check.ok
    assert "restricted admin with the Sudo privilege" in check.hint


def test_check_offline_states_what_the_omero_account_needs(tmp_path: Path) -> None:
    config = tmp_path / "slurm-config.ini"
    config.write_text(
        "[SSH]\nhost = nowhere\n[SLURM]\nslurm_data_path = d\nslurm_images_path = i\n"
        "slurm_converters_path = c\nslurm_script_path = s\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "biomeroworker", "--config", str(config), "check", "--offline"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO), **ENV},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "NOTE  omero: not checked offline" in done.stdout
    assert "restricted admin with the Sudo privilege" in done.stdout


def test_check_says_nothing_when_omero_is_not_configured() -> None:
    assert omero_check({}) is None
