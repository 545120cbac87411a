"""OMERO.biomero's BIOMERO page with the dashboard settings our deployments give OMERO.web.

The page (``omero_biomero.biomero_views.biomero``, from the plugin's wheel) signs a
Metabase link for both of its dashboards on every load, with PyJWT: the plugin's code,
its settings module and PyJWT (the version the web image installs) run for real from
their wheels (tools/fetch-plugin-wheels); Django's and OMERO.web's decorators are
stand-ins that hand the view through, and the connection is a stand-in user.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import types
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from module_standins import module, standin_modules

REPO = Path(__file__).resolve().parents[2]
PINNED = dict(
    line.split("=", 1)
    for line in (REPO / "deploy" / "versions.env").read_text().splitlines()
    if "=" in line and not line.startswith("#")
)
PYJWT = re.search(r"^pyjwt==(\S+)", (REPO / "deploy/requirements/web.txt").read_text(), re.M)
assert PYJWT, "deploy/requirements/web.txt pins no pyjwt"
WHEELS = Path(os.environ.get("BIOMERO_WHEEL_CACHE", "~/.cache/biomeroworker/wheels")).expanduser()
PLUGIN_WHEEL = WHEELS / f"omero_biomero-{PINNED['OMERO_BIOMERO_VERSION'].strip()}-py3-none-any.whl"
PYJWT_WHEEL = WHEELS / f"pyjwt-{PYJWT[1]}-py3-none-any.whl"
DASHBOARD_SETTINGS = (
    "METABASE_SITE_URL",
    "METABASE_SECRET_KEY",
    "METABASE_WORKFLOWS_DB_PAGE_DASHBOARD_ID",
    "METABASE_IMPORTS_DB_PAGE_DASHBOARD_ID",
)


def _hand_through(*args: Any, **kwargs: Any) -> Any:
    """login_required() and render_response(): the view as it is."""
    return lambda view: view


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[types.SimpleNamespace]:
    """The BIOMERO page's view and the real PyJWT it signs with."""
    for wheel in (PLUGIN_WHEEL, PYJWT_WHEEL):
        if not wheel.is_file():
            pytest.fail(f"{wheel} is missing: run tools/fetch-plugin-wheels (make test does)")
    # Unpacked: the page looks for its built assets as files beside its module.
    plugin = tmp_path_factory.mktemp("plugin")
    with zipfile.ZipFile(PLUGIN_WHEEL) as archive:
        archive.extractall(plugin)
    standins = {
        "omeroweb": module("omeroweb"),
        "omeroweb.webclient": module("omeroweb.webclient"),
        "omeroweb.webclient.decorators": module(
            "omeroweb.webclient.decorators",
            login_required=_hand_through,
            render_response=_hand_through,
        ),
        "convertleica_file_browser": module("convertleica_file_browser"),
        "convertleica_file_browser.ci_leica_converters_helpers": module(
            "convertleica_file_browser.ci_leica_converters_helpers", read_leica_file=None
        ),
    }
    sys.path[:0] = [str(plugin), str(PYJWT_WHEEL)]
    try:
        with standin_modules(standins, forget=("omero_biomero", "jwt")):
            yield types.SimpleNamespace(
                view=importlib.import_module("omero_biomero.biomero_views").biomero,
                jwt=importlib.import_module("jwt"),
            )
    finally:
        for path in (plugin, PYJWT_WHEEL):
            sys.path.remove(str(path))


def web_environment() -> dict[str, str]:
    """OMERO.web's environment as `docker compose config` gives it with .env.example."""
    docker = shutil.which("docker")
    probe = [docker, "compose", "version"] if docker else None
    if probe is None or subprocess.run(probe, capture_output=True, check=False).returncode:
        pytest.skip("no docker compose: run tools/install-container-tools")
    result = subprocess.run(
        [docker, "compose", "--env-file", str(REPO / ".env.example"), "config", "--format", "json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout)["services"]["omeroweb"]["environment"]


def load(page: types.SimpleNamespace, monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Any:
    for name in DASHBOARD_SETTINGS:
        monkeypatch.setenv(name, env[name])
    conn = types.SimpleNamespace(
        getUser=lambda: types.SimpleNamespace(getName=lambda: "alice", getId=lambda: 7),
        isAdmin=lambda: False,
    )
    return page.view(None, conn=conn)


def claims(page: types.SimpleNamespace, token: str, key: str) -> dict[str, Any]:
    return page.jwt.decode(token, key, algorithms=["HS256"])


def test_the_page_loads_with_what_compose_gives_a_site_without_dashboards(
    page: types.SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = web_environment()

    context = load(page, monkeypatch, env)

    workflows = claims(
        page, context["metabase_token_monitor_workflows"], env["METABASE_SECRET_KEY"]
    )
    assert workflows["resource"] == {"dashboard": 0}
    assert context["metabase_site_url"] == ""


def test_podman_gives_the_same_placeholder_key_as_compose() -> None:
    script = (REPO / "deploy" / "podman" / "biomero-pod.sh").read_text()
    placeholder = re.search(r"^NO_DASHBOARDS_KEY=(\S+)$", script, re.M)
    assert placeholder
    assert web_environment()["METABASE_SECRET_KEY"] == placeholder[1]


def test_a_sites_dashboards_get_links_locked_to_the_omero_user(
    page: types.SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "5f" * 32
    env = {
        "METABASE_SITE_URL": "https://dashboards.example.org",
        "METABASE_SECRET_KEY": key,
        "METABASE_WORKFLOWS_DB_PAGE_DASHBOARD_ID": "11",
        "METABASE_IMPORTS_DB_PAGE_DASHBOARD_ID": "12",
    }

    context = load(page, monkeypatch, env)

    # What docs/deployment.md tells a site to lock when it publishes the dashboards.
    workflows = claims(page, context["metabase_token_monitor_workflows"], key)
    imports = claims(page, context["metabase_token_imports"], key)
    assert (workflows["resource"], workflows["params"]) == ({"dashboard": 11}, {"user": [7]})
    assert (imports["resource"], imports["params"]) == ({"dashboard": 12}, {"user_name": ["alice"]})


@pytest.mark.parametrize(
    "empty", ["METABASE_SECRET_KEY", "METABASE_WORKFLOWS_DB_PAGE_DASHBOARD_ID"]
)
def test_an_empty_setting_breaks_the_page_which_is_why_compose_gives_placeholders(
    page: types.SimpleNamespace, monkeypatch: pytest.MonkeyPatch, empty: str
) -> None:
    env = {
        "METABASE_SITE_URL": "",
        "METABASE_SECRET_KEY": "5f" * 32,
        "METABASE_WORKFLOWS_DB_PAGE_DASHBOARD_ID": "1",
        "METABASE_IMPORTS_DB_PAGE_DASHBOARD_ID": "2",
        empty: "",
    }

    with pytest.raises(Exception) as caught:  # ValueError or PyJWT's InvalidKeyError
        load(page, monkeypatch, env)

    assert type(caught.value).__name__ in {"ValueError", "InvalidKeyError"}
