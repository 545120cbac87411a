"""The pinned versions in deploy/versions.env, for tests: the OMERO.biomero compatibility
tests and the container checks read the plugin and library versions from here, so the
images and the tests cannot pin different ones."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

VERSIONS_FILE = Path(__file__).resolve().parents[1] / "deploy" / "versions.env"


@cache
def pins() -> dict[str, str]:
    found = {}
    for line in VERSIONS_FILE.read_text().splitlines():
        match = re.fullmatch(r"([A-Z0-9_]+)=(\S+)", line.strip())
        if match:
            found[match[1]] = match[2]
    return found


def pinned(name: str) -> str:
    """One pin, e.g. pinned("OMERO_BIOMERO_VERSION") -> "1.6.1"."""
    try:
        return pins()[name]
    except KeyError:
        raise KeyError(f"{VERSIONS_FILE} pins no {name}") from None
