"""What several subcommands share: settings, the transport and the tracker."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from biomeroworker.config import Settings
    from biomeroworker.runs import RunEngine


def settings_from(args: argparse.Namespace) -> Settings:
    from biomeroworker.config import load_settings

    return load_settings(config_file=args.config)


@contextmanager
def engine_for(args: argparse.Namespace, reporter: object | None = None) -> Iterator[RunEngine]:
    from biomeroworker.runs import RunEngine
    from biomeroworker.tracking.application import Tracker
    from biomeroworker.transport import close_all, open_transport

    settings = settings_from(args)
    # SQLALCHEMY_URL wins over the config's [ANALYTICS] sqlalchemy_url (store.resolve_url).
    tracker = Tracker.configured(settings.analytics)
    try:
        engine = RunEngine(settings, open_transport(settings), tracker)
        if reporter is not None:
            engine.reporter = reporter  # type: ignore[assignment]
        yield engine
    finally:
        close_all()
        tracker.close()
