"""File parameters from OMERO: the form offers them as upstream does, a request checks
the file annotations, and the export step streams them into the run folder.

omero-py's BlitzGateway and FileAnnotationWrapper run for real; only the Ice services
under them are stood in for (tests/omero_standins.py), including the raw file store
the download reads through.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from omero_standins import StandInServer

from biomeroworker.errors import BiomeroError
from biomeroworker.omero.connect import OmeroError
from biomeroworker.omero.exporter import check_attachments, download_attachments
from biomeroworker.omero.forms import Catalog, file_key, read_choices, workflow_inputs
from biomeroworker.omero.side import OmeroSide
from biomeroworker.run_record import RunInputs, RunRecord
from biomeroworker.workflows.attachments import staging_sources
from biomeroworker.workflows.catalog import Workflow
from biomeroworker.workflows.descriptor import parse_descriptor

GROUP, OTHER = 3, 4
DESCRIPTOR = {
    "name": "CellProfiler",
    "schema-version": "biomero-0.1",
    "container-image": {"image": "org/w_cellprofiler"},
    "inputs": [
        {"id": "images", "type": "image", "set-by-server": True},
        {"id": "pipeline", "type": "file", "file-attachment": True, "set-by-server": True,
         "format": ["cppipe"], "description": "The pipeline to run."},
        {"id": "threads", "type": "integer", "default-value": 2},
    ],
}  # fmt: skip


@pytest.fixture
def server() -> StandInServer:
    s = StandInServer()
    s.add_user("biomero-sudo", 0, password="s3cret", privileges=("Sudo",))
    s.add_user("alice", GROUP, "lab")
    s.add_user("bob", OTHER, "other lab")
    return s


def catalog() -> Catalog:
    d = parse_descriptor(json.dumps(DESCRIPTOR), source="t")
    return Catalog((Workflow("cp", "v4.2.5", None, d),))  # type: ignore[arg-type]


def test_the_form_offers_a_file_parameter_as_a_list_of_ids_after_the_values() -> None:
    inputs = workflow_inputs(catalog())
    names = [i.name() for i in inputs]
    assert names == ["cp", "cp_Version", "cp_|_threads", "cp_|_FILE_pipeline"]
    files = inputs[-1]
    assert files.optional and "cppipe" in files.description and "[file]" in files.description
    from omero.rtypes import RListI

    assert isinstance(files.prototype, RListI)


@pytest.mark.parametrize(
    ("given", "ids"), [([12, 14], [12, 14]), (12, [12]), ([12, 12], [12]), ("7", [7])]
)
def test_the_form_reads_ids_as_the_plugin_sends_them(given: Any, ids: list[int]) -> None:
    [choice] = read_choices({"cp": True, file_key("cp", "pipeline"): given}, catalog())
    assert choice.attachments == {"pipeline": ids}
    assert choice.parameters == {"pipeline": "data/files/pipeline", "threads": 2}


@pytest.mark.parametrize("given", [["/etc/passwd"], [-3], [1.5], "../x", list(range(1, 102))])
def test_a_file_parameter_from_omero_never_names_a_path(given: Any) -> None:
    with pytest.raises(BiomeroError, match="FILE_pipeline"):
        read_choices({"cp": True, file_key("cp", "pipeline"): given}, catalog())


def test_a_required_file_parameter_left_empty_is_named() -> None:
    with pytest.raises(BiomeroError, match="pipeline: required"):
        read_choices({"cp": True}, catalog())


def test_a_request_checks_the_annotations_the_user_names(server: StandInServer) -> None:
    mine = server.add_file_annotation("alice", GROUP, "analysis.cppipe", b"pipeline")
    theirs = server.add_file_annotation("bob", OTHER, "secret.cppipe", b"x")
    slashed = server.add_file_annotation("alice", GROUP, "../../etc/x", b"x")
    same = server.add_file_annotation("alice", GROUP, "analysis.cppipe", b"other")
    conn = server.login("alice")
    check_attachments(conn, {"pipeline": [mine]})
    with pytest.raises(OmeroError, match=f"FileAnnotation {theirs} does not exist or you may"):
        check_attachments(conn, {"pipeline": [theirs]})
    with pytest.raises(OmeroError, match="path separators"):
        check_attachments(conn, {"pipeline": [slashed]})
    with pytest.raises(OmeroError, match="two of its files are named"):
        check_attachments(conn, {"pipeline": [mine, same]})


def side_for(server: StandInServer) -> OmeroSide:
    return OmeroSide(server.sudo_connector())


def test_download_streams_each_file_into_its_parameters_folder(
    server: StandInServer, tmp_path: Path
) -> None:
    data = bytes(range(256)) * 20_000  # 5 MB: several chunks
    big = server.add_file_annotation("alice", GROUP, "model weights.pt", data)
    small = server.add_file_annotation("alice", GROUP, "analysis.cppipe", b"pipeline")
    conn = server.login("alice")
    got = download_attachments(conn, {"model": [big], "pipeline": [small]}, tmp_path)
    assert got == {
        "model": [tmp_path / "model" / "model_weights.pt"],
        "pipeline": [tmp_path / "pipeline" / "analysis.cppipe"],
    }
    assert got["model"][0].read_bytes() == data
    reads = [d for _, call, d in server.calls if call == "read"]
    assert len(reads) > 1  # streamed in chunks, not read whole
    # a retried export keeps what is complete and reads nothing again
    server.calls.clear()
    download_attachments(conn, {"model": [big]}, tmp_path)
    assert [c for _, c, _ in server.calls if c == "read"] == []
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["model_weights.pt"]


def test_a_file_bigger_than_allowed_or_than_it_says_is_refused(
    server: StandInServer, tmp_path: Path
) -> None:
    conn = server.login("alice")
    big = server.add_file_annotation("alice", GROUP, "big.bin", b"x" * 2048)
    with pytest.raises(OmeroError, match="at most 1024 are staged"):
        download_attachments(conn, {"model": [big]}, tmp_path, limit=1024)
    liar = server.add_file_annotation("alice", GROUP, "liar.bin", b"x" * 100, size=10)
    with pytest.raises(OmeroError, match="more than its 10 bytes"):
        download_attachments(conn, {"model": [liar]}, tmp_path)
    assert list((tmp_path / "model").iterdir()) == []  # no partial file is left


def test_the_export_step_downloads_them_beside_the_images(
    server: StandInServer, tmp_path: Path
) -> None:
    image = server.add_image("alice", GROUP, "cells.tif")
    ann = server.add_file_annotation("alice", GROUP, "analysis.cppipe", b"pipeline")
    theirs = server.add_file_annotation("bob", OTHER, "secret.cppipe", b"x")
    inputs = {"source": "omero", "data_type": "Image", "ids": [image]}
    run = RunRecord(
        run_id="r1",
        workflow="cp",
        version="v4.2.5",
        user="alice",
        omero_group_id=GROUP,
        state="RUNNING",
        inputs=RunInputs({**inputs, "attachments": {"pipeline": [ann]}}),
    )
    side = side_for(server)
    with pytest.raises(OmeroError, match="may not read it"):
        side.export(replace(run, inputs=RunInputs({**inputs, "attachments": {"p": [theirs]}})),
                    tmp_path / "in")  # fmt: skip
    assert side.export(run, tmp_path / "in") == [tmp_path / "in" / f"image{image}.ome.zarr"]
    assert (tmp_path / "files" / "pipeline" / "analysis.cppipe").read_bytes() == b"pipeline"
    assert staging_sources(run.inputs.attachments, tmp_path) == {
        "pipeline": [tmp_path / "files" / "pipeline" / "analysis.cppipe"]
    }
