"""Finding, reading, layering and checking slurm-config.ini files and environment
overrides into Settings; every problem is reported together, by file, section and key."""

from __future__ import annotations

import ast
import configparser
import difflib
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from biomeroworker.config.keys import (
    _BRANCH_NAMES,
    _CONVERTER_KEY,
    _FLAG_NAME,
    _FOLDER,
    _GITHUB_TREE,
    _SBATCH_PREFIX,
    _SECTION_HINTS,
    _WORKFLOW_NAME,
    _WORKFLOW_SUFFIXES,
    CONVERTERS,
    FIXED_SECTIONS,
    KNOWN_SECTIONS,
    OPAQUE_SECTIONS,
    SECTION_ALIASES,
    WORKFLOWS,
    ZARR_TO_TIFF,
    Key,
)
from biomeroworker.config.settings import (
    AnalyticsSettings,
    RestSettings,
    Settings,
    SlurmSettings,
    SSHSettings,
    WorkerSettings,
    WorkflowSettings,
    _frozen,
)
from biomeroworker.config.values import _URL_PASSWORD, _boolean, _count, _did_you_mean, redact_url
from biomeroworker.errors import ConfigError
from biomeroworker.redaction import remember

log = logging.getLogger(__name__)


SYSTEM_CONFIG = Path("/etc/slurm-config.ini")
# Where upstream BIOMERO looks for the admin's override when none is named.
UPSTREAM_OVERRIDES: tuple[Path, ...] = (
    Path("/OMERO/slurm-config.ini"),
    Path("~/slurm-config.ini"),
)
CONFIG_ENV = "BIOMERO_CONFIG"
# The file biomero and the OMERO.biomero admin page use (upstream's "authoritative
# file"): when set, it is the only file read, as upstream does.
UPSTREAM_CONFIG_ENV = "BIOMERO_SLURM_CONFIG_FILE"
ENV_PREFIX = "BIOMERO__"

# Variables upstream BIOMERO reads, lowest priority first. Our own
# BIOMERO__<SECTION>__<KEY> form is applied after these and wins.
UPSTREAM_ENV: tuple[tuple[str, str, str], ...] = (
    ("GPU_PARTITION", "SLURM", "gpu_partition"),
    ("GPU_GRES", "SLURM", "gpu_gres"),
    ("GPU_GPUS", "SLURM", "gpu_gpus"),
    ("BIOMERO_GPU_PARTITION", "SLURM", "gpu_partition"),
    ("BIOMERO_GPU_GRES", "SLURM", "gpu_gres"),
    ("BIOMERO_GPU_GPUS", "SLURM", "gpu_gpus"),
    ("BIOMERO_DEFAULT_PARTITION", "SLURM", "slurm_default_partition"),
    ("BIOMERO_SACCT_START_TIME", "SLURM", "sacct_start_time"),
    ("BIOMERO_SACCT_START_DAYS_AGO", "SLURM", "sacct_days_ago"),
    ("BIOMERO_ENV_FILE_SUBMISSION", "SLURM", "env_file_submission"),
    ("BIOMERO_INJECT_GPU_FLAG", "SLURM", "inject_gpu_flag"),
    ("BIOMERO_IMAGE_PULL_VIA_SBATCH", "SLURM", "slurm_image_pull_via_sbatch"),
    ("BIOMERO_PULL_CPUS", "SLURM", "image_pull_cpus"),
    ("BIOMERO_PULL_MEM", "SLURM", "image_pull_mem"),
    ("BIOMERO_PULL_TIME", "SLURM", "image_pull_time"),
    ("BIOMERO_APPTAINER_TMPDIR", "SLURM", "apptainer_tmpdir"),
    ("BIOMERO_APPTAINER_CACHEDIR", "SLURM", "apptainer_cachedir"),
    ("BIOMERO_SLURM_ZIP_CMD", "SLURM", "slurm_zip_cmd"),
    ("BIOMERO_ANALYTICS_REBUILD_START_TIME", "ANALYTICS", "analytics_rebuild_start_time"),
    ("BIOMERO_ANALYTICS_REBUILD_DAYS_AGO", "ANALYTICS", "analytics_rebuild_days_ago"),
    ("SQLALCHEMY_URL", "ANALYTICS", "sqlalchemy_url"),
    # Slurm's own variable for a JWT (scontrol token prints SLURM_JWT=...).
    ("SLURM_JWT", "REST", "token"),
)


# ---------------------------------------------------------------- raw layer


@dataclass(frozen=True)
class _Raw:
    value: str
    source: str  # file path or "env NAME"
    section: str  # the section name as written, e.g. MODELS


_RawConfig = dict[str, dict[str, _Raw]]


class _Problems:
    def __init__(self) -> None:
        self.lines: list[str] = []
        # A file that could not be parsed hides its keys; "missing" would be noise.
        self.unreadable = False

    def add(self, source: str, section: str | None, key: str | None, message: str) -> None:
        where = source
        if section is not None:
            where += f" [{section}]"
        if key is not None:
            where += f" {key}"
        self.lines.append(f"{where}: {message}")


def _canonical_section(name: str) -> str:
    upper = name.strip().upper()
    return SECTION_ALIASES.get(upper, upper)


_KNOWN_CANONICAL = frozenset(_canonical_section(s) for s in KNOWN_SECTIONS)


def _unknown_section(section: str) -> str:
    return f"unknown section{_did_you_mean(section.upper(), KNOWN_SECTIONS)}"


def _store(raw: _RawConfig, problems: _Problems, section: str, key: str, item: _Raw) -> None:
    canonical = _canonical_section(section)
    if canonical not in _KNOWN_CANONICAL:
        problems.add(item.source, section, None, _unknown_section(section))
        return
    raw.setdefault(canonical, {})[key] = item


def _read_file(path: Path, raw: _RawConfig, problems: _Problems) -> None:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        problems.add(source, None, None, "not UTF-8 text")
        problems.unreadable = True
        return
    except OSError as exc:
        problems.add(source, None, None, f"cannot read: {exc.strerror or exc}")
        problems.unreadable = True
        return
    parser = configparser.ConfigParser(
        interpolation=None,  # applied by _literal, with a message per bad value
        strict=True,
        allow_no_value=False,
        default_section="\0no defaults",  # a literal [DEFAULT] is just an unknown section
        inline_comment_prefixes=("#", ";"),  # "cpu-short   # for preprocessing"
    )
    try:
        parser.read_string(text, source=source)
    except configparser.Error as exc:
        problems.lines.extend(f"{source}: {line}" for line in _parse_error_lines(exc))
        problems.unreadable = True
        return
    written: dict[tuple[str, str], str] = {}
    for section in parser.sections():
        canonical = _canonical_section(section)
        if canonical not in _KNOWN_CANONICAL:
            problems.add(source, section, None, _unknown_section(section))
            continue
        if canonical in OPAQUE_SECTIONS:
            log.debug("%s: [%s] is for the OMERO.biomero web page; ignored", source, section)
        for key, text in parser.items(section):
            value, bad = _literal(text or "")
            if bad:
                problems.add(source, section, key, bad)
                continue
            earlier = written.get((canonical, key))
            if earlier is not None and earlier != section:
                problems.add(source, section, key, f"also set in [{earlier}] of this file")
                continue
            written[(canonical, key)] = section
            raw.setdefault(canonical, {})[key] = _Raw((value or "").strip(), source, section)


_PERCENT_HINT = (
    "write %% for a literal % (e.g. omero-%%j.log): biomero and the OMERO.biomero "
    "web page read this file with ConfigParser interpolation"
)


def _literal(text: str) -> tuple[str, str | None]:
    """A file value as ConfigParser's interpolation reads it: ``%%`` is ``%``. A lone
    ``%`` (an error there) or a ``%(name)s`` reference (a different value there) is
    refused, so the worker never reads a file differently from biomero and the plugin."""
    out, i = [], 0
    while i < len(text):
        char = text[i]
        if char != "%":
            out.append(char)
            i += 1
        elif text.startswith("%%", i):
            out.append("%")
            i += 2
        elif text.startswith("%(", i):
            return text, f"%(name)s references are not supported; {_PERCENT_HINT}"
        else:
            return text, f"lone '%' in {text!r}; {_PERCENT_HINT}"
    return "".join(out), None


def _parse_error_lines(exc: configparser.Error) -> list[str]:
    if isinstance(exc, configparser.DuplicateOptionError):
        return [f"[{exc.section}] {exc.option}: set twice in this file (line {exc.lineno})"]
    if isinstance(exc, configparser.DuplicateSectionError):
        return [f"[{exc.section}]: section appears twice in this file (line {exc.lineno})"]
    if isinstance(exc, configparser.MissingSectionHeaderError):
        return [f"line {exc.lineno}: text before the first [SECTION] header"]
    if isinstance(exc, configparser.ParsingError):
        return [f"line {n}: not 'key = value': {_line_text(line)!r}" for n, line in exc.errors]
    return [str(exc)]


def _line_text(reported: str) -> str:
    """configparser reports the offending line as its repr(); show the text itself."""
    try:
        text = ast.literal_eval(reported)
    except (ValueError, SyntaxError):
        text = reported
    return str(text).strip()[:60]


def _apply_env(env: Mapping[str, str], raw: _RawConfig, problems: _Problems) -> None:
    for name, section, key in UPSTREAM_ENV:
        value = env.get(name, "").strip()
        if value:
            _store(raw, problems, section, key, _Raw(value, f"env {name}", section))
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX):
            continue
        parts = name[len(ENV_PREFIX) :].split("__")
        source = f"env {name}"
        if len(parts) != 2 or not all(parts):
            problems.add(source, None, None, f"expected {ENV_PREFIX}<SECTION>__<KEY>")
            continue
        section, key = parts[0].upper(), parts[1].lower()
        _store(raw, problems, section, key, _Raw(env[name].strip(), source, section))


# ---------------------------------------------------------------- building


def _bad_characters(item: _Raw) -> str | None:
    if "\0" in item.value:
        return "value contains a NUL character"
    if "\n" in item.value or "\r" in item.value:
        return "value spans several lines (an indented next line continues the value)"
    return None


def _clean(entries: Mapping[str, _Raw], problems: _Problems) -> dict[str, _Raw]:
    """Entries without newline/NUL values; those are reported and dropped."""
    kept = {}
    for key, item in entries.items():
        bad = _bad_characters(item)
        if bad:
            problems.add(item.source, item.section, key, bad)
        else:
            kept[key] = item
    return kept


def _sbatch_flag(item: _Raw, key: str, flag: str, problems: _Problems) -> str | None:
    if not _FLAG_NAME.fullmatch(flag):
        problems.add(
            item.source,
            item.section,
            key,
            "sbatch flag names may use only a-z, 0-9, '-' and '_'",
        )
        return None
    return flag.replace("_", "-")


def _build_fixed(
    section: str,
    entries: Mapping[str, _Raw],
    problems: _Problems,
    origins: dict[str, str],
) -> tuple[dict[str, Any], dict[str, str]]:
    """Typed values of a fixed section (defaults filled in) and, for [SLURM], sbatch flags."""
    specs = {spec.name: spec for spec in FIXED_SECTIONS[section]}
    values: dict[str, Any] = {name: spec.default for name, spec in specs.items()}
    sbatch: dict[str, str] = {}
    sbatch_keys: dict[str, str] = {}
    for key, item in _clean(entries, problems).items():
        spec = specs.get(key)
        if spec is None and section == "SLURM" and key.startswith(_SBATCH_PREFIX):
            flag = _sbatch_flag(item, key, key[len(_SBATCH_PREFIX) :], problems)
            if flag is None or not item.value:
                continue
            if flag in sbatch_keys:
                problems.add(item.source, item.section, key, f"same flag as {sbatch_keys[flag]}")
                continue
            sbatch[flag], sbatch_keys[flag] = item.value, key
            origins[f"{section}.{_SBATCH_PREFIX}{flag}"] = item.source
            continue
        if spec is None:
            problems.add(item.source, item.section, key, _unknown_key(section, key, specs))
            continue
        origins[f"{section}.{key}"] = item.source
        if not item.value:
            continue  # empty means "not set"
        try:
            values[key] = spec.parse(item.value)
        except ValueError as exc:
            got = "" if spec.secret else f", got {item.value!r}"
            problems.add(item.source, item.section, key, f"{exc}{got}")
    return values, sbatch


def _unknown_key(section: str, key: str, specs: Mapping[str, Key]) -> str:
    message = f"unknown key{_did_you_mean(key, specs)}"
    if section == "SLURM" and not message.endswith("?)"):
        head, _, rest = key.partition("_")
        if rest and difflib.get_close_matches(head, ["sbatch"], n=1, cutoff=0.6):
            message = f"unknown key (did you mean {_SBATCH_PREFIX}{rest}?)"
    hint = _SECTION_HINTS.get(section)
    if hint and not message.endswith("?)"):
        message += f"; {hint}"
    return message


def _split_workflow_key(key: str) -> tuple[str, str, str]:
    """(workflow, attribute, flag): attribute is '' for a declaration."""
    if "_job_" in key:
        workflow, _, flag = key.partition("_job_")
        return workflow, "flag", flag
    for suffix in _WORKFLOW_SUFFIXES:
        if key.endswith(suffix) and len(key) > len(suffix):
            return key[: -len(suffix)], suffix[1:], ""
    return key, "", ""


def _suggest_workflow_key(key: str, declared: Iterable[str]) -> str:
    candidates = []
    for name in declared:
        candidates += [f"{name}{suffix}" for suffix in _WORKFLOW_SUFFIXES]
        if key.startswith(f"{name}_"):
            head, sep, tail = key[len(name) + 1 :].partition("_")
            if sep and tail and difflib.get_close_matches(head, ["job"], n=1, cutoff=0.6):
                candidates.append(f"{name}_job_{tail}")
    return _did_you_mean(key, candidates, cutoff=0.8)


def _local_repo(item: _Raw) -> Path:
    path = Path(item.value).expanduser()
    if not path.is_absolute() and not item.source.startswith("env "):
        path = Path(item.source).parent / path
    return path.absolute()


def _check_repo(item: _Raw, key: str, problems: _Problems) -> str | None:
    value = item.value
    if "://" in value or value.startswith(("git@", "github.com")):
        match = _GITHUB_TREE.fullmatch(value.rstrip("/"))
        if not match:
            problems.add(
                item.source,
                item.section,
                key,
                "expected https://github.com/<owner>/<repo>/tree/<tag> or a local folder, "
                f"got {redact_url(value)!r}",
            )
            return None
        tag = match["tag"]
        if tag.lower() in _BRANCH_NAMES or not any(ch.isdigit() for ch in tag):
            problems.add(
                item.source,
                item.section,
                key,
                f"'{tag}' looks like a branch; pin a release tag such as v1.2.7",
            )
            return None
        return value.rstrip("/")
    path = _local_repo(item)
    if not path.is_dir():
        problems.add(
            item.source,
            item.section,
            key,
            f"local workflow folder {path} does not exist "
            "(or give https://github.com/<owner>/<repo>/tree/<tag>)",
        )
        return None
    return str(path)


def _build_workflows(
    entries: Mapping[str, _Raw], problems: _Problems, origins: dict[str, str]
) -> dict[str, WorkflowSettings]:
    entries = _clean(entries, problems)
    split = {key: _split_workflow_key(key) for key in entries}
    declared = {key for key, (_, attr, _) in split.items() if not attr}
    parts: dict[str, dict[str, Any]] = {name: {"job_flags": {}} for name in declared}
    for key, (name, attr, flag) in split.items():
        item = entries[key]
        if not attr:
            continue
        if name not in declared:
            problems.add(
                item.source,
                item.section,
                key,
                f"workflow '{name}' is not declared (add {name}=<folder>)"
                + _did_you_mean(name, declared),
            )
            continue
        if attr == "flag":
            sbatch_name = _sbatch_flag(item, key, flag, problems)
            if sbatch_name and item.value:
                parts[name]["job_flags"][sbatch_name] = item.value
                origins[f"{WORKFLOWS}.{name}_job_{sbatch_name}"] = item.source
            continue
        origins[f"{WORKFLOWS}.{key}"] = item.source
        if attr == "repo" and item.value:
            parts[name]["repo"] = _check_repo(item, key, problems)
        elif attr == "job" and item.value:
            if item.value.startswith("/") or ".." in item.value.split("/"):
                problems.add(
                    item.source,
                    item.section,
                    key,
                    f"expected a path under slurm_script_path (as jobs/{name}.sh), "
                    f"got {item.value!r}",
                )
            else:
                parts[name]["job"] = item.value
        elif attr in ("skills_path", "plugin_path") and item.value:
            parts[name][attr] = item.value
        elif attr == "use_gpu" and item.value:
            try:
                parts[name]["use_gpu"] = _boolean(item.value)
            except ValueError as exc:
                problems.add(item.source, item.section, key, f"{exc}, got {item.value!r}")
        elif attr == "resubmit" and item.value:
            try:
                parts[name]["resubmit"] = _count(item.value)
            except ValueError as exc:
                problems.add(item.source, item.section, key, f"{exc}, got {item.value!r}")

    workflows = {}
    for name in sorted(declared):
        item = entries[name]
        origins[f"{WORKFLOWS}.{name}"] = item.source
        if "repo" not in parts[name]:
            suggestion = _suggest_workflow_key(name, declared - {name})
            if suggestion:
                problems.add(item.source, item.section, name, f"unknown key{suggestion}")
                continue
            problems.add(
                item.source,
                item.section,
                name,
                f"workflow '{name}' needs {name}_repo "
                "(https://github.com/<owner>/<repo>/tree/<tag> or a local folder)",
            )
            continue
        if not _WORKFLOW_NAME.fullmatch(name):
            problems.add(
                item.source, item.section, name, "workflow names use only a-z, 0-9, '-' and '_'"
            )
            continue
        folder = item.value or name
        if not _FOLDER.fullmatch(folder) or ".." in folder.split("/"):
            problems.add(
                item.source,
                item.section,
                name,
                f"expected a folder name under slurm_images_path, got {folder!r}",
            )
            continue
        repo = parts[name].pop("repo")
        if repo is None:
            continue  # already reported
        flags = parts[name].pop("job_flags")
        workflows[name] = WorkflowSettings(
            name=name, folder=folder, repo=repo, job_flags=_frozen(flags), **parts[name]
        )
    return workflows


def _build_converters(
    entries: Mapping[str, _Raw], problems: _Problems, origins: dict[str, str]
) -> dict[str, str]:
    converters = {}
    for key, item in _clean(entries, problems).items():
        if not _CONVERTER_KEY.fullmatch(key):
            problems.add(
                item.source, item.section, key, "expected <from>_to_<to>, e.g. zarr_to_tiff"
            )
            continue
        if not item.value:
            continue
        if any(ch.isspace() for ch in item.value):
            problems.add(
                item.source,
                item.section,
                key,
                f"expected a container image[:tag], got {item.value!r}",
            )
            continue
        if key != ZARR_TO_TIFF:
            problems.add(
                item.source,
                item.section,
                key,
                f"only {ZARR_TO_TIFF} is used (images leave OMERO as OME-Zarr and workflows "
                "read TIFF), so this converter would never run; remove the line",
            )
            continue
        converters[key] = item.value
        origins[f"{CONVERTERS}.{key}"] = item.source
    return converters


def _build(raw: _RawConfig, problems: _Problems, sources: tuple[Path, ...]) -> Settings | None:
    origins: dict[str, str] = {}
    typed: dict[str, dict[str, Any]] = {}
    sbatch: dict[str, str] = {}
    for section in FIXED_SECTIONS:
        typed[section], flags = _build_fixed(section, raw.get(section, {}), problems, origins)
        sbatch.update(flags)
    workflows = _build_workflows(raw.get(WORKFLOWS, {}), problems, origins)
    converters = _build_converters(raw.get(CONVERTERS, {}), problems, origins)
    _check_across(typed, problems, origins, sources)
    if problems.lines:
        return None
    settings = Settings(
        ssh=SSHSettings(**typed["SSH"]),
        slurm=SlurmSettings(**typed["SLURM"], sbatch_flags=_frozen(sbatch)),
        workflows=_frozen(workflows),
        converters=_frozen(converters),
        analytics=AnalyticsSettings(**typed["ANALYTICS"]),
        worker=WorkerSettings(**typed["WORKER"]),
        sources=sources,
        origins=_frozen(origins),
        rest=RestSettings(**typed["REST"]),
    )
    if settings.worker.transport == "rest":
        _check_rest_flags(settings, problems, " + ".join(str(p) for p in sources))
    return None if problems.lines else settings


def _check_rest_flags(settings: Settings, problems: _Problems, files: str) -> None:
    """transport = rest: every sbatch flag the configuration can put on a job (global,
    GPU defaults, per workflow) must have a slurmrestd field in [REST] api_version, with
    a value it can write; refused here, by key, rather than at the first submit."""
    from biomeroworker.errors import SlurmError
    from biomeroworker.slurm.rest.request import flag_problems
    from biomeroworker.slurm.rest.shapes import shape_for

    try:
        shape = shape_for(settings.rest.api_version)
    except SlurmError as exc:
        problems.add(settings.source_of("REST", "api_version"), "REST", "api_version", str(exc))
        return
    slurm = settings.slurm
    # (section, origin key, flag, value); keys are shown as users write them (mem_per_cpu)
    keys = [("SLURM", f"{_SBATCH_PREFIX}{f}", f, v) for f, v in slurm.sbatch_flags.items()]
    keys += [
        ("SLURM", "gpu_gres", "gres", slurm.gpu_gres),
        ("SLURM", "gpu_gpus", "gpus", slurm.gpu_gpus),
    ]
    for name, wf in sorted(settings.workflows.items()):
        keys += [(WORKFLOWS, f"{name}_job_{f}", f, v) for f, v in wf.job_flags.items()]
    for section, key, flag, value in keys:
        if value is None:
            continue
        shown = key.replace("-", "_")
        for why in flag_problems(shape, {flag: value}).values():
            problems.add(settings.origins.get(f"{section}.{key}", files), section, shown, why)


# Upstream keys refused when set, each with what to do instead.
_REFUSED_WHEN_SET: dict[tuple[str, str], str] = {
    ("SLURM", "slurm_script_repo"): (
        "hand-written job scripts from a repository are not supported: the worker "
        "renders each workflow's job script itself (parameters never reach a shell), "
        "at <wf>_job when set; leave slurm_script_repo empty and put per-workflow "
        "sbatch options in <wf>_job_<flag>"
    ),
    ("SLURM", "inject_gpu_flag"): (
        "a run cannot switch the GPU on or off here: GPU use is set per workflow. "
        "Remove the line (or set false) and set <wf>_use_gpu = true for the workflows "
        "that need a GPU (their jobs get --nv and the gpu_* resources)"
    ),
    ("SLURM", "gpu_resource_flag"): (
        "is not a biomero setting and has no effect here: set gpu_gres (--gres, e.g. "
        "gpu:a100:1) or gpu_gpus (--gpus, e.g. 1), whichever your cluster uses, and "
        "remove this line"
    ),
}


def _check_across(
    typed: Mapping[str, Mapping[str, Any]],
    problems: _Problems,
    origins: Mapping[str, str],
    sources: tuple[Path, ...],
) -> None:
    files = " + ".join(str(p) for p in sources) or "slurm-config.ini"
    if problems.unreadable:
        return
    for section, keys in FIXED_SECTIONS.items():
        for spec in keys:
            if spec.required and typed[section][spec.name] is None:
                problems.add(files, section, spec.name, f"missing ({spec.help})")
    transport, rest = typed["WORKER"]["transport"], typed["REST"]
    needs_ssh = transport == "ssh" or (transport == "rest" and rest["staging"] == "ssh")
    if needs_ssh and typed["SSH"]["host"] is None:
        problems.add(
            files,
            "SSH",
            "host",
            "missing (alias in ~/.ssh/config; or set [WORKER] transport=local)",
        )
    if transport == "rest":
        _check_rest(rest, problems, origins, files)
    slurm = typed["SLURM"]
    for (section, key), why in _REFUSED_WHEN_SET.items():
        if typed[section][key]:
            problems.add(origins.get(f"{section}.{key}", files), section, key, why)
    if not typed["ANALYTICS"]["track_workflows"]:
        problems.add(
            origins.get("ANALYTICS.track_workflows", files),
            "ANALYTICS",
            "track_workflows",
            "cannot be off: the worker drives every run from its recorded events (a restart "
            "resumes from them); remove the line, or turn off enable_job_accounting, "
            "enable_job_progress or enable_workflow_analytics to keep a dashboard table empty",
        )
    if slurm["gpu_gres"] and slurm["gpu_gpus"]:
        problems.add(
            origins.get("SLURM.gpu_gpus", files),
            "SLURM",
            "gpu_gpus",
            "set only one of gpu_gres and gpu_gpus",
        )
    worker = typed["WORKER"]
    if worker["poll_min_s"] > worker["poll_max_s"]:
        problems.add(
            origins.get("WORKER.poll_min_s", origins.get("WORKER.poll_max_s", files)),
            "WORKER",
            "poll_min_s",
            f"must not exceed poll_max_s ({worker['poll_max_s']:g})",
        )


def _check_rest(
    rest: Mapping[str, Any], problems: _Problems, origins: Mapping[str, str], files: str
) -> None:
    for key, why in (("url", "slurmrestd base URL"), ("user", "cluster user name")):
        if rest[key] is None:
            problems.add(files, "REST", key, f"missing ({why}; needed for transport=rest)")
    if not (rest["token"] or rest["token_file"] or rest["token_command"]):
        problems.add(
            files, "REST", "token", "missing: set token_command, token_file, token or $SLURM_JWT"
        )
    if rest["staging"] == "shared" and rest["home"] is None:
        problems.add(
            origins.get("REST.staging", files),
            "REST",
            "home",
            "missing (staging=shared needs the user's cluster home, an absolute path)",
        )


# ---------------------------------------------------------------- entry points


def _expand_home(path: Path, env: Mapping[str, str]) -> Path:
    text = str(path)
    if text == "~" or text.startswith("~/"):
        home = env.get("HOME") or str(Path.home())
        return Path(home + text[1:])
    return path


def find_config_files(
    config_file: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    *,
    system_file: Path = SYSTEM_CONFIG,
    upstream_files: tuple[Path, ...] = UPSTREAM_OVERRIDES,
) -> list[Path]:
    """The files to read, in order: /etc/slurm-config.ini if present, then the
    override: ``config_file`` (CLI --config), else $BIOMERO_CONFIG, else the upstream
    locations that exist. $BIOMERO_SLURM_CONFIG_FILE (what biomero and the
    OMERO.biomero admin page use) names the only file to read, as upstream does.
    A named file that is missing is an error; so is no file."""
    env = os.environ if env is None else env
    authoritative = env.get(UPSTREAM_CONFIG_ENV, "").strip()
    if authoritative and not config_file:
        return [_authoritative_file(authoritative, env)]
    found = [system_file] if system_file.is_file() else []
    looked = [system_file]
    named, named_by = (
        (config_file, "--config") if config_file else (env.get(CONFIG_ENV), CONFIG_ENV)
    )
    if named:
        path = _named_file(named, named_by, env)
        if path not in found:
            found.append(path)
        return found
    for candidate in upstream_files:
        path = _expand_home(candidate, env)
        looked.append(path)
        if path.is_file():
            found.append(path)
    if not found:
        places = ", ".join(str(p) for p in looked)
        raise ConfigError(
            f"no slurm-config.ini found; looked in {places} "
            f"(name one with --config, ${CONFIG_ENV} or ${UPSTREAM_CONFIG_ENV})"
        )
    return found


def config_named_by_env(env: Mapping[str, str] | None = None) -> bool:
    """True when an environment variable names the config file (then it must exist)."""
    env = os.environ if env is None else env
    return bool(env.get(CONFIG_ENV, "").strip() or env.get(UPSTREAM_CONFIG_ENV, "").strip())


def _named_file(named: str | Path, named_by: str, env: Mapping[str, str]) -> Path:
    path = _expand_home(Path(named), env)
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise ConfigError(f"{path}: config file named by {named_by} {what}")
    return path


def _authoritative_file(named: str, env: Mapping[str, str]) -> Path:
    path = _named_file(named, UPSTREAM_CONFIG_ENV, env)
    other = env.get(CONFIG_ENV, "").strip()
    if other and _expand_home(Path(other), env).absolute() != path.absolute():
        raise ConfigError(
            f"{CONFIG_ENV} ({other}) and {UPSTREAM_CONFIG_ENV} ({named}) name different "
            f"files; the OMERO.biomero admin page writes {UPSTREAM_CONFIG_ENV}, so unset "
            f"{CONFIG_ENV} or point both at the same file"
        )
    return path


def load_settings(
    paths: list[Path] | None = None,
    env: Mapping[str, str] | None = None,
    *,
    config_file: str | Path | None = None,
) -> Settings:
    """Read ``paths`` (default: find_config_files(config_file, env)) in order, later
    files winning key by key, then apply environment overrides, then validate."""
    env = os.environ if env is None else env
    if paths is None:
        paths = find_config_files(config_file, env)
    elif config_file is not None:
        raise ValueError("give either paths or config_file, not both")
    missing = [f"{p}: config file does not exist" for p in paths if not Path(p).is_file()]
    if missing:
        raise ConfigError(missing)
    sources = tuple(Path(p) for p in paths)
    raw: _RawConfig = {}
    problems = _Problems()
    for path in sources:
        _read_file(path, raw, problems)
    _apply_env(env, raw, problems)
    settings = _build(raw, problems, sources)
    if settings is None:
        raise ConfigError(problems.lines)
    _remember_secrets(settings)
    return settings


def _remember_secrets(settings: Settings) -> None:
    """The configured database password and REST token never show in any message."""
    url = settings.analytics.sqlalchemy_url
    match = _URL_PASSWORD.match(url or "")
    if match:
        remember(match["password"])
    remember(settings.rest.token)
