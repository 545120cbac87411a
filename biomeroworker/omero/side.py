"""OmeroSide: the DataSide the supervisor uses for runs whose inputs come from OMERO.

It opens a session as the run's user in the run's group (see ``connect``), exports
the selection as OME-Zarr (``exporter``) and imports results with provenance
(``importer``). Both calls are safe to repeat after a crash.

The supervisor builds it from the environment::

    side = OmeroSide.from_env()        # OMERO_HOST, OMERO_PORT, OMERO_USER, OMERO_PASSWORD
    RunEngine(..., data_sides={"omero": side})

Optional: ``BIOMERO_OMERO_EXPORT_WORKERS`` (images exported at once, each over its
own session, default 2), ``BIOMERO_OMERO_ZARR_FORMAT`` (``0.4`` = Zarr v2, the
default, or ``0.5``) and ``BIOMERO_OMERO_MAX_PLANE_MB`` (the largest result plane
read into memory at once, default 1024).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from biomeroworker.errors import ConfigError
from biomeroworker.omero.connect import Connector, OmeroError, OmeroServer, SudoConnector
from biomeroworker.omero.exporter import (
    ZARR_FORMATS,
    ExportFn,
    download_attachments,
    export_selection,
    zarr_exporter,
)
from biomeroworker.omero.importer import Importer, ImportOptions
from biomeroworker.omero.results import (
    DEFAULT_MAX_PLANE_BYTES,
    EXPORT_INDEX,
    index_from_names,
    read_index,
)
from biomeroworker.run_record import RunRecord

DEFAULT_EXPORT_WORKERS = 2


def export_folder(run: RunRecord) -> Path | None:
    """The folder the run's export step wrote to (from its tracked results)."""
    tasks = [t for t in run.tasks if t.kind == "export" and t.result_locations]
    return Path(tasks[-1].result_locations[0]).parent if tasks else None


def source_index(run: RunRecord) -> dict[int, Any]:
    folder = export_folder(run)
    if folder is not None and (folder / EXPORT_INDEX).is_file():
        return read_index(folder / EXPORT_INDEX)
    tasks = [t for t in run.tasks if t.kind == "export"]
    paths = [Path(p) for t in tasks for p in t.result_locations]
    return index_from_names(paths)


def user_of(run: RunRecord) -> tuple[str, int | None]:
    if not run.user:
        raise OmeroError(f"run {run.run_id} has no user to act for")
    return run.user, run.omero_group_id


class OmeroSide:
    def __init__(
        self,
        connect: Connector,
        *,
        export_fn: ExportFn | None = None,
        export_workers: int = DEFAULT_EXPORT_WORKERS,
        zarr_format: str = "0.4",
        max_plane_bytes: int = DEFAULT_MAX_PLANE_BYTES,
    ) -> None:
        self.connect = connect
        self._export_fn = export_fn
        self.export_workers = export_workers
        self.zarr_format = zarr_format
        self.max_plane_bytes = max_plane_bytes

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OmeroSide:
        environ = os.environ if env is None else env
        workers_text = environ.get("BIOMERO_OMERO_EXPORT_WORKERS", str(DEFAULT_EXPORT_WORKERS))
        if not workers_text.isdigit() or int(workers_text) < 1:
            raise ConfigError(
                f"environment: BIOMERO_OMERO_EXPORT_WORKERS must be a whole number >= 1, "
                f"not {workers_text!r}"
            )
        plane_text = environ.get("BIOMERO_OMERO_MAX_PLANE_MB", str(DEFAULT_MAX_PLANE_BYTES >> 20))
        if not plane_text.isdigit() or int(plane_text) < 1:
            raise ConfigError(
                f"environment: BIOMERO_OMERO_MAX_PLANE_MB must be a whole number >= 1, "
                f"not {plane_text!r}"
            )
        zarr_format = environ.get("BIOMERO_OMERO_ZARR_FORMAT", "0.4")
        if zarr_format not in ZARR_FORMATS:
            raise ConfigError(
                f"environment: BIOMERO_OMERO_ZARR_FORMAT must be one of {', '.join(ZARR_FORMATS)}"
            )
        return cls(
            SudoConnector(OmeroServer.from_env(environ)),
            export_workers=int(workers_text),
            zarr_format=zarr_format,
            max_plane_bytes=int(plane_text) << 20,
        )

    @property
    def export_fn(self) -> ExportFn:
        if self._export_fn is None:
            self._export_fn = zarr_exporter()
        return self._export_fn

    def export(self, run: RunRecord, dest: Path) -> list[Path]:
        """The selected images as OME-Zarr into ``dest``; the files the run's file
        parameters name into ``dest/../files/<param>`` (staged up beside the images)."""
        user, group = user_of(run)
        attachments = {pid: list(ids) for pid, ids in run.inputs.attachments.items()}
        if attachments:
            with self.connect(user, group) as conn:
                download_attachments(conn, attachments, dest.parent / "files")
        return export_selection(
            lambda: self.connect(user, group),
            str(run.inputs.data_type),
            list(run.inputs.ids),
            dest,
            export_fn=self.export_fn,
            workers=self.export_workers,
            zarr_format=self.zarr_format,
        )

    def import_results(self, run: RunRecord, results: Path) -> dict[str, Any]:
        options = ImportOptions.from_outputs(run.inputs.outputs)
        user, group = user_of(run)
        with self.connect(user, group) as conn:
            importer = Importer(
                conn,
                run,
                results,
                source_index(run),
                options,
                max_plane_bytes=self.max_plane_bytes,
            )
            return importer.import_all()

    def run_ended(self, run: RunRecord) -> None:
        """The E-mail the user asked for, over the admin session (see ``notify``)."""
        from biomeroworker.omero.notify import send_run_ended, wants_mail

        admin = getattr(self.connect, "admin", None)
        if admin is not None and wants_mail(run):
            send_run_ended(admin(), run)

    def close(self) -> None:
        closer = getattr(self.connect, "close", None)
        if closer is not None:
            closer()
