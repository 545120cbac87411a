"""Which environment variables reach OMERO script processes on this worker.

omero-py's ``ProcessI.make_env`` starts every script from a nearly empty environment
(15 names such as PATH, HOME, LANG). BIOMERO scripts also need the proxies, CA
bundles, Java, the temp dir, the tracking database and every BIOMERO_* setting.
This module decides which names pass; the top-level ``processor.py`` applies the
decision inside the Processor-0 process. Nothing here imports omero.

It also installs that ``processor.py`` over omero-py's own, keeping the original
beside it as ``omero/_processor_upstream.py`` so both sides' fixes survive an
omero-py upgrade: ``python -m biomeroworker.omero.processor_env install FILE``.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from biomeroworker.errors import ConfigError

#: Admins list extra names here, comma-separated: BIOMERO_PASS_ENV="NAME1,NAME2".
EXTRA_NAMES_VARIABLE = "BIOMERO_PASS_ENV"
#: Every variable with this prefix passes: they are the worker's own settings.
PASSED_PREFIX = "BIOMERO_"

_PROXIES = ("HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY")
#: Passed whenever the worker has them set.
PASSED_NAMES: frozenset[str] = frozenset(
    {
        *_PROXIES,
        *(name.lower() for name in _PROXIES),
        "JAVA_HOME",
        "TMPDIR",
        "REQUESTS_CA_BUNDLE",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "CURL_CA_BUNDLE",
        "SQLALCHEMY_URL",
        "PERSISTENCE_MODULE",
    }
)
#: make_env computes these per script process; a copy of the worker's value would
#: point the script at the wrong Ice config or drop OMERO's own library paths.
PROCESSOR_OWNED: frozenset[str] = frozenset({"ICE_CONFIG", "OMERO_HOME", "PYTHONPATH", "CLASSPATH"})

_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

#: First line of the top-level processor.py; tells the installer which file is ours.
INSTALLED_MARKER = "# biomeroworker processor: installed over omero-py's omero/processor.py"
UPSTREAM_MODULE = "_processor_upstream"


def admin_names(value: str) -> list[str]:
    """Parse a BIOMERO_PASS_ENV value; empty items and surrounding spaces are ignored."""
    names = [item.strip() for item in value.split(",") if item.strip()]
    problems = [_problem(name) for name in names]
    if any(problems):
        raise ConfigError([p for p in problems if p])
    return names


def _problem(name: str) -> str:
    if not _VARIABLE_NAME.match(name):
        return f"{EXTRA_NAMES_VARIABLE}: {name!r} is not an environment variable name"
    if name in PROCESSOR_OWNED:
        return f"{EXTRA_NAMES_VARIABLE}: {name} is set by the OMERO processor for each script"
    return ""


def passed_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables of ``environ`` that script processes receive, sorted by name."""
    wanted = PASSED_NAMES.union(admin_names(environ.get(EXTRA_NAMES_VARIABLE, "")))
    return {
        name: environ[name]
        for name in sorted(environ)
        if name in wanted or name.startswith(PASSED_PREFIX)
    }


def install_over_upstream(omero_dir: Path, ours: Path) -> Path:
    """Install ``ours`` as ``omero_dir/processor.py``; return where upstream's now lives.

    Idempotent: when processor.py is already ours it is refreshed and upstream's
    copy is left alone. After an omero-py upgrade processor.py is upstream's new
    one again and replaces the stale copy, so upstream fixes are never lost.
    """
    if not ours.read_text().startswith(INSTALLED_MARKER):
        raise ValueError(f"{ours} does not start with the biomeroworker processor marker")
    target = omero_dir / "processor.py"
    upstream = omero_dir / f"{UPSTREAM_MODULE}.py"
    if not target.read_text().startswith(INSTALLED_MARKER):
        target.replace(upstream)
    elif not upstream.is_file():
        raise FileNotFoundError(f"{target} is ours but {upstream} is missing: reinstall omero-py")
    shutil.copyfile(ours, target)
    return upstream


def installed_omero_dir() -> Path:
    """The omero package directory of this interpreter, found without importing it."""
    spec = importlib.util.find_spec("omero")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("omero-py is not installed in this Python")
    return Path(next(iter(spec.submodule_search_locations)))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m biomeroworker.omero.processor_env")
    commands = parser.add_subparsers(dest="command", required=True)
    install = commands.add_parser("install", help="install processor.py over omero-py's")
    install.add_argument("processor", type=Path, help="the repository's top-level processor.py")
    install.add_argument("--omero-dir", type=Path, help="default: this Python's omero package")
    args = parser.parse_args(argv)
    omero_dir = args.omero_dir or installed_omero_dir()
    upstream = install_over_upstream(omero_dir, args.processor)
    print(f"installed {args.processor} in {omero_dir}; upstream's processor is now {upstream}")


if __name__ == "__main__":
    main()
