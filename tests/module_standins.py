"""Stand-in modules for tests that import a third-party package's code without its
dependencies (the OMERO.biomero plugin without Django or OMERO.web): put into
``sys.modules`` for a block, and whatever was there before put back afterwards."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def module(name: str, **attributes: Any) -> types.ModuleType:
    """A module named ``name`` holding ``attributes``."""
    made = types.ModuleType(name)
    made.__dict__.update(attributes)
    return made


@contextmanager
def standin_modules(
    standins: dict[str, types.ModuleType], *, forget: tuple[str, ...] = ()
) -> Iterator[None]:
    """``standins`` importable in the block; afterwards every module of the packages
    named in ``forget`` (imported through them) is dropped and the old entries return."""
    saved = {name: sys.modules.get(name) for name in standins}
    sys.modules.update(standins)
    try:
        yield
    finally:
        for name in [n for n in sys.modules if n.split(".")[0] in forget]:
            del sys.modules[name]
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old
