"""The typed, frozen settings the rest of the package reads."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import date
from pathlib import Path
from types import MappingProxyType
from typing import Any

from biomeroworker.config.keys import (
    _GITHUB_TREE,
    _SBATCH_PREFIX,
    CONVERTERS,
    FIXED_SECTIONS,
    WORKFLOWS,
)
from biomeroworker.config.values import DEFAULT_SOURCE, _did_you_mean, redact_url
from biomeroworker.errors import ConfigError

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- settings


def _frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class SSHSettings:
    host: str | None
    inline_ssh_env: bool = True


@dataclass(frozen=True)
class SlurmSettings:
    """[SLURM]. Relative paths are relative to the remote user's home; kept as text."""

    slurm_data_path: str
    slurm_images_path: str
    slurm_converters_path: str
    slurm_script_path: str
    slurm_script_repo: str | None = None
    slurm_data_bind_path: str | None = None
    slurm_conversion_partition: str | None = None
    slurm_default_partition: str | None = None
    sacct_start_time: date | None = None
    sacct_days_ago: int | None = None
    env_file_submission: bool = False
    inject_gpu_flag: bool = False
    gpu_partition: str | None = None
    gpu_gres: str | None = None
    gpu_gpus: str | None = None
    gpu_resource_flag: str | None = None
    slurm_image_pull_via_sbatch: bool = False
    image_pull_cpus: int | None = None
    image_pull_mem: str | None = None
    image_pull_time: str | None = None
    image_pull_concurrency: int | None = None
    image_pull_partition: str | None = None
    apptainer_tmpdir: str | None = None
    apptainer_cachedir: str | None = None
    slurm_zip_cmd: str | None = None
    # sbatch flag name (dashes, no leading --) -> value, added to every job
    sbatch_flags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkflowSettings:
    name: str
    folder: str
    repo: str  # a GitHub tree URL pinned to a tag, or an absolute local directory
    job: str | None = None
    job_flags: Mapping[str, str] = field(default_factory=dict)
    use_gpu: bool = False
    # Written by biomero-workflow-skills for its own tools; kept and shown, not used here.
    skills_path: str | None = None
    plugin_path: str | None = None
    # After TIMEOUT or OUT_OF_MEMORY, submit again with twice the time or memory, at
    # most this many times (0: never).
    resubmit: int = 0

    @property
    def is_local(self) -> bool:
        return not self.repo.startswith("https://")

    @property
    def tag(self) -> str | None:
        """The pinned git tag (the image tag too); None for a local workflow."""
        match = _GITHUB_TREE.fullmatch(self.repo.rstrip("/"))
        return match["tag"] if match else None


@dataclass(frozen=True, repr=False)
class AnalyticsSettings:
    track_workflows: bool = True
    enable_job_accounting: bool = True
    enable_job_progress: bool = True
    enable_workflow_analytics: bool = True
    sqlalchemy_url: str | None = None
    analytics_rebuild_start_time: date | None = None
    analytics_rebuild_days_ago: int | None = None

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "sqlalchemy_url" and value is not None:
                value = redact_url(value)
            parts.append(f"{f.name}={value!r}")
        return f"AnalyticsSettings({', '.join(parts)})"


@dataclass(frozen=True)
class WorkerSettings:
    transport: str = "ssh"
    shared_path: str | None = None
    connect_timeout_s: float = 15.0
    command_timeout_s: float = 120.0
    transfer_idle_timeout_s: float = 300.0
    keepalive_s: float = 30.0
    runtime: str = "apptainer"
    native_python: str = "python3"
    max_runs_total: int = 0
    max_runs_per_user: int = 0
    poll_min_s: float = 1.0
    poll_max_s: float = 60.0
    job_unseen_limit_s: float = 900.0
    workflow_mirror: str | None = None
    step_attempts: int = 3
    step_retry_s: float = 30.0
    convert_on: str = "cluster"
    admins: tuple[str, ...] = ()


@dataclass(frozen=True)
class RestSettings:
    """[REST]: slurmrestd with JWT. One token source is used: token_command, else
    token_file, else token (or $SLURM_JWT)."""

    url: str | None = None
    user: str | None = None
    api_version: str = "v0.0.38"
    token: str | None = field(default=None, repr=False)
    token_file: str | None = None
    token_command: str | None = None
    token_refresh_s: float = 60.0
    request_timeout_s: float = 30.0
    verify_tls: bool = True
    staging: str = "ssh"
    home: str | None = None


@dataclass(frozen=True)
class Settings:
    ssh: SSHSettings
    slurm: SlurmSettings
    workflows: Mapping[str, WorkflowSettings]
    converters: Mapping[str, str]
    analytics: AnalyticsSettings
    worker: WorkerSettings
    sources: tuple[Path, ...] = ()
    # "SECTION.key" -> file path or "env NAME"; absent means the default applied
    origins: Mapping[str, str] = field(default_factory=dict, repr=False)
    rest: RestSettings = field(default_factory=RestSettings)

    def source_of(self, section: str, key: str) -> str:
        return self.origins.get(f"{section.upper()}.{key.lower()}", DEFAULT_SOURCE)

    def workflow(self, name: str) -> WorkflowSettings:
        try:
            return self.workflows[name]
        except KeyError:
            hint = _did_you_mean(name, self.workflows)
            known = ", ".join(sorted(self.workflows)) or "none"
            raise ConfigError(
                f"[WORKFLOWS] {name}: no such workflow{hint}; configured: {known}"
            ) from None

    def sbatch_flags_for(self, workflow: str, *, use_gpu: bool | None = None) -> dict[str, str]:
        """sbatch flags for one workflow run, lowest priority first:
        global ``sbatch_<flag>``, then the GPU defaults when the run uses a GPU,
        then the workflow's own ``<wf>_job_<flag>``; ``slurm_default_partition``
        fills in only when nothing set a partition. ``use_gpu`` overrides
        ``<wf>_use_gpu`` for this run."""
        wf = self.workflow(workflow)
        flags = dict(self.slurm.sbatch_flags)
        if wf.use_gpu if use_gpu is None else use_gpu:
            if self.slurm.gpu_partition:
                flags["partition"] = self.slurm.gpu_partition
            if not {"gres", "gpus"} & wf.job_flags.keys():
                if self.slurm.gpu_gres:
                    flags["gres"] = self.slurm.gpu_gres
                if self.slurm.gpu_gpus:
                    flags["gpus"] = self.slurm.gpu_gpus
        flags.update(wf.job_flags)
        if "partition" not in flags and self.slurm.slurm_default_partition:
            flags["partition"] = self.slurm.slurm_default_partition
        return dict(sorted(flags.items()))

    def sbatch_flags_for_conversion(self) -> dict[str, str]:
        flags = dict(self.slurm.sbatch_flags)
        if self.slurm.slurm_conversion_partition:
            flags["partition"] = self.slurm.slurm_conversion_partition
        elif "partition" not in flags and self.slurm.slurm_default_partition:
            flags["partition"] = self.slurm.slurm_default_partition
        return dict(sorted(flags.items()))

    def describe(self) -> list[tuple[str, str, str]]:
        """(key, value, source) for every setting, secrets redacted."""
        rows: list[tuple[str, str, str]] = []

        def add(section: str, key: str, value: Any, secret: bool = False) -> None:
            shown = _show(value)
            if secret and value is not None:
                shown = redact_url(shown)
            rows.append((f"{section}.{key}", shown, self.source_of(section, key)))

        for section, keys in FIXED_SECTIONS.items():
            group = getattr(self, section.lower())
            for spec in keys:
                add(section, spec.name, getattr(group, spec.name), spec.secret)
            if section == "SLURM":
                for flag, value in sorted(self.slurm.sbatch_flags.items()):
                    add(section, f"{_SBATCH_PREFIX}{flag}", value)
        for name, wf in sorted(self.workflows.items()):
            add(WORKFLOWS, name, wf.folder)
            add(WORKFLOWS, f"{name}_repo", wf.repo)
            add(WORKFLOWS, f"{name}_job", wf.job)
            add(WORKFLOWS, f"{name}_use_gpu", wf.use_gpu)
            add(WORKFLOWS, f"{name}_resubmit", wf.resubmit)
            if wf.skills_path:
                add(WORKFLOWS, f"{name}_skills_path", wf.skills_path)
            if wf.plugin_path:
                add(WORKFLOWS, f"{name}_plugin_path", wf.plugin_path)
            for flag, value in sorted(wf.job_flags.items()):
                add(WORKFLOWS, f"{name}_job_{flag}", value)
        for key, image in sorted(self.converters.items()):
            add(CONVERTERS, key, image)
        return rows


def _show(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, date):
        return value.isoformat()
    return str(value)
