"""`make demo`'s last word: objects found per image, read where runs put results."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_summary_reads_the_run_folder_that_output_creates(tmp_path: Path) -> None:
    samples = tmp_path / "samples"
    (samples / "tiff").mkdir(parents=True)
    (samples / "counts.json").write_text(json.dumps({"tiff/a.ome.tif": 2}))
    run = tmp_path / "out" / "nuclei-0123"  # --output OUT gives OUT/<workflow>-<run id>
    run.mkdir(parents=True)
    (run / "demo_a_objects.csv").write_text("image,label\na,1\na,2\n")
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools/demo-summary"), str(tmp_path / "out"),
         str(samples / "counts.json"), str(samples / "tiff/a.ome.tif")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "a" in proc.stdout and " 2      2" in proc.stdout.replace("\t", " ")
