"""The ``biomero`` command: one module per subcommand, imported only when needed.

Each module named in COMMANDS exposes ``register(subparsers)`` which adds its
subcommand and sets ``func`` on the parser; ``func(args)`` returns the exit code.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from biomeroworker.errors import BiomeroError
from biomeroworker.redaction import redact

CONFIG_HELP = "slurm-config.ini to read after /etc/slurm-config.ini (default: $BIOMERO_CONFIG)"
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
    parser.add_argument("--config", metavar="PATH", help=CONFIG_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"biomeroworker.cli.{name}").register(sub)
    _accept_config_everywhere(sub)
    return parser


def _accept_config_everywhere(sub: argparse._SubParsersAction) -> None:
    """`biomero check --config F` as well as `biomero --config F check`. SUPPRESS keeps
    a subcommand that was not given --config from overwriting the top-level value."""
    for parser in sub.choices.values():
        parser.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS, help=CONFIG_HELP)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                _accept_config_everywhere(action)


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, where it is handled below
        return code
    except BiomeroError as exc:
        print(f"biomero {args.command}: {redact(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `biomero workflows --json | head`: the reader left, which is no error of ours.
        # Point stdout at /dev/null so the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
