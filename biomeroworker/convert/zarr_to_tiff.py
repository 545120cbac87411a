"""Convert one OME-Zarr image to an OME-TIFF, alone or as one element of a Slurm job array.

    python -m biomeroworker.convert.zarr_to_tiff IN.zarr OUT.tif
    python -m biomeroworker.convert.zarr_to_tiff --list FILE --index N [--outdir DIR]

In batch mode FILE holds one OME-Zarr path per line and N is the 1-based line number
(``sbatch --array=1-<lines>`` passes ``$SLURM_ARRAY_TASK_ID``); the output is
``<outdir or the input's folder>/<name without .ome.zarr/.zarr>.tif``. Each array
element converts exactly one image, so a failed image shows as a failed element.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import tifffile

from biomeroworker.convert.omezarr import read_full_resolution
from biomeroworker.errors import BiomeroError


def convert(source: Path, target: Path) -> str:
    """Write the full-resolution level of ``source`` to ``target``; return the axes written.

    The TIFF is OME-TIFF (readable by Bio-Formats, Fiji and tifffile) with the axes of
    the Zarr metadata in the same order, so channel order and every pixel are kept.
    """
    image = read_full_resolution(source)
    axes = image.axes.upper()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    tifffile.imwrite(
        partial, image.data, ome=True, metadata={"axes": axes}, photometric="minisblack"
    )
    partial.replace(target)
    return axes


def tiff_name(source: Path) -> str:
    name = source.name.rstrip("/")
    for suffix in (".ome.zarr", ".zarr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] + ".tif"
    return name + ".tif"


def list_entry(list_file: Path, index: int) -> Path:
    """Return line ``index`` (1-based) of ``list_file`` as a path."""
    try:
        lines = list_file.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise BiomeroError(f"cannot read list file {list_file}: {exc.strerror}") from exc
    if not 1 <= index <= len(lines):
        raise BiomeroError(f"--index {index} is outside 1..{len(lines)} (lines of {list_file})")
    entry = lines[index - 1].strip()
    if not entry:
        raise BiomeroError(f"line {index} of {list_file} is empty")
    return Path(entry)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m biomeroworker.convert.zarr_to_tiff",
        description="Convert the full-resolution level of an OME-Zarr (0.4 or 0.5) to OME-TIFF.",
    )
    parser.add_argument("source", nargs="?", type=Path, help="input .zarr folder")
    parser.add_argument("target", nargs="?", type=Path, help="output .tif file")
    parser.add_argument("--list", type=Path, help="file with one .zarr path per line")
    parser.add_argument("--index", type=int, help="1-based line of --list to convert")
    parser.add_argument("--outdir", type=Path, help="batch mode: folder for the .tif files")
    parser.add_argument(
        "--remove-source",
        action="store_true",
        help="delete the .zarr once its .tif is complete (so the workflow sees each image once)",
    )
    return parser


def _resolve(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple[Path, Path]:
    if args.list is not None or args.index is not None:
        if args.list is None or args.index is None or args.source is not None:
            parser.error("batch mode takes --list and --index together and no positional paths")
        source = list_entry(args.list, args.index)
        return source, (args.outdir or source.parent) / tiff_name(source)
    if args.source is None or args.target is None:
        parser.error("give IN.zarr OUT.tif, or --list FILE --index N")
    return args.source, args.target


def main(argv: list[str] | None = None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    try:
        source, target = _resolve(args, parser)
        if args.remove_source and target.is_file() and not source.exists():
            print(f"{target} already converted")
            return 0
        axes = convert(source, target)
        if args.remove_source:
            shutil.rmtree(source)
    except (BiomeroError, OSError) as exc:
        print(f"zarr_to_tiff: {exc}", file=sys.stderr)
        return 1
    print(f"{source} -> {target} ({axes})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
