"""processor.py and processor_env: which variables reach OMERO script processes.

The processor tests run against the real omero-py. Each builds the package layout the
worker image has (omero-py's processor.py moved to _processor_upstream.py, ours in its
place, by the same installer the Dockerfile runs) in a temporary copy of the omero
package, then runs a small probe in a fresh interpreter with that copy first on
sys.path. Only the script process itself is faked (FakePopen): there is no OMERO
server to start one for.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from biomeroworker.errors import ConfigError
from biomeroworker.omero import processor_env
from biomeroworker.omero.processor_env import (
    EXTRA_NAMES_VARIABLE,
    INSTALLED_MARKER,
    admin_names,
    install_over_upstream,
    passed_environment,
)

REPO = Path(__file__).resolve().parents[2]
OMERO_MISSING = importlib.util.find_spec("omero") is None
needs_omero = pytest.mark.skipif(
    OMERO_MISSING, reason="omero-py is not installed: run tools/install-omero-py"
)

# A real ServerContext and Ice communicator, a real BiomeroProcessI; only Popen is fake.
PROBE_ENV = """
import json, sys, threading
import Ice, omero.util
from omero_ext.path import path
import omero.processor as processor

class FakePopen:
    received_env = None
    def __init__(self, argv, cwd, env, stdout, stderr):
        FakePopen.received_env = dict(env)
        self.pid = 4242
    def poll(self):
        return 0
    def wait(self):
        return 0

communicator = Ice.initialize()
ctx = omero.util.ServerContext("Processor-test", communicator, threading.Event())
home = path(sys.argv[1])
process = processor.ProcessI(
    ctx, sys.executable, {"omero.user": "session-uuid"}, None, iskill=False,
    Popen=FakePopen, omero_home=home)
process.activate()
communicator.destroy()
print(json.dumps(FakePopen.received_env))
"""

PROBE_LAYOUT = """
import json
import omero._processor_upstream as upstream
import omero.processor as ours
changed = sorted(
    name for name in dir(upstream)
    if not name.startswith("__") and getattr(ours, name, None) is not getattr(upstream, name)
)
print(json.dumps({
    "upstream": dir(upstream), "ours": dir(ours), "changed": changed,
    "ours_file": ours.__file__, "upstream_file": upstream.__file__,
}))
"""

PROBE_LAUNCHER = """
import json, logging, sys
import omero.processor as processor

class FakeCurrent:
    def __init__(self, ctx):
        self.ctx = ctx

class FakeProcessor:
    logger = logging.getLogger("probe")

found = {}
for label, ctx in [("no context", {}), ("default", {"omero.process": "omero.processor.ProcessI"})]:
    launcher, cls = processor.ProcessorI.find_launcher(FakeProcessor(), FakeCurrent(ctx))
    found[label] = f"{cls.__module__}.{cls.__qualname__}"
print(json.dumps(found))
"""


@pytest.fixture(scope="module")
def image_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the installed omero package with processor.py installed as the image does."""
    root = tmp_path_factory.mktemp("site")
    real_omero = processor_env.installed_omero_dir()
    shutil.copytree(real_omero, root / "omero", ignore=shutil.ignore_patterns("__pycache__"))
    install_over_upstream(root / "omero", REPO / "processor.py")
    return root


def run_probe(layout: Path, probe: str, tmp_path: Path, extra_env: dict[str, str]) -> object:
    """Run ``probe`` in a fresh interpreter that imports omero from ``layout``."""
    home = tmp_path / "omero_home"
    (home / "lib" / "server").mkdir(parents=True)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "PYTHONPATH": str(layout),
        "OMERO_TMPDIR": str(tmp_path / "omero_tmp"),
        **extra_env,
    }
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(probe), str(home)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


# processor_env: pure, no omero needed


def test_fixed_names_and_biomero_settings_pass_and_others_do_not() -> None:
    environ = {
        "HTTPS_PROXY": "http://proxy:3128",
        "no_proxy": "localhost",
        "JAVA_HOME": "/usr/lib/jvm/java",
        "BIOMERO_CONFIG": "/etc/slurm-config.ini",
        "SECRET_TOKEN": "s3cr3t",
    }
    assert passed_environment(environ) == {
        "BIOMERO_CONFIG": "/etc/slurm-config.ini",
        "HTTPS_PROXY": "http://proxy:3128",
        "JAVA_HOME": "/usr/lib/jvm/java",
        "no_proxy": "localhost",
    }


def test_admin_names_tolerate_spaces_and_empty_items() -> None:
    assert admin_names(" HF_HOME, ,LICENSE_SERVER ,") == ["HF_HOME", "LICENSE_SERVER"]


@pytest.mark.parametrize("bad", ["MY VAR", "A=B", "1ST", "$HOME"])
def test_admin_name_that_is_not_a_variable_name_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError, match=EXTRA_NAMES_VARIABLE):
        admin_names(f"GOOD,{bad}")


@pytest.mark.parametrize("owned", ["ICE_CONFIG", "PYTHONPATH", "OMERO_HOME", "CLASSPATH"])
def test_admin_cannot_pass_names_the_processor_sets_per_script(owned: str) -> None:
    with pytest.raises(ConfigError, match=owned):
        passed_environment({EXTRA_NAMES_VARIABLE: owned, owned: "/elsewhere"})


# The installer


def omero_dir_with_upstream(tmp_path: Path, upstream_text: str) -> Path:
    omero_dir = tmp_path / "omero"
    omero_dir.mkdir()
    (omero_dir / "processor.py").write_text(upstream_text)
    return omero_dir


def test_install_keeps_upstream_beside_ours(tmp_path: Path) -> None:
    omero_dir = omero_dir_with_upstream(tmp_path, "# upstream 5.23.0\n")
    install_over_upstream(omero_dir, REPO / "processor.py")
    assert (omero_dir / "_processor_upstream.py").read_text() == "# upstream 5.23.0\n"
    assert (omero_dir / "processor.py").read_text() == (REPO / "processor.py").read_text()


def test_install_twice_keeps_upstream_copy(tmp_path: Path) -> None:
    omero_dir = omero_dir_with_upstream(tmp_path, "# upstream 5.23.0\n")
    install_over_upstream(omero_dir, REPO / "processor.py")
    install_over_upstream(omero_dir, REPO / "processor.py")
    assert (omero_dir / "_processor_upstream.py").read_text() == "# upstream 5.23.0\n"


def test_install_after_omero_upgrade_takes_the_new_upstream(tmp_path: Path) -> None:
    omero_dir = omero_dir_with_upstream(tmp_path, "# upstream 5.23.0\n")
    install_over_upstream(omero_dir, REPO / "processor.py")
    (omero_dir / "processor.py").write_text("# upstream 5.24.0\n")  # what pip -U leaves
    install_over_upstream(omero_dir, REPO / "processor.py")
    assert (omero_dir / "_processor_upstream.py").read_text() == "# upstream 5.24.0\n"
    assert (omero_dir / "processor.py").read_text().startswith(INSTALLED_MARKER)


def test_install_refuses_a_file_that_is_not_ours(tmp_path: Path) -> None:
    omero_dir = omero_dir_with_upstream(tmp_path, "# upstream\n")
    stranger = tmp_path / "other.py"
    stranger.write_text("print('hi')\n")
    with pytest.raises(ValueError, match="marker"):
        install_over_upstream(omero_dir, stranger)
    assert (omero_dir / "processor.py").read_text() == "# upstream\n"


# The real omero-py, laid out as in the image


@needs_omero
def test_layout_exposes_everything_upstream_does(image_layout: Path, tmp_path: Path) -> None:
    found = run_probe(image_layout, PROBE_LAYOUT, tmp_path, {})
    assert found["ours_file"] == str(image_layout / "omero" / "processor.py")
    assert found["upstream_file"] == str(image_layout / "omero" / "_processor_upstream.py")
    assert set(found["upstream"]) <= set(found["ours"])
    assert {"ProcessorI", "ProcessI", "MATLABProcessI", "usermode_processor"} <= set(found["ours"])
    assert found["changed"] == []  # ProcessI is rebound in both modules, nothing else differs


@needs_omero
def test_find_launcher_picks_our_process_class(image_layout: Path, tmp_path: Path) -> None:
    found = run_probe(image_layout, PROBE_LAUNCHER, tmp_path, {})
    assert found == {
        "no context": "omero.processor.BiomeroProcessI",
        "default": "omero.processor.BiomeroProcessI",
    }


@needs_omero
def test_script_process_receives_proxies_ca_bundles_and_settings(
    image_layout: Path, tmp_path: Path
) -> None:
    passed = {
        "HTTP_PROXY": "http://proxy:3128",
        "https_proxy": "http://proxy:3129",
        "NO_PROXY": "localhost,omero",
        "ALL_PROXY": "socks5://proxy:1080",
        "JAVA_HOME": "/usr/lib/jvm/java-17",
        "TMPDIR": str(tmp_path / "scratch"),
        "REQUESTS_CA_BUNDLE": "/etc/ssl/certs/ca.pem",
        "SSL_CERT_DIR": "/etc/ssl/certs",
        "SQLALCHEMY_URL": "postgresql+psycopg2://biomero@db:5432/biomero",
        "PERSISTENCE_MODULE": "eventsourcing_sqlalchemy",
        "BIOMERO_CONFIG": "/opt/omero/server/slurm-config.ini",
    }
    env = run_probe(image_layout, PROBE_ENV, tmp_path, passed)
    assert {name: env.get(name) for name in passed} == passed


@needs_omero
def test_script_process_receives_admin_listed_names(image_layout: Path, tmp_path: Path) -> None:
    admin = {EXTRA_NAMES_VARIABLE: "HF_HOME, LICENSE_SERVER", "HF_HOME": "/data/hf"}
    env = run_probe(image_layout, PROBE_ENV, tmp_path, {**admin, "LICENSE_SERVER": "27000@lic"})
    assert env["HF_HOME"] == "/data/hf"
    assert env["LICENSE_SERVER"] == "27000@lic"


@needs_omero
def test_script_process_does_not_receive_unlisted_secrets(
    image_layout: Path, tmp_path: Path
) -> None:
    secrets = {"SECRET_TOKEN": "s3cr3t", "AWS_SECRET_ACCESS_KEY": "aws-s3cr3t"}
    env = run_probe(image_layout, PROBE_ENV, tmp_path, {**secrets, "HTTP_PROXY": "http://p:1"})
    assert env["HTTP_PROXY"] == "http://p:1"  # the probe did pass what it should
    assert not set(secrets) & set(env)
    assert "s3cr3t" not in json.dumps(env)


@needs_omero
def test_script_process_keeps_the_processors_own_settings(
    image_layout: Path, tmp_path: Path
) -> None:
    env = run_probe(image_layout, PROBE_ENV, tmp_path, {"BIOMERO_X": "1"})
    home = tmp_path / "omero_home"
    assert env["OMERO_HOME"] == str(home)
    assert env["ICE_CONFIG"].endswith("/config")
    assert env["PYTHONPATH"].split(os.pathsep)[-1] == str(home / "lib" / "python")


@needs_omero
def test_processor_refuses_to_start_with_a_bad_pass_env(image_layout: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import omero.processor"],
        env={
            "PATH": os.environ["PATH"],
            "PYTHONPATH": str(image_layout),
            EXTRA_NAMES_VARIABLE: "A B",
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "BIOMERO_PASS_ENV: 'A B' is not an environment variable name" in result.stderr
