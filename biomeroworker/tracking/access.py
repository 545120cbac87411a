"""Who may see which runs: one rule, used by every reader."""

from __future__ import annotations

import getpass
import os
import re
from collections.abc import Mapping

from biomeroworker.tracking.errors import TrackingError

ADMINS_ENV = "BIOMERO_ADMINS"


class AccessDeniedError(TrackingError):
    """A user asked for runs that are not theirs without being an admin."""


def current_user() -> str:
    return getpass.getuser()


def is_admin(user: str, env: Mapping[str, str] | None = None) -> bool:
    """root, or a name listed (comma or space separated) in $BIOMERO_ADMINS."""
    environ = os.environ if env is None else env
    admins = {name for name in re.split(r"[,\s]+", environ.get(ADMINS_ENV, "")) if name}
    return user == "root" or user in admins


def visible_owner(
    viewer: str,
    *,
    want_all: bool = False,
    owner: str | None = None,
    env: Mapping[str, str] | None = None,
) -> str | None:
    """The owner whose runs ``viewer`` may read: their own, or everyone's (None) for admins.

    With ``owner`` (one run's owner) it answers for that run: the owner, or raises.
    """
    if owner is not None:
        if owner == viewer or is_admin(viewer, env):
            return owner
        raise AccessDeniedError(f"{viewer} may not see runs of {owner}")
    if not want_all:
        return viewer
    if not is_admin(viewer, env):
        raise AccessDeniedError(
            f"--all needs an admin (root or a name in ${ADMINS_ENV}); {viewer} is not one"
        )
    return None
