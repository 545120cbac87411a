"""An OMERO run of a bilayers workflow with a file parameter, end to end on localslurm.

The Run Workflow form's answers (as OMERO hands them to the script) are requested with
``actions.request_runs``; the supervisor's steps then export the image and download the
file annotation through omero-py's real BlitzGateway (only the Ice services are stood in
for, tests/omero_standins.py), stage both up over SSH, convert, run the bilayers job on
the real Slurm (native runtime: the workflow's wrapper stands in for its image), and
import the results. The job must have read the annotation's bytes from the folder its
flag named, and a hostile text must have reached it as one argument.
"""

from __future__ import annotations

import json
from pathlib import Path

from omero_standins import StandInServer

from biomeroworker.cli import main
from biomeroworker.config import load_settings
from biomeroworker.omero import actions, forms
from biomeroworker.omero.side import OmeroSide
from biomeroworker.runs import RunEngine
from biomeroworker.tracking.application import Tracker
from biomeroworker.transport.ssh import SSHOptions, SSHTransport

REPO = Path(__file__).resolve().parents[2]
GROUP = 3


def test_an_omero_run_downloads_its_file_annotation_and_the_job_reads_it(  # type: ignore[no-untyped-def]
    cluster, tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    folder = REPO / "tests" / "fixtures" / "bilayers"  # only a config.yaml and wrapper.py
    extra = f"[WORKFLOWS]\ncount = count\ncount_repo = {folder}\ncount_job_mem = 100M\n"
    text = cluster.config_path.read_text().replace("[WORKFLOWS]\n", extra, 1)
    text = text.replace(
        "[ANALYTICS]\n", f"[ANALYTICS]\nsqlalchemy_url = sqlite:///{tmp_path}/t.sqlite\n"
    )
    config = tmp_path / "slurm-config.ini"
    config.write_text(text)
    assert main(["--config", str(config), "init"]) == 0, capsys.readouterr().out
    settings = load_settings(config_file=config)

    server = StandInServer()
    server.add_user("biomero-sudo", 0, password="s3cret", privileges=("Sudo",))
    server.add_user("alice", GROUP, "lab")
    image = server.add_image("alice", GROUP, "cells.tif")
    pipeline = b"threshold: li\n" * 1000
    annotation = server.add_file_annotation("alice", GROUP, "my pipeline.cppipe", pipeline)
    hostile = "cells $(touch /tmp/biomero-pwned); `id`\n--save_dir=/tmp"
    answers = {
        "Data_Type": "Image",
        "IDs": [image],
        "count": True,
        "count_Version": "local",
        "count_|_threshold_method": "li",
        "count_|_label": hostile,
        "count_|_FILE_pipeline": [annotation],
        "3a) Import into NEW Dataset": "counted",
    }
    catalog = forms.load_catalog(lambda: settings)
    transport = SSHTransport(SSHOptions(cluster.alias, command_timeout_s=600))
    with Tracker(settings_url=settings.analytics.sqlalchemy_url) as tracker:
        requested = actions.request_runs(
            server.session_as("alice", "lab"), tracker, catalog, answers
        )
        (run_id,) = requested.run_ids
        engine = RunEngine(
            settings, transport, tracker, data_sides={"omero": OmeroSide(server.sudo_connector())}
        )
        engine.drive(run_id)
        run = tracker.get_run(run_id)
    transport.close()

    assert run["state"] == "COMPLETED", run
    assert run["inputs"]["attachments"] == {"pipeline": [annotation]}
    files = [
        server.objects[a.getFile().getId().getValue()] for a in server.of_type("FileAnnotationI")
    ]
    echo = next(
        server.files[f.getId().getValue()] for f in files if f.getName().getValue() == "echo.json"
    )
    echoed = json.loads(echo)
    # the annotation went up under its made-safe name and the job read its bytes
    assert echoed["pipeline"] == {"my_pipeline.cppipe": pipeline.decode()}
    flag = next(a for a in echoed["argv"] if a.startswith("--pipeline="))
    assert flag.endswith(f"{run_id}/data/files/pipeline")
    assert f"--label={hostile}" in echoed["argv"]
    assert len(echoed["inputs"]) == 1  # the image folder holds the one image only
    assert not Path("/tmp/biomero-pwned").exists()
