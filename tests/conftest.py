"""Shared test setup: every test under tests/integration is marked `integration`, and
every test that takes slurmdbd away (the `stopped_slurmdbd` fixture) is marked `serial`:
tools/run-tests runs the `serial` tests alone, after the others ran side by side."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.hookimpl(tryfirst=True)  # before -m deselects by these markers
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)
        if "stopped_slurmdbd" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.serial)
