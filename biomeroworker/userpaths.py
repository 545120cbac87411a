"""Local paths a run's user chose, checked against that user's own rights.

A supervisor may run as root or as a service account, with more rights than the user
who asked for a run. A folder the user named (``biomero run --output``) is written only
if that user could write there themselves: every folder on the way must let them in,
and the nearest existing one must let them write. Results written with more rights
than the user's are handed to the user afterwards, so they can move or delete them.
"""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

from biomeroworker.errors import BiomeroError


class PathNotAllowed(BiomeroError):
    """The run's user could not write the folder they named."""


def account(user: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(user)
    except KeyError:
        raise PathNotAllowed(
            f"run user {user!r} has no account on this host, so a folder they chose "
            "cannot be checked: leave the output folder unset"
        ) from None


def _allows(st: os.stat_result, uid: int, groups: set[int], bits: int) -> bool:
    """Whether the owner/group/other permission class that applies to ``uid`` has ``bits``
    (as rwx 0o7); the first matching class decides, as in the kernel."""
    if st.st_uid == uid:
        return (st.st_mode >> 6) & bits == bits
    if st.st_gid in groups:
        return (st.st_mode >> 3) & bits == bits
    return st.st_mode & bits == bits


def writable_by(user: str, path: Path) -> Path:
    """Check that ``user`` could create or write ``path``; return the nearest existing
    folder (the path itself when it exists), or raise PathNotAllowed saying why.

    Symbolic links are resolved first, so a link into someone else's folder is judged
    by where it leads.
    """
    pw = account(user)
    groups = set(os.getgrouplist(pw.pw_name, pw.pw_gid))
    real = Path(os.path.realpath(path))
    nearest = real
    while not nearest.exists() and nearest != nearest.parent:
        nearest = nearest.parent
    if pw.pw_uid in (0, os.geteuid()):
        return nearest  # root may write anywhere; as the user, the OS itself decides
    st = nearest.stat()
    if not stat.S_ISDIR(st.st_mode):
        raise PathNotAllowed(f"{nearest} is not a folder")
    if not _allows(st, pw.pw_uid, groups, 0o3):
        raise PathNotAllowed(f"{user} may not write to {nearest}: choose a folder of your own")
    for parent in nearest.parents:
        if not _allows(parent.stat(), pw.pw_uid, groups, 0o1):
            raise PathNotAllowed(f"{user} may not enter {parent}: choose a folder of your own")
    return nearest


def readable_by(user: str, paths: list[Path]) -> None:
    """Check that ``user`` could read every file of ``paths`` (files or folders, walked
    whole), or raise PathNotAllowed naming the first one they could not."""
    pw = account(user)
    if pw.pw_uid in (0, os.geteuid()):
        return
    groups = set(os.getgrouplist(pw.pw_name, pw.pw_gid))

    def check(path: Path, bits: int) -> None:
        if not _allows(path.lstat(), pw.pw_uid, groups, bits):
            raise PathNotAllowed(f"{user} may not read {path}: give inputs you can read")

    for given in paths:
        real = Path(os.path.realpath(given))
        if not real.exists():
            continue  # staging reports a missing input
        for parent in reversed(real.parents):
            check(parent, 0o1)
        if not real.is_dir():
            check(real, 0o4)
            continue
        for folder, _dirs, files in os.walk(real):
            check(Path(folder), 0o5)
            for name in files:
                check(Path(folder) / name, 0o4)


def entries(folder: Path) -> frozenset[str] | None:
    """The names in ``folder`` now (None when it does not exist), for ``hand_over``."""
    try:
        return frozenset(os.listdir(folder))
    except FileNotFoundError:
        return None


def hand_over(dest: Path, before: frozenset[str] | None, nearest: Path, user: str) -> None:
    """Give ``user`` what this process made in ``dest``: the folders created between
    ``nearest`` (which existed) and ``dest``, and every entry of ``dest`` that was not
    in ``before`` (all of it when ``dest`` did not exist), with what is inside.

    Only root can change owners, and only a process with more rights than the user
    needs to. Links are never followed; a file with several links is left alone.
    """
    if os.geteuid() != 0:
        return
    pw = account(user)
    if pw.pw_uid == 0:
        return
    dest = Path(os.path.realpath(dest))
    made = [p for p in (dest, *dest.parents) if nearest in p.parents]
    tops = [dest / name for name in os.listdir(dest) if before is None or name not in before]
    for top in tops:
        made.append(top)
        if top.is_dir() and not top.is_symlink():
            for folder, dirs, files in os.walk(top):
                made.extend(Path(folder) / name for name in (*dirs, *files))
    for path in made:
        st = os.lstat(path)
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            continue
        os.chown(path, pw.pw_uid, pw.pw_gid, follow_symlinks=False)
