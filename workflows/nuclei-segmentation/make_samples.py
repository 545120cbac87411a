"""Write the synthetic nuclei samples (known counts) as OME-TIFF and OME-Zarr 0.4 / 0.5.

    python workflows/nuclei-segmentation/make_samples.py OUT_DIR [--seeds 0 1 2] [--axes yx czyx]

Prints one line per file with its expected nucleus count, and writes ``counts.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from biomeroworker.workflows.samples import make_sample, write_sample

FORMATS = (("tiff", "0.5"), ("zarr", "0.4"), ("zarr", "0.5"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--axes", nargs="+", default=["yx", "czyx", "tczyx"])
    args = parser.parse_args(argv)
    counts = {}
    for seed in args.seeds:
        for axes in args.axes:
            sample = make_sample(seed, axes)
            for fmt, version in FORMATS:
                folder = args.out / (fmt if fmt == "tiff" else f"zarr-{version}")
                path = write_sample(sample, folder, fmt, version=version)
                counts[str(path.relative_to(args.out))] = sample.nuclei
                print(f"{path}\t{sample.nuclei}")
    (args.out / "counts.json").write_text(json.dumps(counts, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
