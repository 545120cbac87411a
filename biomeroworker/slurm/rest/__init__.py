"""Slurm's REST API (slurmrestd, JWT auth): submit, poll many, cancel, as SlurmClient does."""

from biomeroworker.slurm.rest.client import RestApi, RestSlurmClient
from biomeroworker.slurm.rest.errors import RestAuthError, RestUnavailable
from biomeroworker.slurm.rest.shapes import SHAPES, ApiShape
from biomeroworker.slurm.rest.token import (
    StaticToken,
    TokenCommand,
    TokenFile,
    TokenSource,
    jwt_expiry,
)

__all__ = [
    "SHAPES",
    "ApiShape",
    "RestApi",
    "RestAuthError",
    "RestSlurmClient",
    "RestUnavailable",
    "StaticToken",
    "TokenCommand",
    "TokenFile",
    "TokenSource",
    "jwt_expiry",
]
