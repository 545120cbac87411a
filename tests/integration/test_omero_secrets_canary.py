"""The secrets canary, OMERO half: runs after omero-py is installed (tools/run-tests).

The fixtures and the canary check are the ones in test_secrets_canary.py.
"""

from __future__ import annotations

import logging

import pytest
from test_secrets_canary import (  # the same canaries, database and configs
    JWT,
    OMERO_PASSWORD,
    _events_and_read_models,
    assert_no_canary,
    biomero,
    env,
)

from biomeroworker.errors import BiomeroError
from biomeroworker.run_record import RunInputs, RunRecord
from biomeroworker.tracking.application import Tracker

__all__ = ["env"]  # a fixture, imported for the tests below


def test_a_message_carrying_every_secret_is_stored_and_shown_without_them(env) -> None:  # type: ignore[no-untyped-def]
    """Whatever message some library builds, the tracker records it redacted, and the
    OMERO script shows the recorded text."""
    from biomeroworker.omero import actions
    from biomeroworker.omero.connect import OmeroServer

    OmeroServer.from_env(
        {"OMERO_HOST": "127.0.0.1", "OMERO_USER": "root", "OMERO_PASSWORD": OMERO_PASSWORD}
    )
    with Tracker(env["url"]) as tracker:
        run_id = tracker.record_run_requested(
            workflow="misbehave",
            version="local",
            user_name="carol",
            omero_user_id=7,
            omero_group_id=3,
            inputs={"source": "omero"},
        )
        task = tracker.start_task(run_id, "export")
        leaky = f"login {OMERO_PASSWORD} to {env['url']} with SLURM_JWT={JWT}"
        tracker.record_progress(task, leaky)
        tracker.fail_task(task, "ExportError", leaky)
        tracker.fail_run(run_id, "StepError", leaky)
        user = actions.ScriptUser(name="carol", user_id=7, group_id=3)
        shown = [actions.status(tracker, user), actions.status(tracker, user, run_id)]
        assert "ExportError" in shown[1] or "StepError" in shown[1]
    shown += _events_and_read_models(env["plain"])
    assert_no_canary(shown)


def test_the_omero_password_never_shows(env, caplog, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from biomeroworker.omero.side import OmeroSide

    caplog.set_level(logging.DEBUG)
    unreachable = {
        "OMERO_HOST": "127.0.0.1",
        "OMERO_PORT": "1",
        "OMERO_USER": "root",
        "OMERO_PASSWORD": OMERO_PASSWORD,
    }
    side = OmeroSide.from_env(unreachable)
    run = RunRecord(
        run_id="0" * 32,
        workflow="nuclei",
        version="1",
        user="carol",
        state="RUNNING",
        inputs=RunInputs({"source": "omero", "data_type": "Image", "ids": [1]}),
        omero_user_id=7,
        omero_group_id=3,
    )
    seen = [repr(side)]
    with pytest.raises(BiomeroError) as caught:
        side.export(run, tmp_path)
    seen += [str(caught.value), repr(caught.value)]
    once = biomero("--config", str(env["configs"]["file"]), "supervise", "--once", **unreachable)
    seen.append(once)
    seen += [r.getMessage() for r in caplog.records]
    assert_no_canary(seen)
