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


# The head of zeroc-ice 3.6.5's setup.py (the imports the third edit follows), then one
# small extension of three C files, as IcePy is one extension of many C++ files.
SETUP_PY = """try:
    from setuptools import setup
except ImportError:
    from distutils.core import setup

from distutils.extension import Extension
import sys, os, shutil, fnmatch

setup(name="tiny", ext_modules=[Extension("tiny", ["src/a.c", "src/b.c", "src/m.c"])])
"""
TINY_C = {
    "a.c": "int tiny_a(void) { return 40; }\n",
    "b.c": "int tiny_b(void) { return 2; }\n",
    "m.c": """#include <Python.h>
int tiny_a(void);
int tiny_b(void);
static PyObject *answer(PyObject *self, PyObject *args) {
    return PyLong_FromLong(tiny_a() + tiny_b());
}
static PyMethodDef methods[] = {{"answer", answer, METH_NOARGS, ""}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "tiny", "", -1, methods};
PyMODINIT_FUNC PyInit_tiny(void) { return PyModule_Create(&module); }
""",
}


def make_sdist(tmp_path: Path, slice_cpp: str, util_cpp: str, setup_py: str = SETUP_PY) -> Path:
    src = tmp_path / "zeroc-ice-3.6.5" / "src"
    src.mkdir(parents=True)
    (src / "Slice.cpp").write_text(slice_cpp)
    (src / "Util.cpp").write_text(util_cpp)
    for name, text in TINY_C.items():
        (src / name).write_text(text)
    (src.parent / "setup.py").write_text(setup_py)
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


def test_applies_the_source_edits_and_builds_without_fetching(
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


def test_the_setup_edit_builds_a_working_extension_from_its_sources_in_parallel(
    tmp_path: Path, fake_python: tuple[Path, Path]
) -> None:
    python, capture = fake_python
    sdist = make_sdist(tmp_path, "#include <eval.h>\n", "PyThreadState_GET()->frame\n")
    assert run(str(python), str(sdist), str(tmp_path / "out"), capture=capture).returncode == 0
    patched = capture / "src"
    assert (
        "_ccompiler.CCompiler.compile = _compile_on_every_core"
        in (patched / "setup.py").read_text()
    )

    # The patched setup.py, run for real: its compile step replaced, the module still works.
    build = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--inplace"],
        cwd=patched,
        capture_output=True,
        text=True,
        check=False,
    )
    assert build.returncode == 0, build.stderr
    answer = subprocess.run(
        [sys.executable, "-c", "import tiny; print(tiny.answer())"],
        cwd=patched,
        capture_output=True,
        text=True,
        check=True,
    )
    assert answer.stdout.strip() == "42"
    assert build.stdout.count("gcc") >= 3  # each source compiled (and one link)


def test_a_setup_py_without_the_expected_import_never_builds(
    tmp_path: Path, fake_python: tuple[Path, Path]
) -> None:
    python, capture = fake_python
    sdist = make_sdist(
        tmp_path,
        "#include <eval.h>\n",
        "PyThreadState_GET()->frame\n",
        setup_py="from setuptools import setup, Extension\nsetup()\n",
    )

    result = run(str(python), str(sdist), str(tmp_path / "out"), capture=capture)

    assert result.returncode != 0
    assert "expected 1 occurrence" in result.stderr
    assert not (capture / "argv").exists()


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
