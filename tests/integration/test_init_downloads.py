"""`biomero init` fetches what the config pins, from an empty cache, and a run follows.

A local HTTP server stands in for GitHub as a `[WORKER] workflow_mirror` (the tests
have no internet); it serves a workflow shaped like the published ones: server-set
inputs listed twice, as the CellProfiler measurement descriptors do; the same in
biomero-schema; and a bilayers workflow that has only a config.yaml, run with a file
parameter and a hostile text value.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from biomeroworker.cli import main
from biomeroworker.config import load_settings
from biomeroworker.runs import RunEngine
from biomeroworker.tracking.application import Tracker
from biomeroworker.transport.ssh import SSHOptions, SSHTransport

REPO = Path(__file__).resolve().parents[2]
TAG = "v1.0.3"
URL = f"https://github.com/acme/W_Misbehave-Remote/tree/{TAG}"
SERVER_INPUT = {"id": "cytomine_id_software", "type": "Number", "set-by-server": True}


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[str]]]:
    """A mirror laid out as <owner>/<repo>/<tag>/<file>; yields its URL and the paths asked."""
    root = tmp_path_factory.mktemp("mirror")
    tag_dir = root / "acme" / "W_Misbehave-Remote" / TAG
    tag_dir.mkdir(parents=True)
    descriptor = json.loads((REPO / "tests/fixtures/misbehave/descriptor.json").read_text())
    descriptor["inputs"] = [SERVER_INPUT, *descriptor["inputs"], SERVER_INPUT]
    (tag_dir / "descriptor.json").write_text(json.dumps(descriptor))
    shutil.copy(REPO / "tests/fixtures/misbehave/wrapper.py", tag_dir / "wrapper.py")
    # The same workflow described in biomero-schema (biomero-0.1), as biomero 2.8 reads it.
    schema_dir = root / "acme" / "W_Misbehave-Schema" / TAG
    schema_dir.mkdir(parents=True)
    lower = {"String": "string", "Number": "integer"}
    schema = {
        **descriptor,
        "schema-version": "biomero-0.1",
        "inputs": [
            {**i, "type": lower[i["type"]]} for i in descriptor["inputs"] if i is not SERVER_INPUT
        ]
        + [{"id": "images", "type": "image", "set-by-server": True}],
    }
    (schema_dir / "descriptor.json").write_text(json.dumps(schema))
    shutil.copy(REPO / "tests/fixtures/misbehave/wrapper.py", schema_dir / "wrapper.py")
    # A bilayers workflow: only a config.yaml (init asks for descriptor.json and
    # descriptor.yaml first, as biomero 2.8.3 does) and the native stand-in for its image.
    bilayers_dir = root / "acme" / "Threshold-Count" / TAG
    bilayers_dir.mkdir(parents=True)
    for name in ("config.yaml", "wrapper.py"):
        shutil.copy(REPO / "tests/fixtures/bilayers" / name, bilayers_dir / name)
    asked: list[str] = []

    class Handler(_QuietHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            super().do_GET()

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=root))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", asked
    server.shutdown()


def mirrored_config(  # type: ignore[no-untyped-def]
    cluster, tmp_path: Path, url: str, workflows: str, *, before: str = "", own_tracking=True
) -> Path:
    """The cluster's slurm-config.ini with ``workflows`` added, the mirror as
    workflow_mirror and (``own_tracking``) a tracking store of the test's own."""
    text = cluster.config_path.read_text()
    text = text.replace("[WORKFLOWS]\n", f"{before}[WORKFLOWS]\n{workflows}", 1)
    text = text.replace("[WORKER]\n", f"[WORKER]\nworkflow_mirror = {url}\n", 1)
    if own_tracking:
        text = text.replace(
            "[ANALYTICS]\n", f"[ANALYTICS]\nsqlalchemy_url = sqlite:///{tmp_path}/t.sqlite\n"
        )
    config = tmp_path / "slurm-config.ini"
    config.write_text(text)
    return config


def test_init_downloads_pinned_workflows_once_and_a_run_uses_them(  # type: ignore[no-untyped-def]
    cluster, mirror, tmp_path, monkeypatch, capsys
) -> None:
    url, asked = mirror
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # an empty cache
    config = mirrored_config(
        cluster,
        tmp_path,
        url,
        f"remote = remote\nremote_repo = {URL}\nremote_job_mem = 100M\n"
        f"schema = schema\nschema_repo = {URL.replace('Remote', 'Schema')}\n"
        "schema_job_mem = 100M\n",
        # A converter image as NL-BIOMERO configures one: the native runtime runs no
        # containers, so init says so and our converter runs for real instead.
        before="[CONVERTERS]\nzarr_to_tiff = cellularimagingcf/convert_zarr_to_tiff:2.0.0\n\n",
    )

    assert main(["--config", str(config), "workflows"]) == 1  # configured, not cached yet
    assert "not cached" in capsys.readouterr().out

    assert main(["--config", str(config), "init"]) == 0
    out = capsys.readouterr().out
    assert f"done     remote {TAG} descriptor: from {url}" in out
    assert f"done     remote {TAG} files: wrapper.py" in out
    assert f"done     schema {TAG} descriptor: from {url}" in out
    assert "needs a container runtime" in out  # the converter image, said aloud
    assert sorted(asked) == sorted(
        f"/acme/W_Misbehave-{kind}/{TAG}/{name}"
        for kind in ("Remote", "Schema")
        for name in ("descriptor.json", "wrapper.py", "requirements.txt")
    )

    asked.clear()
    assert main(["--config", str(config), "init"]) == 0
    assert f"skipped  remote {TAG} descriptor: cached" in capsys.readouterr().out
    assert asked == []  # a tag is immutable: nothing is fetched again

    settings = load_settings(config_file=config)
    samples = tmp_path / "samples"
    script = REPO / "workflows/nuclei-segmentation/make_samples.py"
    subprocess.run([sys.executable, str(script), str(samples)], check=True, capture_output=True)
    transport = SSHTransport(SSHOptions(cluster.alias, command_timeout_s=600))
    with Tracker(settings_url=settings.analytics.sqlalchemy_url) as tracker:
        engine = RunEngine(settings, transport, tracker)
        run_id = engine.request(
            "remote",
            [samples / "tiff/nuclei_s0_yx.ome.tif"],
            {"mode": "ok", "echo": "from the mirror"},
            output_dir=tmp_path / "out",
        )
        dest = engine.drive(run_id)
        run = tracker.get_run(run_id)
        # The biomero-schema workflow on an OME-Zarr input: converted by our converter.
        schema_id = engine.request(
            "schema",
            [samples / "zarr-0.5/nuclei_s0_yx.ome.zarr"],
            {"mode": "ok", "out_mb": 0},
            output_dir=tmp_path / "out-schema",
        )
        schema_dest = engine.drive(schema_id)
        schema_run = tracker.get_run(schema_id)
    transport.close()
    assert run["state"] == "COMPLETED" and run["version"] == TAG
    echoed = json.loads((dest / "echo.json").read_text())
    assert "from the mirror" in json.dumps(echoed)
    assert schema_run["state"] == "COMPLETED"
    assert {t["kind"] for t in schema_run["tasks"]} >= {"convert", "job"}
    assert (schema_dest / "echo.json").is_file()


def test_init_reports_a_workflow_it_cannot_fetch_and_prepares_the_others(  # type: ignore[no-untyped-def]
    cluster, mirror, tmp_path, monkeypatch, capsys
) -> None:
    url, _ = mirror
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    missing = "missing = missing\nmissing_repo = https://github.com/acme/W_Nowhere/tree/v9.9.9\n"
    config = mirrored_config(cluster, tmp_path, url, missing, own_tracking=False)
    assert main(["--config", str(config), "init"]) == 2
    captured = capsys.readouterr()
    assert "FAILED   missing v9.9.9 descriptor" in captured.out
    assert "W_Nowhere/v9.9.9/descriptor.json" in captured.out
    assert "nuclei local job script" in captured.out  # the others were prepared
    assert "init could not prepare: missing v9.9.9 descriptor" in captured.err


def test_init_fetches_a_bilayers_config_and_a_run_gets_its_flags_and_its_file(  # type: ignore[no-untyped-def]
    cluster, mirror, tmp_path, monkeypatch, capsys
) -> None:
    url, asked = mirror
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    repo = f"https://github.com/acme/Threshold-Count/tree/{TAG}"
    workflows = f"count = count\ncount_repo = {repo}\ncount_job_mem = 100M\n"
    config = mirrored_config(cluster, tmp_path, url, workflows)

    asked.clear()
    assert main(["--config", str(config), "init"]) == 0
    out = capsys.readouterr().out
    assert f"done     count {TAG} descriptor: from {url}" in out
    base = f"/acme/Threshold-Count/{TAG}"
    assert [a for a in asked if a.startswith(base)] == [
        f"{base}/{name}"
        for name in (
            "descriptor.json",  # 404: upstream's order, the next one is tried
            "descriptor.yaml",
            "config.yaml",
            "wrapper.py",
            "requirements.txt",
        )
    ]
    assert main(["--config", str(config), "workflows", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    count = next(w for w in listed if w["name"] == "count")
    kinds = {p["id"]: p["type"] for p in count["parameters"]}
    assert kinds["pipeline"] == "file" and kinds["save_masks"] == "boolean"
    pipeline_param = next(p for p in count["parameters"] if p["id"] == "pipeline")
    assert pipeline_param["formats"] == ["cppipe", "txt"]

    settings = load_settings(config_file=config)
    samples = tmp_path / "samples"
    script = REPO / "workflows/nuclei-segmentation/make_samples.py"
    subprocess.run([sys.executable, str(script), str(samples)], check=True, capture_output=True)
    pipeline = tmp_path / "analysis.cppipe"
    pipeline.write_text("threshold: li\n")
    pwned = tmp_path / "pwned"
    pwned.mkdir()
    hostile = f"cells $(touch {pwned}/a); touch {pwned}/b\n--save_dir=/tmp"
    transport = SSHTransport(SSHOptions(cluster.alias, command_timeout_s=600))
    with Tracker(settings_url=settings.analytics.sqlalchemy_url) as tracker:
        engine = RunEngine(settings, transport, tracker)
        run_id = engine.request(
            "count",
            [samples / "tiff/nuclei_s0_yx.ome.tif"],
            {
                "threshold_method": "li",
                "label": hostile,
                "save_masks": True,
                "sigma": -0.5,
                "pipeline": str(pipeline),
            },
            output_dir=tmp_path / "out",
        )
        dest = engine.drive(run_id)
        run = tracker.get_run(run_id)
    transport.close()
    assert run["state"] == "COMPLETED", run
    assert run["parameters"]["pipeline"] == "data/files/pipeline"
    assert run["inputs"]["attachments"] == {"pipeline": [str(pipeline)]}
    echoed = json.loads((dest / "echo.json").read_text())
    argv = echoed["argv"]
    assert argv[0].startswith("--folder=") and argv[0].endswith("/data/in")
    assert argv[1].startswith("--save_dir=") and argv[1].endswith("/data/out")
    assert argv[2:4] == ["--quiet-progress", "--format=tiff"]
    assert f"--label={hostile}" in argv and "--save_masks" in argv
    assert argv[argv.index("-s") + 1] == "-0.5"
    assert "--exclude_edges=True" in argv and "--min_size=15" in argv  # defaults
    folder = next(a for a in argv if a.startswith("--pipeline="))
    assert folder.endswith(f"{run_id}/data/files/pipeline")
    # the file went up with the data and the workflow read it on the cluster
    assert echoed["pipeline"] == {"analysis.cppipe": "threshold: li\n"}
    assert echoed["inputs"] == ["nuclei_s0_yx.ome.tif"]  # the image folder holds images only
    assert (dest / "counts.csv").is_file()
    assert list(pwned.iterdir()) == []
