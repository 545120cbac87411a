"""Setup checks behind `biomero check`: each says pass or fail, and what to do on fail."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from biomeroworker.config import Settings
from biomeroworker.errors import BiomeroError, CommandError
from biomeroworker.slurm.client import SlurmClient
from biomeroworker.transport.base import Transport


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    hint: str = ""


def remote_folders(settings: Settings) -> dict[str, str]:
    s = settings.slurm
    return {
        "slurm_data_path": s.slurm_data_path,
        "slurm_images_path": s.slurm_images_path,
        "slurm_converters_path": s.slurm_converters_path,
        "slurm_script_path": s.slurm_script_path,
    }


def _connect(transport: Transport, settings: Settings) -> Check:
    where = (
        "this host" if settings.worker.transport == "local" else f"ssh alias {settings.ssh.host}"
    )
    result = transport.run(["id", "-un"], idempotent=True)
    return Check("connect", True, f"{where} as {result.stdout.strip()}")


def _partitions(transport: Transport, settings: Settings) -> Check:
    names = [p.name for p in SlurmClient(transport).partitions()]
    wanted = {
        "slurm_default_partition": settings.slurm.slurm_default_partition,
        "slurm_conversion_partition": settings.slurm.slurm_conversion_partition,
        "gpu_partition": settings.slurm.gpu_partition,
    }
    missing = [f"{key}={value}" for key, value in wanted.items() if value and value not in names]
    if missing:
        return Check(
            "sinfo",
            False,
            f"partitions {', '.join(names)}; not found: {', '.join(missing)}",
            "set [SLURM] partitions to ones `sinfo` lists",
        )
    return Check("sinfo", True, f"partitions: {', '.join(names)}")


def _folder(transport: Transport, key: str, path: str) -> Check:
    transport.run(["mkdir", "-p", "--", path], idempotent=True)
    writable = transport.run(["test", "-w", path], check=False, idempotent=True).exit_code == 0
    if not writable:
        return Check(
            f"folder {key}",
            False,
            f"{path} exists but is not writable",
            "ask the cluster admins for write access or point [SLURM] at another folder",
        )
    return Check(f"folder {key}", True, f"{path} exists and is writable")


def _sacct(transport: Transport) -> Check:
    argv = ["sacct", "--noheader", "--parsable2", "--allocations", "--format=JobID"]
    result = transport.run(argv, check=False, idempotent=True)
    if result.exit_code != 0:
        return Check(
            "sacct",
            False,
            (result.stderr or result.stdout).strip()[:200] or f"exit {result.exit_code}",
            "accounting (slurmdbd) must answer for job history; status falls back to squeue",
        )
    return Check("sacct", True, "accounting answers")


def run_checks(transport: Transport, settings: Settings) -> Iterator[Check]:
    """Connect first; without a connection the remaining checks are not attempted."""
    try:
        yield _connect(transport, settings)
    except BiomeroError as exc:
        yield Check("connect", False, str(exc), "see the SSH section of docs/deployment.md")
        return
    steps: list[tuple[str, Callable[[], Check]]] = [
        ("sinfo", lambda: _partitions(transport, settings))
    ]
    for key, path in remote_folders(settings).items():
        steps.append((f"folder {key}", lambda k=key, p=path: _folder(transport, k, p)))
    steps.append(("sacct", lambda: _sacct(transport)))
    for name, step in steps:
        try:
            yield step()
        except CommandError as exc:
            yield Check(name, False, str(exc), "run the command by hand on the cluster to see why")
        except BiomeroError as exc:
            yield Check(name, False, str(exc))
