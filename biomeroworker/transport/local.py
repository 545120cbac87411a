"""Local transport: a worker on the login node runs the Slurm commands itself.

Relative cluster paths are relative to ``home`` (the user's home directory by
default), exactly as they are relative to the remote home over SSH.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from biomeroworker.errors import CommandError, TransportError
from biomeroworker.transport.base import CommandResult
from biomeroworker.transport.streams import Activity, Pump, TimeLimit, sink, write_in_pieces

log = logging.getLogger(__name__)


class LocalTransport:
    """Commands and files on this host, behind the same seam as SSH."""

    def __init__(self, *, home: Path | None = None, command_timeout_s: float = 120.0) -> None:
        self.home = home or Path.home()
        self.command_timeout_s = command_timeout_s
        self.commands_run = 0

    def _path(self, path: str) -> Path:
        return self.home / os.path.expanduser(path)

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
        args = [str(a) for a in argv]
        if not args:
            raise ValueError("empty command")
        timeout = timeout_s if timeout_s is not None else self.command_timeout_s
        limit = TimeLimit(timeout, idle_timeout_s)
        started = time.monotonic()
        try:
            proc = subprocess.Popen(
                args,
                cwd=self.home,
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except FileNotFoundError as exc:
            raise CommandError(args, 127, "", f"{args[0]}: command not found") from exc
        self.commands_run += 1
        out_buf, err_buf = bytearray(), bytearray()
        activity = Activity()
        pumps = [
            Pump(proc.stdout.read1, sink(stdout, out_buf), activity=activity),  # type: ignore[union-attr]
            Pump(proc.stderr.read1, err_buf.extend, activity=activity),  # type: ignore[union-attr]
        ]
        if stdin is not None:
            feed = write_in_pieces(proc.stdin.write, activity)  # type: ignore[union-attr]
            pumps.append(Pump(stdin.read, feed, proc.stdin.close, activity=activity))  # type: ignore[union-attr]
        for p in pumps:
            p.start()
        try:
            code = self._wait(proc, args, limit, started, activity)
        except BaseException:
            for p in pumps:  # a stalled producer may never return: do not wait long
                p.join(timeout=1)
            raise
        for p in pumps:
            p.join(timeout=5)
        elapsed = time.monotonic() - started
        log.debug("local: %s -> %s in %.3f s", args, code, elapsed)
        result = CommandResult(
            tuple(args),
            code,
            out_buf.decode(errors="replace"),
            err_buf.decode(errors="replace"),
            elapsed,
        )
        if check and code != 0:
            raise CommandError(args, code, result.stdout, result.stderr)
        return result

    @staticmethod
    def _wait(
        proc: subprocess.Popen[bytes],
        args: list[str],
        limit: TimeLimit,
        started: float,
        activity: Activity,
    ) -> int:
        while True:
            try:
                return proc.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                problem = limit.exceeded(args, started, activity)
                if problem is not None:
                    proc.kill()
                    proc.wait()
                    raise problem from None

    def put_file(self, local: Path, remote: str) -> None:
        shutil.copyfile(local, self._path(remote))

    def get_file(self, remote: str, local: Path) -> None:
        shutil.copyfile(self._path(remote), local)

    def write_text(self, remote: str, text: str, *, mode: int = 0o600) -> None:
        target = self._path(remote)
        if not target.parent.is_dir():
            raise FileNotFoundError(str(target.parent))
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            os.chmod(tmp, mode)
            os.replace(tmp, target)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise TransportError(f"cannot write {target}: {exc}") from exc

    def read_text(self, remote: str) -> str:
        return self._path(remote).read_text()

    def close(self) -> None:
        """Nothing to close; here for the seam."""
