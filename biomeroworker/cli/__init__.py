"""The ``biomero`` command: one module per subcommand, imported only when needed.

Each module named in COMMANDS exposes ``register(subparsers)`` which adds its
subcommand and sets ``func`` on the parser; ``func(args)`` returns the exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from biomeroworker.errors import BiomeroError

COMMANDS: tuple[str, ...] = (
    "check",
    "init",
    "workflows",
    "run",
    "supervise",
    "status",
    "stats",
    "tracking",
)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="biomero", description="Run image-analysis workflows on a Slurm cluster."
    )
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="slurm-config.ini to read after /etc/slurm-config.ini (default: $BIOMERO_CONFIG)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"biomeroworker.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BiomeroError as exc:
        print(f"biomero {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
