"""tools/build-zeroc-ice: the source edits both the worker image and development venvs
get, run against small stand-in sdists. The real compile (minutes) is left to
tools/install-omero-py; pip is replaced by FakePip, which records what it was asked to
build."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "build-zeroc-ice"

FAKE_PIP_PYTHON = f"""#!/usr/bin/env bash
# FakePip: `python -m pip wheel ... SRC` copies SRC to $CAPTURE, records its argv and
# writes an empty wheel; anything else runs the real Python.
if [[ "$1 $2" == "-m pip" ]]; then
    printf '%s\\n' "$@" > "$CAPTURE/argv"
    cp -r "${{@: -1}}" "$CAPTURE/src"
    out=""
    for ((i = 1; i <= $#; i++)); do
        [[ "${{!i}}" == --wheel-dir ]] && {{ j=$((i + 1)); out="${{!j}}"; }}
    done
    mkdir -p "$out" && : > "$out/zeroc_ice-3.6.5-cp311-cp311-linux_x86_64.whl"
    exit 0
fi
exec {sys.executable} "$@"
"""


def make_sdist(tmp_path: Path, slice_cpp: str, util_cpp: str) -> Path:
    src = tmp_path / "zeroc-ice-3.6.5" / "src"
    src.mkdir(parents=True)
    (src / "Slice.cpp").write_text(slice_cpp)
    (src / "Util.cpp").write_text(util_cpp)
    sdist = tmp_path / "zeroc-ice-3.6.5.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        tar.add(tmp_path / "zeroc-ice-3.6.5", arcname="zeroc-ice-3.6.5")
    return sdist


@pytest.fixture
def fake_python(tmp_path: Path) -> tuple[Path, Path]:
    capture = tmp_path / "capture"
    capture.mkdir()
    python = tmp_path / "python"
    python.write_text(FAKE_PIP_PYTHON)
    python.chmod(0o755)
    return python, capture


def run(*args: str, capture: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "CAPTURE": str(capture)}
    return subprocess.run(
        [str(SCRIPT), *args], env=env, capture_output=True, text=True, check=False
    )


def test_applies_both_python_3_11_edits_and_builds_without_fetching(
    tmp_path: Path, fake_python: tuple[Path, Path]
) -> None:
    python, capture = fake_python
    sdist = make_sdist(
        tmp_path,
        "#include <Python.h>\n#include <eval.h>\nint x;\n",
        "f = PyThreadState_GET()->frame;\n",
    )

    result = run(
        "--no-build-isolation", str(python), str(sdist), str(tmp_path / "out"), capture=capture
    )

    assert result.returncode == 0, result.stderr
    assert (capture / "src" / "src" / "Slice.cpp").read_text() == "#include <Python.h>\nint x;\n"
    assert (capture / "src" / "src" / "Util.cpp").read_text() == "f = PyEval_GetFrame();\n"
    argv = (capture / "argv").read_text().split()
    assert {"--no-build-isolation", "--no-index", "--no-deps"} <= set(argv)
    assert list((tmp_path / "out").glob("zeroc_ice-*.whl"))


@pytest.mark.parametrize(
    ("slice_cpp", "util_cpp"),
    [
        ("int x;\n", "f = PyThreadState_GET()->frame;\n"),  # edit no longer applies
        ("#include <eval.h>\n#include <eval.h>\n", "PyThreadState_GET()->frame\n"),  # twice
    ],
)
def test_an_unexpected_sdist_never_builds_half_patched(
    tmp_path: Path, fake_python: tuple[Path, Path], slice_cpp: str, util_cpp: str
) -> None:
    python, capture = fake_python
    sdist = make_sdist(tmp_path, slice_cpp, util_cpp)

    result = run(str(python), str(sdist), str(tmp_path / "out"), capture=capture)

    assert result.returncode != 0
    assert "expected 1 occurrence" in result.stderr
    assert not (capture / "argv").exists()
