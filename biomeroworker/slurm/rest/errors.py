"""The two failures a REST caller must tell apart: a refused token and an absent server."""

from __future__ import annotations

from biomeroworker.errors import ConnectError, CredentialsRefused


class RestAuthError(CredentialsRefused):
    """slurmrestd (or slurmctld/slurmdbd behind it) refused the user name or token."""


class RestUnavailable(ConnectError):
    """slurmrestd could not be reached or did not answer in time."""
