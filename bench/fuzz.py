"""The longer fuzzing run: the properties of tests/unit/test_fuzz.py with many more, and
random (not derandomised), examples.

    .venv/bin/python bench/fuzz.py                      # profile biomero-long: 20,000 each
    .venv/bin/python bench/fuzz.py --examples 2000      # shorter
    .venv/bin/python bench/fuzz.py -k config            # only targets whose name has "config"

Prints, per target, the examples run and the time taken, or the failure (hypothesis shows
the smallest input it found). Any failure is a defect: fix it, then add the input to the
test as an ``@example`` so `make test` keeps it fixed. Not run by the tests.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=None, help="examples per target")
    parser.add_argument("-k", default="", help="only targets whose name contains this")
    args = parser.parse_args(argv)
    os.environ["HYPOTHESIS_PROFILE"] = "biomero-long"
    from hypothesis import settings

    from tests.unit import test_fuzz

    if args.examples:
        settings.register_profile(
            "biomero-bench", settings.get_profile("biomero-long"), max_examples=args.examples
        )
        settings.load_profile("biomero-bench")
    targets = [
        (name, fn)
        for name, fn in vars(test_fuzz).items()
        if name.startswith("test_fuzz_") and args.k in name
    ]
    failed = 0
    for name, target in targets:
        started = time.monotonic()
        try:
            target()
        except Exception:
            failed += 1
            print(f"FAIL  {name} after {time.monotonic() - started:.1f} s")
            traceback.print_exc()
            continue
        examples = settings.default.max_examples
        print(f"PASS  {name}: {examples} examples in {time.monotonic() - started:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
