"""Argument lists for sbatch, sacct, squeue, sinfo and scancel: pure, validated, sorted.

Nothing here runs a command or quotes for a shell; values that could be read as
something else (a newline, a NUL, a leading "-" on a positional) are refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date

# Patterns are used with fullmatch; [0-9] rather than \d so no non-ASCII digit passes.
FLAG_NAME = re.compile(r"[a-z0-9][a-z0-9-]+")
JOB_ID = re.compile(r"[0-9]+(?:[_+][0-9]+)?")
_ARRAY = re.compile(r"[0-9]+(?:-[0-9]+(?::[0-9]+)?)?(?:,[0-9]+(?:-[0-9]+(?::[0-9]+)?)?)*")
# minutes, minutes:seconds, hours:minutes:seconds, days-hours[:minutes[:seconds]]
_TIME_LIMIT = re.compile(r"[0-9]+(?::[0-9]+){0,2}|[0-9]+-[0-9]+(?::[0-9]+){0,2}")
_MEM = re.compile(r"[0-9]+(?:[KMGT]B?)?", re.IGNORECASE)
_DEPENDENCY = re.compile(r"[a-z_]+(?::[0-9_+]+)*(?:[,?][a-z_]+(?::[0-9_+]+)*)*")
# Flags a request or config may not set: they change how sbatch reads its input or
# what it prints, and the client relies on both.
FORBIDDEN_EXTRA = frozenset({"parsable", "wrap", "help", "usage", "version", "test-only"})

# sacct fields, in output order. Reason is last: it is the one free-text field, so a
# "|" inside it cannot shift the others.
SACCT_FIELDS = (
    "JobID",
    "JobIDRaw",
    "State",
    "ExitCode",
    "Elapsed",
    "Start",
    "End",
    "MaxRSS",
    "NodeList",
    "AllocTRES",
    "Reason",
)
# squeue: job id, raw id, array job id, array task id, state, time used, start, end,
# nodes, reason (last, for the same reason as above).
SQUEUE_FORMAT = "%i|%A|%F|%K|%T|%M|%S|%e|%N|%r"
# sinfo: partition (with "*" when default), availability, time limit, nodes, CPUs A/I/O/T.
SINFO_FORMAT = "%P|%a|%l|%D|%C"


@dataclass(frozen=True, kw_only=True)
class SubmitRequest:
    """One sbatch call. Values use Slurm's own syntax (time "01:00:00", mem "4G").

    ``extra_flags`` maps long flag names (without "--") to values, as
    slurm-config.ini's ``sbatch_<flag>`` keys do; an empty value renders a bare flag.
    A flag may be given once: either as a field here or in ``extra_flags``.
    ``--export`` is "NONE" unless ``export`` or an extra flag says otherwise, so the
    worker's own environment never leaks into jobs.
    """

    script_path: str
    script_args: tuple[str, ...] = ()
    job_name: str | None = None
    partition: str | None = None
    time_limit: str | None = None
    mem: str | None = None
    cpus_per_task: int | None = None
    gres: str | None = None
    gpus: str | None = None
    array: str | None = None
    array_throttle: int | None = None
    dependency: str | None = None
    comment: str | None = None
    output_path: str | None = None
    error_path: str | None = None
    chdir: str | None = None
    export: str | None = None
    extra_flags: Mapping[str, str] = field(default_factory=dict)


def after_ok(*job_ids: str) -> str:
    """A ``--dependency`` value that waits for all ``job_ids`` to succeed."""
    for job_id in job_ids:
        check_job_id(job_id)
    if not job_ids:
        raise ValueError("after_ok needs at least one job id")
    return "afterok:" + ":".join(job_ids)


def check_job_id(job_id: str) -> str:
    if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
        raise ValueError(f"not a Slurm job id: {job_id!r}")
    return job_id


def check_value(name: str, value: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"sbatch --{name}: value must be str, got {type(value).__name__}")
    if "\n" in value or "\r" in value or "\x00" in value:
        raise ValueError(f"sbatch --{name}: value contains a newline or NUL: {value!r}")
    return value


def _text(name: str, value: str | None, pattern: re.Pattern[str] | None = None) -> str | None:
    if value is None:
        return None
    if not check_value(name, value):
        raise ValueError(f"sbatch --{name}: empty value (use None to leave it out)")
    if pattern is not None and not pattern.fullmatch(value):
        raise ValueError(f"sbatch --{name}: invalid value {value!r}")
    return value


def _typed_flags(req: SubmitRequest) -> dict[str, str]:
    flags = {
        "job-name": _text("job-name", req.job_name),
        "partition": _text("partition", req.partition),
        "time": _text("time", req.time_limit, _TIME_LIMIT),
        "mem": _text("mem", req.mem, _MEM),
        "gres": _text("gres", req.gres),
        "gpus": _text("gpus", req.gpus),
        "dependency": _text("dependency", req.dependency, _DEPENDENCY),
        "comment": _text("comment", req.comment),
        "output": _text("output", req.output_path),
        "error": _text("error", req.error_path),
        "chdir": _text("chdir", req.chdir),
        "export": _text("export", req.export),
        "cpus-per-task": _positive("cpus-per-task", req.cpus_per_task),
        "array": _array_value(req),
    }
    return {name: value for name, value in flags.items() if value is not None}


def _positive(name: str, value: int | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"sbatch --{name}: must be a positive integer, got {value!r}")
    return str(value)


def _array_value(req: SubmitRequest) -> str | None:
    if req.array is None:
        if req.array_throttle is not None:
            raise ValueError("sbatch --array: a throttle needs an array")
        return None
    value = _text("array", req.array, _ARRAY)
    throttle = _positive("array throttle", req.array_throttle)
    return f"{value}%{throttle}" if throttle else value


def _extra_flags(extra: Mapping[str, str], taken: Iterable[str]) -> dict[str, str]:
    taken = set(taken)
    flags: dict[str, str] = {}
    for name, value in extra.items():
        if not isinstance(name, str) or not FLAG_NAME.fullmatch(name):
            raise ValueError(f"sbatch flag name must match [a-z0-9-]+ (long form): {name!r}")
        if name in FORBIDDEN_EXTRA:
            raise ValueError(f"sbatch --{name} cannot be set from configuration")
        if name in taken:
            raise ValueError(f"sbatch --{name} is given twice (request field and extra flag)")
        flags[name] = check_value(name, value)
    return flags


def sbatch_flags(req: SubmitRequest) -> dict[str, str]:
    """Every flag of the request, typed fields and ``extra_flags`` alike, by long name
    (``--export`` only when set); validated as ``sbatch_argv`` validates them. The one
    view of a request both clients read, so sbatch and slurmrestd get the same job."""
    script = check_value("script", req.script_path)
    if not script or script.startswith("-"):
        raise ValueError(f"sbatch: script path must not be empty or start with '-': {script!r}")
    for arg in req.script_args:
        check_value("script argument", arg)
    flags = _typed_flags(req)
    flags.update(_extra_flags(req.extra_flags, flags))
    return flags


def sbatch_argv(req: SubmitRequest) -> list[str]:
    """``sbatch --parsable --flag=value... script [args]`` with flags sorted by name."""
    flags = sbatch_flags(req)
    script, args = req.script_path, list(req.script_args)
    flags.setdefault("export", "NONE")
    rendered = [
        f"--{name}={value}" if value else f"--{name}" for name, value in sorted(flags.items())
    ]
    return ["sbatch", "--parsable", *rendered, script, *args]


def unique_job_ids(job_ids: Iterable[str]) -> list[str]:
    """``job_ids`` each checked (``check_job_id``) and once, first seen first."""
    return list(dict.fromkeys(check_job_id(job_id) for job_id in job_ids))


def _job_list(job_ids: Iterable[str]) -> str:
    ids = unique_job_ids(job_ids)
    if not ids:
        raise ValueError("no job ids given")
    return ",".join(ids)


def sacct_argv(job_ids: Iterable[str]) -> list[str]:
    """One sacct for all ``job_ids``, steps included (MaxRSS lives on the step lines).

    ``env SLURM_BITSTR_LEN=0`` stops sacct cutting long pending-array expressions at
    64 characters.
    """
    return [
        "env",
        "SLURM_BITSTR_LEN=0",
        "sacct",
        "--parsable2",
        "--noheader",
        f"--format={','.join(SACCT_FIELDS)}",
        f"--jobs={_job_list(job_ids)}",
    ]


def squeue_argv(job_ids: Iterable[str]) -> list[str]:
    """One squeue for all ``job_ids``, one line per array element, finished jobs included."""
    return [
        "squeue",
        "--noheader",
        "--array",
        "--states=all",
        f"--format={SQUEUE_FORMAT}",
        f"--jobs={_job_list(job_ids)}",
    ]


def scancel_argv(job_ids: Iterable[str]) -> list[str]:
    return ["scancel", *_job_list(job_ids).split(",")]


def sinfo_argv() -> list[str]:
    return ["sinfo", "--noheader", f"--format={SINFO_FORMAT}"]


def find_by_name_argv(name: str) -> list[str]:
    """squeue for jobs named ``name`` in any state it still remembers (MinJobAge).

    ``%A`` is the array job id (the job id itself for a plain job), so an array
    appears once per element with the same id.
    """
    check_value("job-name", name)
    return ["squeue", "--noheader", "--states=all", f"--name={name}", "--format=%A"]


DEFAULT_HISTORY = "now-7days"


def history_start(start: date | None, days_ago: int | None) -> str:
    """sacct's --starttime for looking back through job history (finding a job by name):
    ``sacct_days_ago`` wins over ``sacct_start_time``, as upstream; else the last 7 days."""
    if days_ago is not None:
        return f"now-{days_ago}days"
    if start is not None:
        return start.isoformat()
    return DEFAULT_HISTORY


def find_by_name_sacct_argv(name: str, since: str = DEFAULT_HISTORY) -> list[str]:
    """sacct for jobs named ``name``: finds jobs squeue has already forgotten."""
    check_value("job-name", name)
    return [
        "sacct",
        "--noheader",
        "--parsable2",
        "--allocations",
        f"--name={name}",
        f"--starttime={since}",
        "--format=JobIDRaw,JobID",
    ]
