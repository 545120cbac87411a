"""What the scripts do: record requests, report status, cancel, get results (own runs only).

The tracker is real (SQLite); the OMERO session is omero-py's BlitzGateway over the
stand-in services of tests/omero_standins.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from omero_standins import StandInServer

from biomeroworker.errors import BiomeroError
from biomeroworker.omero import actions, forms
from biomeroworker.tracking.application import Tracker
from biomeroworker.tracking.errors import UnknownRunError
from biomeroworker.workflows.catalog import Workflow
from biomeroworker.workflows.descriptor import parse_descriptor

GROUP = 3
DESCRIPTOR = {
    "schema-version": "cytomine-0.1",
    "name": "Seg",
    "container-image": {"image": "org/seg"},
    "inputs": [{"id": "diameter", "type": "Number", "default-value": 30}],
}


@pytest.fixture
def tracker(tmp_path: Path) -> Iterator[Tracker]:
    with Tracker(f"sqlite:///{tmp_path / 'tracking.sqlite'}") as opened:
        yield opened


@pytest.fixture
def server() -> StandInServer:
    s = StandInServer()
    s.add_user("alice", GROUP, "lab")
    s.add_user("bob", GROUP, "lab")
    return s


def session(server: StandInServer, user: str = "alice") -> Any:
    return server.session_as(user, "lab")


@pytest.fixture
def catalog() -> forms.Catalog:
    descriptor = parse_descriptor(json.dumps(DESCRIPTOR), source="test")
    wf = Workflow(name="seg", version="v2", settings=None, descriptor=descriptor)  # type: ignore[arg-type]
    return forms.Catalog(workflows=(wf,))


def form(ids: list[int], **extra: object) -> dict[str, object]:
    return {"Data_Type": "Image", "IDs": ids, "seg": True, "seg_|_diameter": 12, **extra}


def test_run_workflow_records_an_omero_run_for_the_script_user(
    server: StandInServer, tracker: Tracker, catalog: forms.Catalog
) -> None:
    image = server.add_image("alice", GROUP, "a.tif")
    inputs = form([image], **{forms.OUTPUT_NEW_DATASET: "out"})
    message = actions.run_workflow(session(server), tracker, catalog, inputs)
    (run,) = tracker.list_runs()
    assert f"Recorded run {run['run_id']}" in message
    assert run["user"] == "alice" and run["omero_group_id"] == GROUP
    assert run["omero_user_id"] == server.users["alice"]
    assert run["parameters"] == {"diameter": 12}
    assert run["inputs"]["source"] == "omero" and run["inputs"]["ids"] == [image]
    assert run["inputs"]["outputs"]["new_dataset"] == "out"


def test_images_the_user_cannot_read_are_refused_and_nothing_is_recorded(
    server: StandInServer, tracker: Tracker, catalog: forms.Catalog
) -> None:
    theirs = server.add_image("bob", GROUP, "b.tif")
    with pytest.raises(BiomeroError, match=f"Image \\[{theirs}\\] not found"):
        actions.run_workflow(session(server), tracker, catalog, form([theirs]))
    assert tracker.list_runs() == []


def test_batched_run_splits_a_dataset_into_runs_of_batch_size(
    server: StandInServer, tracker: Tracker, catalog: forms.Catalog
) -> None:
    images = [server.add_image("alice", GROUP, f"{n}.tif") for n in range(5)]
    dataset = server.add_dataset("alice", GROUP, "d", images)
    inputs = form([dataset], Data_Type="Dataset", Batch_Size=2)
    actions.run_workflow(session(server), tracker, catalog, inputs, batched=True)
    batches = sorted(r["inputs"]["ids"] for r in tracker.list_runs())
    assert batches == [images[0:2], images[2:4], images[4:]]
    assert {r["inputs"]["data_type"] for r in tracker.list_runs()} == {"Image"}


def test_wait_reports_the_outcome_once_the_supervisor_finished_the_run(
    server: StandInServer, tracker: Tracker, catalog: forms.Catalog
) -> None:
    image = server.add_image("alice", GROUP, "a.tif")

    def supervisor_finishes(_seconds: float) -> None:
        (run,) = tracker.list_runs()
        tracker.fail_run(run["run_id"], "JobFailed", "out of memory")

    inputs = form([image], Wait_For_Results=True, Wait_Minutes=5)
    message = actions.run_workflow(
        session(server), tracker, catalog, inputs, sleep=supervisor_finishes
    )
    assert message.endswith(": failed: JobFailed: out of memory")


def test_waiting_gives_up_at_the_deadline_and_the_run_goes_on(tracker: Tracker) -> None:
    run_id = tracker.record_run_requested(workflow="seg", version="v2", user_name="alice")
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    (run,) = actions.wait_for(tracker, [run_id], 1.0, sleep=sleep, clock=lambda: now[0])
    assert run.state == "REQUESTED" and now[0] >= 60


def test_waiting_checks_soon_first_then_backs_off_to_the_steady_interval(
    tracker: Tracker,
) -> None:
    run_id = tracker.record_run_requested(workflow="seg", version="v2", user_name="alice")
    now, waits = [0.0], []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    actions.wait_for(tracker, [run_id], 1.0, sleep=sleep, clock=lambda: now[0])
    assert waits[0] == actions.WAIT_POLL_FIRST_S
    assert waits == sorted(waits) and waits[-1] == actions.WAIT_POLL_S


def _record(tracker: Tracker, server: StandInServer, user: str) -> str:
    return tracker.record_run_requested(
        workflow="seg",
        version="v2",
        user_name=user,
        inputs={"source": "omero", "data_type": "Image", "ids": [1], "outputs": {}},
        omero_user_id=server.users[user],
        omero_group_id=GROUP,
    )


def test_status_lists_only_the_users_own_runs(server: StandInServer, tracker: Tracker) -> None:
    mine = _record(tracker, server, "alice")
    theirs = _record(tracker, server, "bob")
    text = actions.status(tracker, actions.user_of(session(server)))
    assert mine in text and theirs not in text


def test_nobody_can_look_at_another_users_run(server: StandInServer, tracker: Tracker) -> None:
    theirs = _record(tracker, server, "bob")
    with pytest.raises(UnknownRunError, match="not one of your runs"):
        actions.status(tracker, actions.user_of(session(server)), theirs)


def test_cancel_is_refused_for_another_users_run(server: StandInServer, tracker: Tracker) -> None:
    theirs = _record(tracker, server, "bob")
    cancelled: list[str] = []
    with pytest.raises(UnknownRunError):
        actions.cancel(
            tracker,
            actions.user_of(session(server)),
            theirs,
            lambda run_id, reason: cancelled.append(run_id) or [],
        )
    assert cancelled == []


def test_cancel_of_an_own_run_goes_through_the_engine(
    server: StandInServer, tracker: Tracker
) -> None:
    mine = _record(tracker, server, "alice")
    seen: list[tuple[str, str]] = []

    def cancel_run(run_id: str, reason: str) -> list[str]:
        seen.append((run_id, reason))
        tracker.cancel_run(run_id, reason)
        return ["77"]

    message = actions.cancel(tracker, actions.user_of(session(server)), mine, cancel_run)
    assert message == f"Cancelled run {mine} (scancel 77)"
    assert seen == [(mine, "cancelled by alice")]
    with pytest.raises(BiomeroError, match="already cancelled"):
        actions.cancel(tracker, actions.user_of(session(server)), mine, cancel_run)


def test_get_results_imports_a_finished_runs_results_once(
    server: StandInServer, tracker: Tracker, tmp_path: Path
) -> None:
    image = server.add_image("alice", GROUP, "a.tif")
    run_id = tracker.record_run_requested(
        workflow="seg",
        version="v2",
        user_name="alice",
        inputs={"source": "omero", "data_type": "Image", "ids": [image],
                "outputs": {"new_dataset": "again"}},
        omero_user_id=server.users["alice"],
        omero_group_id=GROUP,
    )  # fmt: skip
    results = tmp_path / "out"
    results.mkdir()
    tifffile.imwrite(results / f"image{image}_labels.tif", np.eye(8, dtype=np.uint8))
    tracker.fail_run(run_id, "ImportError", "OMERO refused")
    conn = session(server)

    first = actions.get_results(conn, tracker, run_id, lambda run: results)
    second = actions.get_results(conn, tracker, run_id, lambda run: results)
    assert "1 new image(s)" in first
    assert "0 new image(s)" in second and "already there" in second
    assert len(server.of_type("DatasetI")) == 1


def test_get_results_of_an_unfinished_run_says_it_is_still_going(
    server: StandInServer, tracker: Tracker, tmp_path: Path
) -> None:
    mine = _record(tracker, server, "alice")
    text = actions.get_results(session(server), tracker, mine, lambda run: tmp_path)
    assert "is requested" in text and "imported when it finishes" in text
