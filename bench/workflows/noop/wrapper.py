"""No-op workflow for the benchmarks: copy every input in --infolder to --outfolder.

Called as BIAFLOWS containers are (``--infolder IN --outfolder OUT --gtfolder GT
--local -nmc [--note TEXT] [--params-file FILE]``), so the job around it is the same
as for a real workflow and only the work itself is missing. Standard library only.
Exit codes: 0 done, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Copy inputs to outputs, nothing else.")
    parser.add_argument("--infolder", required=True, type=Path)
    parser.add_argument("--outfolder", required=True, type=Path)
    parser.add_argument("--gtfolder", type=Path)
    parser.add_argument("--local", action="store_true")
    parser.add_argument("-nmc", "--no_metric_computation", action="store_true")
    parser.add_argument("--params-file", type=Path)
    parser.add_argument("--note", default="")
    for name in ("host", "public_key", "private_key", "id_project", "id_software"):
        parser.add_argument(f"--cytomine_{name}", help=argparse.SUPPRESS)
    return parser


def copy_inputs(infolder: Path, outfolder: Path) -> int:
    outfolder.mkdir(parents=True, exist_ok=True)
    copied = 0
    for entry in sorted(infolder.iterdir()):
        target = outfolder / entry.name
        if entry.is_dir():
            shutil.copytree(entry, target, dirs_exist_ok=True)
        else:
            shutil.copyfile(entry, target)
        copied += 1
    return copied


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    if not args.infolder.is_dir():
        print(f"wrapper.py: error: {args.infolder} is not a folder", file=sys.stderr)
        return 2
    copied = copy_inputs(args.infolder, args.outfolder)
    print(f"noop: copied {copied} input(s) to {args.outfolder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
