"""Every OMERO script parses offline (omero.scripts.parse_file) and validates its inputs."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import omero.scripts
import pytest
from omero.rtypes import rbool, rint, rlist, rlong, rstring, wrap

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"
EXPECTED = {
    "__workflows/SLURM_Run_Workflow.py": "Slurm Workflow",
    "__workflows/SLURM_Run_Workflow_Batched.py": "Slurm Workflow (Batched)",
    "_data/SLURM_Get_Results.py": "Slurm Get Results",
    "_data/SLURM_Get_Update.py": "Workflow Status",
    "_data/SLURM_Cancel_Workflow.py": "Cancel Workflow",
    # The OMERO.biomero plugin's ScriptCard.js recognises the admin scripts by these names.
    "admin/SLURM_Init_environment.py": "Slurm Init (Admin Only)",
    "admin/SLURM_check_setup.py": "Slurm Check Setup (Admin Only)",
    # The plugin offers ROI creation only when a script with this file name exists.
    "util/Labels2Rois.py": "Labels2Rois",
}


@pytest.fixture
def configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A config with the sample workflow; ICE_CONFIG put back (parse_file leaves it set)."""
    config = tmp_path / "slurm-config.ini"
    config.write_text(
        "[SSH]\nhost = nowhere\n[SLURM]\nslurm_data_path = d\nslurm_images_path = i\n"
        "slurm_converters_path = c\nslurm_script_path = s\n[WORKFLOWS]\nnuclei = nuclei\n"
        f"nuclei_repo = {REPO / 'workflows' / 'nuclei-segmentation'}\n"
    )
    monkeypatch.setenv("BIOMERO_CONFIG", str(config))
    old = os.environ.get("ICE_CONFIG")
    yield config
    if old is None:
        os.environ.pop("ICE_CONFIG", None)
    else:
        os.environ["ICE_CONFIG"] = old


def parse(relpath: str):  # type: ignore[no-untyped-def]
    return omero.scripts.parse_file(str(SCRIPTS / relpath))


def test_the_scripts_are_exactly_the_expected_set() -> None:
    found = {p.relative_to(SCRIPTS).as_posix() for p in SCRIPTS.rglob("*.py")}
    assert found == set(EXPECTED)


@pytest.mark.parametrize(("relpath", "name"), sorted(EXPECTED.items()))
def test_every_script_parses_offline(configured: Path, relpath: str, name: str) -> None:
    params = parse(relpath)
    assert params is not None and params.name == name


def test_parsing_opens_no_network_connection(
    configured: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a script opened a network connection while parsing")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    for relpath in EXPECTED:
        assert parse(relpath) is not None


def test_run_workflow_offers_the_configured_workflow_and_its_parameters(configured: Path) -> None:
    inputs = parse("__workflows/SLURM_Run_Workflow.py").inputs
    assert {"Data_Type", "IDs", "nuclei", "nuclei_Version", "nuclei_|_sigma"} <= set(inputs)
    assert "nuclei_|_cytomine_host" not in inputs
    assert omero.scripts.unwrap(inputs["nuclei_|_threshold_method"].values) == [
        "otsu",
        "li",
        "triangle",
        "yen",
    ]


GOOD = {
    "Data_Type": rstring("Image"),
    "IDs": rlist([rlong(3)]),
    "nuclei": rbool(True),
    "nuclei_|_sigma": wrap(1.5),
}


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        ({"Data_Type": rstring("Project")}, "VALUE LIST"),
        ({"nuclei_|_output_prefix": rlong(5)}, "WRONG TYPE"),
        ({"nuclei_|_threshold_method": rstring("magic")}, "VALUE LIST"),
        ({"Wait_Minutes": rlong(600)}, "OUT OF BOUNDS"),
        ({"nuclei_|_min_size": rint(-1)}, "OUT OF BOUNDS"),
        ({"nuclei_|_min_size": rlong(5)}, "WRONG TYPE"),  # whole numbers are Int, as upstream
        ({"OME-Zarr_version": rstring("0.3")}, "VALUE LIST"),
    ],
)
def test_run_workflow_rejects_bad_values(
    configured: Path, bad: dict[str, object], error: str
) -> None:
    params = parse("__workflows/SLURM_Run_Workflow.py")
    errors = omero.scripts.validate_inputs(params, {**GOOD, **bad}, svc=_NoDefaults())
    assert error in errors and errors.count("\n") == 1  # this problem and no other


def test_run_workflow_accepts_good_values(configured: Path) -> None:
    params = parse("__workflows/SLURM_Run_Workflow.py")
    assert omero.scripts.validate_inputs(params, GOOD, svc=_NoDefaults()) == ""


class _NoDefaults:
    """validate_inputs stores defaults of inputs not given through the service."""

    def setInput(self, *args: object) -> None:  # noqa: N802
        pass


def test_a_broken_configuration_still_gives_a_form_that_says_why(configured: Path) -> None:
    configured.write_text("[SLURM]\nslurm_data_path = d\n")
    params = parse("__workflows/SLURM_Run_Workflow.py")
    assert "nuclei" not in params.inputs
    assert "Not available: configuration" in params.description
