"""The Transport seam shared by the SSH and local implementations.

Commands are argument lists everywhere in this package. ``shell_join`` is the one
place that turns a list into a string for a remote shell; nothing else quotes.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol


def shell_join(argv: Sequence[str]) -> str:
    """Quote ``argv`` for a POSIX shell. The only quoting in the package."""
    if not argv:
        raise ValueError("empty command")
    for arg in argv:
        if not isinstance(arg, str):
            raise TypeError(f"command arguments must be str, got {type(arg).__name__}: {arg!r}")
        if "\x00" in arg:
            raise ValueError("command arguments cannot contain NUL bytes")
    return shlex.join(argv)


@dataclass(frozen=True)
class CommandResult:
    """What a finished command left behind."""

    argv: tuple[str, ...]
    exit_code: int
    stdout: str
    stderr: str
    elapsed_s: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class Transport(Protocol):
    """Run commands and move files on the cluster side.

    ``commands_run`` counts remote command executions (not file transfers); the
    polling tests and benchmarks read it to prove one command per cycle.
    """

    commands_run: int

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout_s: float | None = None,
        check: bool = True,
        idempotent: bool = False,
        stdin: BinaryIO | None = None,
        stdout: BinaryIO | None = None,
        idle_timeout_s: float | None = None,
    ) -> CommandResult:
        """Run ``argv``; raise CommandError on non-zero exit when ``check``.

        ``idempotent`` allows one retry after a dropped connection. With ``stdin``
        the stream is copied to the command; with ``stdout`` the command's output is
        copied into that stream instead of being kept in the result.

        ``timeout_s`` (default: the transport's command timeout) bounds the whole
        command. With ``idle_timeout_s`` there is no bound on the total time: the
        command runs as long as bytes keep moving (stdin, stdout or stderr) and raises
        StreamStalled once none has moved for that long. Streams of any size use it.
        """
        ...

    def put_file(self, local: Path, remote: str) -> None: ...

    def get_file(self, remote: str, local: Path) -> None: ...

    def write_text(self, remote: str, text: str, *, mode: int = 0o600) -> None:
        """Write ``text`` to a cluster file atomically (temp name, then rename)."""
        ...

    def read_text(self, remote: str) -> str: ...

    def close(self) -> None: ...
