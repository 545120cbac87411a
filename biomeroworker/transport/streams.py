"""Byte pumps shared by the transports: copy a stream into a sink on a thread."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import BinaryIO

CHUNK_BYTES = 1 << 20


class Pump(threading.Thread):
    """Copy ``read`` into ``write`` until EOF, then call ``done``; keep the first error."""

    def __init__(
        self,
        read: Callable[[int], bytes],
        write: Callable[[bytes], object],
        done: Callable[[], object] | None = None,
        *,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> None:
        super().__init__(daemon=True)
        self._read = read
        self._chunk_bytes = chunk_bytes
        self._write = write
        self._done = done
        self.error: BaseException | None = None
        self.bytes_moved = 0

    def run(self) -> None:
        try:
            while chunk := self._read(self._chunk_bytes):
                self._write(chunk)
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


def send_all(send: Callable[[memoryview], int]) -> Callable[[bytes], None]:
    """Write a whole chunk through a ``send`` that may take only part of it.

    A memoryview walks the chunk without copying it; slicing bytes instead copies the
    rest of the chunk after every 32 kB SSH packet, which made large chunks quadratic.
    """

    def write(chunk: bytes) -> None:
        view = memoryview(chunk)
        while view:
            sent = send(view)
            if sent <= 0:
                raise BrokenPipeError("the channel closed while data was still being sent")
            view = view[sent:]

    return write
