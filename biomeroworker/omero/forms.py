"""The OMERO script forms, built from local state only, and the reading of their answers.

A form is parsed every time a user opens it (the scripts are NSDYNAMIC), so building
one reads slurm-config.ini and the cached workflow descriptors and nothing else: no
SSH, no network. A configuration problem does not break the form; it shows in the
description and the workflow list is empty.

Names and types follow BIOMERO's scripts where they exist (``Data_Type``, ``IDs``,
``<wf>``, ``<wf>_Version``, ``<wf>_|_<param>``, ``<wf>_|_FILE_<param>`` for a file
parameter (a list of OMERO file annotation ids), the numbered output options), so users
and the OMERO.biomero web plugin find what they know. Whole numbers are ``Int`` as
upstream declares them: the plugin wraps Python ints as ``RInt``, and OMERO refuses an
``RInt`` for a ``Long`` input. The other inputs the plugin sends are in ``upstream``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from biomeroworker.errors import BiomeroError
from biomeroworker.omero.options import ROI_SHAPES, ImportOptions
from biomeroworker.workflows.attachments import MAX_FILES
from biomeroworker.workflows.attachments import describe as describe_attachment
from biomeroworker.workflows.catalog import Workflow
from biomeroworker.workflows.descriptor import Parameter
from biomeroworker.workflows.params import validate_params

DATA_TYPE = "Data_Type"
# A Screen, which upstream's scripts and the web plugin offer, runs on its plates.
DATA_TYPES = ("Dataset", "Image", "Plate", "Screen")
IDS = "IDs"
OUTPUT_ATTACH = "2) Attach to original images"
OUTPUT_NEW_DATASET = "3a) Import into NEW Dataset"
OUTPUT_DATASET_ID = "Dataset_ID"
OUTPUT_CSV_TABLE = "4) Upload result CSVs as OMERO tables"
OUTPUT_CREATE_ROIS = "6a) Create ROIs from label images"
ROI_SHAPE = "6c) ROI shape"
NO = "--NO THANK YOU--"
WAIT = "Wait_For_Results"
WAIT_MINUTES = "Wait_Minutes"
BATCH_SIZE = "Batch_Size"
WORKFLOW_UUID = "Workflow_UUID"
VERSION_SUFFIX = "_Version"
PARAM_SEPARATOR = "_|_"
FILE_PREFIX = "FILE_"
MAX_WAIT_MINUTES = 60


@dataclass(frozen=True)
class Catalog:
    """What the forms offer: the readable workflows, and why others are missing."""

    workflows: tuple[Workflow, ...] = ()
    problems: tuple[str, ...] = ()
    settings: Any = field(default=None, compare=False)

    def get(self, name: str) -> Workflow:
        for wf in self.workflows:
            if wf.name == name:
                return wf
        raise BiomeroError(f"workflow {name!r} is not available here")


def load_catalog(load: Callable[[], Any] | None = None) -> Catalog:
    """The configured workflows from local state; never raises (problems are listed)."""
    from biomeroworker.config import load_settings
    from biomeroworker.workflows.catalog import list_workflows

    try:
        settings = (load or load_settings)()
    except BiomeroError as exc:
        return Catalog(problems=(f"configuration: {exc}",))
    workflows, problems = [], []
    for item in list_workflows(settings):
        if isinstance(item, tuple):
            problems.append(f"{item[0]}: {item[1]}")
        else:
            workflows.append(item)
    return Catalog(tuple(workflows), tuple(problems), settings)


def param_key(workflow: str, param_id: str) -> str:
    return f"{workflow}{PARAM_SEPARATOR}{param_id}"


def file_key(workflow: str, param_id: str) -> str:
    """A file parameter's input, as upstream names it: ``<wf>_|_FILE_<param>``."""
    return f"{workflow}{PARAM_SEPARATOR}{FILE_PREFIX}{param_id}"


def _group(n: int) -> str:
    return f"{n:02d}"


def param_input(workflow: str, param: Parameter, grouping: str) -> Any:
    """One descriptor parameter as an omero.scripts input (always optional: parameters of
    workflows the user did not pick must not block the form; required ones are checked
    for the chosen workflow when the script runs)."""
    import omero.scripts as scripts
    from omero.rtypes import rlong, rstring

    if param.kind == "file":
        return scripts.List(
            file_key(workflow, param.id),
            optional=True,
            grouping=grouping,
            description=describe_attachment(param),
        ).ofType(rlong(0))
    key = param_key(workflow, param.id)
    description = param.description or param.name
    common: dict[str, Any] = {"optional": True, "grouping": grouping, "description": description}
    if param.default is not None and param.kind != "choice":
        common["default"] = param.default
    bounds = {
        k: v
        for k, v in (("min", param.minimum), ("max", param.maximum))
        if v is not None and param.kind in ("int", "float")
    }
    if param.kind == "int":
        bounds = {k: int(v) for k, v in bounds.items()}
        return scripts.Int(key, **common, **bounds)
    if param.kind == "float":
        if "default" in common:
            common["default"] = float(common["default"])
        return scripts.Float(key, **common, **bounds)
    if param.kind == "boolean":
        return scripts.Bool(key, **common)
    if param.kind == "choice":
        values = [rstring(str(c)) for c in param.choices]
        default = str(param.default) if param.default is not None else None
        return scripts.String(key, values=values, default=default, **common)
    return scripts.String(key, **common)


def _versions(catalog: Catalog, wf: Workflow) -> list[str]:
    """The configured version first, then others an earlier init prepared."""
    if catalog.settings is None:
        return [wf.version]
    from biomeroworker.workflows.catalog import prepared_versions

    return prepared_versions(catalog.settings, wf.name)


def _at_version(catalog: Catalog, wf: Workflow, version: str) -> Workflow:
    if catalog.settings is None:
        raise BiomeroError(f"{wf.name} is available at version {wf.version}, not {version}")
    from biomeroworker.workflows.catalog import get_workflow

    return get_workflow(catalog.settings, wf.name, version)


def workflow_inputs(catalog: Catalog, first_group: int = 3) -> list[Any]:
    """Per workflow: a Bool to pick it, its version, then its parameters."""
    import omero.scripts as scripts
    from omero.rtypes import rstring

    inputs: list[Any] = []
    for n, wf in enumerate(catalog.workflows):
        group = _group(first_group + n)
        inputs.append(
            scripts.Bool(
                wf.name, grouping=group, default=False, description=wf.descriptor.description
            )
        )
        inputs.append(
            scripts.String(
                wf.name + VERSION_SUFFIX,
                grouping=f"{group}.0",
                values=[rstring(v) for v in _versions(catalog, wf)],
                default=wf.version,
                description=f"Version of {wf.name}",
            )
        )
        # As upstream: the values first, then the file parameters (lists of OMERO file
        # annotation ids, ``<wf>_|_FILE_<param>``).
        values = [p for p in wf.descriptor.user_parameters if p.kind != "file"]
        for i, param in enumerate([*values, *wf.descriptor.attachments], start=1):
            inputs.append(param_input(wf.name, param, f"{group}.{i}"))
    return inputs


def selection_inputs() -> list[Any]:
    import omero.scripts as scripts
    from omero.rtypes import rlong, rstring

    return [
        scripts.String(
            DATA_TYPE,
            optional=False,
            grouping="01.1",
            values=[rstring(t) for t in DATA_TYPES],
            default="Dataset",
            description="The kind of objects selected",
        ),
        scripts.List(IDS, optional=False, grouping="01.2", description="Their ids").ofType(
            rlong(0)
        ),
    ]


def batch_size_input() -> Any:
    """``Batch_Size`` as upstream's batched script declares it (the plugin sends an RInt)."""
    import omero.scripts as scripts

    return scripts.Int(
        BATCH_SIZE,
        optional=False,
        grouping="01.3",
        default=32,
        min=1,
        description="Images per run",
    )


def output_inputs() -> list[Any]:
    import omero.scripts as scripts
    from omero.rtypes import rstring

    return [
        scripts.Bool(
            OUTPUT_ATTACH,
            grouping="02.4",
            default=False,
            description="Attach each result image to the image it came from",
        ),
        scripts.String(
            OUTPUT_NEW_DATASET,
            grouping="02.5",
            default=NO,
            description="Name of a new dataset for the result images",
        ),
        scripts.Long(
            OUTPUT_DATASET_ID,
            optional=True,
            grouping="02.61",
            min=1,
            description="Or: the id of an existing dataset of yours for the result images",
        ),
        scripts.Bool(
            OUTPUT_CSV_TABLE,
            grouping="02.8",
            default=True,
            description="Result CSVs become OMERO.tables (else plain attachments)",
        ),
        scripts.Bool(
            OUTPUT_CREATE_ROIS,
            grouping="02.86",
            default=False,
            description="One ROI per label of each label image, on its source image",
        ),
        scripts.String(
            ROI_SHAPE,
            grouping="02.88",
            default="Polygon",
            values=[rstring(s) for s in ROI_SHAPES],
            description="ROI shape",
        ),
    ]


def wait_inputs() -> list[Any]:
    import omero.scripts as scripts

    return [
        scripts.Bool(
            WAIT,
            grouping="09.1",
            default=False,
            description="Stay until the run ends (small jobs only)",
        ),
        scripts.Long(
            WAIT_MINUTES,
            grouping="09.2",
            default=10,
            min=1,
            max=MAX_WAIT_MINUTES,
            description="Give up waiting after this many minutes (the run goes on)",
        ),
    ]


def run_description(catalog: Catalog) -> str:
    lines = [
        "Run a workflow on the selected images on the Slurm cluster.",
        "The request is recorded at once; the BIOMERO worker exports the images, runs the "
        "job and imports the results into your group. Follow it with Workflow Status.",
    ]
    if not catalog.workflows:
        lines.append("No workflow is available.")
    lines += [f"Not available: {p}" for p in catalog.problems]
    return "\n".join(lines)


# -- reading the answers ---------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    workflow: Workflow
    parameters: dict[str, Any]
    # file parameter id -> the OMERO file annotation ids it was given
    attachments: dict[str, list[int]] = field(default_factory=dict)


def whole_number(name: str, value: Any) -> int:
    """A script input that must be a whole number (OMERO sends Long/Int; the web plugin
    and hand-made launches may send text or floats): the int, or a clear error."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit() and value.strip().isascii():
        return int(value.strip())
    raise BiomeroError(f"{name} must be a whole number, got {value!r}")


def read_selection(inputs: Mapping[str, Any]) -> tuple[str, list[int]]:
    data_type = inputs.get(DATA_TYPE)
    if data_type not in DATA_TYPES:
        raise BiomeroError(f"{DATA_TYPE} must be one of {', '.join(DATA_TYPES)}")
    given = inputs.get(IDS) or []
    if not isinstance(given, list | tuple):
        raise BiomeroError(f"{IDS} must be a list of ids, got {given!r}")
    ids = [whole_number(IDS, i) for i in given]
    if not ids or any(i < 1 for i in ids):
        raise BiomeroError(f"select at least one {data_type} (ids are positive numbers)")
    return str(data_type), sorted(set(ids), key=ids.index)


def read_outputs(inputs: Mapping[str, Any]) -> ImportOptions:
    """Where results go. A ``Dataset_ID`` wins over a dataset name, as upstream (the web
    plugin sends the name of a dataset picked by id too)."""
    name = str(inputs.get(OUTPUT_NEW_DATASET) or "").strip()
    dataset_id = (
        whole_number(OUTPUT_DATASET_ID, inputs[OUTPUT_DATASET_ID])
        if inputs.get(OUTPUT_DATASET_ID)
        else None
    )
    return ImportOptions(
        new_dataset=name if name and name != NO and dataset_id is None else None,
        dataset_id=dataset_id,
        attach_to_originals=bool(inputs.get(OUTPUT_ATTACH, False)),
        csv_as_table=bool(inputs.get(OUTPUT_CSV_TABLE, True)),
        rois_from_labels=bool(inputs.get(OUTPUT_CREATE_ROIS, False)),
        roi_shape=str(inputs.get(ROI_SHAPE) or "Polygon"),
    )


def read_choices(inputs: Mapping[str, Any], catalog: Catalog) -> list[Choice]:
    """The picked workflows with their checked, typed parameters."""
    choices = []
    for wf in catalog.workflows:
        if not inputs.get(wf.name):
            continue
        version = inputs.get(wf.name + VERSION_SUFFIX) or wf.version
        if version != wf.version:
            wf = _at_version(catalog, wf, str(version))
        given = {
            p.id: inputs[param_key(wf.name, p.id)]
            for p in wf.descriptor.user_parameters
            if p.kind != "file" and inputs.get(param_key(wf.name, p.id)) is not None
        }
        files = read_files(inputs, wf)
        choices.append(Choice(wf, validate_params(wf.descriptor, {**given, **files}), files))
    if not choices:
        raise BiomeroError("pick at least one workflow")
    return choices


def read_files(inputs: Mapping[str, Any], wf: Workflow) -> dict[str, list[int]]:
    """The file annotation ids each file parameter was given: a list (the form's type;
    a lone id, which OMERO itself refuses for a List input, is read as a list of one).
    Only ids: a file parameter from OMERO never names a path on the worker."""
    out: dict[str, list[int]] = {}
    for param in wf.descriptor.attachments:
        key = file_key(wf.name, param.id)
        raw = inputs.get(key)
        items = list(raw) if isinstance(raw, list | tuple) else [] if raw is None else [raw]
        if len(items) > MAX_FILES:
            raise BiomeroError(f"{key}: {len(items)} files; at most {MAX_FILES} are staged")
        ids = [whole_number(key, i) for i in items if i is not None]
        if any(i < 1 for i in ids):
            raise BiomeroError(f"{key}: file annotation ids are positive numbers, got {ids}")
        if ids:
            out[param.id] = sorted(set(ids), key=ids.index)
    return out


def read_wait(inputs: Mapping[str, Any]) -> float | None:
    """Minutes to wait for the outcome, or None to return at once."""
    if not inputs.get(WAIT):
        return None
    minutes = whole_number(WAIT_MINUTES, inputs.get(WAIT_MINUTES) or 10)
    return float(min(max(minutes, 1), MAX_WAIT_MINUTES))
