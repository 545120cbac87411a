"""Render the bash job script of one workflow version, once, at ``biomero init``.

The script is the same for every run: it takes the run folder as its first argument
(or ``BIOMERO_RUN_DIR``, e.g. from ``sbatch --export=ALL,BIOMERO_RUN_DIR=<run>``) and
reads parameter values from ``<run>/params.json``, a file written over SFTP per run.
No parameter value is ever part of the script or of a command line that a shell
parses, so no value can run as code.

Two ways to hand ``params.json`` to the workflow:

- ``file``: ``--params-file <run>/params.json``. Our sample wrapper
  (workflows/nuclei-segmentation/wrapper.py) understands it.
- ``argv``: for upstream BIAFLOWS images that only take ``--<id> <value>``, a Python
  reader (a literal here-document, not evaluated by the shell) prints the JSON as
  NUL-separated ``--<id>`` / value pairs, bash reads them into an array with
  ``read -d ''`` and passes ``"${args[@]}"``: each value is one argument, byte for byte.

bilayers workflows (``FlagCommand``) always use the reader, given a table of each
parameter's flag and how it takes its value (``--flag=value`` as one argument, as
biomero 2.8.3 renders ``--flag="$VALUE"``, and ``key=value`` for a bare key; ``-f value``
for a single-dash option, where a text value starting with '-' is refused; a checkbox
switch as the flag alone when true). Containers run ``<runtime> exec <image>
<cli_command>`` (bilayers images have no entrypoint, so ``run`` would take the first
flag for the program); the native runtime runs the workflow's ``wrapper.py`` in the
container's place. The run's folders follow as
the descriptor's folder flags, then its fixed (hidden) arguments, then the parameters.

The workflow is started with ``exec``, so the job's exit status is the workflow's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from biomeroworker.errors import BiomeroError
from biomeroworker.transport.base import shell_join

Runtime = Literal["native", "apptainer", "singularity"]
ParamsMode = Literal["file", "argv"]
RUNTIMES: tuple[str, ...] = ("native", "apptainer", "singularity")
RUN_DIR_ENV = "BIOMERO_RUN_DIR"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_FLAG = re.compile(r"(-{1,2}[A-Za-z0-9][A-Za-z0-9_.-]*|[A-Za-z][A-Za-z0-9_.-]*)")
_FLAG_MODES = ("joined", "separate", "switch")
_SBATCH_KEY = re.compile(r"[a-z][a-z0-9-]*")
_SBATCH_VALUE = re.compile(r"[^\s\"'\\]+")


class JobScriptError(BiomeroError):
    """The values a job script is rendered from are unusable."""


@dataclass(frozen=True)
class FlagCommand:
    """A bilayers workflow's command line, from its descriptor (checked again here).

    ``program``: ``exec_function.cli_command`` as arguments (containers only);
    ``folders``: (flag, "in"/"out") set to the run's folders; ``fixed``: hidden
    arguments; ``flags``: parameter id -> (flag, joined/separate/switch).
    """

    program: tuple[str, ...]
    folders: tuple[tuple[str, str], ...] = ()
    fixed: tuple[str, ...] = ()
    flags: Mapping[str, tuple[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class JobScriptSpec:
    """What a job script is rendered from: plain values from the settings and the image.

    ``workflow_dir`` (native) holds ``wrapper.py``; ``image_path`` (containers) is the
    ``.sif``; ``workdir`` is the image's working directory (from its label, read at
    init) and becomes ``--pwd``; ``gpu`` adds ``--nv`` for containers.
    """

    workflow: str
    version: str
    runtime: Runtime
    sbatch: Mapping[str, str] = field(default_factory=dict)
    params_mode: ParamsMode = "file"
    native_python: str = "python3"
    workflow_dir: str = ""
    image_path: str = ""
    bind_paths: Sequence[str] = ()
    workdir: str | None = None
    gpu: bool = False
    reader_python: str = "python3"
    bilayers: FlagCommand | None = None


class _Expand(str):
    """A token the script's shell must expand (a fixed ``"$var"`` of ours), never user data."""


_IN = _Expand('"$run_dir/data/in"')
_OUT = _Expand('"$run_dir/data/out"')
_GT = _Expand('"$run_dir/data/gt"')
_PARAMS = _Expand('"$params_file"')
_ARGS = _Expand('${args[@]+"${args[@]}"}')  # an empty array stays empty under set -u

_PRELUDE = f"""set -euo pipefail

run_dir="${{1:-${{{RUN_DIR_ENV}:-}}}}"
if [[ -z "$run_dir" ]]; then
    echo "biomero job: pass the run folder as first argument or in {RUN_DIR_ENV}" >&2
    exit 2
fi
params_file="$run_dir/params.json"
if [[ ! -f "$params_file" ]]; then
    echo "biomero job: missing $params_file" >&2
    exit 2
fi
mkdir -p -- "$run_dir/data/out" "$run_dir/data/gt"
"""

_READER = """import json, sys
params = json.load(open(sys.argv[1], encoding="utf-8"))
flags = json.loads(sys.argv[2]) if len(sys.argv) > 2 else None
if not isinstance(params, dict):
    sys.exit("params.json must hold a JSON object")
for key, value in params.items():
    if not key.isidentifier() or not isinstance(value, (str, int, float, bool)):
        sys.exit(f"params.json: bad entry {key!r}")
    if flags is None:
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        args = ["--" + key, text]
    elif key not in flags:
        sys.exit(f"params.json: {key!r} is not a parameter of this workflow")
    else:
        flag, mode = flags[key]
        text = ("True" if value else "False") if isinstance(value, bool) else str(value)
        if mode == "switch":
            args = [flag] if value is True else []
        elif mode == "joined":
            args = [flag + "=" + text]
        elif isinstance(value, str) and value.startswith("-"):
            sys.exit(f"params.json: {key!r} starts with '-', which {flag} would not take")
        else:
            args = [flag, text]
    for arg in args:
        if "\\0" in arg:
            sys.exit(f"params.json: NUL in {key!r}")
        sys.stdout.write(arg + "\\0")"""


def default_sbatch(workflow: str) -> dict[str, str]:
    return {"job-name": f"biomero-{workflow}", "output": "omero-%j.log"}


def render_job_script(spec: JobScriptSpec) -> str:
    _check(spec)
    parts = [_header(spec), _sbatch_lines(spec), _PRELUDE]
    if spec.params_mode == "argv" or spec.bilayers is not None:
        parts.append(_argv_reader(spec))
    parts.append(_command(spec))
    return "\n".join(parts)


def _check(spec: JobScriptSpec) -> None:
    for label, value in (("workflow", spec.workflow), ("version", spec.version)):
        if not _NAME.fullmatch(value):
            raise JobScriptError(f"{label} {value!r}: use letters, digits, '.', '_' and '-'")
    if spec.runtime not in RUNTIMES:
        raise JobScriptError(f"runtime {spec.runtime!r}: must be one of {', '.join(RUNTIMES)}")
    if spec.params_mode not in ("file", "argv"):
        raise JobScriptError(f"params_mode {spec.params_mode!r}: must be file or argv")
    needed = "workflow_dir" if spec.runtime == "native" else "image_path"
    if not getattr(spec, needed):
        raise JobScriptError(f"runtime {spec.runtime} needs {needed}")
    if any("," in path for path in spec.bind_paths):
        raise JobScriptError("bind paths cannot contain ',' (apptainer separates them by it)")
    if spec.bilayers is not None:
        _check_flags(spec.bilayers, spec.runtime)


def _check_flags(command: FlagCommand, runtime: str) -> None:
    if runtime != "native" and not command.program:
        raise JobScriptError("a bilayers workflow needs its cli_command to run in a container")
    if any("\x00" in token for token in (*command.program, *command.fixed)):
        raise JobScriptError("the command or its fixed arguments hold a NUL")
    for flag, folder in command.folders:
        if not _FLAG.fullmatch(flag) or folder not in ("in", "out"):
            raise JobScriptError(f"folder flag {flag!r} -> {folder!r}: not an option and in/out")
    for pid, (flag, mode) in command.flags.items():
        if not pid.isidentifier() or not _FLAG.fullmatch(flag) or mode not in _FLAG_MODES:
            raise JobScriptError(f"parameter {pid!r}: flag {flag!r} ({mode}) is not usable")


def _header(spec: JobScriptSpec) -> str:
    return (
        "#!/bin/bash\n"
        f"# BIOMERO job script: workflow {spec.workflow} {spec.version}, runtime {spec.runtime}.\n"
        "# Rendered once by `biomero init`; every run passes its own folder:\n"
        f"#   sbatch <this script> <run folder>   (or --export=ALL,{RUN_DIR_ENV}=<run folder>)\n"
        "# Parameter values come from <run folder>/params.json only.\n"
    )


def _sbatch_lines(spec: JobScriptSpec) -> str:
    flags = {**default_sbatch(spec.workflow), **spec.sbatch}
    lines = []
    for key in sorted(flags):
        value = str(flags[key])
        if not _SBATCH_KEY.fullmatch(key):
            raise JobScriptError(f"sbatch option {key!r}: expected a long option name like 'mem'")
        if not _SBATCH_VALUE.fullmatch(value):
            raise JobScriptError(f"sbatch {key}={value!r}: no spaces, quotes or backslashes")
        lines.append(f"#SBATCH --{key}={value}")
    return "\n".join(lines) + "\n"


def _argv_reader(spec: JobScriptSpec) -> str:
    argv = [spec.reader_python, "-", _PARAMS]
    if spec.bilayers is not None:
        table = {pid: list(pair) for pid, pair in sorted(spec.bilayers.flags.items())}
        argv.append(json.dumps(table, separators=(",", ":")))
    reader = _line(argv)
    return (
        "# params.json -> one argument per --<id> and per value, NUL-separated, never evaluated.\n"
        'args_file="$(mktemp)"\n'
        "trap 'rm -f -- \"$args_file\"' EXIT\n"
        f"{reader} > \"$args_file\" <<'BIOMERO_PARAMS_READER'\n"
        f"{_READER}\n"
        "BIOMERO_PARAMS_READER\n"
        "args=()\n"
        "while IFS= read -r -d '' arg; do\n"
        '    args+=("$arg")\n'
        'done < "$args_file"\n'
        'rm -f -- "$args_file"\n'
        "trap - EXIT\n"
    )


def _command(spec: JobScriptSpec) -> str:
    if spec.bilayers is not None:
        return _flag_command(spec, spec.bilayers)
    if spec.runtime == "native":
        start = [spec.native_python, f"{spec.workflow_dir.rstrip('/')}/wrapper.py"]
    else:
        start = _start(spec, "run")
    folders = ["--infolder", _IN, "--outfolder", _OUT, "--gtfolder", _GT, "--local", "-nmc"]
    params = ["--params-file", _PARAMS] if spec.params_mode == "file" else [_ARGS]
    lines = [_line(start), _line(folders), _line(params)]
    return "exec " + " \\\n    ".join(lines) + "\n"


def _start(spec: JobScriptSpec, verb: str) -> list[str]:
    start = [spec.runtime, verb]
    if spec.gpu:
        start.append("--nv")
    if spec.bind_paths:
        start += ["--bind", ",".join(spec.bind_paths)]
    if spec.workdir:
        start += ["--pwd", spec.workdir]
    return [*start, spec.image_path]


def _flag_command(spec: JobScriptSpec, command: FlagCommand) -> str:
    if spec.runtime == "native":
        start = [spec.native_python, f"{spec.workflow_dir.rstrip('/')}/wrapper.py"]
    else:
        start = [*_start(spec, "exec"), *command.program]
    folders: list[str] = []
    for flag, folder in command.folders:
        if flag.startswith("-") and not flag.startswith("--"):  # -x <folder>
            folders += [flag, _Expand(f'"$run_dir/data/{folder}"')]
        else:  # checked: no quote, '$' or backslash can be in a flag
            folders.append(_Expand(f'"{flag}=$run_dir/data/{folder}"'))
    lines = [_line(start)]
    lines += [_line(part) for part in (folders, command.fixed) if part]
    lines.append(_line([_ARGS]))
    return "exec " + " \\\n    ".join(lines) + "\n"


def _line(tokens: Sequence[str]) -> str:
    return " ".join(t if isinstance(t, _Expand) else shell_join([t]) for t in tokens)
