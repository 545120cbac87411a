"""How commands and bytes reach the cluster: over SSH (fabric), or on this host."""

from biomeroworker.transport.base import CommandResult, Transport, shell_join

__all__ = ["CommandResult", "Transport", "shell_join"]
