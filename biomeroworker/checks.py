"""Setup checks behind `biomero check`: each says pass or fail, and what to do on fail."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

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
        "image_pull_partition": settings.slurm.image_pull_partition,
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


def _sbatch_values(transport: Transport, settings: Settings, workflow: str | None) -> Check:
    """A workflow's sbatch values (or the conversion job's, for None) against the
    partitions the cluster lists: the same rules a run request meets."""
    from biomeroworker.inputs import cluster_key, conversion_flag_values, job_flag_values
    from biomeroworker.slurm.offer import cached_partitions, check_flags, read_offer

    client = SlurmClient(transport)
    offered = cached_partitions(cluster_key(settings), lambda: read_offer(client))
    if workflow is None:
        name, values = "conversion job", conversion_flag_values(settings)
    else:
        name, values = f"workflow {workflow}", job_flag_values(settings, workflow, None)
    problems = check_flags(values, offered)
    if problems:
        return Check(name, False, "; ".join(problems), "fix these keys in slurm-config.ini")
    shown = ", ".join(f"{v.flag}={v.value}" for v in values) or "cluster defaults"
    return Check(name, True, f"sbatch {shown}")


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


def _answers(transport: Transport, name: str, argv: list[str], ok: str, hint: str) -> Check:
    """Whether a Slurm command answers at all: its own words when it does not."""
    result = transport.run(argv, check=False, idempotent=True)
    if result.exit_code != 0:
        detail = (result.stderr or result.stdout).strip()[:200] or f"exit {result.exit_code}"
        return Check(name, False, detail, hint)
    return Check(name, True, ok)


def _sacct(transport: Transport) -> Check:
    return _answers(
        transport,
        "sacct",
        ["sacct", "--noheader", "--parsable2", "--allocations", "--format=JobID"],
        "accounting answers",
        "accounting (slurmdbd) must answer: exit codes, memory kills and use, and jobs "
        "the controller has forgotten come from it",
    )


def _squeue(transport: Transport) -> Check:
    # A name no job has: an empty answer from the controller, whatever the queue holds.
    return _answers(
        transport,
        "squeue",
        ["squeue", "--noheader", "--format=%i", "--name=biomero-check-no-such-job"],
        "the controller answers",
        "polls ask the controller (squeue) first; without it every poll asks accounting",
    )


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
    for workflow in sorted(settings.workflows):
        steps.append(
            (f"workflow {workflow}", lambda w=workflow: _sbatch_values(transport, settings, w))
        )
    steps.append(("conversion job", lambda: _sbatch_values(transport, settings, None)))
    for key, path in remote_folders(settings).items():
        steps.append((f"folder {key}", lambda k=key, p=path: _folder(transport, k, p)))
    steps.append(("squeue", lambda: _squeue(transport)))
    steps.append(("sacct", lambda: _sacct(transport)))
    for name, step in steps:
        try:
            yield step()
        except CommandError as exc:
            yield Check(name, False, str(exc), "run the command by hand on the cluster to see why")
        except BiomeroError as exc:
            yield Check(name, False, str(exc))


def tracking_database_check(settings: Settings) -> Check:
    """What the tracking database holds (biomero 2.x history, our runs), and whether this
    worker can share it; it never writes (tables are created on first real use)."""
    import sqlalchemy.exc
    from sqlalchemy import create_engine

    from biomeroworker.tracking.errors import TrackingError
    from biomeroworker.tracking.store import parse_url, redact, resolve_url, scrub
    from biomeroworker.tracking.takeover import survey

    url = resolve_url(settings_url=settings.analytics.sqlalchemy_url)
    try:
        engine = create_engine(parse_url(url))
        try:
            found = survey(engine)
        finally:
            engine.dispose()
    except TrackingError as exc:
        return Check("tracking database", False, str(exc))
    except sqlalchemy.exc.SQLAlchemyError as exc:
        detail = scrub(str(getattr(exc, "orig", exc)).strip().splitlines()[0], url)
        return Check(
            "tracking database",
            False,
            f"{redact(url)}: {detail}",
            "check [ANALYTICS] sqlalchemy_url (or SQLALCHEMY_URL) and that the database is up",
        )
    if not found.shareable:
        return Check(
            "tracking database",
            False,
            f"{found.summary()}; cannot be shared: {'; '.join(found.problems)}",
            "point [ANALYTICS] sqlalchemy_url at another database, or upgrade this worker",
        )
    return Check("tracking database", True, found.summary())


SUDO_HINT = (
    "the worker's OMERO_USER must be a full admin, or a restricted admin with the Sudo "
    "privilege (omero user add ... --privileges Sudo): it opens each run's session as "
    "the run's user"
)


def omero_check(env: Mapping[str, str] | None = None, gateway: Any = None) -> Check | None:
    """Log in to OMERO as the worker and check it may act for users (None: not set up)."""
    environ = os.environ if env is None else env
    if not environ.get("OMERO_HOST"):
        return None
    try:
        from biomeroworker.omero.connect import OmeroServer, SudoConnector
    except ImportError as exc:
        return Check("omero", False, f"OMERO_HOST is set but omero-py is missing ({exc})")
    try:
        connector = SudoConnector(OmeroServer.from_env(environ), gateway=gateway)
    except BiomeroError as exc:
        return Check("omero", False, str(exc), SUDO_HINT)
    try:
        return Check("omero", True, connector.check())
    except BiomeroError as exc:
        return Check("omero", False, str(exc), SUDO_HINT)
    finally:
        connector.close()
