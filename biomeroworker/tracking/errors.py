"""Errors raised by tracking: the store cannot be used, or a command breaks a rule."""

from __future__ import annotations

from biomeroworker.errors import BiomeroError


class TrackingError(BiomeroError):
    """Base of every tracking error."""


class TrackingStoreError(TrackingError):
    """The tracking database cannot be used (bad URL, unreachable, refused).

    The message never contains the database password.
    """


class UnknownRunError(TrackingError):
    """No workflow run has this id (or the user may not see it)."""


class UnknownTaskError(TrackingError):
    """No task has this id."""


class RunFinishedError(TrackingError):
    """A finished run (completed, failed, cancelled) was asked to change."""


class TaskFinishedError(TrackingError):
    """A finished task was asked to finish differently or to start a job."""


class NoJobSubmittedError(TrackingError):
    """A job status arrived for a task that never submitted a job."""
