"""A workflow run as the worker passes it around: a typed, read-only record.

The tracking read models answer with plain JSON-ready rows (``Tracker.get_run``,
``biomero status --json``). Code that acts on a run gets a ``RunRecord`` instead, built
in one place (``RunRecord.from_row``): a misspelt field is an AttributeError where it
is read and a TypeError where a record is made, never a silent ``None``. A record is
never changed; ``dataclasses.replace`` makes a changed copy.

Unknown keys: a row's columns are this worker's own (``tracking.queries``), so a key
the record does not know is refused (TypeError); it means the query and the record
disagree. The request's ``inputs`` and the workflow's ``parameters`` are free-form
JSON whose shape depends on where the run came from (a local request, an OMERO form,
an older worker): every key is kept, read-only, and ``RunInputs`` reads the ones the
worker acts on through typed properties.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

FINISHED_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED"})


def frozen(value: Any) -> Any:
    """``value`` with every dict read-only and every list a tuple, all the way down."""
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): frozen(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(frozen(v) for v in value)
    return value


def thawed(value: Any) -> Any:
    """The JSON-ready form of a ``frozen`` value (dicts and lists again)."""
    if isinstance(value, Mapping):
        return {k: thawed(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thawed(v) for v in value]
    return value


def _moment(value: datetime | str | None) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskRecord:
    """One step of a run (export, stage_up, convert, job, stage_down, import)."""

    task_id: str
    kind: str
    name: str = ""
    version: str | None = None
    state: str
    slurm_job_id: str | None = None
    cluster: str | None = None
    job_state: str | None = None
    exit_code: int | None = None
    elapsed_s: float | None = None
    max_rss_bytes: int | None = None
    progress: str | None = None
    result_locations: tuple[str, ...] = ()
    started_at: datetime | None = None
    ended_at: datetime | None = None
    error_type: str | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "result_locations", tuple(self.result_locations))
        object.__setattr__(self, "started_at", _moment(self.started_at))
        object.__setattr__(self, "ended_at", _moment(self.ended_at))

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> TaskRecord:
        """A key the record has no field for is a TypeError (see the module)."""
        return cls(**row)

    def to_row(self) -> dict[str, Any]:
        row = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        row["result_locations"] = list(self.result_locations)
        row["started_at"] = _iso(self.started_at)
        row["ended_at"] = _iso(self.ended_at)
        return row


@dataclass(frozen=True, slots=True)
class RunInputs:
    """What the run was asked to work on, as recorded with the request.

    ``recorded`` keeps every key, read-only; the properties read the ones the worker
    acts on. A local request records ``files`` (and ``output_dir``, ``partition``,
    ``convert_on``); an OMERO request ``source``, ``data_type``, ``ids``, ``outputs``,
    ``notify_email`` and ``reads_zarr``; either may record ``attachments``.
    """

    recorded: Mapping[str, Any] = field(default_factory=dict)
    # ``files`` made once: the engine asks every run for them several times a cycle.
    _files: tuple[Path, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "recorded", frozen(self.recorded))
        files = tuple(Path(p) for p in self.recorded.get("files") or ())
        object.__setattr__(self, "_files", files)

    def _text(self, key: str) -> str | None:
        value = self.recorded.get(key)
        return None if value is None else str(value)

    @property
    def source(self) -> str:
        """ "local" (files named on the command line) or a DataSide name such as "omero"."""
        return self._text("source") or "local"

    @property
    def files(self) -> tuple[Path, ...]:
        return self._files

    @property
    def output_dir(self) -> Path | None:
        """The folder the user chose for the results (None: the run's own folder)."""
        chosen = self._text("output_dir")
        return Path(chosen) if chosen else None

    @property
    def partition(self) -> str | None:
        return self._text("partition") or None

    @property
    def convert_on(self) -> str | None:
        return self._text("convert_on")

    @property
    def reads_zarr(self) -> bool:
        """The workflow reads OME-Zarr itself (upstream's Use_ZARR_Format)."""
        return bool(self.recorded.get("reads_zarr"))

    @property
    def data_type(self) -> str | None:
        return self._text("data_type")

    @property
    def ids(self) -> tuple[int, ...]:
        return tuple(int(i) for i in self.recorded.get("ids") or ())

    @property
    def outputs(self) -> Mapping[str, Any]:
        """Where an OMERO run's results go (``ImportOptions.from_outputs``)."""
        return self.recorded.get("outputs") or MappingProxyType({})

    @property
    def notify_email(self) -> str | None:
        return self._text("notify_email") or None

    @property
    def attachments(self) -> Mapping[str, tuple[Any, ...]]:
        """File parameter -> its files: local paths (a command-line run) or OMERO file
        annotation ids (``workflows.attachments``)."""
        return self.recorded.get("attachments") or MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class RunRecord:
    """A run with its tasks, as the read models last saw it."""

    run_id: str
    workflow: str
    version: str
    user: str
    omero_user_id: int | None = None
    omero_group_id: int | None = None
    state: str
    step: str | None = None
    inputs: RunInputs = field(default_factory=RunInputs)
    parameters: Mapping[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    ended_at: datetime | None = None
    error_type: str | None = None
    error: str | None = None
    result_location: str | None = None
    slurm_job_ids: tuple[str, ...] = ()
    cluster: str | None = None
    origin: str = "worker"
    tasks: tuple[TaskRecord, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.inputs, RunInputs):
            object.__setattr__(self, "inputs", RunInputs(self.inputs))
        object.__setattr__(self, "parameters", frozen(self.parameters))
        object.__setattr__(self, "slurm_job_ids", tuple(self.slurm_job_ids))
        object.__setattr__(self, "tasks", tuple(self.tasks))
        if not all(isinstance(t, TaskRecord) for t in self.tasks):
            raise TypeError("RunRecord tasks must be TaskRecords (TaskRecord.from_row)")
        for name in ("created_at", "updated_at", "ended_at"):
            object.__setattr__(self, name, _moment(getattr(self, name)))

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> RunRecord:
        """The record of a read-model row (``tracking.queries``); see the module on keys."""
        tasks = tuple(TaskRecord.from_row(t) for t in row.get("tasks") or ())
        return cls(**{**row, "tasks": tasks})

    def to_row(self) -> dict[str, Any]:
        """The JSON-ready row this record was built from."""
        row = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        row["inputs"] = thawed(self.inputs.recorded)
        row["parameters"] = thawed(self.parameters)
        row["slurm_job_ids"] = list(self.slurm_job_ids)
        row["tasks"] = [t.to_row() for t in self.tasks]
        for name in ("created_at", "updated_at", "ended_at"):
            row[name] = _iso(getattr(self, name))
        return row

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES

    def latest_task(self, kind: str) -> TaskRecord | None:
        """The run's newest task of ``kind``, if any."""
        found = [t for t in self.tasks if t.kind == kind]
        return found[-1] if found else None

    def job_ids(self) -> list[str]:
        """The Slurm job ids its tasks recorded, each once, first seen first."""
        ids = [t.slurm_job_id for t in self.tasks if t.slurm_job_id]
        return sorted(set(ids), key=ids.index)
