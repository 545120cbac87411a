"""`biomero tracking rebuild`: replay every event into fresh read-model tables.

As biomero's "Slurm Init" reset: the dashboard tables are refilled only from the
``[ANALYTICS] analytics_rebuild_*`` window on, when one is set.

Also home of ``open_tracker``, which status and stats share.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from biomeroworker.config import Settings
    from biomeroworker.tracking import Tracker


def optional_settings(args: argparse.Namespace) -> Settings | None:
    """The settings from slurm-config.ini; None when there is no config at all.

    Local use needs no slurm-config.ini (the store defaults to an SQLite file), but a
    config file that exists or is named must be valid.
    """

    from biomeroworker import config
    from biomeroworker.errors import ConfigError

    named = getattr(args, "config", None)
    try:
        paths = config.find_config_files(named)
    except ConfigError:
        if named or config.config_named_by_env():
            raise
        return None
    return config.load_settings(paths)


def settings_url(args: argparse.Namespace) -> str | None:
    """[ANALYTICS] sqlalchemy_url from slurm-config.ini; None when there is no config."""
    settings = optional_settings(args)
    return None if settings is None else settings.analytics.sqlalchemy_url


def caller(settings: Settings | None) -> tuple[str, frozenset[str]]:
    """(the OS account running this command, the trusted admins); warnings to stderr."""
    import sys

    from biomeroworker.tracking.access import current_user, trusted_admins

    admins, warnings = trusted_admins(settings)
    for warning in warnings:
        print(f"biomero: {warning}", file=sys.stderr)
    return current_user(), admins


def open_tracker(args: argparse.Namespace, settings: Settings | None = None) -> Tracker:
    """The tracker of ``settings`` (default: read them); SQLALCHEMY_URL wins anyway."""
    from biomeroworker.tracking import Tracker

    if settings is None:
        settings = optional_settings(args)
    return Tracker.configured(None if settings is None else settings.analytics)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("tracking", help="maintain the tracking database")
    actions = parser.add_subparsers(dest="tracking_command", required=True, metavar="ACTION")
    rebuild = actions.add_parser(
        "rebuild",
        help="drop the read-model tables and replay every event into them; the dashboard "
        "tables from [ANALYTICS] analytics_rebuild_days_ago / _start_time on, when set",
    )
    rebuild.set_defaults(func=run_rebuild)


def run_rebuild(args: argparse.Namespace) -> int:
    from biomeroworker.tracking.application import rebuild_since

    settings = optional_settings(args)
    since = None if settings is None else rebuild_since(settings.analytics)
    with open_tracker(args, settings) as tracker:
        replayed = tracker.rebuild(since)
    window = "" if since is None else f" (dashboard tables from {since:%Y-%m-%d %H:%M} UTC on)"
    print(f"replayed {replayed} events into the read models{window}")
    return 0
