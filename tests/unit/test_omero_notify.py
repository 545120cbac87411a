"""E-mail at the end of a run: one SendEmailRequest to the run's user, over the admin session."""

from __future__ import annotations

import types
from typing import Any

import omero.clients
import omero.cmd
import pytest

from biomeroworker.omero import notify
from biomeroworker.omero.side import OmeroSide
from biomeroworker.run_record import RunInputs, RunRecord


class Callback:
    def __init__(self, response: Any) -> None:
        self.response = response
        self.closed = False

    def getResponse(self) -> Any:  # noqa: N802
        return self.response

    def close(self, close_handle: bool) -> None:
        self.closed = close_handle


class AdminSession:
    """The admin gateway's client as notify uses it: submit records the request."""

    def __init__(self, response: Any = None) -> None:
        self.requests: list[Any] = []
        self.callbacks: list[Callback] = []
        self.response = omero.cmd.SendEmailResponse() if response is None else response
        self.c = self

    def submit(self, request: Any, **options: Any) -> Callback:
        self.requests.append(request)
        self.callbacks.append(Callback(self.response))
        return self.callbacks[-1]


def run(
    state: str = "COMPLETED", email: str | None = "alice@example.org", **extra: Any
) -> RunRecord:
    fields: dict[str, Any] = {
        "run_id": "r1",
        "workflow": "cellpose",
        "version": "v1.2.7",
        "user": "alice",
        "state": state,
        "error": None,
        "error_type": None,
        "omero_user_id": 7,
        "inputs": RunInputs({"notify_email": email}),
    }
    return RunRecord(**{**fields, **extra})


def test_a_finished_run_that_asked_sends_one_message_to_its_user_only() -> None:
    admin = AdminSession()
    assert notify.send_run_ended(admin, run()) is True
    (request,) = admin.requests
    assert isinstance(request, omero.cmd.SendEmailRequest)
    assert list(request.userIds) == [7]  # never empty: that would mail every user
    assert list(request.groupIds) == [] and request.everyone is False
    assert "cellpose v1.2.7 completed (run r1)" in request.subject
    assert "results are in OMERO" in request.body
    assert admin.callbacks[0].closed


def test_a_failed_run_says_why() -> None:
    admin = AdminSession()
    notify.send_run_ended(admin, run("FAILED", error="out of memory", error_type="OUT_OF_MEMORY"))
    assert "Error (OUT_OF_MEMORY): out of memory" in admin.requests[0].body


@pytest.mark.parametrize(
    "unwanted",
    [run("RUNNING"), run(email=None), run(omero_user_id=None)],
)
def test_nothing_is_sent_unless_a_finished_run_of_a_user_asked(unwanted: RunRecord) -> None:
    admin = AdminSession()
    assert notify.send_run_ended(admin, unwanted) is False
    assert admin.requests == []


def test_a_refusal_by_the_server_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    refused = omero.cmd.ERR(name="no-sender", parameters={})
    assert notify.send_run_ended(AdminSession(refused), run()) is False
    assert "OMERO did not send the e-mail: no-sender" in caplog.text


def test_the_omero_side_sends_it_over_its_admin_login() -> None:
    admin = AdminSession()
    connector = types.SimpleNamespace(admin=lambda: admin)
    OmeroSide(connector).run_ended(run())  # type: ignore[arg-type]
    OmeroSide(connector).run_ended(run(email=None))  # type: ignore[arg-type]
    assert len(admin.requests) == 1
