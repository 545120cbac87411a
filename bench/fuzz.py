"""The longer fuzzing run: the properties of tests/unit/test_fuzz.py, with random (not
derandomised) inputs, for a time budget per target.

    .venv/bin/python bench/fuzz.py                  # 120 s per target
    .venv/bin/python bench/fuzz.py --seconds 600     # longer
    .venv/bin/python bench/fuzz.py -k config         # only targets whose name has "config"

Each target runs in rounds of a fresh hypothesis run (HYPOTHESIS_PROFILE=biomero-long,
a new random seed each round) until its budget is spent: short rounds keep hypothesis's
own search cheap, many rounds cover many inputs. Prints, per target, the rounds and
examples run, or the failure with the smallest input hypothesis found. Any failure is a
defect: fix it, then add the input to the test as an ``@example`` so `make test` keeps it
fixed. Not run by the tests.
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
    parser.add_argument("--seconds", type=float, default=120.0, help="budget per target")
    parser.add_argument("-k", default="", help="only targets whose name contains this")
    args = parser.parse_args(argv)
    os.environ["HYPOTHESIS_PROFILE"] = "biomero-long"
    from hypothesis import settings

    from tests.unit import test_fuzz

    targets = [
        (name, fn)
        for name, fn in vars(test_fuzz).items()
        if name.startswith("test_fuzz_") and args.k in name
    ]
    per_round = settings.default.max_examples
    failed = 0
    for name, target in targets:
        started = time.monotonic()
        cpu = time.process_time()
        rounds = 0
        try:
            while time.monotonic() - started < args.seconds:
                target()
                rounds += 1
        except Exception:
            failed += 1
            print(f"FAIL  {name} in round {rounds + 1}")
            traceback.print_exc()
            continue
        print(
            f"PASS  {name}: {rounds} rounds, about {rounds * per_round} examples, "
            f"{time.monotonic() - started:.0f} s ({time.process_time() - cpu:.0f} s CPU)",
            flush=True,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
