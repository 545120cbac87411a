"""`biomero check`: validate the config, then prove the cluster is usable."""

from __future__ import annotations

import argparse
import os
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="validate slurm-config.ini and test the cluster connection")
    p.add_argument(
        "--offline", action="store_true", help="only validate the configuration; do not connect"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from biomeroworker.checks import SUDO_HINT, omero_check, run_checks, tracking_database_check
    from biomeroworker.config import load_settings
    from biomeroworker.errors import ConfigError
    from biomeroworker.transport import close_all, open_transport

    try:
        settings = load_settings(config_file=args.config)
    except ConfigError as exc:
        print("FAIL  config", file=sys.stderr)
        for line in exc.problems:
            print(f"      {line}", file=sys.stderr)
        return 1
    print(f"PASS  config: {', '.join(str(p) for p in settings.sources)}")
    if args.offline:
        if os.environ.get("OMERO_HOST"):
            print(f"NOTE  omero: not checked offline; {SUDO_HINT}")
        return 0
    failed = 0

    def every_check():  # type: ignore[no-untyped-def]
        yield from run_checks(open_transport(settings), settings)
        omero = omero_check()  # when OMERO_HOST is set: the worker account may act for users
        if omero is not None:
            yield omero

    try:
        tracking = tracking_database_check(settings)
        for check in [tracking, *every_check()]:
            print(f"{'PASS' if check.ok else 'FAIL'}  {check.name}: {check.detail}")
            if not check.ok:
                failed += 1
                if check.hint:
                    print(f"      hint: {check.hint}")
    finally:
        close_all()
    return 1 if failed else 0
