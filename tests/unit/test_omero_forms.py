"""Script forms from descriptors, and reading the answers back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omero.rtypes import unwrap

from biomeroworker.errors import BiomeroError, ConfigError
from biomeroworker.omero import forms
from biomeroworker.workflows.catalog import Workflow
from biomeroworker.workflows.descriptor import parse_descriptor
from biomeroworker.workflows.params import ParameterError

DESCRIPTOR = {
    "schema-version": "cytomine-0.1",
    "name": "Seg",
    "description": "segments",
    "container-image": {"image": "org/seg"},
    "inputs": [
        {"id": "cytomine_host", "type": "String", "set-by-server": True},
        {"id": "diameter", "type": "Number", "default-value": 30, "minimum": 1, "maximum": 500},
        {"id": "flow", "type": "Number", "default-value": 0.4},
        {"id": "use_gpu", "type": "Boolean", "default-value": False},
        {"id": "model", "type": "ListDomain", "value-choices": ["nuclei", "cyto"],
         "default-value": "nuclei"},
        {"id": "label", "type": "String", "optional": False},
    ],
}  # fmt: skip


@pytest.fixture
def catalog() -> forms.Catalog:
    descriptor = parse_descriptor(json.dumps(DESCRIPTOR), source="test")
    wf = Workflow(name="seg", version="v1.0", settings=None, descriptor=descriptor)  # type: ignore[arg-type]
    return forms.Catalog(workflows=(wf,))


def by_name(inputs: list) -> dict:  # type: ignore[type-arg]
    return {i.name(): i for i in inputs}


def test_each_parameter_kind_becomes_the_matching_script_type(catalog: forms.Catalog) -> None:
    inputs = by_name(forms.workflow_inputs(catalog))
    assert set(inputs) == {
        "seg",
        "seg_Version",
        "seg_|_diameter",
        "seg_|_flow",
        "seg_|_use_gpu",
        "seg_|_model",
        "seg_|_label",
    }
    assert type(unwrap(inputs["seg_|_diameter"].prototype)) is int
    assert type(inputs["seg_|_diameter"].prototype).__name__ == "RIntI"  # as upstream's Int
    assert (unwrap(inputs["seg_|_diameter"].min), unwrap(inputs["seg_|_diameter"].max)) == (1, 500)
    assert unwrap(inputs["seg_|_flow"].prototype) == 0.4
    assert unwrap(inputs["seg_|_use_gpu"].prototype) is False
    assert unwrap(inputs["seg_|_model"].values) == ["nuclei", "cyto"]
    assert unwrap(inputs["seg_Version"].values) == ["v1.0"]


def test_workflow_parameters_never_block_the_form(catalog: forms.Catalog) -> None:
    inputs = forms.workflow_inputs(catalog)
    assert all(i.optional for i in inputs if "_|_" in i.name())


def answers(**extra: object) -> dict[str, object]:
    base: dict[str, object] = {"Data_Type": "Image", "IDs": [5, 6], "seg": True, "seg_|_label": "x"}
    base.update(extra)
    return base


def test_chosen_workflow_gets_typed_parameters_with_defaults(catalog: forms.Catalog) -> None:
    (choice,) = forms.read_choices(answers(**{"seg_|_diameter": 12}), catalog)
    assert choice.parameters == {
        "diameter": 12,
        "flow": 0.4,
        "use_gpu": False,
        "model": "nuclei",
        "label": "x",
    }


def test_bad_parameter_values_are_refused_by_name(catalog: forms.Catalog) -> None:
    with pytest.raises(ParameterError, match="diameter"):
        forms.read_choices(answers(**{"seg_|_diameter": 900}), catalog)
    with pytest.raises(ParameterError, match="label: required"):
        forms.read_choices(answers(**{"seg_|_label": None}), catalog)


def test_no_workflow_picked_is_refused(catalog: forms.Catalog) -> None:
    with pytest.raises(BiomeroError, match="pick at least one workflow"):
        forms.read_choices(answers(seg=False), catalog)


def test_a_version_that_is_not_configured_is_refused(catalog: forms.Catalog) -> None:
    with pytest.raises(BiomeroError, match=r"not v0\.9"):
        forms.read_choices(answers(seg_Version="v0.9"), catalog)


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        ({"Data_Type": "Project"}, "Data_Type must be one of"),
        ({"IDs": []}, "select at least one Image"),
        ({"IDs": [0]}, "ids are positive"),
    ],
)
def test_a_bad_selection_is_refused(given: dict[str, object], problem: str) -> None:
    with pytest.raises(BiomeroError, match=problem):
        forms.read_selection(answers(**given))


def test_outputs_read_no_thank_you_as_no_new_dataset() -> None:
    options = forms.read_outputs({forms.OUTPUT_NEW_DATASET: forms.NO, forms.OUTPUT_ATTACH: True})
    assert options.new_dataset is None and options.attach_to_originals
    assert options.to_outputs()["csv_as_table"] is True


def test_a_dataset_id_wins_over_a_dataset_name_as_upstream() -> None:
    options = forms.read_outputs({forms.OUTPUT_NEW_DATASET: "new", forms.OUTPUT_DATASET_ID: 4})
    assert (options.new_dataset, options.dataset_id) == (None, 4)


def test_waiting_is_bounded() -> None:
    assert forms.read_wait({forms.WAIT: False}) is None
    assert forms.read_wait({forms.WAIT: True, forms.WAIT_MINUTES: 500}) == forms.MAX_WAIT_MINUTES


def test_a_broken_configuration_gives_an_empty_catalog_with_the_problem() -> None:
    def broken() -> None:
        raise ConfigError(["slurm-config.ini [SLURM] slurm_data_path: missing"])

    catalog = forms.load_catalog(broken)
    assert catalog.workflows == ()
    assert "slurm_data_path: missing" in forms.run_description(catalog)


def test_the_catalog_comes_from_local_descriptors(tmp_path: Path) -> None:
    from biomeroworker.config import load_settings

    repo = Path(__file__).resolve().parents[2] / "workflows" / "nuclei-segmentation"
    config = tmp_path / "slurm-config.ini"
    config.write_text(
        "[SSH]\nhost = nowhere\n[SLURM]\nslurm_data_path = d\nslurm_images_path = i\n"
        "slurm_converters_path = c\nslurm_script_path = s\n"
        f"[WORKFLOWS]\nnuclei = nuclei\nnuclei_repo = {repo}\n"
    )
    catalog = forms.load_catalog(lambda: load_settings([config], env={}))
    assert [w.name for w in catalog.workflows] == ["nuclei"]
    assert "nuclei_|_threshold_method" in by_name(forms.workflow_inputs(catalog))


def test_the_form_offers_every_prepared_version_and_a_run_may_pick_an_earlier_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from biomeroworker.config import load_settings
    from biomeroworker.workflows.github import cache_path, parse_repo_url

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    url = "https://github.com/acme/W_Seg/tree/v2.0"
    for tag in ("v1.0", "v2.0"):
        path = cache_path(parse_repo_url(url.replace("v2.0", tag)))
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({**DESCRIPTOR, "description": f"at {tag}"}))
    config = tmp_path / "slurm-config.ini"
    config.write_text(f"[SSH]\nhost = h\n[WORKFLOWS]\nseg = seg\nseg_repo = {url}\n")
    catalog = forms.load_catalog(lambda: load_settings([config], env={}))
    version = by_name(forms.workflow_inputs(catalog))["seg_Version"]
    assert [v.getValue() for v in version.values.getValue()] == ["v2.0", "v1.0"]
    (choice,) = forms.read_choices(answers(seg_Version="v1.0"), catalog)
    assert (choice.workflow.version, choice.workflow.descriptor.description) == ("v1.0", "at v1.0")
