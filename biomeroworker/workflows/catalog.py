"""The configured workflows with their descriptors, from local state only (no network)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from biomeroworker.config import Settings, WorkflowSettings
from biomeroworker.errors import BiomeroError
from biomeroworker.workflows.descriptor import Descriptor, load_descriptor
from biomeroworker.workflows.github import cached_folder, resolve_descriptor

LOCAL_VERSION = "local"


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
        raise UnknownWorkflowError(
            f"workflow {name} is configured at version {configured}, not {version}; "
            f"change {name}_repo in slurm-config.ini to use another version"
        )
    if wf.is_local:
        descriptor = load_descriptor(Path(wf.repo) / "descriptor.json")
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
