"""The one owner of a run's file layout on the cluster and on the worker.

Upstream BIOMERO keeps ``<data>/<folder>/data/{in,out,gt}``; we keep that shape with the
run id as the folder. Nobody else joins run paths.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_run_id(run_id: str) -> str:
    """Run ids become folder names on the cluster: keep them to a safe alphabet."""
    if not _RUN_ID.match(run_id) or ".." in run_id:
        raise ValueError(f"run id {run_id!r} must match {_RUN_ID.pattern}")
    return run_id


@dataclass(frozen=True)
class RunLayout:
    """Where a run's files live: ``remote_*`` on the cluster, ``local_*`` on the worker.

    ``data_path`` is ``[SLURM] slurm_data_path``; relative means relative to the
    remote user's home, which is where every transport starts.
    """

    run_id: str
    data_path: str
    local_root: Path

    def __post_init__(self) -> None:
        check_run_id(self.run_id)

    @property
    def remote_run(self) -> str:
        return posixpath.join(self.data_path, self.run_id)

    @property
    def remote_data(self) -> str:
        return posixpath.join(self.remote_run, "data")

    @property
    def remote_in(self) -> str:
        return posixpath.join(self.remote_data, "in")

    @property
    def remote_out(self) -> str:
        return posixpath.join(self.remote_data, "out")

    @property
    def remote_gt(self) -> str:
        return posixpath.join(self.remote_data, "gt")

    @property
    def remote_tiff(self) -> str:
        """Converted inputs for workflows that read TIFF."""
        return posixpath.join(self.remote_data, "tiff")

    @property
    def remote_params(self) -> str:
        return posixpath.join(self.remote_run, "params.json")

    @property
    def remote_logs(self) -> str:
        return posixpath.join(self.remote_run, "logs")

    def remote_log(self, pattern: str = "omero-%j.log") -> str:
        """Slurm ``--output`` path; ``%j``/``%A``/``%a`` are filled in by Slurm."""
        return posixpath.join(self.remote_logs, pattern)

    @property
    def remote_conversion_list(self) -> str:
        return posixpath.join(self.remote_run, "convert.list")

    @property
    def local_run(self) -> Path:
        return self.local_root / self.run_id

    @property
    def local_in(self) -> Path:
        return self.local_run / "in"

    @property
    def local_out(self) -> Path:
        return self.local_run / "out"


@dataclass(frozen=True)
class ClusterLayout:
    """Where per-workflow things live on the cluster (rendered once, shared by runs)."""

    script_path: str
    images_path: str
    converters_path: str

    def version_dir(self, workflow: str, version: str) -> str:
        return posixpath.join(self.script_path, workflow, version)

    def job_script(self, workflow: str, version: str) -> str:
        return posixpath.join(self.version_dir(workflow, version), "job.sh")

    def workflow_dir(self, workflow: str, version: str) -> str:
        """Native runtime: the workflow's own files (wrapper.py, descriptor.json)."""
        return posixpath.join(self.version_dir(workflow, version), "workflow")

    def image(self, workflow: str, image: str, version: str) -> str:
        """Container runtimes: ``<images>/<wf>/<image>_<version>.sif`` as upstream keeps it."""
        return posixpath.join(self.images_path, workflow, f"{image}_{version}.sif")

    def converter_script(self, name: str = "zarr_to_tiff") -> str:
        return posixpath.join(self.converters_path, f"{name}.sh")

    @property
    def init_stamp_dir(self) -> str:
        """Markers that let `biomero init` skip work it already did."""
        return posixpath.join(self.script_path, ".biomero")
