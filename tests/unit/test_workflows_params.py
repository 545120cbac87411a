from __future__ import annotations

import json

import pytest

from biomeroworker.workflows.descriptor import Descriptor, parse_descriptor
from biomeroworker.workflows.params import ParameterError, validate_params


@pytest.fixture(scope="module")
def descriptor() -> Descriptor:
    inputs = [
        {"id": "cytomine_host", "type": "String", "set-by-server": True, "optional": False},
        {"id": "diameter", "type": "Number", "default-value": 0, "optional": True, "minimum": 0},
        {"id": "prob", "type": "Number", "default-value": 0.5, "optional": True},
        {"id": "use_gpu", "type": "Boolean", "default-value": True, "optional": True},
        {
            "id": "model",
            "type": "String",
            "default-value": "nuclei",
            "optional": True,
            "value-choices": ["nuclei", "cyto"],
        },
        {"id": "label", "type": "String", "optional": True},
        {"id": "tile", "type": "Number", "optional": False},
    ]
    data = {
        "name": "W", "schema-version": "cytomine-0.1", "inputs": inputs,
        "container-image": {"image": "o/w"},
    }  # fmt: skip
    return parse_descriptor(json.dumps(data), source="t")


def test_defaults_fill_what_the_user_left_out(descriptor: Descriptor) -> None:
    assert validate_params(descriptor, {"tile": "256"}) == {
        "diameter": 0, "prob": 0.5, "use_gpu": True, "model": "nuclei", "tile": 256.0,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("name", "given", "typed"),
    [
        ("diameter", "30", 30),
        ("diameter", 30.0, 30),
        ("prob", "0.25", 0.25),
        ("prob", 1, 1.0),
        ("use_gpu", "false", False),
        ("use_gpu", "Yes", True),
        ("use_gpu", False, False),
        ("model", " cyto ", "cyto"),
        ("label", "$(rm -rf ~); `x` && y\nz", "$(rm -rf ~); `x` && y\nz"),
    ],
)
def test_values_are_converted_to_their_parameter_type(
    descriptor: Descriptor, name: str, given: object, typed: object
) -> None:
    result = validate_params(descriptor, {"tile": 1, name: given})
    assert result[name] == typed
    assert type(result[name]) is type(typed)


@pytest.mark.parametrize(
    ("name", "given", "message"),
    [
        ("diameter", "2.5", "expected a whole number >= 0"),
        ("diameter", "-1", "expected a whole number >= 0"),
        ("diameter", True, "expected a whole number"),
        ("prob", "nan", "expected a number"),
        ("prob", "abc", "expected a number"),
        ("use_gpu", "maybe", "expected true or false"),
        ("model", "Cyto3", "expected one of 'nuclei', 'cyto'"),
        ("label", "a\x00b", "without NUL"),
        ("label", 5, "expected text"),
    ],
)
def test_bad_value_names_the_parameter_and_what_is_allowed(
    descriptor: Descriptor, name: str, given: object, message: str
) -> None:
    with pytest.raises(ParameterError, match=f"^{name}: .*{message}"):
        validate_params(descriptor, {"tile": 1, name: given})


def test_unknown_parameter_is_refused_with_the_known_ones(descriptor: Descriptor) -> None:
    with pytest.raises(ParameterError, match=r"diamter: unknown parameter \(known: diameter, prob"):
        validate_params(descriptor, {"tile": 1, "diamter": 3})


def test_server_set_parameter_cannot_be_given(descriptor: Descriptor) -> None:
    with pytest.raises(ParameterError, match="cytomine_host: set by the server"):
        validate_params(descriptor, {"tile": 1, "cytomine_host": "evil"})


def test_missing_required_parameter_is_refused(descriptor: Descriptor) -> None:
    with pytest.raises(ParameterError, match="tile: required"):
        validate_params(descriptor, {})


def test_every_problem_is_reported_at_once(descriptor: Descriptor) -> None:
    with pytest.raises(ParameterError) as caught:
        validate_params(descriptor, {"nope": 1, "prob": "x"})
    assert len(caught.value.problems) == 3
