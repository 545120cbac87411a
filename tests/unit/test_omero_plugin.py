"""The OMERO.biomero web plugin (omero-biomero 1.6.1) driven for real against our scripts
and our config loader.

The plugin's own code runs from its wheel: ``analyzer_views.run_workflow_script`` and
``get_slurm_status`` (launching a workflow) and ``admin_views.admin_config`` (its settings
page). The wheel needs Python 3.12 and omero-web, so what those two modules import from
Django, OMERO.web and biomero is replaced by thin stand-ins below; ``biomero.constants``,
the names of every input, is biomero 2.8.3's own module from its wheel. What the plugin
hands to ``runScript`` is checked with omero-py's real ``validate_inputs`` against our
scripts parsed offline, and then given to our script's action.

The wheels come from ``tools/fetch-plugin-wheels`` (``make test`` runs it first).
"""

from __future__ import annotations

import configparser
import importlib
import json
import os
import shutil
import sys
import types
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import omero.scripts
import pytest
from module_standins import standin_modules
from omero.rtypes import rlong, rstring, unwrap
from omero_standins import StandInServer

from biomeroworker.config import find_config_files, load_settings
from biomeroworker.errors import ConfigError
from biomeroworker.omero import actions, forms
from biomeroworker.slurm.parse import Partition
from biomeroworker.tracking.application import Tracker

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"
# The versions the web image installs are the ones tested (tools/fetch-plugin-wheels too).
PINNED = dict(
    line.split("=", 1)
    for line in (REPO / "deploy" / "versions.env").read_text().splitlines()
    if "=" in line and not line.startswith("#")
)
PLUGIN_VERSION = PINNED["OMERO_BIOMERO_VERSION"].strip()
BIOMERO_VERSION = PINNED["BIOMERO_VERSION"].strip()
WHEELS = Path(os.environ.get("BIOMERO_WHEEL_CACHE", "~/.cache/biomeroworker/wheels"))
PLUGIN_WHEEL = WHEELS.expanduser() / f"omero_biomero-{PLUGIN_VERSION}-py3-none-any.whl"
BIOMERO_WHEEL = WHEELS.expanduser() / f"biomero-{BIOMERO_VERSION}-py3-none-any.whl"
GROUP = 3
# What the cluster offers, as the cached sinfo answer gives it (the launch checks it).
PARTITIONS = [Partition("cpu-short", True, 7200, 1, 4, True)]

# A workflow with every kind of parameter the plugin sends (cytomine-0.1, as BIAFLOWS).
DESCRIPTOR = {
    "name": "Demo",
    "description": "every kind of parameter",
    "schema-version": "cytomine-0.1",
    "container-image": {"image": "org/w_demo", "type": "singularity"},
    "command-line": "python wrapper.py",
    "inputs": [
        {"id": "cytomine_host", "type": "String", "set-by-server": True, "optional": False},
        {"id": "diameter", "type": "Number", "default-value": 30, "minimum": 1,
         "maximum": 500, "optional": True},
        {"id": "flow", "type": "Number", "default-value": 0.4, "optional": True},
        {"id": "model", "type": "String", "default-value": "nuclei",
         "value-choices": ["nuclei", "cyto"], "optional": True},
        {"id": "prefix", "type": "String", "default-value": "", "optional": True},
        {"id": "use_gpu", "type": "Boolean", "default-value": False, "optional": True},
    ],
}  # fmt: skip


# -- stand-ins for what the plugin's views import ----------------------------------------


class JsonResponse:
    def __init__(self, data: Any, status: int = 200, **_: Any) -> None:
        self.data = data
        self.status_code = status
        self.headers: dict[str, str] = {}

    def __setitem__(self, key: str, value: str) -> None:
        self.headers[key] = value


class HttpResponseBadRequest(JsonResponse):
    pass


class _Cache:
    """django.core.cache.cache with nothing in it."""

    def get(self, key: str) -> None:
        return None

    def set(self, *args: Any) -> None:
        pass


def _decorator_factory(*args: Any, **kwargs: Any) -> Any:
    """login_required() and require_http_methods([...]): the view as it is; the test
    passes ``conn`` itself, as OMERO.web's login_required would."""
    return lambda view: view


class StandInSlurmClient:
    """biomero.SlurmClient as the two views use it: the config file read as biomero 2.8.3
    reads it (ConfigParser with interpolation; $BIOMERO_SLURM_CONFIG_FILE the only file)
    and descriptors from the configured local workflows instead of GitHub."""

    @classmethod
    def get_authoritative_config_path(cls) -> str | None:
        named = os.environ.get("BIOMERO_SLURM_CONFIG_FILE", "").strip()
        return os.path.expanduser(named) if named else None

    @classmethod
    def get_config_write_path(cls) -> str:
        return cls.get_authoritative_config_path() or os.path.expanduser("~/slurm-config.ini")

    @classmethod
    def load_config(cls) -> configparser.ConfigParser:
        parsed = configparser.ConfigParser(allow_no_value=True)
        parsed.read([cls.get_config_write_path()])
        return parsed

    @classmethod
    def from_config(cls, config_only: bool = False) -> StandInSlurmClient:
        return cls()

    def __enter__(self) -> StandInSlurmClient:
        self.settings = load_settings()
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    @property
    def slurm_model_images(self) -> dict[str, str]:
        return {name: wf.folder for name, wf in self.settings.workflows.items()}

    def generic_descriptor_from_github(self, name: str) -> dict[str, Any]:
        repo = Path(self.settings.workflows[name].repo)
        return json.loads((repo / "descriptor.json").read_text())


def _module(name: str, **attributes: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    return module


def _module_from_wheel(wheel: Path, member: str, name: str) -> types.ModuleType:
    with zipfile.ZipFile(wheel) as archive:
        source = archive.read(member).decode("utf-8")
    module = _module(name)
    module.__file__ = f"{wheel}/{member}"
    exec(compile(source, module.__file__, "exec"), module.__dict__)  # noqa: S102
    return module


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[types.SimpleNamespace]:
    """The plugin's analyzer_views and admin_views, imported from its wheel."""
    for wheel in (PLUGIN_WHEEL, BIOMERO_WHEEL):
        if not wheel.is_file():
            pytest.fail(f"{wheel} is missing: run tools/fetch-plugin-wheels (make test does)")
    constants = _module_from_wheel(BIOMERO_WHEEL, "biomero/constants.py", "biomero.constants")
    biomero = _module("biomero", SlurmClient=StandInSlurmClient, constants=constants)
    biomero.__path__ = []  # a package, so "biomero.constants" imports
    standins = {
        "django": _module("django"),
        "django.core": _module("django.core"),
        "django.core.cache": _module("django.core.cache", cache=_Cache()),
        "django.http": _module(
            "django.http", JsonResponse=JsonResponse, HttpResponseBadRequest=HttpResponseBadRequest
        ),
        "django.views": _module("django.views"),
        "django.views.decorators": _module("django.views.decorators"),
        "django.views.decorators.http": _module(
            "django.views.decorators.http", require_http_methods=_decorator_factory
        ),
        "omeroweb": _module("omeroweb"),
        "omeroweb.webclient": _module("omeroweb.webclient"),
        "omeroweb.webclient.decorators": _module(
            "omeroweb.webclient.decorators", login_required=_decorator_factory
        ),
        "convertleica_file_browser": _module("convertleica_file_browser"),
        "convertleica_file_browser.ci_leica_converters_helpers": _module(
            "convertleica_file_browser.ci_leica_converters_helpers", read_leica_file=None
        ),
        "biomero": biomero,
        "biomero.constants": constants,
    }
    saved_env = os.environ.get("OMERO_BIOMERO_CONFIG_FILE")
    os.environ["OMERO_BIOMERO_CONFIG_FILE"] = str(tmp_path_factory.mktemp("web") / "b.json")
    sys.path.insert(0, str(PLUGIN_WHEEL))
    try:
        with standin_modules(standins, forget=("omero_biomero",)):
            yield types.SimpleNamespace(
                analyzer=importlib.import_module("omero_biomero.analyzer_views"),
                admin=importlib.import_module("omero_biomero.admin_views"),
                constants=constants,
            )
    finally:
        sys.path.remove(str(PLUGIN_WHEEL))
        if saved_env is None:
            os.environ.pop("OMERO_BIOMERO_CONFIG_FILE", None)
        else:
            os.environ["OMERO_BIOMERO_CONFIG_FILE"] = saved_env


# -- OMERO.web's side: the request and the connection ------------------------------------


@dataclass
class Request:
    method: str = "POST"
    data: Any = None
    session: Any = field(default_factory=lambda: types.SimpleNamespace(modified=False))
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def body(self) -> bytes:
        return json.dumps(self.data).encode()


class _Session(dict):  # type: ignore[type-arg]
    modified = False


class _Process:
    def getJob(self) -> Any:  # noqa: N802
        return types.SimpleNamespace(_id=rlong(99))

    def __str__(self) -> str:
        return "ProcessCallback/stand-in"


class WebConnection:
    """OMERO.web's connection as the views use it: our scripts are the server's scripts
    (by file name, as OMERO lists them), getParams parses them offline, runScript records."""

    def __init__(self, *, admin: bool = False) -> None:
        self.admin = admin
        self.files = sorted(SCRIPTS.rglob("*.py"))
        self.launched: list[tuple[Path, dict[str, Any]]] = []
        self.group = GROUP

    def getUser(self) -> Any:  # noqa: N802
        return types.SimpleNamespace(getName=lambda: "alice", getId=lambda: 7)

    def isAdmin(self) -> bool:  # noqa: N802
        return self.admin

    def setGroupForSession(self, group_id: int) -> None:  # noqa: N802
        self.group = group_id

    def getEventContext(self) -> Any:  # noqa: N802
        return types.SimpleNamespace(groupId=self.group, userId=7)

    def getScriptService(self) -> WebConnection:  # noqa: N802
        return self

    def getScripts(self) -> list[Any]:  # noqa: N802
        return [
            types.SimpleNamespace(id=rlong(n), getName=lambda p=path: rstring(p.name))
            for n, path in enumerate(self.files, start=1)
        ]

    def getParams(self, script_id: int) -> Any:  # noqa: N802
        return omero.scripts.parse_file(str(self.files[script_id - 1]))

    def runScript(self, script_id: int, inputs: dict[str, Any], ctx: Any) -> _Process:  # noqa: N802
        self.launched.append((self.files[script_id - 1], inputs))
        return _Process()


class _NoDefaults:
    """validate_inputs stores the defaults of inputs not given through the service."""

    def setInput(self, *args: object) -> None:  # noqa: N802
        pass


# -- our side ----------------------------------------------------------------------------


@pytest.fixture
def configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """slurm-config.ini with the demo workflow, named as the plugin names it."""
    folder = tmp_path / "w_demo"
    folder.mkdir()
    (folder / "descriptor.json").write_text(json.dumps(DESCRIPTOR))
    config = tmp_path / "slurm-config.ini"
    config.write_text(
        "[SSH]\nhost = nowhere\n[SLURM]\nslurm_default_partition = cpu-short\n"
        f"[WORKFLOWS]\ndemo = demo\ndemo_repo = {folder}\n",
    )
    monkeypatch.setenv("BIOMERO_SLURM_CONFIG_FILE", str(config))
    monkeypatch.delenv("BIOMERO_CONFIG", raising=False)
    old = os.environ.get("ICE_CONFIG")
    yield config
    if old is None:  # parse_file leaves ICE_CONFIG set
        os.environ.pop("ICE_CONFIG", None)
    else:
        os.environ["ICE_CONFIG"] = old


def launch_params(image_ids: list[int], version: str, **extra: Any) -> dict[str, Any]:
    """What the plugin's launch page posts (its field names), as a user fills it in."""
    return {
        "IDs": image_ids,
        "Data_Type": "Image",
        "version": version,
        "active_group_id": GROUP,
        "receiveEmail": True,
        "attachToOriginalImages": False,
        "importAsZip": True,
        "uploadCsv": True,
        "selectedDatasets": ["demo results"],
        "selectedScreens": [],
        "selectedDatasetId": None,
        "enableRename": False,
        "renamePattern": "",
        "attachFileOutputs": False,
        "createRois": True,
        "roiShape": "Mask",
        "roiColor": "",
        "roiLabelPattern": "",
        "useZarrFormat": False,
        "omeZarrVersion": "0.4",
        # the workflow's own parameters; "17.0" and 1 are what a half-typed number field
        # gives, and the plugin coerces them by the descriptor
        "diameter": "17.0",
        "flow": 1,
        "model": "cyto",
        "prefix": "run one",
        "use_gpu": True,
        **extra,
    }


def launch(plugin: Any, web: WebConnection, params: dict[str, Any]) -> tuple[Path, dict]:  # type: ignore[type-arg]
    request = Request(data={"params": params})
    request.session = _Session()
    response = plugin.analyzer.run_workflow_script(request, conn=web, name="demo")
    assert response.status_code == 200, response.data
    (launched,) = web.launched
    return launched


def our_session(server: StandInServer) -> Any:
    session = server.session_as("alice", "lab")
    session.getUser = lambda: types.SimpleNamespace(getEmail=lambda: "alice@example.org")
    return session


@pytest.fixture
def server() -> StandInServer:
    s = StandInServer()
    s.add_user("alice", GROUP, "lab")
    return s


# -- launching ---------------------------------------------------------------------------


def test_the_plugin_reads_our_workflow_versions_and_finds_labels2rois(plugin, configured) -> None:  # type: ignore[no-untyped-def]
    status = plugin.analyzer.get_slurm_status(Request("GET"), conn=WebConnection()).data
    assert status["status"] == "online"
    assert status["workflow_versions"]["demo"]["latest_version"] == "local"
    assert status["capabilities"]["roi_postprocessing"]["available"] is True


@pytest.mark.parametrize("batched", [False, True])
def test_a_plugin_launch_passes_omero_validation_and_records_the_runs(  # type: ignore[no-untyped-def]
    plugin, configured, server, tmp_path, batched
) -> None:
    images = [server.add_image("alice", GROUP, f"{n}.tif") for n in range(3)]
    web = WebConnection()
    params = launch_params(images, "local", batchEnabled=batched, batchSize=2)
    script, inputs = launch(plugin, web, params)
    assert script.name == ("SLURM_Run_Workflow_Batched.py" if batched else "SLURM_Run_Workflow.py")

    declared = omero.scripts.parse_file(str(script))
    # OMERO drops what a script does not declare: the plugin sends nothing we drop.
    assert set(inputs) <= set(declared.inputs), set(inputs) - set(declared.inputs)
    assert omero.scripts.validate_inputs(declared, inputs, svc=_NoDefaults()) == ""
    assert type(inputs["demo_|_diameter"]).__name__ == "RIntI"  # was refused as a Long
    if batched:
        assert type(inputs["Batch_Size"]).__name__ == "RIntI"

    # The script's action, on what OMERO gives it (client.getInputs(unwrap=True)).
    given = {key: unwrap(value) for key, value in inputs.items()}
    catalog = forms.load_catalog()
    with Tracker(f"sqlite:///{tmp_path / 'tracking.sqlite'}") as tracker:
        session = our_session(server)
        message = actions.run_workflow(
            session, tracker, catalog, given, batched=batched, partitions=PARTITIONS.copy
        )
        runs = sorted(tracker.list_runs(), key=lambda r: r["inputs"]["ids"])
    assert [r["inputs"]["ids"] for r in runs] == ([images[:2], images[2:]] if batched else [images])
    run = runs[0]
    assert run["parameters"] == {
        "diameter": 17,
        "flow": 1.0,
        "model": "cyto",
        "prefix": "run one",
        "use_gpu": True,
    }
    assert type(run["parameters"]["flow"]) is float
    assert run["inputs"]["outputs"]["rois_from_labels"] is True
    assert run["inputs"]["outputs"]["roi_shape"] == "Mask"
    assert run["inputs"]["outputs"]["new_dataset"] == "demo results"
    assert run["inputs"]["notify_email"] == "alice@example.org"
    assert "Note: E-mail: a message goes to alice@example.org when the run ends" in message
    assert "Note: 1) Zip attachment to parent: not supported by this worker" in message
    assert "Note: 5) Attach individual non-image output files: always done here" in message


PIPELINE = {"id": "pipeline", "type": "file", "file-attachment": True, "optional": True,
            "format": ["cppipe"], "description": "a CellProfiler pipeline"}  # fmt: skip


def test_a_plugin_launch_with_a_file_parameter_records_its_annotation(  # type: ignore[no-untyped-def]
    plugin, configured, server, tmp_path
) -> None:
    """The plugin routes a file input as FILE_<param> (a list of RLong); our form
    declares it, OMERO accepts it, and the run records the annotation to download."""
    folder = configured.parent / "w_demo"
    descriptor = {**DESCRIPTOR, "inputs": [*DESCRIPTOR["inputs"], PIPELINE]}
    (folder / "descriptor.json").write_text(json.dumps(descriptor))
    images = [server.add_image("alice", GROUP, "a.tif")]
    annotation = server.add_file_annotation("alice", GROUP, "analysis.cppipe", b"pipeline")
    web = WebConnection()
    script, inputs = launch(plugin, web, launch_params(images, "local", pipeline=[annotation]))
    assert type(inputs["demo_|_FILE_pipeline"]).__name__ == "RListI"
    declared = omero.scripts.parse_file(str(script))
    assert set(inputs) <= set(declared.inputs), set(inputs) - set(declared.inputs)
    assert omero.scripts.validate_inputs(declared, inputs, svc=_NoDefaults()) == ""

    given = {key: unwrap(value) for key, value in inputs.items()}
    with Tracker(f"sqlite:///{tmp_path / 'tracking.sqlite'}") as tracker:
        actions.run_workflow(
            our_session(server), tracker, forms.load_catalog(), given, partitions=PARTITIONS.copy
        )
        (run,) = tracker.list_runs()
    assert run["inputs"]["attachments"] == {"pipeline": [annotation]}
    assert run["parameters"]["pipeline"] == "data/files/pipeline"


def test_every_choice_we_do_not_carry_out_is_named_in_the_message(  # type: ignore[no-untyped-def]
    plugin, configured, server, tmp_path
) -> None:
    image = server.add_image("alice", GROUP, "a.tif")
    params = launch_params(
        [image],
        "local",
        useZarrFormat=True,
        omeZarrVersion="0.5",
        selectedDatasets=[],
        selectedScreens=["screen"],
        enableRename=True,
        renamePattern="{file}_x.{ext}",
        roiLabelPattern="*_cp_masks.tif",
        roiColor="#FF0000",
        deleteLabelImagesAfterRois=True,
        clearExistingRois=True,
        clearRoiFilter="old",
    )
    script, inputs = launch(plugin, WebConnection(), params)
    declared = omero.scripts.parse_file(str(script))
    assert set(inputs) <= set(declared.inputs)
    assert omero.scripts.validate_inputs(declared, inputs, svc=_NoDefaults()) == ""
    given = {key: unwrap(value) for key, value in inputs.items()}
    with Tracker(f"sqlite:///{tmp_path / 'tracking.sqlite'}") as tracker:
        message = actions.run_workflow(
            our_session(server), tracker, forms.load_catalog(), given, partitions=PARTITIONS.copy
        )
    for name in (
        "OME-Zarr_version '0.5'",
        "1) Zip attachment to parent",
        "3a) Import into NEW Screen / Screen_ID",
        "3c) Rename the imported images",
        "6b) Label image pattern '*_cp_masks.tif'",
        "6g) ROI color override",
        "6d) Delete label images after ROI creation",
        "6e) Clear existing ROIs on original images / 6f) Clear existing ROI name filter",
    ):
        assert f"Note: {name}" in message, name
    assert "Note: Use_ZARR_Format" not in message  # carried out: no conversion job
    with Tracker(f"sqlite:///{tmp_path / 'tracking.sqlite'}") as tracker:
        (run,) = tracker.list_runs()
    assert run["inputs"]["reads_zarr"] is True


def test_our_script_declares_every_input_biomero_names(plugin, configured) -> None:  # type: ignore[no-untyped-def]
    """Every Run Workflow input in biomero 2.8.3's constants, except Cleanup? (the plugin
    never sends it; we remove temporary files always)."""
    c = plugin.constants
    names = {
        value
        for cls in (c.workflow, c.workflow_batched)
        for key, value in vars(cls).items()
        if key.isupper() and key != "NO"
    } | {c.transfer.DATA_TYPE, c.transfer.IDS, c.transfer.OME_VERSION}
    names |= {c.results.OUTPUT_ATTACH_NEW_DATASET_ID, c.results.OUTPUT_ATTACH_NEW_SCREEN_ID}
    declared = set(
        omero.scripts.parse_file(str(SCRIPTS / "__workflows/SLURM_Run_Workflow_Batched.py")).inputs
    )
    assert names - declared == set()


# -- the admin page's config file --------------------------------------------------------


def admin_save(plugin: Any, edit: dict[str, dict[str, str]] | None = None) -> None:
    """What the settings page does: load the config (GET), send it back edited (POST)."""
    web = WebConnection(admin=True)
    shown = plugin.admin.admin_config(Request("GET"), conn=web)
    assert shown.status_code == 200, shown.data
    config = shown.data["config"]
    for section, values in (edit or {}).items():
        config.setdefault(section, {}).update(values)
    saved = plugin.admin.admin_config(Request("POST", {"config": config}), conn=web)
    assert saved.status_code == 200, saved.data


@pytest.fixture
def admin_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Our sample slurm-config.ini, as the file the admin page saves."""
    path = tmp_path / "slurm-config.ini"
    shutil.copyfile(REPO / "slurm-config.ini", path)
    monkeypatch.setenv("BIOMERO_SLURM_CONFIG_FILE", str(path))
    return path


def test_after_admin_saves_our_loader_reads_the_file_they_wrote(plugin, admin_file) -> None:  # type: ignore[no-untyped-def]
    before = load_settings([admin_file], env={})
    admin_save(plugin, {"SLURM": {"slurm_default_partition": "cpu-short"}})
    admin_save(plugin, {"WORKFLOWS": {"cellpose_job_mem": "32G"}})
    text = admin_file.read_text()
    assert "[changelog]" in text and "via the web UI" in text
    env = {"BIOMERO_SLURM_CONFIG_FILE": str(admin_file)}
    found = find_config_files(None, env, system_file=admin_file.parent / "no-etc.ini")
    after = load_settings(found, env=env)
    assert found == [admin_file]
    assert after.slurm.slurm_default_partition == "cpu-short"
    assert after.workflows["cellpose"].job_flags["mem"] == "32G"
    assert set(after.workflows) == set(before.workflows)
    assert after.slurm.slurm_data_path == before.slurm.slurm_data_path


def test_the_admin_page_writes_a_lone_percent_back_and_our_loader_says_how_to_fix_it(  # type: ignore[no-untyped-def]
    plugin, admin_file
) -> None:
    """The page shows values through ConfigParser interpolation, so a %% it read comes back
    as one %: after that save biomero itself fails on the file; we say what to write."""
    text = admin_file.read_text().replace(
        "#sbatch_output = omero-%%j.log", "sbatch_output = omero-%%j.log"
    )
    admin_file.write_text(text)
    assert load_settings([admin_file], env={}).slurm.sbatch_flags["output"] == "omero-%j.log"
    admin_save(plugin)
    assert "sbatch_output = omero-%j.log" in admin_file.read_text()
    with pytest.raises(ConfigError, match=r"sbatch_output: lone '%' .* write %% for a literal"):
        load_settings([admin_file], env={})
