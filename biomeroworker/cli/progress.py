"""Live progress for `biomero run --wait`: bytes moved, job state, array elements done."""

from __future__ import annotations

from rich import filesize
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text


class _AmountColumn(ProgressColumn):
    """Bytes for transfers ("12.3/40.0 MB"), counts for jobs ("3/5")."""

    def render(self, task: Task) -> Text:
        done, total = int(task.completed), task.total
        if task.fields.get("unit") == "bytes":
            shown = filesize.decimal(done)
            return Text(f"{shown}/{filesize.decimal(int(total))}" if total else shown)
        return Text(f"{done}/{int(total)}" if total else str(done))


class RichReporter:
    def __init__(self) -> None:
        # log_path=False: a user wants the time and the message, not our source line.
        self.console = Console(stderr=True, log_path=False)
        self.progress = Progress(
            TextColumn("{task.description:<12}"),
            BarColumn(),
            _AmountColumn(),
            TextColumn("{task.fields[note]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> RichReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def _task(self, name: str, total: float | None, unit: str) -> TaskID:
        if name not in self.tasks:
            self.tasks[name] = self.progress.add_task(name, total=total, note="", unit=unit)
        return self.tasks[name]

    def step(self, name: str, detail: str = "") -> None:
        # A new step means the earlier ones ended: freeze their clocks (a transfer's
        # total is an estimate, so its bar need not have reached the end). Only once:
        # rich's stop_task moves a stopped clock's end to now.
        for task_name, task_id in self.tasks.items():
            if task_name != name and self.progress.tasks[task_id].stop_time is None:
                self.progress.stop_task(task_id)
        self.console.log(f"{name}: {detail}" if detail else name)

    def bytes_moved(self, name: str, done: int, total: int) -> None:
        task = self._task(name, total or None, "bytes")
        # The tar stream's size is an estimate: never show more than all of it.
        self.progress.update(task, completed=done, total=max(total, done) or None)

    def job(self, name: str, state: str, done: int, total: int) -> None:
        task = self._task(name, total, "elements")
        self.progress.update(task, completed=done, total=total, note=state)
