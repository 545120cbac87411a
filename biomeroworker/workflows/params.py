"""Check user-given parameter values against a descriptor and give them their types.

Values may arrive as text (command line, web forms) or already typed (OMERO script
inputs). The result maps parameter id to a JSON-ready value and is what the job's
``params.json`` holds; defaults fill what the user left out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from biomeroworker.errors import BiomeroError
from biomeroworker.workflows.attachments import AttachmentError, folder, references
from biomeroworker.workflows.descriptor import Descriptor, Parameter, Value

_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


class ParameterError(BiomeroError):
    """One or more parameter values are not allowed; ``problems`` has one line each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class _BadValueError(ValueError):
    """A value that does not fit; the message says what is allowed."""


def validate_params(descriptor: Descriptor, user_values: Mapping[str, object]) -> dict[str, Value]:
    """Return every user parameter with its typed value (given or default).

    Raises ParameterError naming each unknown, server-set, missing or bad parameter
    and what it allows. Optional parameters with no default and no value are left out.
    """
    by_id = {p.id: p for p in descriptor.parameters}
    problems = [problem for name in user_values if (problem := _not_settable(name, by_id))]
    result: dict[str, Value] = {}
    for param in descriptor.user_parameters:
        try:
            value = _value_for(param, user_values)
        except _BadValueError as exc:
            problems.append(f"{param.id}: {exc}")
            continue
        if value is not None:
            result[param.id] = value
    if problems:
        raise ParameterError(problems)
    return result


def _not_settable(name: str, by_id: Mapping[str, Parameter]) -> str:
    param = by_id.get(name)
    if param is None:
        known = ", ".join(p.id for p in by_id.values() if not p.server_set) or "none"
        return f"{name}: unknown parameter (known: {known})"
    if param.server_set:
        return f"{name}: set by the server, not by users"
    return ""


def _value_for(param: Parameter, user_values: Mapping[str, object]) -> Value | None:
    given = user_values.get(param.id)
    if param.kind == "file" and given in ([], ()):
        given = None  # an empty list of files is no files
    if given is not None:
        return convert_value(param, given)
    if param.default is not None:
        return param.default
    if not param.optional:
        raise _BadValueError(f"required, allowed: {allowed(param)}")
    return None


def convert_value(param: Parameter, raw: object) -> Value:
    """``raw`` as the parameter's type, or _BadValueError saying what is allowed."""
    converters = {
        "int": _to_int,
        "float": _to_float,
        "boolean": _to_bool,
        "string": _to_string,
        "choice": _to_choice,
        "file": _to_files,
    }
    value = converters[param.kind](param, raw)
    _check_range(param, value)
    return value


def allowed(param: Parameter) -> str:
    if param.kind == "choice":
        return "one of " + ", ".join(repr(c) for c in param.choices)
    text = {
        "int": "a whole number",
        "float": "a number",
        "boolean": "true or false",
        "string": "text without NUL characters",
        "file": "OMERO file annotation ids or local file paths",
    }[param.kind]
    if param.minimum is not None:
        text += f" >= {param.minimum:g}"
    if param.maximum is not None:
        text += f" <= {param.maximum:g}"
    return text


def _fail(param: Parameter, raw: object) -> _BadValueError:
    return _BadValueError(f"{raw!r} is not allowed, expected {allowed(param)}")


def _to_int(param: Parameter, raw: object) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if isinstance(raw, str):
        try:
            return int(raw.strip())
        except ValueError:
            pass
    raise _fail(param, raw)


def _to_float(param: Parameter, raw: object) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise _fail(param, raw)
    try:
        value = float(raw.strip() if isinstance(raw, str) else raw)
    except (ValueError, OverflowError):  # OverflowError: an int beyond float's range
        raise _fail(param, raw) from None
    if not math.isfinite(value):
        raise _fail(param, raw)
    return value


def _to_bool(param: Parameter, raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
        return raw.strip().lower() in _TRUE
    raise _fail(param, raw)


def _to_string(param: Parameter, raw: object) -> str:
    if not isinstance(raw, str) or "\x00" in raw:
        raise _fail(param, raw)
    return raw


def _to_files(param: Parameter, raw: object) -> str:
    """A file parameter: the files are checked and staged apart (workflows.attachments);
    the value the job gets is the parameter's folder in the run folder."""
    try:
        references(raw)
    except AttachmentError:
        raise _fail(param, raw) from None
    return folder(param.id)


def _to_choice(param: Parameter, raw: object) -> Value:
    for choice in param.choices:
        same_type = isinstance(raw, bool) == isinstance(choice, bool)
        if (same_type and raw == choice) or (isinstance(raw, str) and raw.strip() == str(choice)):
            return choice
    raise _fail(param, raw)


def _check_range(param: Parameter, value: Value) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    too_low = param.minimum is not None and value < param.minimum
    too_high = param.maximum is not None and value > param.maximum
    if too_low or too_high:
        raise _fail(param, value)
