"""Workflow descriptors: read, check and turn into typed parameters.

Three formats, as biomero 2.8.3 reads them (its ``schema_parsers``): BIAFLOWS
(cytomine-0.1), biomero-schema (biomero-0.1) and bilayers (a ``config.yaml`` with
``docker_image``, ``exec_function``, ``inputs``, ``parameters``, ``outputs``; read by
``biomeroworker.workflows.bilayers``). Inputs that are files from OMERO (types file,
array, measurement, executable, or ``file-attachment``) are ``file`` parameters: the
user names files, which are staged beside the images (``workflows.attachments``).

Reading never touches the network: a local path is read as is, and a GitHub tree URL
pinned to a tag is read from the on-disk cache that only ``fetch_descriptor`` fills
(see ``biomeroworker.workflows.github``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from biomeroworker.errors import BiomeroError

SCHEMA_VERSION = "cytomine-0.1"
# biomero-schema descriptors (biomero 2.8's own format) share BIAFLOWS' shape, with
# lower-case types; their image inputs are the selected images, set by the server.
BIOMERO_SCHEMA_PREFIX = "biomero"
_SERVER_TYPES = frozenset({"image"})
ATTACHMENT_TYPES = frozenset({"file", "array", "measurement", "executable"})
_LOWER_TYPES = {"integer": "Integer", "float": "Float", "boolean": "Boolean", "string": "String"}
Kind = Literal["int", "float", "string", "boolean", "choice", "file"]
Family = Literal["biaflows", "bilayers"]
# How a bilayers parameter reaches the command line: ``joined`` is one argument
# ``--tag=value`` (as biomero 2.8.3 renders ``--tag="$VALUE"``), ``separate`` two (short
# options, where ``-t=value`` would not parse), ``switch`` the tag alone when true (a
# bilayers checkbox without ``append_value``).
FlagMode = Literal["joined", "separate", "switch"]
Value = int | float | str | bool


class DescriptorError(BiomeroError):
    """A descriptor is missing, unreadable or not a usable BIAFLOWS descriptor."""


@dataclass(frozen=True)
class Parameter:
    """One input of a descriptor.

    ``kind`` is what users may give: a Number is ``float`` when its default is a JSON
    number with a fraction part (``0.5``, ``2.0``) and ``int`` otherwise, also without a
    default (as biomero types it and the OMERO.biomero plugin sends it); anything with
    value-choices is ``choice``.
    """

    id: str
    name: str
    description: str
    kind: Kind
    default: Value | None
    optional: bool
    server_set: bool
    choices: tuple[Value, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    # bilayers: the flag the container takes this parameter with (``cli_tag``)
    flag: str = ""
    flag_mode: FlagMode = "joined"
    # kind "file": the formats the descriptor accepts (shown to users, not enforced)
    formats: tuple[str, ...] = ()


@dataclass(frozen=True)
class Descriptor:
    name: str
    description: str
    image: str
    image_type: str
    command_line: str
    parameters: tuple[Parameter, ...]
    source: str
    # bilayers: the program and fixed arguments (``exec_function.cli_command`` and its
    # ``hidden_args``), and the flags the server sets to the run's folders ("in"/"out")
    family: Family = "biaflows"
    cli_command: tuple[str, ...] = ()
    hidden_args: tuple[str, ...] = ()
    folder_flags: tuple[tuple[str, str], ...] = ()

    @property
    def attachments(self) -> tuple[Parameter, ...]:
        """The user parameters that are files from OMERO (or local files)."""
        return tuple(p for p in self.user_parameters if p.kind == "file")

    @property
    def user_parameters(self) -> tuple[Parameter, ...]:
        """The parameters a user sets: server-set (cytomine_*) inputs are hidden."""
        return tuple(p for p in self.parameters if not p.server_set)

    def image_ref(self, tag: str) -> str:
        """The container image for a repo tag: the image tag equals the git tag."""
        return f"{self.image}:{tag}"

    def sif_name(self, version: str) -> str:
        """``<image>_<version>.sif`` as upstream keeps it under ``<images>/<wf>/``."""
        return f"{self.image.rsplit('/', 1)[-1]}_{version}.sif"


# Where a workflow folder (or tag) keeps its descriptor, in the order biomero 2.8.3 looks.
DESCRIPTOR_FILES = ("descriptor.json", "descriptor.yaml", "config.yaml")


def find_descriptor(folder: Path) -> Path:
    """The first of DESCRIPTOR_FILES in a local workflow folder (descriptor.json if none,
    so the error names the usual file)."""
    for name in DESCRIPTOR_FILES:
        if (folder / name).is_file():
            return folder / name
    return folder / DESCRIPTOR_FILES[0]


def load_descriptor(path: Path) -> Descriptor:
    """Read and check a descriptor file (JSON, or YAML by its suffix)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DescriptorError(f"cannot read descriptor {path}: {exc.strerror}") from exc
    return parse_descriptor(text, source=str(path), yaml=path.suffix in (".yaml", ".yml"))


def parse_descriptor(text: str, *, source: str, yaml: bool = False) -> Descriptor:
    return descriptor_from_data(read_data(text, source=source, yaml=yaml), source)


def read_data(text: str, *, source: str, yaml: bool = False) -> Any:
    """The descriptor's data: JSON, or YAML read with the safe loader (plain data only)."""
    if yaml:
        import yaml as pyyaml

        try:
            return pyyaml.safe_load(text)
        except pyyaml.YAMLError as exc:
            raise DescriptorError(f"{source}: not valid YAML ({exc})") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DescriptorError(f"{source}: not valid JSON ({exc})") from exc


def descriptor_from_data(data: Any, source: str) -> Descriptor:
    """A descriptor from parsed JSON or YAML, of whichever format it is (detected as
    biomero 2.8.3 does: ``schema-version`` first, then ``docker_image`` for bilayers)."""
    if not isinstance(data, dict):
        raise DescriptorError(f"{source}: must be a JSON object (a YAML mapping)")
    for key, kind in (("cwlVersion", "CWL"), ("openapi", "OpenAPI")):
        if key in data:  # biomero 2.8.3 detects these and refuses them too
            raise DescriptorError(
                f"{source}: a {kind} descriptor; workflows are described in BIAFLOWS "
                "(cytomine-0.1), biomero-schema (biomero-0.1) or bilayers (config.yaml)"
            )
    version = data.get("schema-version")
    if "docker_image" in data and not version and "container-image" not in data:
        from biomeroworker.workflows.bilayers import bilayers_descriptor

        return bilayers_descriptor(data, source)
    return _descriptor(data, source)


def _descriptor(data: dict[str, Any], source: str) -> Descriptor:
    version = data.get("schema-version")
    if version != SCHEMA_VERSION and not str(version).startswith(BIOMERO_SCHEMA_PREFIX):
        raise DescriptorError(
            f"{source}: schema-version must be {SCHEMA_VERSION!r} or biomero-0.1, got {version!r}"
        )
    image = data.get("container-image")
    if not isinstance(image, dict) or not _text(image.get("image")):
        raise DescriptorError(f"{source}: container-image.image is missing")
    if not _text(data.get("name")):
        raise DescriptorError(f"{source}: name is missing")
    inputs = data.get("inputs")
    if not isinstance(inputs, list):
        raise DescriptorError(f"{source}: inputs must be a list")
    parameters = _unique(
        [_parameter(item, f"{source}: inputs[{i}]") for i, item in enumerate(inputs)], source
    )
    return Descriptor(
        name=data["name"],
        description=str(data.get("description", "")),
        image=image["image"],
        image_type=str(image.get("type", "singularity")),
        command_line=str(data.get("command-line", "")),
        parameters=parameters,
        source=source,
    )


def _scalar(value: Any) -> bool:
    """A value a parameter can hold: text, boolean or a finite number (JSON's NaN is not)."""
    if isinstance(value, bool | str):
        return True
    return isinstance(value, int | float) and math.isfinite(value)


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _unique(parameters: list[Parameter], source: str) -> tuple[Parameter, ...]:
    """Inputs by id, once each. Published BIAFLOWS descriptors repeat server-set inputs
    (the CellProfiler measurement workflows list ``cytomine_id_software`` twice): the
    server fills them, so the first is kept. A repeated user input is ambiguous: refused."""
    ids = [p.id for p in parameters]
    dupes = sorted({p.id for p in parameters if ids.count(p.id) > 1 and not p.server_set})
    if dupes:
        raise DescriptorError(f"{source}: duplicate input id(s) {', '.join(dupes)}")
    seen: dict[str, Parameter] = {}
    for p in parameters:
        seen.setdefault(p.id, p)
    return tuple(seen.values())


def _parameter(item: Any, where: str) -> Parameter:
    if not isinstance(item, dict):
        raise DescriptorError(f"{where}: must be an object")
    pid = item.get("id")
    if not isinstance(pid, str) or not pid.isidentifier():
        raise DescriptorError(f"{where}: id must be a name of letters, digits and _: {pid!r}")
    where = f"{where} ({pid})"
    server_set = bool(item.get("set-by-server")) or pid.startswith("cytomine")
    default = item.get("default-value")
    if default is not None and not _scalar(default):
        raise DescriptorError(f"{where}: default-value must be a text, number or boolean")
    listed = item.get("value-choices") or []
    if not isinstance(listed, list) or not all(_scalar(c) for c in listed):
        raise DescriptorError(
            f"{where}: value-choices must be a list of texts, numbers or booleans"
        )
    choices = tuple(listed)
    cytype = str(item.get("type", "String"))
    if cytype in ATTACHMENT_TYPES or item.get("file-attachment"):
        # biomero 2.8.3: file-like inputs (and ``file-attachment`` ones) are offered as
        # OMERO file annotations, even when marked set-by-server.
        return attachment_parameter(
            pid, item.get("name") or pid, item.get("description", ""), item, where
        )
    if cytype in _SERVER_TYPES:  # the images the user selected: never a form field
        server_set, cytype = True, "String"
    kind = _kind(cytype, default, choices, where)
    if default is not None and choices and default not in choices:
        raise DescriptorError(f"{where}: default-value {default!r} is not one of its value-choices")
    return Parameter(
        id=pid,
        name=str(item.get("name", pid)),
        description=str(item.get("description", "")),
        kind=kind,
        default=default,
        optional=bool(item.get("optional", False)),
        server_set=server_set,
        choices=choices,
        minimum=_bound(item.get("minimum"), where),
        maximum=_bound(item.get("maximum"), where),
    )


def attachment_parameter(
    pid: str, name: Any, description: Any, item: dict[str, Any], where: str, flag: str = ""
) -> Parameter:
    formats = item.get("format") or []
    if isinstance(formats, str):
        formats = [formats]
    if not isinstance(formats, list) or not all(isinstance(f, str) for f in formats):
        raise DescriptorError(f"{where}: format must be a list of texts")
    return Parameter(
        id=pid,
        name=str(name),
        description=str(description or ""),
        kind="file",
        default=None,
        optional=bool(item.get("optional", False)),
        server_set=False,
        flag=flag,
        flag_mode="separate" if flag.startswith("-") and not flag.startswith("--") else "joined",
        formats=tuple(formats),
    )


def _kind(cytype: str, default: Any, choices: tuple[Any, ...], where: str) -> Kind:
    cytype = _LOWER_TYPES.get(cytype, cytype)
    if choices:
        return "choice"
    if cytype in ("Integer", "Float"):
        if isinstance(default, bool) or not (default is None or isinstance(default, int | float)):
            raise DescriptorError(f"{where}: {cytype} with a non-numeric default {default!r}")
        if cytype == "Integer" and isinstance(default, float) and not default.is_integer():
            raise DescriptorError(f"{where}: Integer with a fractional default {default!r}")
        return "int" if cytype == "Integer" else "float"
    if cytype == "ListDomain":
        raise DescriptorError(f"{where}: a ListDomain input needs value-choices")
    if cytype == "Number":
        if isinstance(default, bool) or not (default is None or isinstance(default, int | float)):
            raise DescriptorError(f"{where}: Number with a non-numeric default {default!r}")
        return "float" if isinstance(default, float) else "int"
    if cytype == "Boolean":
        if default is not None and not isinstance(default, bool):
            raise DescriptorError(f"{where}: Boolean with a non-boolean default {default!r}")
        return "boolean"
    if cytype == "String":
        return "string"
    raise DescriptorError(f"{where}: unsupported type {cytype!r}")


def _bound(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DescriptorError(f"{where}: minimum/maximum must be numbers, got {value!r}")
    return float(value)
