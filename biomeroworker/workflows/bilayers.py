"""bilayers descriptors (a ``config.yaml``), read as biomero 2.8.3 reads them.

What a bilayers config says, and what becomes of it here:

- ``docker_image.org``/``name``: the image (its tag is the git tag of the pinned
  repository, as for every workflow; the config's own ``tag`` is ignored, as upstream);
- ``citations[0].name``/``description``: the workflow's name and description;
- ``exec_function.cli_command``: the program the container runs (split into arguments
  once, here; never a shell string at run time), and ``hidden_args``: fixed arguments;
- ``inputs`` of type ``image``: the run's images; a required one gets its ``cli_tag``
  set to the run's in-folder. Inputs of type file/array/measurement/executable are
  ``file`` parameters: files from OMERO (or local files), staged beside the images;
- ``outputs`` with a ``cli_tag``, and parameters with ``output_dir_set``: set to the
  run's out-folder;
- ``parameters``: integer, float, checkbox (boolean), radio/dropdown (a choice of the
  ``options``' values), textbox/text (text); each passed with its ``cli_tag``.

Everything the command line gets from the descriptor is checked here: flags are
``-x``/``--name`` words, the program and fixed arguments hold no NUL. Values come from
``params.json`` at run time, one argument each (``workflows.jobscript``).
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from biomeroworker.workflows.descriptor import (
    ATTACHMENT_TYPES,
    Descriptor,
    DescriptorError,
    FlagMode,
    Parameter,
    Value,
    _bound,
    _scalar,
    _unique,
    attachment_parameter,
)

SCHEMA_LABEL = "bilayers"
# An option: --name, -name (elastix's -out, micro-sam's -i) or a bare key (Fiji's
# folder=, given as key=value)
_FLAG = re.compile(r"(-{1,2}[A-Za-z0-9][A-Za-z0-9_.-]*|[A-Za-z][A-Za-z0-9_.-]*)")
# docker_image.org may carry a registry (docker.io/labsyspharm); name is one part
_ORG = re.compile(r"[a-z0-9][a-z0-9._-]*(:[0-9]+)?(/[a-z0-9][a-z0-9._-]*)*")
_IMAGE_PART = re.compile(r"[a-z0-9][a-z0-9._-]*")
# YAML has no None: bilayers configs write "default: None" for no default
_NO_DEFAULT = ("None", "none", "")
_TYPES = {
    "integer": "int",
    "float": "float",
    "checkbox": "boolean",
    "boolean": "boolean",
    "radio": "string",
    "dropdown": "string",
    "textbox": "string",
    "text": "string",
    "string": "string",
}


def bilayers_descriptor(data: dict[str, Any], source: str) -> Descriptor:
    image = data.get("docker_image")
    if not isinstance(image, dict):
        raise DescriptorError(f"{source}: docker_image must be a mapping with org and name")
    org, name = str(image.get("org") or ""), str(image.get("name") or "")
    if not (_ORG.fullmatch(org) and ".." not in org and _IMAGE_PART.fullmatch(name)):
        raise DescriptorError(
            f"{source}: docker_image org/name must be lower-case image names, got {org!r}/{name!r}"
        )
    exec_function = data.get("exec_function") or {}
    if not isinstance(exec_function, dict):
        raise DescriptorError(f"{source}: exec_function must be a mapping")
    command = _command(exec_function.get("cli_command"), source)
    hidden = _hidden_args(exec_function.get("hidden_args") or [], source)
    citations = data.get("citations") or []
    first = citations[0] if isinstance(citations, list) and citations else {}
    first = first if isinstance(first, dict) else {}
    title = str(first.get("name") or data.get("algorithm_folder_name") or name)

    inputs = _list(data, "inputs", source)
    parameters = _list(data, "parameters", source)
    outputs = _list(data, "outputs", source)
    folder_flags: list[tuple[str, str]] = []
    params: list[Parameter] = []
    for i, item in enumerate(inputs):
        where = f"{source}: inputs[{i}]"
        pid = _name(item, where)
        kind = str(item.get("type", "string"))
        if kind == "image":
            flag = _flag(item, f"{where} ({pid})")
            if flag and not item.get("optional", False):
                folder_flags.append((flag, "in"))
            params.append(_server(pid))
        elif kind in ATTACHMENT_TYPES:
            params.append(
                attachment_parameter(
                    pid,
                    item.get("label") or pid,
                    item.get("description") or item.get("label") or "",
                    item,
                    f"{where} ({pid})",
                    flag=_flag(item, f"{where} ({pid})") or f"--{pid}",
                )
            )
        else:
            params.append(_parameter(item, f"{where} ({pid})", pid))
    for i, item in enumerate(outputs):
        flag = _flag(item, f"{source}: outputs[{i}]")
        if flag:
            folder_flags.append((flag, "out"))
    for i, item in enumerate(parameters):
        where = f"{source}: parameters[{i}]"
        pid = _name(item, where)
        if item.get("output_dir_set"):
            flag = _flag(item, f"{where} ({pid})")
            if flag:
                folder_flags.append((flag, "out"))
            params.append(_server(pid))
            continue
        params.append(_parameter(item, f"{where} ({pid})", pid))
    # micro-sam names its out-folder flag twice (an output and an output_dir_set
    # parameter): one argument is enough; one flag for both folders is a contradiction
    folders: dict[str, str] = {}
    for flag, where in folder_flags:
        if folders.setdefault(flag, where) != where:
            raise DescriptorError(f"{source}: the flag {flag} is both the in- and out-folder")
    return Descriptor(
        name=title,
        description=str(first.get("description") or ""),
        image=f"{org}/{name}",
        image_type="docker",
        command_line=shlex.join(command),
        parameters=_unique(params, source),
        source=source,
        family="bilayers",
        cli_command=command,
        hidden_args=hidden,
        folder_flags=tuple(folders.items()),
    )


def _list(data: dict[str, Any], key: str, source: str) -> list[dict[str, Any]]:
    items = data.get(key) or []
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise DescriptorError(f"{source}: {key} must be a list of mappings")
    return items


def _name(item: dict[str, Any], where: str) -> str:
    pid = item.get("name")
    if not isinstance(pid, str) or not pid.isidentifier():
        raise DescriptorError(f"{where}: name must be a name of letters, digits and _: {pid!r}")
    return pid


def _flag(item: dict[str, Any], where: str) -> str:
    """The ``cli_tag`` (upstream strips a trailing '='), or "" for none ("None")."""
    raw = item.get("cli_tag")
    if raw is None:
        return ""
    tag = str(raw).strip().rstrip("=")
    if tag in ("", "None"):
        return ""
    if not _FLAG.fullmatch(tag):
        raise DescriptorError(
            f"{where}: cli_tag {raw!r} is not an option like -x, --name or key= "
            "(letters, digits, '_', '.', '-')"
        )
    return tag


def flag_mode(flag: str) -> FlagMode:
    """``-x value`` for a single-dash option (``-x=value`` would not parse), else one
    argument ``--name=value`` / ``key=value``."""
    return "separate" if flag.startswith("-") and not flag.startswith("--") else "joined"


def _command(raw: Any, source: str) -> tuple[str, ...]:
    if not isinstance(raw, str) or not raw.strip():
        raise DescriptorError(f"{source}: exec_function.cli_command is missing")
    try:
        tokens = tuple(shlex.split(raw))
    except ValueError as exc:
        raise DescriptorError(f"{source}: exec_function.cli_command: {exc}") from exc
    if any("\x00" in t for t in tokens):
        raise DescriptorError(f"{source}: exec_function.cli_command holds a NUL")
    return tokens


def _hidden_args(items: Any, source: str) -> tuple[str, ...]:
    """Fixed arguments in ``cli_order``: the tag, and its value when ``append_value``."""
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise DescriptorError(f"{source}: exec_function.hidden_args must be a list of mappings")
    tokens: list[str] = []
    ordered = sorted(enumerate(items), key=lambda p: (_order(p[1].get("cli_order")), p[0]))
    for i, item in ordered:
        where = f"{source}: hidden_args[{i}]"
        flag = _flag(item, where)
        if not flag:
            raise DescriptorError(f"{where}: cli_tag is missing")
        value = item.get("value")
        if not item.get("append_value", False):
            tokens.append(flag)
            continue
        if not _scalar(value) or "\x00" in str(value):
            raise DescriptorError(f"{where}: value must be a text, number or boolean")
        tokens += render_flag(flag, flag_mode(flag), value)
    return tuple(tokens)


def _order(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def render_flag(flag: str, mode: FlagMode, value: Value) -> list[str]:
    """The arguments one value becomes (the job's reader does the same at run time)."""
    text = ("True" if value else "False") if isinstance(value, bool) else str(value)
    if mode == "switch":
        return [flag] if value is True else []
    if mode == "joined":
        return [f"{flag}={text}"]
    return [flag, text]


def _server(pid: str) -> Parameter:
    return Parameter(pid, pid, "", "string", None, True, True)


def _parameter(item: dict[str, Any], where: str, pid: str) -> Parameter:
    raw_type = str(item.get("type", "string"))
    kind = _TYPES.get(raw_type)
    if kind is None:
        raise DescriptorError(f"{where}: unsupported type {raw_type!r}")
    choices = _choices(item.get("options"), where)
    default = item.get("default")
    if isinstance(default, str) and default.strip() in _NO_DEFAULT and kind != "string":
        default = None
    if default is not None and not _scalar(default):
        raise DescriptorError(f"{where}: default must be a text, number or boolean")
    whole = all(isinstance(c, int) and not isinstance(c, bool) for c in choices)
    if choices and whole and isinstance(default, float) and default.is_integer():
        default = int(default)  # as upstream: an int choice list keeps an int default
    if choices:
        if default is not None and default not in choices:
            raise DescriptorError(f"{where}: default {default!r} is not one of its options")
        final: str = "choice"
    else:
        final = kind
        default = _typed_default(kind, default, where)
    flag = _flag(item, where) or f"--{pid}"
    mode = flag_mode(flag)
    if kind == "boolean" and not item.get("append_value", False):
        mode = "switch"
    return Parameter(
        id=pid,
        name=str(item.get("label") or pid),
        description=str(item.get("description") or item.get("label") or ""),
        kind=final,  # type: ignore[arg-type]
        default=default,
        optional=bool(item.get("optional", False)),
        server_set=False,
        choices=choices,
        minimum=_bound(item.get("minimum"), where),
        maximum=_bound(item.get("maximum"), where),
        flag=flag,
        flag_mode=mode,
    )


def _choices(options: Any, where: str) -> tuple[Value, ...]:
    if not options:
        return ()
    if not isinstance(options, list) or not all(isinstance(o, dict) for o in options):
        raise DescriptorError(f"{where}: options must be a list of mappings with a value")
    values = [o["value"] for o in options if "value" in o]
    if not all(_scalar(v) for v in values):
        raise DescriptorError(f"{where}: option values must be texts, numbers or booleans")
    return tuple(values)


def _typed_default(kind: str, default: Any, where: str) -> Value | None:
    if default is None:
        return None
    if kind == "int":
        if isinstance(default, bool) or not isinstance(default, int | float):
            raise DescriptorError(f"{where}: integer with a non-numeric default {default!r}")
        if isinstance(default, float) and not default.is_integer():
            raise DescriptorError(f"{where}: integer with a fractional default {default!r}")
        return int(default)
    if kind == "float":
        if isinstance(default, bool) or not isinstance(default, int | float):
            raise DescriptorError(f"{where}: float with a non-numeric default {default!r}")
        return float(default)
    if kind == "boolean":
        if not isinstance(default, bool):
            raise DescriptorError(f"{where}: checkbox with a non-boolean default {default!r}")
        return default
    return str(default)
