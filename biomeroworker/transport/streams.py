"""Byte pumps shared by the transports: copy a stream into a sink on a thread.

An ``Activity`` clock, shared by the pumps of one command, notes when bytes last moved
in either direction; streams time out on that (``idle_timeout_s``), never on their
total length.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from biomeroworker.errors import CommandTimeout, StreamStalled

CHUNK_BYTES = 1 << 20


class Activity:
    """When bytes last moved through any pump of one command."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def touch(self) -> None:
        self.last = time.monotonic()

    def idle_s(self) -> float:
        return time.monotonic() - self.last


@dataclass(frozen=True)
class TimeLimit:
    """A command's time limit: its whole length, or (for streams) each silence."""

    timeout_s: float
    idle_timeout_s: float | None = None

    def exceeded(
        self, args: list[str], started: float, activity: Activity
    ) -> CommandTimeout | StreamStalled | None:
        """The error to raise now, if the command has run out of time."""
        if self.idle_timeout_s is not None:
            stalled = activity.idle_s() > self.idle_timeout_s
            return StreamStalled(args, self.idle_timeout_s) if stalled else None
        if time.monotonic() - started > self.timeout_s:
            return CommandTimeout(args, self.timeout_s)
        return None


class Pump(threading.Thread):
    """Copy ``read`` into ``write`` until EOF, then call ``done``; keep the first error."""

    def __init__(
        self,
        read: Callable[[int], bytes],
        write: Callable[[bytes], object],
        done: Callable[[], object] | None = None,
        *,
        chunk_bytes: int = CHUNK_BYTES,
        activity: Activity | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self._read = read
        self._chunk_bytes = chunk_bytes
        self._write = write
        self._done = done
        self._activity = activity or Activity()
        self.error: BaseException | None = None
        self.bytes_moved = 0

    def run(self) -> None:
        touch = self._activity.touch
        try:
            while chunk := self._read(self._chunk_bytes):
                touch()
                self._write(chunk)
                touch()
                self.bytes_moved += len(chunk)
        except BaseException as exc:  # reported to the caller through .error
            self.error = exc
        finally:
            if self._done is not None:
                try:
                    self._done()
                except OSError as exc:
                    self.error = self.error or exc


def sink(stream: BinaryIO | None, buffer: bytearray) -> Callable[[bytes], object]:
    """Where output goes: the caller's stream when given, else an in-memory buffer."""
    return stream.write if stream is not None else buffer.extend


def send_all(
    send: Callable[[memoryview], int], activity: Activity | None = None
) -> Callable[[bytes], None]:
    """Write a whole chunk through a ``send`` that may take only part of it.

    A memoryview walks the chunk without copying it; slicing bytes instead copies the
    rest of the chunk after every 32 kB SSH packet, which made large chunks quadratic.
    Each accepted piece counts as activity, so a slow reader is not an idle one.
    """

    def write(chunk: bytes) -> None:
        view = memoryview(chunk)
        while view:
            sent = send(view)
            if sent <= 0:
                raise BrokenPipeError("the channel closed while data was still being sent")
            if activity is not None:
                activity.touch()
            view = view[sent:]

    return write


def write_in_pieces(
    write: Callable[[memoryview], object], activity: Activity, piece_bytes: int = 64 << 10
) -> Callable[[bytes], None]:
    """Write a chunk to a pipe a piece at a time, noting activity after each piece."""

    def write_all(chunk: bytes) -> None:
        view = memoryview(chunk)
        for start in range(0, len(view), piece_bytes):
            write(view[start : start + piece_bytes])
            activity.touch()

    return write_all
