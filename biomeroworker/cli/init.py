"""`biomero init`: prepare the cluster (folders, job scripts, converter, runtimes)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("init", help="prepare the cluster: folders, job scripts, runtimes")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from biomeroworker.cli.common import settings_from
    from biomeroworker.prepare import init_cluster
    from biomeroworker.transport import close_all, open_transport

    settings = settings_from(args)
    try:
        for action in init_cluster(open_transport(settings), settings):
            if action.error:
                print(f"FAILED   {action.what}: {action.error}")
            else:
                print(f"{'done   ' if action.done else 'skipped'}  {action.what}: {action.detail}")
    finally:
        close_all()
    return 0
