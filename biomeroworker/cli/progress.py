"""Live progress for `biomero run --wait`: bytes moved, job state, array elements done."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)


class RichReporter:
    def __init__(self) -> None:
        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description:<12}"),
            BarColumn(),
            DownloadColumn(),
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

    def _task(self, name: str, total: float | None) -> TaskID:
        if name not in self.tasks:
            self.tasks[name] = self.progress.add_task(name, total=total, note="")
        return self.tasks[name]

    def step(self, name: str, detail: str = "") -> None:
        self.console.log(f"{name}: {detail}" if detail else name)

    def bytes_moved(self, name: str, done: int, total: int) -> None:
        task = self._task(name, total or None)
        self.progress.update(task, completed=done, total=total or None)

    def job(self, name: str, state: str, done: int, total: int) -> None:
        task = self._task(name, total)
        self.progress.update(task, completed=done, total=total, note=state)
