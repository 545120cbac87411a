from __future__ import annotations

import json
from pathlib import Path

import pytest

from biomeroworker.workflows.descriptor import DescriptorError, load_descriptor, parse_descriptor

SAMPLE = Path(__file__).parents[2] / "workflows" / "nuclei-segmentation" / "descriptor.json"


def minimal(**inputs_and_fields: object) -> str:
    data = {
        "name": "W",
        "schema-version": "cytomine-0.1",
        "container-image": {"image": "org/w_thing", "type": "singularity"},
        "command-line": "python wrapper.py",
        "inputs": [],
    }
    data.update(inputs_and_fields)
    return json.dumps(data)


def number(pid: str, default: object) -> dict:
    return {"id": pid, "type": "Number", "default-value": default, "optional": True}


def test_sample_descriptor_hides_server_set_inputs() -> None:
    descriptor = load_descriptor(SAMPLE)
    all_ids = [p.id for p in descriptor.parameters]
    user_ids = [p.id for p in descriptor.user_parameters]
    assert "cytomine_host" in all_ids
    assert user_ids == [
        "sigma", "threshold_method", "min_size", "min_distance", "channel", "output_prefix",
    ]  # fmt: skip


def test_sample_descriptor_types_its_parameters() -> None:
    kinds = {p.id: p.kind for p in load_descriptor(SAMPLE).user_parameters}
    assert kinds == {
        "sigma": "float", "threshold_method": "choice", "min_size": "int",
        "min_distance": "int", "channel": "int", "output_prefix": "string",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("default", "kind"), [(5, "int"), (0.5, "float"), (2.0, "float"), (None, "int")]
)
def test_number_is_int_or_float_by_its_default(default: object, kind: str) -> None:
    descriptor = parse_descriptor(minimal(inputs=[number("n", default)]), source="t")
    assert descriptor.parameters[0].kind == kind


def test_cytomine_prefixed_input_is_server_set_even_without_the_flag() -> None:
    text = minimal(inputs=[{"id": "cytomine_id_project", "type": "Number"}])
    assert parse_descriptor(text, source="t").user_parameters == ()


def test_image_tag_equals_the_repo_tag() -> None:
    descriptor = parse_descriptor(minimal(), source="t")
    assert descriptor.image_ref("v1.2.7") == "org/w_thing:v1.2.7"
    assert descriptor.sif_name("v1.2.7") == "w_thing_v1.2.7.sif"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not valid JSON"),
        (minimal(**{"schema-version": "boutiques"}), "schema-version"),
        (minimal(**{"container-image": {}}), "container-image.image"),
        (minimal(inputs=[{"id": "a b", "type": "String"}]), "id must be"),
        (minimal(inputs=[{"id": "d", "type": "ListDomain"}]), "ListDomain input needs"),
        (minimal(inputs=[{"id": "d", "type": "Matrix"}]), "unsupported type 'Matrix'"),
        (minimal(inputs=[number("n", "five")]), "non-numeric default"),
        (minimal(inputs=[number("n", 1), number("n", 2)]), "duplicate input id"),
        (
            minimal(
                inputs=[
                    {"id": "m", "type": "String", "default-value": "x", "value-choices": ["a", "b"]}
                ]
            ),
            "not one of its value-choices",
        ),
    ],
)
def test_bad_descriptor_is_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(DescriptorError, match=message):
        parse_descriptor(text, source="t")


def test_missing_descriptor_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(DescriptorError, match=r"nope\.json"):
        load_descriptor(tmp_path / "nope.json")


def test_repeated_server_set_inputs_are_read_once_as_published_descriptors_have_them() -> None:
    """The CellProfiler measurement workflows list cytomine_id_software twice."""
    server = {"id": "cytomine_id_software", "type": "Number", "set-by-server": True}
    text = minimal(inputs=[server, number("n", 1), server])
    descriptor = parse_descriptor(text, source="cellprofiler")
    assert [p.id for p in descriptor.parameters] == ["cytomine_id_software", "n"]
    assert [p.id for p in descriptor.user_parameters] == ["n"]


def test_a_user_input_sharing_a_server_inputs_id_is_refused() -> None:
    server = {"id": "n", "type": "Number", "set-by-server": True}
    with pytest.raises(DescriptorError, match="duplicate input id"):
        parse_descriptor(minimal(inputs=[server, number("n", 1)]), source="x")


def biomero_schema(*inputs: dict) -> str:  # type: ignore[type-arg]
    return minimal(**{"schema-version": "biomero-0.1", "inputs": list(inputs)})


def test_biomero_schema_descriptors_are_read_with_their_lower_case_types() -> None:
    text = biomero_schema(
        {"id": "diameter", "type": "integer", "default-value": 30},
        {"id": "flow", "type": "float", "default-value": 0.4},
        {"id": "gpu", "type": "boolean", "default-value": False},
        {"id": "model", "type": "string", "value-choices": ["cyto", "nuclei"],
         "default-value": "cyto"},
        {"id": "images", "type": "image"},
    )  # fmt: skip
    descriptor = parse_descriptor(text, source="b")
    kinds = {p.id: p.kind for p in descriptor.user_parameters}
    assert kinds == {"diameter": "int", "flow": "float", "gpu": "boolean", "model": "choice"}
    assert [p.id for p in descriptor.parameters if p.server_set] == ["images"]


@pytest.mark.parametrize(
    ("item", "says"),
    [
        ({"id": "n", "type": "integer", "default-value": 2.5}, "fractional default"),
        ({"id": "n", "type": "integer", "default-value": "x"}, "non-numeric default"),
        ({"id": "n", "type": "file", "format": "tiff", "file-attachment": True, "x": 1}, None),
        ({"id": "n", "type": "array", "format": [1]}, "format must be a list of texts"),
    ],
)
def test_biomero_schema_inputs_we_cannot_run_are_refused_by_name(item: dict, says: str) -> None:  # type: ignore[type-arg]
    if says is None:
        parse_descriptor(biomero_schema(item), source="b")  # a single format is a list of one
        return
    with pytest.raises(DescriptorError, match=says):
        parse_descriptor(biomero_schema(item), source="b")


@pytest.mark.parametrize("kind", ["file", "array", "measurement", "executable"])
def test_file_inputs_are_file_parameters_even_when_marked_set_by_server(kind: str) -> None:
    """biomero 2.8.3: file-like inputs (and file-attachment ones) are offered to users as
    OMERO file annotations; biomero-schema marks them set-by-server and file-attachment."""
    text = biomero_schema(
        {"id": "model", "type": kind, "set-by-server": True, "file-attachment": True,
         "optional": True, "format": ["unix"], "description": "a model"},
        {"id": "pipeline", "type": "string", "file-attachment": True},
    )  # fmt: skip
    d = parse_descriptor(text, source="b")
    assert [(p.id, p.kind, p.server_set) for p in d.attachments] == [
        ("model", "file", False),
        ("pipeline", "file", False),
    ]
    assert d.attachments[0].formats == ("unix",) and d.attachments[0].optional


def test_a_bilayers_descriptor_in_json_is_read_too() -> None:
    text = json.dumps({
        "docker_image": {"org": "o", "name": "n"},
        "exec_function": {"cli_command": "python -m n"},
        "inputs": [], "parameters": [], "outputs": [],
    })  # fmt: skip
    d = parse_descriptor(text, source="bl")
    assert (d.family, d.image, d.cli_command) == ("bilayers", "o/n", ("python", "-m", "n"))


@pytest.mark.parametrize(("key", "kind"), [("cwlVersion", "CWL"), ("openapi", "OpenAPI")])
def test_cwl_and_openapi_descriptors_are_refused_by_name(key: str, kind: str) -> None:
    with pytest.raises(DescriptorError, match=f"a {kind} descriptor"):
        parse_descriptor(json.dumps({key: "v1.2", "inputs": []}), source="x")
