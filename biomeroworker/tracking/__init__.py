"""Event-sourced tracking of workflow runs: event store, read-model tables, analytics.

``Tracker`` is the front door; see docs/tracking.md for the design.
"""

from __future__ import annotations

from biomeroworker.tracking.application import Tracker
from biomeroworker.tracking.errors import (
    TrackingError,
    TrackingStoreError,
    UnknownRunError,
    UnknownTaskError,
)
from biomeroworker.tracking.store import resolve_url

__all__ = [
    "Tracker",
    "TrackingError",
    "TrackingStoreError",
    "UnknownRunError",
    "UnknownTaskError",
    "resolve_url",
]
