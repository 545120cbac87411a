"""Who may see which runs: one rule, used by every reader.

The caller is the OS account the process runs as (``getuid``), never ``$LOGNAME`` or
``$USER``, which anyone can set. Admins are root and the names in ``[WORKER] admins``,
taken only from a config file that root owns and nobody else may write: a file the
caller wrote (``--config``) or an environment variable cannot make anyone an admin.
"""

from __future__ import annotations

import os
import pwd
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from biomeroworker.tracking.errors import TrackingError

if TYPE_CHECKING:
    from biomeroworker.config import Settings
    from biomeroworker.run_record import RunRecord

# Read by earlier versions from the caller's own environment; ignored now.
ADMINS_ENV = "BIOMERO_ADMINS"
ADMINS_KEY = "[WORKER] admins"


class AccessDeniedError(TrackingError):
    """A user asked for runs that are not theirs without being an admin."""


def current_user() -> str:
    """The name of the OS account this process runs as (its uid if it has no name)."""
    uid = os.getuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def root_only(path: Path) -> bool:
    """True when ``path`` is a file owned by root that neither group nor others may write."""
    try:
        st = path.stat()
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_uid == 0 and not st.st_mode & 0o022


def trusted_admins(settings: Settings | None) -> tuple[frozenset[str], list[str]]:
    """The names of ``[WORKER] admins`` when a root-only file set them, and warnings.

    A value from an environment override or from a file others could write is ignored
    (with a warning saying so), as is ``$BIOMERO_ADMINS``.
    """
    warnings = []
    if os.environ.get(ADMINS_ENV):
        warnings.append(
            f"${ADMINS_ENV} is ignored: admins come from {ADMINS_KEY} in a slurm-config.ini "
            "owned by root (e.g. /etc/slurm-config.ini)"
        )
    if settings is None or not settings.worker.admins:
        return frozenset(), warnings
    origin = settings.source_of("WORKER", "admins")
    if origin.startswith("env ") or not root_only(Path(origin)):
        where = origin if origin.startswith("env ") else f"{origin}, which is not root-only"
        warnings.append(
            f"{ADMINS_KEY} from {where}, is ignored: put it in a file owned by root "
            "that only root may write"
        )
        return frozenset(), warnings
    return frozenset(settings.worker.admins), warnings


def is_admin(user: str, admins: Iterable[str] = ()) -> bool:
    """root, or a name in ``admins`` (see ``trusted_admins``)."""
    return user == "root" or user in set(admins)


def visible_owner(
    viewer: str,
    *,
    want_all: bool = False,
    owner: str | None = None,
    admins: Iterable[str] = (),
) -> str | None:
    """The owner whose runs ``viewer`` may read: their own, or everyone's (None) for admins.

    With ``owner`` (one run's owner) it answers for that run: the owner, or raises.
    """
    if owner is not None:
        if owner == viewer or is_admin(viewer, admins):
            return owner
        raise AccessDeniedError(f"{viewer} may not see runs of {owner}")
    if not want_all:
        return viewer
    if not is_admin(viewer, admins):
        raise AccessDeniedError(
            f"--all needs an admin (root or a name in {ADMINS_KEY}); {viewer} is not one"
        )
    return None


def check_run_access(run: RunRecord, viewer: str, admins: Iterable[str]) -> None:
    """Raise UnknownRunError unless ``viewer`` may read or change ``run``: the same answer
    as for a run that does not exist, so run ids of others are not confirmed."""
    from biomeroworker.tracking.errors import UnknownRunError

    try:
        visible_owner(viewer, owner=run.user, admins=admins)
    except AccessDeniedError:
        raise UnknownRunError(f"run {run.run_id[:8]!r} is not one of your runs") from None
