"""The Run Workflow scripts apply the rules `biomero run` applies, at once: the user reads
the problem in the script's output and nothing is recorded.

The tracker is real (SQLite); the OMERO session is omero-py's BlitzGateway on
the stand-in services of tests/omero_standins.py; the cluster's partitions
come from a stand-in for the cached sinfo answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from omero_standins import StandInServer

from biomeroworker.errors import ConnectError
from biomeroworker.inputs import InputError
from biomeroworker.omero import actions, forms
from biomeroworker.slurm.parse import Partition
from biomeroworker.tracking.application import Tracker
from biomeroworker.workflows.catalog import get_workflow

GROUP = 3
PARTITIONS = [Partition("cpu-short", True, 7200, 1, 4, True)]
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
    return s


def catalog_with(tmp_path: Path, workflow_keys: str = "", slurm_keys: str = "") -> forms.Catalog:
    from biomeroworker.config import load_settings

    repo = tmp_path / "seg"
    repo.mkdir(exist_ok=True)
    (repo / "descriptor.json").write_text(json.dumps(DESCRIPTOR))
    config = tmp_path / "slurm-config.ini"
    config.write_text(
        "[SSH]\nhost = c\n[SLURM]\nslurm_data_path = d\nslurm_images_path = i\n"
        "slurm_converters_path = v\nslurm_script_path = s\nslurm_default_partition = cpu-short\n"
        f"{slurm_keys}[WORKFLOWS]\nseg = seg\nseg_repo = {repo}\n{workflow_keys}"
    )
    settings = load_settings([config], env={})
    return forms.Catalog((get_workflow(settings, "seg"),), (), settings)


def form(ids: list[int], **extra: object) -> dict[str, object]:
    return {"Data_Type": "Image", "IDs": ids, "seg": True, **extra}


def run(server: StandInServer, tracker: Tracker, catalog: forms.Catalog, inputs, partitions):  # type: ignore[no-untyped-def]
    conn = server.session_as("alice", "lab")
    return actions.run_workflow(conn, tracker, catalog, inputs, partitions=partitions)


def test_a_workflow_partition_the_cluster_lacks_is_refused_and_nothing_is_recorded(
    server: StandInServer, tracker: Tracker, tmp_path: Path
) -> None:
    catalog = catalog_with(tmp_path, "seg_job_partition = gpu-huge\n")
    image = server.add_image("alice", GROUP, "a.tif")
    with pytest.raises(InputError) as caught:
        run(server, tracker, catalog, form([image]), lambda: PARTITIONS)
    assert caught.value.problems == [
        "[WORKFLOWS] seg_job_partition: partition 'gpu-huge' does not exist on the cluster; "
        "partitions: cpu-short"
    ]
    assert tracker.list_runs() == []


def test_the_conversion_job_partition_is_checked_for_omero_runs(
    server: StandInServer, tracker: Tracker, tmp_path: Path
) -> None:
    catalog = catalog_with(tmp_path, slurm_keys="slurm_conversion_partition = convert\n")
    image = server.add_image("alice", GROUP, "a.tif")
    with pytest.raises(InputError, match="slurm_conversion_partition"):
        run(server, tracker, catalog, form([image]), lambda: PARTITIONS)
    assert tracker.list_runs() == []


def test_a_run_that_reads_the_ome_zarr_as_is_needs_no_conversion_partition(
    server: StandInServer, tracker: Tracker, tmp_path: Path
) -> None:
    from biomeroworker.omero import upstream

    catalog = catalog_with(tmp_path, slurm_keys="slurm_conversion_partition = convert\n")
    image = server.add_image("alice", GROUP, "a.tif")
    inputs = form([image], **{upstream.USE_ZARR: True})
    run(server, tracker, catalog, inputs, lambda: PARTITIONS)
    assert len(tracker.list_runs()) == 1


def test_a_time_limit_above_the_partition_limit_is_refused_in_the_script(
    server: StandInServer, tracker: Tracker, tmp_path: Path
) -> None:
    catalog = catalog_with(tmp_path, "seg_job_time = 1-00:00:00\n")
    image = server.add_image("alice", GROUP, "a.tif")
    with pytest.raises(InputError, match="above the 02:00:00 that partition cpu-short"):
        run(server, tracker, catalog, form([image]), lambda: PARTITIONS)


def test_an_empty_dataset_is_refused_at_once(
    server: StandInServer, tracker: Tracker, tmp_path: Path
) -> None:
    catalog = catalog_with(tmp_path)
    dataset = server.add_dataset("alice", GROUP, "empty", [])
    with pytest.raises(Exception, match="hold no images"):
        run(server, tracker, catalog, form([dataset], Data_Type="Dataset"), lambda: PARTITIONS)
    assert tracker.list_runs() == []


def test_good_values_are_recorded(server: StandInServer, tracker: Tracker, tmp_path: Path) -> None:
    catalog = catalog_with(tmp_path)
    image = server.add_image("alice", GROUP, "a.tif")
    message = run(server, tracker, catalog, form([image]), lambda: PARTITIONS)
    (recorded,) = tracker.list_runs()
    assert message == f"Recorded run {recorded['run_id']} (see Workflow Status)"


def test_a_cluster_that_does_not_answer_records_the_run_and_says_what_was_not_checked(
    server: StandInServer, tracker: Tracker, tmp_path: Path
) -> None:
    def down() -> list[Partition]:
        raise ConnectError("no route to host")

    catalog = catalog_with(tmp_path)
    image = server.add_image("alice", GROUP, "a.tif")
    message = run(server, tracker, catalog, form([image]), down)
    assert message.startswith("warning: partitions and time limits not checked")
    assert "no route to host" in message
    assert len(tracker.list_runs()) == 1


class _ScriptClient:
    """Stands in for omero.scripts.client: the form's answers in, the Message out."""

    def __init__(self, inputs: dict[str, object]) -> None:
        self.inputs = inputs
        self.outputs: dict[str, object] = {}
        self.closed = False

    def getInputs(self, unwrap: bool = False) -> dict[str, object]:  # noqa: N802
        return self.inputs

    def setOutput(self, key: str, value: object) -> None:  # noqa: N802
        self.outputs[key] = value

    def closeSession(self) -> None:  # noqa: N802
        self.closed = True


def test_the_script_output_says_what_is_wrong_at_once(
    server: StandInServer,
    tracker: Tracker,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import omero.gateway
    from omero.rtypes import unwrap

    from biomeroworker.omero import scripting

    catalog = catalog_with(tmp_path, "seg_job_partition = gpu-huge\n")
    image = server.add_image("alice", GROUP, "a.tif")
    session = server.session_as("alice", "lab")
    monkeypatch.setattr(omero.gateway, "BlitzGateway", lambda client_obj: session)
    client = _ScriptClient(form([image]))

    def action(conn, inputs):  # type: ignore[no-untyped-def]
        return actions.run_workflow(conn, tracker, catalog, inputs, partitions=lambda: PARTITIONS)

    scripting.serve(client, action)
    message = unwrap(client.outputs["Message"])
    assert message.startswith("ERROR: nothing was recorded; fix these first:")
    assert "seg_job_partition: partition 'gpu-huge' does not exist" in message
    assert message in capsys.readouterr().out and client.closed
    assert tracker.list_runs() == []
