"""A short chaos run (bench/chaos.py has the long one): five runs, one of each kind
(one OME-Zarr, three OME-Zarr, a TIFF, a failing workflow on a TIFF and on an OME-Zarr),
while the supervisor is killed, its SSH connection cut, slurmdbd stopped and the
database connections terminated at random moments. Every run must end as expected with
one Slurm job per step, one download per completed run, and no .partial-* left."""

from __future__ import annotations

import pytest

from bench.chaos import FAULTS, chaos, format_report

# It stops slurmdbd and cuts SSH connections: no other test may share the cluster meanwhile.
pytestmark = pytest.mark.serial


def test_every_run_ends_once_under_random_faults(new_database, cluster, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with new_database("biomero_chaos") as url:
        report = chaos(
            tmp_path, url, runs=5, seed=18, mean_gap_s=2.5, limit_s=50, settle_s=60, say=print
        )
    text = format_report(report)
    assert report["problems"] == [], text
    assert report["partial_left"] == [], text
    assert report["states"] == {"COMPLETED": 3, "FAILED": 2}, text
    tried = {name.split(" ")[0] for name in report["faults"]}
    assert tried == set(FAULTS), text  # each kind of fault was tried at least once
