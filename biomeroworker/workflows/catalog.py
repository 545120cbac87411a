"""The configured workflows with their descriptors, from local state only (no network)."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from biomeroworker.config import Settings, WorkflowSettings
from biomeroworker.errors import BiomeroError
from biomeroworker.workflows.descriptor import Descriptor, find_descriptor, load_descriptor
from biomeroworker.workflows.github import (
    cache_path,
    cached_folder,
    parse_repo_url,
    resolve_descriptor,
)

LOCAL_VERSION = "local"
_TAG = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class Workflow:
    name: str
    version: str
    settings: WorkflowSettings
    descriptor: Descriptor

    files_dir: Path | None = None

    @property
    def local_dir(self) -> Path | None:
        """The workflow's own files here (native runs copy them to the cluster): its local
        folder, or for a pinned GitHub tag the cache `biomero init` filled, once it holds
        the wrapper."""
        return self.files_dir

    @property
    def image_name(self) -> str:
        """The image's last path part: ``<images>/<wf>/<image>_<version>.sif``."""
        return self.descriptor.image.rsplit("/", 1)[-1].split(":", 1)[0]


class UnknownWorkflowError(BiomeroError):
    pass


def get_workflow(settings: Settings, name: str, version: str | None = None) -> Workflow:
    if name not in settings.workflows:
        known = ", ".join(sorted(settings.workflows)) or "none configured"
        raise UnknownWorkflowError(f"workflow {name!r} is not in [WORKFLOWS] (known: {known})")
    wf = settings.workflows[name]
    configured = wf.tag or LOCAL_VERSION
    if version is not None and version != configured:
        wf = _other_version(wf, version, configured)
        configured = version
    if wf.is_local:
        descriptor = load_descriptor(find_descriptor(Path(wf.repo)))
        files: Path | None = Path(wf.repo)
    else:
        descriptor = resolve_descriptor(wf.repo)
        cached = cached_folder(wf.repo)
        files = cached if (cached / "wrapper.py").is_file() else None
    return Workflow(
        name=name, version=configured, settings=wf, descriptor=descriptor, files_dir=files
    )


def list_workflows(settings: Settings) -> list[Workflow | tuple[str, BiomeroError]]:
    """Every configured workflow; one that cannot be read comes back with its error."""
    out: list[Workflow | tuple[str, BiomeroError]] = []
    for name in sorted(settings.workflows):
        try:
            out.append(get_workflow(settings, name))
        except BiomeroError as exc:
            out.append((name, exc))
    return out


def _other_version(wf: WorkflowSettings, version: str, configured: str) -> WorkflowSettings:
    """The workflow at another tag of the same repository, if its descriptor is cached
    (an earlier `biomero init` with that tag fetched it). Whether its image or files are
    on the cluster is for the caller to check (``prepared_on_cluster``)."""
    if wf.is_local or not _TAG.fullmatch(version):
        raise UnknownWorkflowError(
            f"workflow {wf.name} has one version here ({configured}), not {version!r}"
            + ("" if not wf.is_local else ": a local folder has no other versions")
        )
    other = replace(wf, repo=wf.repo.rstrip("/").rsplit("/", 1)[0] + f"/{version}")
    if not cache_path(parse_repo_url(other.repo)).is_file():
        raise UnknownWorkflowError(
            f"workflow {wf.name} version {version} is not prepared here (configured: "
            f"{configured}); set {wf.name}_repo to its tag and run `biomero init` once, "
            "after which both versions can be chosen"
        )
    return other


def prepared_versions(settings: Settings, name: str) -> list[str]:
    """The versions a run of ``name`` may name here: the configured one first, then every
    other tag of the same repository whose descriptor an earlier init cached (newest
    first by name). Reads the local cache only."""
    wf = settings.workflows[name]
    configured = wf.tag or LOCAL_VERSION
    if wf.is_local:
        return [configured]
    repo_dir = cached_folder(wf.repo).parent
    tags = sorted(
        (p.parent.name for p in repo_dir.glob("*/descriptor.json") if p.parent.name != configured),
        reverse=True,
    )
    return [configured, *tags]
