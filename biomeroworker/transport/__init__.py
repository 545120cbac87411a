"""How commands and bytes reach the cluster: over SSH (fabric), or on this host."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from biomeroworker.transport.base import CommandResult, Transport, shell_join

if TYPE_CHECKING:
    from biomeroworker.config import Settings

__all__ = ["CommandResult", "Transport", "open_transport", "shell_join"]

# One connection per process: transports are kept here, keyed by what identifies them.
_OPEN: dict[tuple[object, ...], Transport] = {}


def open_transport(settings: Settings) -> Transport:
    """The process-wide transport that moves run data for ``settings``.

    ssh: the one SSH connection (it also runs the Slurm commands). local, and rest with
    ``staging = shared``: this host's file system (commands, if any, run here). rest with
    ``staging = ssh``: the SSH connection for data; Slurm goes over HTTP (slurm.rest).
    """
    worker, rest = settings.worker, settings.rest
    shared = worker.transport == "local" or (
        worker.transport == "rest" and rest.staging == "shared"
    )
    if shared:
        from biomeroworker.transport.local import LocalTransport

        home = worker.shared_path or (rest.home if worker.transport == "rest" else None)
        return LocalTransport(
            home=Path(home) if home else None, command_timeout_s=worker.command_timeout_s
        )
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
