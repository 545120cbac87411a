"""How commands and bytes reach the cluster: over SSH (fabric), or on this host."""

from __future__ import annotations

from typing import TYPE_CHECKING

from biomeroworker.transport.base import CommandResult, Transport, shell_join

if TYPE_CHECKING:
    from biomeroworker.config import Settings

__all__ = ["CommandResult", "Transport", "open_transport", "shell_join"]

# One connection per process: transports are kept here, keyed by what identifies them.
_OPEN: dict[tuple[object, ...], Transport] = {}


def open_transport(settings: Settings) -> Transport:
    """The process-wide transport that moves run data for ``settings``.

    For ``ssh`` it also runs the Slurm commands; see slurm.rest.modes for the others.
    """
    worker = settings.worker
    if worker.transport != "ssh":
        # local: this host; rest: Slurm over HTTP, data over SSH or a shared path.
        from biomeroworker.slurm.rest.modes import staging_transport

        return staging_transport(settings)
    from biomeroworker.transport.ssh import SSHOptions, SSHTransport

    options = SSHOptions(
        host=str(settings.ssh.host),
        connect_timeout_s=worker.connect_timeout_s,
        command_timeout_s=worker.command_timeout_s,
        keepalive_s=int(worker.keepalive_s),
    )
    key: tuple[object, ...] = ("ssh", options)
    if key not in _OPEN:
        _OPEN[key] = SSHTransport(options)
    return _OPEN[key]


def close_all() -> None:
    for transport in _OPEN.values():
        transport.close()
    _OPEN.clear()
