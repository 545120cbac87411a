"""File parameters: names made safe, local files checked, values as the job gets them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from biomeroworker.workflows.attachments import (
    MAX_NAME_BYTES,
    AttachmentError,
    job_parameters,
    local_files,
    references,
    safe_file_name,
    staging_sources,
)
from biomeroworker.workflows.descriptor import Descriptor, parse_descriptor
from biomeroworker.workflows.params import ParameterError, validate_params


def workflow(optional: bool = False) -> Descriptor:
    return parse_descriptor(
        json.dumps({
            "name": "W",
            "schema-version": "biomero-0.1",
            "container-image": {"image": "org/w"},
            "inputs": [
                {"id": "pipeline", "type": "file", "file-attachment": True, "optional": optional},
                {"id": "sigma", "type": "float", "default-value": 1.0},
            ],
        }),
        source="t",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("analysis.cppipe", "analysis.cppipe"),
        ("my pipeline (v2).cppipe", "my_pipeline__v2_.cppipe"),
        ("$(reboot);`x`.txt", "__reboot___x_.txt"),
        (".hidden", "hidden"),
        ("--output=x", "output_x"),
        ("mod\u00e8le.pt", "mod_le.pt"),
    ],
)
def test_names_are_made_safe(name: str, safe: str) -> None:
    assert safe_file_name(name) == safe


@pytest.mark.parametrize(
    "name", ["", "a/b", "../up", "a\\b", "nul\x00.txt", "..", "...", "-.-", "___"]
)
def test_names_with_separators_or_nothing_left_are_refused(name: str) -> None:
    with pytest.raises(AttachmentError):
        safe_file_name(name)


def test_a_long_name_keeps_its_suffix() -> None:
    safe = safe_file_name("x" * 400 + ".cppipe")
    assert safe.endswith(".cppipe") and len(safe.encode()) <= MAX_NAME_BYTES


def test_references_are_ids_or_paths_never_a_mix() -> None:
    assert references(5) == [5]
    assert references([5, 7]) == [5, 7]
    assert references("/tmp/a.txt") == ["/tmp/a.txt"]
    for bad in ([5, "/tmp/a"], [True], [0], [], [""], 1.5, list(range(1, 102))):
        with pytest.raises(AttachmentError):
            references(bad)


def test_a_file_parameter_takes_its_folder_in_the_run_folder_as_value() -> None:
    values = validate_params(workflow(), {"pipeline": [12]})
    assert values == {"pipeline": "data/files/pipeline", "sigma": 1.0}
    with pytest.raises(ParameterError, match="pipeline: required"):
        validate_params(workflow(), {})
    with pytest.raises(ParameterError, match=r"pipeline: 2\.5 is not allowed"):
        validate_params(workflow(), {"pipeline": 2.5})
    assert validate_params(workflow(optional=True), {"pipeline": []}) == {"sigma": 1.0}


def test_params_json_names_the_folder_in_the_run_folders_terms() -> None:
    params = job_parameters(
        {"pipeline": "data/files/pipeline", "sigma": 1.0},
        {"pipeline": [12]},
        "my-scratch/data/run-1",
    )
    assert params == {"pipeline": "my-scratch/data/run-1/data/files/pipeline", "sigma": 1.0}
    assert job_parameters({"sigma": 1.0}, None, "r") == {"sigma": 1.0}


def test_local_files_are_checked_before_anything_is_recorded(tmp_path: Path) -> None:
    good = tmp_path / "analysis.cppipe"
    good.write_text("pipeline")
    assert local_files(workflow(), {"pipeline": str(good)}) == {"pipeline": [str(good)]}

    (tmp_path / "sub").mkdir()
    (tmp_path / "link.cppipe").symlink_to(good)
    (tmp_path / "odd name.cppipe").write_text("x")
    other = tmp_path / "other"
    other.mkdir()
    (other / "analysis.cppipe").write_text("y")
    cases = {
        str(tmp_path / "missing.cppipe"): "No such file",
        str(tmp_path / "sub"): "not a regular file",
        str(tmp_path / "link.cppipe"): "not a regular file",
        str(tmp_path / "odd name.cppipe"): "rename it to 'odd_name.cppipe'",
    }
    for path, says in cases.items():
        with pytest.raises(AttachmentError, match=says):
            local_files(workflow(), {"pipeline": path})
    with pytest.raises(AttachmentError, match=r"two files are named 'analysis\.cppipe'"):
        local_files(workflow(), {"pipeline": [str(good), str(other / "analysis.cppipe")]})
    with pytest.raises(AttachmentError, match="is an OMERO id"):
        local_files(workflow(), {"pipeline": [4]})


def test_what_stage_up_sends(tmp_path: Path) -> None:
    local = {"pipeline": ("/data/a.cppipe",)}
    assert staging_sources(local, tmp_path) == {"pipeline": [Path("/data/a.cppipe")]}

    omero = {"pipeline": (12, 13)}
    folder = tmp_path / "files" / "pipeline"
    folder.mkdir(parents=True)
    (folder / "a.cppipe").write_text("a")
    (folder / ".partial-13").write_text("half")  # a download cut short is not sent
    with pytest.raises(AttachmentError, match="1 of 2 file"):
        staging_sources(omero, tmp_path)
    (folder / "b.cppipe").write_text("b")
    assert staging_sources(omero, tmp_path) == {
        "pipeline": [folder / "a.cppipe", folder / "b.cppipe"]
    }
    assert staging_sources({}, tmp_path) == {}


def test_a_recorded_parameter_that_is_not_a_name_is_never_a_path(tmp_path: Path) -> None:
    with pytest.raises(AttachmentError, match="not a parameter name"):
        job_parameters({}, {"../../etc": ["/x"]}, "run")
    with pytest.raises(AttachmentError, match="not a parameter name"):
        staging_sources({"../up": (3,)}, tmp_path)
