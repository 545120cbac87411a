"""`biomero init`: prepare the cluster once, so runs only write their own files.

Creates the remote folders, renders one job script per workflow version, installs the
converter, and prepares runtimes (a Python environment for native workflows; an image
pull job for container workflows). Every action first looks whether its result is
already there and says "skipped" if so: running init twice changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import biomeroworker
from biomeroworker.checks import remote_folders
from biomeroworker.config import Settings
from biomeroworker.errors import BiomeroError
from biomeroworker.layout import ClusterLayout
from biomeroworker.slurm.client import SlurmClient
from biomeroworker.slurm.commands import SubmitRequest
from biomeroworker.transport.base import Transport, shell_join
from biomeroworker.workflows.catalog import Workflow, list_workflows
from biomeroworker.workflows.descriptor import Descriptor
from biomeroworker.workflows.github import fetch_descriptor, fetch_workflow_files
from biomeroworker.workflows.jobscript import FlagCommand, JobScriptSpec, render_job_script

# The parts of our package the converter job imports on the cluster (numpy, zarr and
# tifffile come from the native environment).
CONVERTER_MODULES = (
    "__init__.py",
    "errors.py",
    "convert/__init__.py",
    "convert/omezarr.py",
    "convert/zarr_to_tiff.py",
)
CONVERTER_REQUIREMENTS = ("numpy>=1.26", "zarr>=2.18", "tifffile>=2024.1.1")
PIP_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class Action:
    what: str
    done: bool  # False: already in place, skipped
    detail: str = ""
    error: str = ""  # set: this action failed; init goes on with the others, then fails


def cluster_layout(settings: Settings) -> ClusterLayout:
    s = settings.slurm
    return ClusterLayout(s.slurm_script_path, s.slurm_images_path, s.slurm_converters_path)


def _write_if_changed(transport: Transport, path: str, text: str, mode: int) -> bool:
    try:
        if transport.read_text(path) == text:
            return False
    except FileNotFoundError:
        pass
    transport.run(["mkdir", "-p", "--", posixpath.dirname(path)], idempotent=True)
    transport.write_text(path, text, mode=mode)
    return True


def _folders(transport: Transport, settings: Settings) -> Iterator[Action]:
    for key, path in remote_folders(settings).items():
        exists = transport.run(["test", "-d", path], check=False, idempotent=True).exit_code == 0
        if not exists:
            transport.run(["mkdir", "-p", "--", path], idempotent=True)
        yield Action(f"folder {key}", not exists, path)


# Apptainer ignores a Docker image's WORKDIR, so a relative command ("python wrapper.py")
# would start in the wrong folder. Like DSA, we pass the image's working directory with
# --pwd, read from a label of the pulled image.
WORKDIR_LABELS = ("org.biomero.workdir", "workdir", "WORKDIR")


def image_workdir(transport: Transport, runtime: str, sif: str) -> str | None:
    """The working directory a pulled image declares in its labels, if any."""
    result = transport.run(
        [runtime, "inspect", "--json", "--labels", sif], check=False, idempotent=True
    )
    if result.exit_code != 0:
        return None
    try:
        labels = _find_labels(json.loads(result.stdout))
    except ValueError:
        return None
    for key in WORKDIR_LABELS:
        value = labels.get(key)
        if isinstance(value, str) and value.startswith("/"):
            return value
    return None


def _find_labels(data: object) -> dict[str, object]:
    """apptainer/singularity put labels under data.attributes.labels; older ones at the top."""
    if isinstance(data, dict):
        if isinstance(data.get("labels"), dict):
            return data["labels"]
        for value in data.values():
            found = _find_labels(value)
            if found:
                return found
    return {}


def _job_spec(
    settings: Settings, layout: ClusterLayout, wf: Workflow, workdir: str | None = None
) -> JobScriptSpec:
    runtime = settings.worker.runtime
    flags = {k: v for k, v in settings.sbatch_flags_for(wf.name).items() if k != "output"}
    common = dict(
        workflow=wf.name,
        version=wf.version,
        sbatch=flags,
        gpu=wf.settings.use_gpu,
        bilayers=flag_command(wf.descriptor),
    )
    if runtime == "native":
        return JobScriptSpec(
            runtime="native",
            native_python=settings.worker.native_python,
            workflow_dir=layout.workflow_dir(wf.name, wf.version),
            **common,  # type: ignore[arg-type]
        )
    bind = settings.slurm.slurm_data_bind_path
    return JobScriptSpec(
        runtime=runtime,  # type: ignore[arg-type]
        image_path=image_path(layout, wf),
        workdir=workdir,
        bind_paths=(bind,) if bind else (),
        params_mode="argv",
        **common,  # type: ignore[arg-type]
    )


def flag_command(descriptor: Descriptor) -> FlagCommand | None:
    """A bilayers workflow's command line (program, folder flags, fixed arguments, each
    parameter's flag); None for BIAFLOWS and biomero-schema workflows."""
    if descriptor.family != "bilayers":
        return None
    return FlagCommand(
        program=descriptor.cli_command,
        folders=descriptor.folder_flags,
        fixed=descriptor.hidden_args,
        flags={p.id: (p.flag, p.flag_mode) for p in descriptor.user_parameters},
    )


def _workflow_files(transport: Transport, layout: ClusterLayout, wf: Workflow) -> Action:
    """Native runtime: the workflow's own folder goes next to its job script."""
    assert wf.local_dir is not None
    target = layout.workflow_dir(wf.name, wf.version)
    changed = [
        name
        for name in ("wrapper.py", "descriptor.json", "requirements.txt")
        if (wf.local_dir / name).is_file()
        and _write_if_changed(
            transport, f"{target}/{name}", (wf.local_dir / name).read_text(), 0o644
        )
    ]
    return Action(f"{wf.name} {wf.version} files", bool(changed), target)


DIRECT_PULL_TIMEOUT_S = 4 * 3600.0  # a direct pull of a large image takes its time


def pull_script(settings: Settings, runtime: str, sif: str, source: str) -> str:
    """The pull as a script; apptainer_tmpdir/_cachedir become the runtime's own variables."""
    lines = ["#!/bin/bash", "set -euo pipefail"]
    for key, value in (
        ("TMPDIR", settings.slurm.apptainer_tmpdir),
        ("CACHEDIR", settings.slurm.apptainer_cachedir),
    ):
        if value:
            for prefix in ("APPTAINER", "SINGULARITY"):
                lines.append(f"export {prefix}_{key}={shell_join([value])}")
            lines.append(shell_join(["mkdir", "-p", "--", value]))
    lines.append(shell_join(["mkdir", "-p", "--", posixpath.dirname(sif)]))
    lines.append(shell_join([runtime, "pull", "--force", sif, source]))
    return "\n".join(lines) + "\n"


def pull_request(
    settings: Settings, layout: ClusterLayout, label: str, path: str, slot: int
) -> SubmitRequest:
    """The sbatch of a pull. ``image_pull_concurrency`` = N: the pulls share N job names
    with ``--dependency=singleton``, so Slurm runs at most N of them at once."""
    s = settings.slurm
    flags = {
        flag: value
        for flag, value in (
            ("cpus-per-task", str(s.image_pull_cpus) if s.image_pull_cpus else None),
            ("mem", s.image_pull_mem),
            ("time", s.image_pull_time),
        )
        if value
    }
    name = f"biomero-pull-{label}"
    if s.image_pull_concurrency:
        name = f"biomero-pull-{slot % s.image_pull_concurrency}"
        flags["dependency"] = "singleton"
    return SubmitRequest(
        script_path=path,
        job_name=name,
        partition=s.image_pull_partition or s.slurm_default_partition,
        output_path=f"{layout.init_stamp_dir}/pull-{label}-%j.log",
        extra_flags=flags,
    )


def _pull(
    transport: Transport,
    settings: Settings,
    layout: ClusterLayout,
    *,
    label: str,
    sif: str,
    source: str,
    slot: int = 0,
) -> Action:
    """Pull a container image to ``sif`` if it is not there: in an sbatch job when
    ``slurm_image_pull_via_sbatch`` is on, else here on the login node (upstream's
    default)."""
    if transport.run(["test", "-f", sif], check=False, idempotent=True).exit_code == 0:
        return Action(f"{label} image", False, sif)
    runtime = settings.worker.runtime
    path = f"{layout.init_stamp_dir}/pull-{label}.sh"
    _write_if_changed(transport, path, pull_script(settings, runtime, sif, source), 0o700)
    if not settings.slurm.slurm_image_pull_via_sbatch:
        transport.run(["bash", path], timeout_s=DIRECT_PULL_TIMEOUT_S)
        return Action(f"{label} image", True, f"pulled on the login node -> {sif}")
    job = SlurmClient(transport).submit(pull_request(settings, layout, label, path, slot))
    return Action(f"{label} image", True, f"pull job {job} -> {sif}")


def _image_pull(
    transport: Transport, settings: Settings, layout: ClusterLayout, wf: Workflow, slot: int = 0
) -> Action:
    """A workflow's image, tagged with its version (the git tag)."""
    action = _pull(
        transport,
        settings,
        layout,
        label=f"{wf.name}-{wf.version}",
        sif=image_path(layout, wf),
        source=f"docker://{wf.descriptor.image}:{wf.version}",
        slot=slot,
    )
    return replace(action, what=f"{wf.name} image")


def image_path(layout: ClusterLayout, wf: Workflow) -> str:
    """``<images>/<folder>/<image>_<version>.sif``: ``<wf> = <folder>`` names the folder."""
    return layout.image(wf.settings.folder or wf.name, wf.image_name, wf.version)


def job_script_paths(layout: ClusterLayout, wf: Workflow) -> list[str]:
    """Where init renders the workflow's job script: always ``<wf>/<version>/job.sh``
    (what runs submit, so every prepared version keeps its own), and also ``<wf>_job``
    (relative to ``slurm_script_path``, where upstream keeps it) when that is set."""
    paths = [layout.job_script(wf.name, wf.version)]
    if wf.settings.job:
        paths.append(posixpath.join(layout.script_path, wf.settings.job))
    return paths


def prepared_on_cluster(transport: Transport, settings: Settings, wf: Workflow) -> bool:
    """Whether init prepared this version: its job script and its image (container
    runtimes) or its files (native) are on the cluster. One remote command."""
    layout = cluster_layout(settings)
    if settings.worker.runtime == "native":
        needed = layout.workflow_dir(wf.name, wf.version) + "/wrapper.py"
    else:
        needed = image_path(layout, wf)
    argv = ["test", "-f", layout.job_script(wf.name, wf.version), "-a", "-f", needed]
    return transport.run(argv, check=False, idempotent=True).exit_code == 0


def _native_env(transport: Transport, settings: Settings, workflows: list[Workflow]) -> Action:
    """One virtualenv for native workflows and the converter, rebuilt when its inputs change."""
    python = settings.worker.native_python
    venv = posixpath.dirname(posixpath.dirname(python))
    requirements = sorted(
        {
            line.strip()
            for wf in workflows
            if wf.local_dir is not None and (wf.local_dir / "requirements.txt").is_file()
            for line in (wf.local_dir / "requirements.txt").read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        }
        | set(CONVERTER_REQUIREMENTS)
    )
    digest = hashlib.sha256(json.dumps(requirements).encode()).hexdigest()[:16]
    stamp = posixpath.join(venv, ".biomero-requirements")
    try:
        if transport.read_text(stamp).strip() == digest:
            return Action("native environment", False, venv)
    except FileNotFoundError:
        pass
    if transport.run(["test", "-x", python], check=False, idempotent=True).exit_code != 0:
        transport.run(["python3", "-m", "venv", venv], timeout_s=PIP_TIMEOUT_S)
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    transport.run([*pip, *requirements], timeout_s=PIP_TIMEOUT_S)
    transport.write_text(stamp, digest + "\n", mode=0o644)
    return Action("native environment", True, f"{venv}: {', '.join(requirements)}")


def _converter(transport: Transport, settings: Settings, layout: ClusterLayout) -> Iterator[Action]:
    """The OME-Zarr to TIFF converter: the ``[CONVERTERS] zarr_to_tiff`` image when one
    is configured and the runtime runs containers, else our own module."""
    image = settings.converters.get("zarr_to_tiff")
    runtime = settings.worker.runtime
    if image and runtime != "native":
        yield from _converter_image(transport, settings, layout, image)
        return
    pylib = posixpath.join(settings.slurm.slurm_converters_path, "pylib")
    package = Path(biomeroworker.__file__).parent
    changed = False
    for module in CONVERTER_MODULES:
        text = (package / module).read_text()
        changed |= _write_if_changed(transport, f"{pylib}/biomeroworker/{module}", text, 0o644)
    script = converter_script(settings.worker.native_python, pylib)
    changed |= _write_if_changed(transport, layout.converter_script(), script, 0o755)
    note = f" ([CONVERTERS] zarr_to_tiff = {image} needs a container runtime)" if image else ""
    yield Action("converter zarr_to_tiff", changed, layout.converter_script() + note)
    if runtime != "native":
        yield _converter_python(transport, settings)


def _converter_python(transport: Transport, settings: Settings) -> Action:
    """Our converter runs under the cluster's Python with numpy, zarr and tifffile,
    which no container brings along: check they are there, say what to do if not."""
    python = settings.worker.native_python
    probe = [python, "-c", "import numpy, zarr, tifffile"]
    result = transport.run(probe, check=False, idempotent=True)
    if result.exit_code == 0:
        return Action("converter python", False, f"{python} has numpy, zarr, tifffile")
    return Action(
        "converter python",
        False,
        error=f"{python} on the cluster cannot import numpy, zarr and tifffile "
        f"({result.stderr.strip().splitlines()[-1:] or ['no output']}); install them for "
        "that Python ([WORKER] native_python names it), or set [CONVERTERS] zarr_to_tiff "
        "to a converter image (e.g. cellularimagingcf/convert_zarr_to_tiff:2.0.0)",
    )


def _converter_image(
    transport: Transport, settings: Settings, layout: ClusterLayout, image: str
) -> Iterator[Action]:
    name, _, tag = image.rpartition("/")[2].partition(":")
    sif = posixpath.join(settings.slurm.slurm_converters_path, f"{name}_{tag or 'latest'}.sif")
    pulled = _pull(
        transport, settings, layout, label="converter", sif=sif, source=f"docker://{image}"
    )
    yield replace(pulled, what="converter zarr_to_tiff image")
    script = converter_image_script(settings, sif)
    changed = _write_if_changed(transport, layout.converter_script(), script, 0o755)
    yield Action("converter zarr_to_tiff", changed, f"{layout.converter_script()} runs {sif}")


def converter_image_script(settings: Settings, sif: str) -> str:
    """Same interface as ours (``sbatch --array=1-N <this> <list>``): element N converts
    line N of the list with the image, as upstream calls it (``run <sif> <zarr>``), plus
    ``--output`` so the TIFF gets the name our steps expect; the OME-Zarr is removed."""
    runtime = settings.worker.runtime
    bind = settings.slurm.slurm_data_bind_path
    run = [runtime, "run", *(["--bind", bind] if bind else []), sif]
    return (
        "#!/bin/bash\n"
        "# BIOMERO converter (image): one OME-Zarr -> TIFF per array element, rendered by\n"
        "# `biomero init`. Usage: sbatch --array=1-N <this> <list file>\n"
        "#SBATCH --job-name=biomero-convert\n"
        "set -euo pipefail\n"
        'list="$1"\n'
        'zarr="$(sed -n "${SLURM_ARRAY_TASK_ID}p" -- "$list")"\n'
        '[[ -n $zarr ]] || { echo "no line $SLURM_ARRAY_TASK_ID in $list" >&2; exit 2; }\n'
        'name="${zarr##*/}"; stem="${name%.[zZ][aA][rR][rR]}"; stem="${stem%.[oO][mM][eE]}"\n'
        f'{shell_join(run)} "$zarr" --output "${{zarr%/*}}/$stem.tif"\n'
        'rm -rf -- "$zarr"\n'
    )


def converter_script(python: str, pylib: str) -> str:
    return (
        "#!/bin/bash\n"
        "# BIOMERO converter: one OME-Zarr -> OME-TIFF per array element, rendered by\n"
        "# `biomero init`. Usage: sbatch --array=1-N <this> <list file>\n"
        "#SBATCH --job-name=biomero-convert\n"
        "set -euo pipefail\n"
        'list="$1"\n'
        f'export PYTHONPATH={shell_join([pylib])}"${{PYTHONPATH:+:$PYTHONPATH}}"\n'
        f"exec {shell_join([python, '-m', 'biomeroworker.convert.zarr_to_tiff'])} "
        '--list "$list" --index "$SLURM_ARRAY_TASK_ID" --remove-source\n'
    )


def _downloads(settings: Settings) -> Iterator[Action]:
    """Every workflow pinned to a GitHub tag: its descriptor (and, for the native runtime,
    its wrapper files) into the local cache, from GitHub or [WORKER] workflow_mirror."""
    mirror = settings.worker.workflow_mirror
    native = settings.worker.runtime == "native"
    for wf in sorted(settings.workflows.values(), key=lambda w: w.name):
        if wf.is_local:
            continue
        what = f"{wf.name} {wf.tag} descriptor"
        try:
            _, fetched = fetch_descriptor(wf.repo, mirror=mirror)
            detail = f"from {mirror or 'GitHub'}" if fetched else "cached"
            yield Action(what, fetched, detail)
            if native:
                files = fetch_workflow_files(wf.repo, mirror=mirror)
                yield Action(f"{wf.name} {wf.tag} files", bool(files), ", ".join(files) or "cached")
        except BiomeroError as exc:
            yield Action(what, False, error=str(exc))


def init_cluster(transport: Transport, settings: Settings) -> Iterator[Action]:
    """Prepare everything; a workflow that fails is reported and the others go on,
    then init raises naming every failure."""
    layout = cluster_layout(settings)
    yield from _folders(transport, settings)
    failed = []
    for action in _downloads(settings):
        failed += [action] if action.error else []
        yield action
    workflows: list[Workflow] = []
    for item in list_workflows(settings):
        if isinstance(item, tuple):
            name, error = item
            if not any(a.what.startswith(f"{name} ") for a in failed):
                failed.append(Action(f"workflow {name}", False, error=str(error)))
                yield failed[-1]
            continue
        workflows.append(item)
    for action in _prepare(transport, settings, layout, workflows):
        failed += [action] if action.error else []
        yield action
    if failed:
        raise BiomeroError(
            "init could not prepare: " + "; ".join(f"{a.what}: {a.error}" for a in failed)
        )


def _prepare(
    transport: Transport, settings: Settings, layout: ClusterLayout, workflows: list[Workflow]
) -> Iterator[Action]:
    native = settings.worker.runtime == "native"
    if native:
        yield _native_env(transport, settings, workflows)
    yield from _converter(transport, settings, layout)
    for slot, wf in enumerate(workflows):
        if native:
            if wf.local_dir is None:
                raise BiomeroError(
                    f"workflow {wf.name}: the native runtime needs the workflow's wrapper.py "
                    f"(a local {wf.name}_repo folder, or a tag whose files init can download)"
                )
            yield _workflow_files(transport, layout, wf)
        else:
            yield _image_pull(transport, settings, layout, wf, slot)
        workdir = None
        if not native:
            sif = image_path(layout, wf)
            workdir = image_workdir(transport, settings.worker.runtime, sif)
        script = render_job_script(_job_spec(settings, layout, wf, workdir))
        paths = job_script_paths(layout, wf)
        changed = [_write_if_changed(transport, path, script, 0o755) for path in paths]
        yield Action(f"{wf.name} {wf.version} job script", any(changed), ", ".join(paths))
