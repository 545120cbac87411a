"""SubmitRequest -> the POST /slurm/<v>/job/submit body, per API version. Pure.

Every sbatch flag a request can carry (its typed fields and its ``extra_flags``, read
through ``commands.sbatch_flags`` exactly as ``sbatch_argv`` reads them) goes through
one table, ``FLAGS``: flag -> the job description fields it becomes in a given API
version. A flag that is not in the table, or whose value cannot be written in the
version's spelling, is refused with the flag named, never dropped. ``flag_problems``
runs the same table without a request, so ``biomero check`` (through config loading)
refuses a configuration before any job is submitted.

Field names: v0.0.36-v0.0.38 from Slurm 22.05's ``job_properties`` (checked against
the live slurmrestd here); v0.0.39-v0.0.44 from Slurm's published ``job_desc_msg``
descriptions (23.02-25.11), where GPUs and generic resources are TRES strings
(``tres_per_node = "gres/gpu:1"``), mail types and open modes are flag lists, and
``--exclusive`` is the ``shared`` list (``exclusive`` is gone from v0.0.43).

Script arguments are never sent as ``argv``: slurmrestd 22.05 corrupts its heap on
any submit that carries ``argv`` (``malloc(): smallbin double linked list
corrupted``, or SIGSEGV; checked, tests/integration/test_slurm_modes.py). The REST
body carries the script text anyway, so the arguments become its ``set --`` line.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Callable, Mapping
from typing import Any

from biomeroworker.errors import SlurmError
from biomeroworker.slurm.commands import SubmitRequest, sbatch_flags
from biomeroworker.slurm.rest.shapes import ApiShape

Json = dict[str, Any]

# Numbers the API wraps in {"set", "infinite", "number"} from v0.0.39 on.
_WRAPPED = frozenset({"time_limit", "time_minimum", "memory_per_node", "memory_per_cpu"})
_TIME = re.compile(r"(?:(?P<d>\d+)-)?(?P<rest>\d+(?::\d+){0,2})")
_MEM = re.compile(r"(?P<n>\d+)(?P<unit>[KMGT]?)B?", re.IGNORECASE)
_MB_PER_UNIT = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024, "": 1}
_SHELLS = frozenset({"sh", "bash", "dash", "ksh", "zsh"})


class RestFlagError(SlurmError):
    """An sbatch flag (or its value) that a slurmrestd API version cannot express."""


def minutes(text: str) -> int:
    """A Slurm time ("30", "1:30:00", "2-12", "2-12:00:00") to whole minutes, rounded up."""
    match = _TIME.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a Slurm time: {text!r}")
    parts = [int(p) for p in match["rest"].split(":")]
    days = int(match["d"] or 0)
    if match["d"] is not None:  # D-H, D-H:M, D-H:M:S
        parts += [0] * (3 - len(parts))
        hours, mins, secs = parts
    elif len(parts) == 3:
        hours, mins, secs = parts
    elif len(parts) == 2:  # M:S
        hours, mins, secs = 0, parts[0], parts[1]
    else:
        hours, mins, secs = 0, parts[0], 0
    return (days * 24 + hours) * 60 + mins + math.ceil(secs / 60)


def megabytes(text: str) -> int:
    """An sbatch memory size ("64M", "4G", "512" = MB) to whole megabytes, rounded up."""
    match = _MEM.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a memory size: {text!r}")
    return math.ceil(int(match["n"]) * _MB_PER_UNIT[match["unit"].upper()])


def _count(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise ValueError(f"expected a positive whole number, got {text!r}")
    return int(text)


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"expected a whole number, got {text!r}") from None


def _flag(value: str) -> bool:
    return value.strip().lower() not in ("0", "false", "no")


def _nonempty(text: str) -> str:
    if not text:
        raise ValueError("needs a value")
    return text


# ---------------------------------------------------------------- one flag


Mapper = Callable[[ApiShape, str], Json]


def _plain(field: str, convert: Callable[[str], Any] = _nonempty) -> Mapper:
    return lambda shape, value: {field: convert(value)}


def _gres(shape: ApiShape, value: str) -> Json:
    if shape.minor <= 38:
        return {"gres": _nonempty(value)}
    items = [item.strip() for item in _nonempty(value).split(",")]
    tres = [item if item.startswith("gres/") else f"gres/{item}" for item in items]
    return {"tres_per_node": ",".join(tres)}


def _gpus(old_field: str, tres_field: str) -> Mapper:
    """--gpus[-per-node|-per-task]=[type:]count: its own field up to v0.0.38, a
    ``gres/gpu:[type:]count`` TRES string from v0.0.39."""

    def mapper(shape: ApiShape, value: str) -> Json:
        _nonempty(value)
        if shape.minor <= 38:
            return {old_field: value}
        return {tres_field: f"gres/gpu:{value}"}

    return mapper


_MAIL_TYPES = {  # sbatch --mail-type word -> the v0.0.39+ flag
    "BEGIN": ["BEGIN"],
    "END": ["END"],
    "FAIL": ["FAIL"],
    "REQUEUE": ["REQUEUE"],
    "STAGE_OUT": ["STAGE_OUT"],
    "ARRAY_TASKS": ["ARRAY_TASKS"],
    "INVALID_DEPEND": ["INVALID_DEPENDENCY"],
    "TIME_LIMIT": ["TIME=100%"],
    "TIME_LIMIT_90": ["TIME=90%"],
    "TIME_LIMIT_80": ["TIME=80%"],
    "TIME_LIMIT_50": ["TIME=50%"],
    "ALL": ["BEGIN", "END", "FAIL", "INVALID_DEPENDENCY", "REQUEUE", "STAGE_OUT"],
    "NONE": [],
}


def _mail_type(shape: ApiShape, value: str) -> Json:
    words = [w.strip().upper() for w in _nonempty(value).split(",")]
    unknown = [w for w in words if w not in _MAIL_TYPES]
    if unknown:
        raise ValueError(f"unknown mail type {unknown[0]!r}; known: {', '.join(_MAIL_TYPES)}")
    if shape.minor <= 38:
        return {"mail_type": ",".join(words)}
    flags = [flag for word in words for flag in _MAIL_TYPES[word]]
    return {"mail_type": list(dict.fromkeys(flags))}


def _exclusive(shape: ApiShape, value: str) -> Json:
    """--exclusive[=user|mcs]: ``exclusive`` up to v0.0.38 (22.05 takes the words
    "exclusive", "user", "mcs"; checked), the ``shared`` list after (Slurm's
    JOB_SHARED_NONE/USER/MCS; v0.0.43 dropped ``exclusive``)."""
    kind = value.strip().lower()
    if kind not in ("", "user", "mcs"):
        raise ValueError(f"expected no value, 'user' or 'mcs', got {value!r}")
    if shape.minor <= 38:
        return {"exclusive": kind or "exclusive"}
    return {"shared": [kind or "none"]}


def _open_mode(shape: ApiShape, value: str) -> Json:
    mode = value.strip().lower()
    if mode not in ("append", "truncate"):
        raise ValueError(f"expected append or truncate, got {value!r}")
    return {"open_mode": mode if shape.minor <= 38 else [mode.upper()]}


def _nodes(shape: ApiShape, value: str) -> Json:
    """--nodes=N or N-M, as sbatch writes it (22.05 reads the text too; checked)."""
    match = re.fullmatch(r"(\d+)(?:-(\d+))?", value.strip())
    if match is None:
        raise ValueError(f"expected N or N-M, got {value!r}")
    low, high = int(match[1]), int(match[2] or match[1])
    if low < 1 or high < low:
        raise ValueError(f"expected 1 <= N <= M, got {value!r}")
    return {"nodes": value.strip()}


# sbatch long flag -> how it becomes job description fields. Paths (--output, --error,
# --chdir) and --export are read by job_properties itself: they need the cluster home
# and the job environment. Anything else is refused, never dropped.
FLAGS: Mapping[str, Mapper] = {
    "job-name": _plain("name"),
    "partition": _plain("partition"),
    "time": _plain("time_limit", minutes),
    "time-min": _plain("time_minimum", minutes),
    "mem": _plain("memory_per_node", megabytes),
    "mem-per-cpu": _plain("memory_per_cpu", megabytes),
    "cpus-per-task": _plain("cpus_per_task", _count),
    "ntasks": _plain("tasks", _count),
    "ntasks-per-node": _plain("tasks_per_node", _count),
    "nodes": _nodes,
    "gres": _gres,
    "gpus": _gpus("gpus", "tres_per_job"),
    "gpus-per-node": _gpus("gpus_per_node", "tres_per_node"),
    "gpus-per-task": _gpus("gpus_per_task", "tres_per_task"),
    "array": _plain("array"),
    "dependency": _plain("dependency"),
    "comment": _plain("comment"),
    "account": _plain("account"),
    "qos": _plain("qos"),
    "reservation": _plain("reservation"),
    "constraint": _plain("constraints"),
    "nice": _plain("nice", _integer),
    "hold": lambda shape, value: {"hold": True if value == "" else _flag(value)},
    "requeue": lambda shape, value: {"requeue": True},
    "no-requeue": lambda shape, value: {"requeue": False},
    "exclusive": _exclusive,
    "mail-type": _mail_type,
    "mail-user": _plain("mail_user"),
    "open-mode": _open_mode,
}
PATH_FLAGS = {
    "output": "standard_output",
    "error": "standard_error",
    "chdir": "current_working_directory",
}
MAPPED = frozenset({*FLAGS, *PATH_FLAGS, "export"})


def flag_fields(shape: ApiShape, flag: str, value: str) -> Json:
    """The fields ``--flag=value`` becomes in ``shape``'s API version (not paths or
    --export); RestFlagError naming the flag when it has none or the value is unusable."""
    mapper = FLAGS.get(flag)
    if mapper is None:
        if flag in PATH_FLAGS or flag == "export":
            raise RestFlagError(f"sbatch --{flag} is mapped by job_properties")
        raise RestFlagError(
            f"sbatch --{flag} has no slurmrestd mapping (API {shape.version}); "
            f"mapped: {', '.join(sorted(MAPPED))}; or use [WORKER] transport = ssh"
        )
    try:
        return mapper(shape, value)
    except ValueError as exc:
        raise RestFlagError(f"sbatch --{flag}={value}: {exc}") from None


def flag_problems(shape: ApiShape, flags: Mapping[str, str]) -> dict[str, str]:
    """flag -> why it cannot be submitted over REST in ``shape``'s version (empty: all fine)."""
    problems = {}
    for flag, value in flags.items():
        if flag in PATH_FLAGS:
            continue
        try:
            if flag == "export":
                _export(value)
            else:
                flag_fields(shape, flag, value)
        except SlurmError as exc:
            problems[flag] = str(exc)
    return problems


# ---------------------------------------------------------------- the request


def _export(value: str | None) -> dict[str, str]:
    """``--export`` pairs as environment entries. REST has no submitting shell, so
    "ALL" and bare names (copy from the submitter) cannot mean anything here."""
    if value is None or value == "NONE":
        return {}
    env: dict[str, str] = {}
    for item in value.split(","):
        name, sep, val = item.partition("=")
        if name in ("NONE", "NIL") and not sep:
            continue
        if not sep:
            raise RestFlagError(
                f"--export={value}: over REST only NAME=value pairs can be exported "
                f"({name!r} would copy the worker's own variable)"
            )
        env[name] = val
    return env


def _absolute(path: str, home: str) -> str:
    return path if path.startswith("/") else f"{home.rstrip('/')}/{path}"


def job_properties(
    shape: ApiShape, request: SubmitRequest, *, home: str, environment: Mapping[str, str]
) -> Json:
    """The job description for ``request`` in ``shape``'s field names, plain numbers
    and environment as a dict (``submit_body`` writes the version's spelling of both).

    The request is read and checked exactly as ``sbatch_argv`` reads it, so a request
    valid over SSH is valid here or refused with the flag named. Relative paths are
    made absolute against ``home``, as sbatch makes them relative to the submitting
    directory; the working directory is ``home`` unless --chdir says otherwise.
    """
    flags = sbatch_flags(request)
    props: Json = {"current_working_directory": home}
    env = {**environment, **_export(flags.pop("export", None))}
    for flag, field in PATH_FLAGS.items():
        if flag in flags:
            props[field] = _absolute(flags.pop(flag), home)
    for flag, value in flags.items():
        for field, mapped in flag_fields(shape, flag, value).items():
            if field in props and isinstance(mapped, str):
                props[field] = f"{props[field]},{mapped}"  # gres + gpus-per-node, say
            else:
                props[field] = mapped
    if not env:
        raise SlurmError("slurmrestd needs at least one environment variable for the job")
    props["environment"] = env
    return props


def script_with_arguments(script: str, args: tuple[str, ...] | list[str], path: str) -> str:
    """The job script with ``args`` as its positional parameters: a ``set --`` line
    after the interpreter line and the leading comment block (where sbatch reads
    ``#SBATCH`` lines), every argument quoted for the shell. Only shell scripts take
    arguments this way; anything else is refused with the script named."""
    if not args:
        return script
    lines = script.split("\n")
    interpreter = lines[0][2:].split() if lines[0].startswith("#!") else []
    name = interpreter[0].rsplit("/", 1)[-1] if interpreter else ""
    if name == "env" and len(interpreter) > 1:
        name = interpreter[1].rsplit("/", 1)[-1]
    if name not in _SHELLS:
        raise SlurmError(
            f"{path}: script arguments over slurmrestd need a shell script "
            f"(#!/bin/bash); it starts with {lines[0][:60]!r}"
        )
    at = 1
    while at < len(lines) and (not lines[at].strip() or lines[at].lstrip().startswith("#")):
        at += 1
    quoted = " ".join(shlex.quote(arg) for arg in args)
    lines.insert(at, f"set -- {quoted}  # arguments (biomero, REST submission)")
    return "\n".join(lines)


def submit_body(shape: ApiShape, *, script: str, properties: Json) -> Json:
    """The POST /slurm/<v>/job/submit body in ``shape``'s spelling."""
    job = dict(properties)
    env = job.pop("environment")
    job["environment"] = (
        [f"{name}={value}" for name, value in env.items()] if shape.environment_as_list else env
    )
    if shape.numbers_wrapped:
        for name in _WRAPPED & job.keys():
            job[name] = {"set": True, "infinite": False, "number": job[name]}
    if shape.script_in_job:
        job["script"] = script
        return {"job": job}
    return {"script": script, "job": job}
