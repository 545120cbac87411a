"""The OMERO side's errors; no omero import, so pure modules (forms, options) use them."""

from __future__ import annotations

from biomeroworker.errors import BiomeroError, ConnectError


class OmeroError(BiomeroError):
    """OMERO refused something (permissions, missing objects, bad data): not retried."""


class OmeroUnavailable(ConnectError):
    """OMERO could not be reached or the session broke: the step is retried later."""


class OmeroLoginRefused(OmeroError):
    """OMERO refused the worker's own login (wrong OMERO_USER or OMERO_PASSWORD).

    Retrying cannot help until an operator fixes the settings, so it is not retried."""


class OmeroRefused(OmeroError):
    """OMERO refused one write (omero.SecurityViolation): the group's permissions do not
    allow it. The import records it for that result and goes on with the others."""
