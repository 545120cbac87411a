"""Data flows one way: the transport layer never reaches up into Slurm or tracking."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "biomeroworker"


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_the_transport_package_imports_nothing_above_it() -> None:
    above = ("biomeroworker.slurm", "biomeroworker.runs", "biomeroworker.tracking",
             "biomeroworker.supervisor", "biomeroworker.omero", "biomeroworker.cli")  # fmt: skip
    for path in (PACKAGE / "transport").glob("*.py"):
        wrong = sorted(m for m in _imports(path) if m.startswith(above))
        assert not wrong, f"{path.name} imports {wrong}"
