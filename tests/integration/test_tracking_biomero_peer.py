"""Taking over a biomero 2.8.3 tracking database, and rolling back to biomero.

biomero 2.8.3 (PyPI) runs in its own virtualenv (tools/install-peer-biomero); its own
WorkflowTracker and four view listeners are driven in a subprocess by
tests/peer/biomero_tracker.py. Each stage compares the four dashboard tables and the
dashboards' own SQL before and after, on real PostgreSQL.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any
from uuid import UUID

import numpy
import pytest
import sqlalchemy as sa
import tifffile

from biomeroworker import __version__
from biomeroworker.checks import tracking_database_check
from biomeroworker.config import load_settings
from biomeroworker.prepare import init_cluster
from biomeroworker.runs import RunEngine
from biomeroworker.tracking import Tracker, TrackingStoreError, UnknownRunError
from biomeroworker.tracking import tables as t
from biomeroworker.transport.ssh import SSHOptions, SSHTransport

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DRIVER = REPO / "tests" / "peer" / "biomero_tracker.py"

# The Metabase cards OMERO.biomero embeds ("BIOMERO Analytics" dashboard), from the public
# card definitions: github.com/TorecLuik/NL-BIOMERO-SURF, metabase/dashboards.json
# (commit 19f92c4af8eec7e74156d1401f89c8bf4296fa17). Native cards are copied with their
# optional [[and {{filter}}]] clauses left out (no filter chosen); the "question" cards
# are written out as the SQL Metabase runs for them. USER_FILTERED is the V2 count with
# the user filter the embedding locks to the OMERO user id.
DASHBOARD_SQL = {  # constants only
    "Workflow execution count - V2": """SELECT task_name, task_version, COUNT(*) AS execution_count
        FROM biomero_task_execution WHERE 1=1 AND
        task_name NOT IN ('SLURM_Get_Result.py', 'SLURM_Remote_Conversion.py',
        'CONVERT_ZARR_TO_TIFF', '_SLURM_Image_Transfer.py', 'SLURM_Get_Results.py',
        'SLURM_Run_Workflow.py') GROUP BY task_name, task_version ORDER BY execution_count DESC""",
    "Average workflow duration - V2": """SELECT task_name, task_version,
        AVG(EXTRACT(EPOCH FROM (end_time - start_time))) AS avg_duration_seconds
        FROM biomero_task_execution WHERE end_time IS NOT NULL AND
        task_name NOT IN ('SLURM_Get_Result.py', 'SLURM_Remote_Conversion.py',
        'CONVERT_ZARR_TO_TIFF', '_SLURM_Image_Transfer.py', 'SLURM_Get_Results.py',
        'SLURM_Run_Workflow.py')
        GROUP BY task_name, task_version ORDER BY avg_duration_seconds DESC""",
    "Workflow execution count": """SELECT task_name, task_version, COUNT(*) AS execution_count
        FROM biomero_task_execution WHERE 1=1
        GROUP BY task_name, task_version ORDER BY execution_count DESC""",
    "Average workflow duration": """SELECT task_name, task_version,
        AVG(EXTRACT(EPOCH FROM (end_time - start_time))) AS avg_duration_seconds
        FROM biomero_task_execution WHERE end_time IS NOT NULL
        GROUP BY task_name, task_version ORDER BY avg_duration_seconds DESC""",
    "Workflow usage over time": """SELECT DATE (start_time) AS date, COUNT(*) AS execution_count
        FROM biomero_task_execution WHERE 1=1 GROUP BY DATE (start_time) ORDER BY date ASC""",
    "errors": """SELECT task_name, task_version, error_type, COUNT(*) AS failure_count
        FROM biomero_task_execution WHERE error_type IS NOT NULL
        GROUP BY task_name, task_version, error_type ORDER BY failure_count DESC""",
    "Biomero Workflow Progress": """SELECT * FROM biomero_workflow_progress_view
        ORDER BY start_time DESC""",
    "Slurm Jobs Status": """SELECT status, COUNT(*) AS count FROM biomero_job_progress_view
        GROUP BY status""",
    "Slurm jobs - COMPLETED": """SELECT * FROM biomero_job_progress_view
        WHERE status = 'COMPLETED' ORDER BY slurm_job_id DESC""",
    "Slurm jobs - NOT COMPLETED": """SELECT * FROM biomero_job_progress_view
        WHERE status <> 'COMPLETED' ORDER BY slurm_job_id DESC""",
    "Biomero Job View, Aantal, Grouped by User": """SELECT "user", COUNT(*) AS count
        FROM biomero_job_view GROUP BY "user" ORDER BY "user" ASC""",
    "Biomero Job View, Aantal, Grouped by Group": """SELECT "group", COUNT(*) AS count
        FROM biomero_job_view GROUP BY "group" ORDER BY "group" ASC""",
    "Workflowtracker Events, Aantal": "SELECT COUNT(*) AS count FROM workflowtracker_events",
    "USER_FILTERED": """SELECT task_name, task_version, COUNT(*) AS execution_count
        FROM biomero_task_execution WHERE 1=1 AND user_id = 5 AND
        task_name NOT IN ('SLURM_Get_Result.py', 'SLURM_Remote_Conversion.py',
        'CONVERT_ZARR_TO_TIFF', '_SLURM_Image_Transfer.py', 'SLURM_Get_Results.py',
        'SLURM_Run_Workflow.py') GROUP BY task_name, task_version ORDER BY execution_count DESC""",
}


def upstream_run(user: int, group: int, workflow: str, job: int, *, end: str = "complete"):
    """A run as biomero-scripts' SLURM_Run_Workflow.py records it (2.8.2)."""
    job_end = "complete" if end == "complete" else "fail"
    final = "COMPLETED" if end == "complete" else "FAILED"
    return {
        "name": "Slurm Workflow",
        "description": "Script to run a workflow on the Slurm cluster.\n2.8.2",
        "user": user,
        "group": group,
        "end": end,
        "error": "Workflow execution failed",
        "tasks": [
            {"name": "_SLURM_Image_Transfer.py", "version": "2.8.2", "end": "complete"},
            {"name": "SLURM_Remote_Conversion.py", "version": "2.8.2", "end": "complete"},
            {
                "name": "CONVERT_ZARR_TO_TIFF",
                "version": "v1.16.0",
                "job_id": job - 1,
                "polls": [["PENDING", None], ["COMPLETED", "100%"]],
            },
            {
                "name": workflow,
                "version": "v1.4.0",
                "job_id": job,
                "polls": [["PENDING", "0%"], ["RUNNING", "43%"], [final, "100%"]],
                "end": job_end,
                "message": f"Slurm job state {final}" if end != "complete" else "done",
            },
            *(
                [{"name": "SLURM_Get_Results.py", "version": "2.8.2", "end": "complete"}]
                if end == "complete"
                else []
            ),
        ],
    }


HISTORY = [
    upstream_run(5, 3, "cellpose", 102),
    upstream_run(6, 3, "cellpose", 112, end="fail"),
    upstream_run(5, 4, "stardist", 122),
    # biomero's library use without OMERO (SlurmClient.run_workflow): user/group -1
    {
        "name": "cellpose",
        "description": "v1.4.0",
        "user": -1,
        "group": -1,
        "end": "complete",
        "tasks": [
            {
                "name": "cellpose",
                "version": "v1.4.0",
                "job_id": 131,
                "polls": [["COMPLETED", None]],
                "end": "complete",
            }
        ],
    },
    # interrupted: the script died before it finished (a restart, say)
    {
        "name": "Slurm Workflow",
        "description": "x",
        "user": 7,
        "group": 3,
        "end": None,
        "tasks": [{"name": "_SLURM_Image_Transfer.py", "version": "2.8.2", "end": None}],
    },
]


def peer(python: str, url: str, command: str, runs: list[dict] | None = None) -> list[dict]:
    """biomero 2.8.3's tracker on ``url``; a failure of biomero is a failure of the test."""
    proc = subprocess.run(
        [python, str(DRIVER), url, command],
        input=json.dumps(runs or []),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"biomero's tracker failed on our database:\n{proc.stderr}"
    lines = proc.stdout.strip().splitlines()
    return json.loads(lines[-1]) if command == "record" else []


def dump(url: str) -> dict[str, set[tuple[str, ...]]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = {
            table.name: {tuple(map(str, row)) for row in conn.execute(sa.select(table))}
            for table in t.DASHBOARD_TABLES
        }
    engine.dispose()
    return rows


def answers(url: str) -> dict[str, list[tuple[Any, ...]]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        found = {
            name: [tuple(r) for r in conn.execute(sa.text(sql))]
            for name, sql in DASHBOARD_SQL.items()
        }
    engine.dispose()
    return found


def without(
    rows: dict[str, set[tuple[str, ...]]], ids: set[str]
) -> dict[str, set[tuple[str, ...]]]:
    """The rows that mention none of ``ids`` (run, task or job ids)."""
    return {name: {r for r in table if not ids & set(r)} for name, table in rows.items()}


def ids_of(recorded: list[dict], jobs: list[int]) -> set[str]:
    found = {str(j) for j in jobs}
    for run in recorded:
        found |= {run["run_id"], *run["task_ids"]}
    return found


def events(url: str) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT id, originator_id, originator_version, topic, state "
                "FROM workflowtracker_events ORDER BY id"
            )
        ).all()
    engine.dispose()
    return [tuple(r) for r in rows]


def our_runs(tracker: Tracker) -> list[str]:
    cli = tracker.record_run_requested(workflow="cellpose", version="v1.4.0", user_name="alice")
    export = tracker.start_task(cli, "stage_up")
    tracker.record_progress(export, "2 files, 1.0 MB")
    tracker.complete_task(export)
    job = tracker.start_task(cli, "job")
    tracker.record_job_submitted(job, "901", "localslurm")
    tracker.record_job_status(job, "PENDING")
    tracker.record_job_status(job, "RUNNING")
    tracker.record_progress(job, "1/4")
    tracker.record_job_status(job, "COMPLETED", 0, 12.0, 4096)
    tracker.record_result(job, "/tmp/out")
    tracker.complete_task(job)
    tracker.complete_run(cli, "/tmp/out")

    omero = tracker.record_run_requested(
        workflow="stardist", version="v0.9", user_name="bob", omero_user_id=5, omero_group_id=3
    )
    for kind in ("export", "stage_up", "convert"):
        tracker.complete_task(tracker.start_task(omero, kind))
    job = tracker.start_task(omero, "job")
    tracker.record_job_submitted(job, "902_1", "localslurm")  # an array job id
    tracker.record_job_status(job, "FAILED", 3)
    tracker.record_progress(job, "resubmission 1/1 after FAILED: more mem")
    tracker.fail_task(job, "FAILED", "job 902_1 FAILED (exit 3): boom")
    tracker.fail_run(omero, "FAILED", "job: boom")

    cancelled = tracker.record_run_requested(
        workflow="cellpose", version="v1.4.0", user_name="carol"
    )
    tracker.cancel_run(cancelled, "changed my mind")
    return [cli, omero, cancelled]


def config_for(cluster, url: str, folder: Path) -> Path:  # type: ignore[no-untyped-def]
    extra = (
        "[WORKFLOWS]\n"
        "misbehave = misbehave\n"
        f"misbehave_repo = {REPO}/tests/fixtures/misbehave\n"
        "misbehave_job_mem = 100M\n"
    )
    text = cluster.config_path.read_text().replace("[WORKFLOWS]\n", extra, 1)
    config = folder / "slurm-config.ini"
    config.write_text(text.replace("[ANALYTICS]\n", f"[ANALYTICS]\nsqlalchemy_url = {url}\n"))
    return config


def localslurm_run(config: Path, cluster, tracker: Tracker, folder: Path) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """A real run of the misbehave workflow on localslurm, through RunEngine."""
    settings = load_settings(config_file=config)
    image = folder / "image.tif"
    tifffile.imwrite(image, numpy.zeros((16, 16), dtype=numpy.uint8))
    transport = SSHTransport(SSHOptions(cluster.alias, command_timeout_s=600))
    try:
        list(init_cluster(transport, settings))
        engine = RunEngine(settings, transport, tracker)
        run_id = engine.request("misbehave", [image], {}, output_dir=folder / "out")
        engine.drive(run_id)
    finally:
        transport.close()
    return tracker.get_run(run_id)


def test_a_biomero_database_is_taken_over_and_biomero_can_come_back(
    cluster, new_database, peer_python, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    with new_database() as url:
        history = peer(peer_python, url, "record", HISTORY)
        config = config_for(cluster, url, tmp_path)
        settings = load_settings(config_file=config)
        check = tracking_database_check(settings)
        assert check.ok, check.detail
        assert check.detail == (
            "biomero tracking database: 5 runs from biomero 2.x, read-only history"
        )
        biomero_rows, biomero_answers = dump(url), answers(url)
        upstream_events = events(url)
        assert sorted(biomero_answers["Workflow execution count - V2"]) == [
            ("cellpose", "v1.4.0", 3),
            ("stardist", "v1.4.0", 1),
        ]

        # 1. we open it: history visible, nothing rewritten
        with Tracker(url) as tracker:
            runs = {r["run_id"]: r for r in tracker.list_runs()}
            assert set(runs) == {r["run_id"] for r in history}
            first = runs[history[0]["run_id"]]
            assert (first["workflow"], first["version"], first["user"], first["state"]) == (
                "cellpose",
                "v1.4.0",
                "omero-user-5",
                "COMPLETED",
            )
            assert first["origin"] == "biomero"
            assert runs[history[3]["run_id"]]["user"] == "biomero"  # -1: no OMERO user
            assert runs[history[1]["run_id"]]["state"] == "FAILED"
            assert tracker.active_runs() == []  # the interrupted one is history, not work
            with pytest.raises(UnknownRunError, match="read-only history"):
                tracker.cancel_run(history[4]["run_id"])
            stats = tracker.stats(period="year")
            assert sum(row["runs"] for row in stats["runs"]) == 5
            assert dump(url) == biomero_rows
            assert answers(url) == biomero_answers

            # 2. rebuild: the same rows as biomero's own views wrote
            tracker.rebuild()
            assert dump(url) == biomero_rows

            # 3. our runs, appended beside the history: through the Tracker, and a real
            # run on localslurm through RunEngine
            mine = our_runs(tracker)
            real = localslurm_run(config, cluster, tracker, tmp_path)
            assert real["state"] == "COMPLETED"
        ours = dump(url)
        assert tracking_database_check(settings).detail == (
            "biomero tracking database: 5 runs from biomero 2.x, read-only history; "
            "4 runs of this worker"
        )
        assert events(url)[: len(upstream_events)] == upstream_events  # never altered
        execution = {r for r in ours["biomero_task_execution"] if r[1] in ("cellpose", "stardist")}
        assert ("cellpose", "v1.4.0", "-1", "-1", "COMPLETED") in {r[1:6] for r in execution}
        assert any(
            r[1:6] == ("stardist", "v0.9", "5", "3", "FAILED")
            and r[8] == "job 902_1 FAILED (exit 3): boom"
            for r in execution
        )
        assert ("901", "-1", "-1") in {r[:3] for r in ours["biomero_job_view"]}  # CLI: -1
        assert ("902", "5", "3") in {r[:3] for r in ours["biomero_job_view"]}  # array: base id
        progress = {r[0]: r for r in ours["biomero_workflow_progress_view"]}
        assert progress[mine[0]][1:3] == ("DONE", "100%")
        assert progress[mine[0]][7] == "cellpose"  # main_task_name: the workflow
        assert progress[mine[1]][1] == "FAILED"
        assert progress[mine[2]][1] == "FAILED"  # upstream has no CANCELLED
        steps = {r[1] for r in ours["biomero_task_execution"]}
        assert {"_SLURM_Image_Transfer.py", "CONVERT_ZARR_TO_TIFF"} <= steps
        assert not steps & {"job", "export", "stage_up", "convert", "stage_down", "import"}
        versions = {
            r[1]: r[2] for r in ours["biomero_task_execution"] if r[0] not in ids_of(history, [])
        }
        assert versions["_SLURM_Image_Transfer.py"] == __version__
        job = next(task for task in real["tasks"] if task["kind"] == "job")
        assert {r[0]: r for r in ours["biomero_task_execution"]}[job["task_id"]][1:6] == (
            "misbehave",
            real["version"],
            "-1",
            "-1",
            "COMPLETED",
        )
        assert (job["slurm_job_id"], "-1", "-1", job["task_id"]) in ours["biomero_job_view"]
        assert progress[real["run_id"]][1:3] + progress[real["run_id"]][7:8] == (
            "DONE",
            "100%",
            "misbehave",
        )
        v2 = dict(((n, v), c) for n, v, c in answers(url)["Workflow execution count - V2"])
        assert v2 == {
            ("cellpose", "v1.4.0"): 4,
            ("stardist", "v1.4.0"): 1,
            ("stardist", "v0.9"): 1,
            ("misbehave", real["version"]): 1,
        }

        # 4. rollback: biomero's tracker starts on our database and records a new run
        later = peer(peer_python, url, "record", [upstream_run(5, 3, "cellpose", 142)])
        rolled = dump(url)
        assert without(rolled, ids_of(later, [141, 142])) == ours  # our rows, as biomero sees them
        assert answers(url)["Workflowtracker Events, Aantal"][0][0] == len(events(url))

        # 5. forward again: we read biomero's new run; a rebuild gives biomero's rows
        with Tracker(url) as tracker:
            assert later[0]["run_id"] in {r["run_id"] for r in tracker.list_runs()}
            assert dump(url) == rolled
            tracker.rebuild()
            assert dump(url) == rolled

        # 6. biomero's own "Slurm Init" rebuild replays our events without failing. It
        # starts after notification 1 (eventsourcing 9.5's pull_and_process start is
        # exclusive), so the oldest run loses its rows there: biomero's bug, not ours.
        peer(peer_python, url, "reset")
        reset = dump(url)
        oldest = ids_of([history[0]], [101, 102])
        assert without(reset, oldest) == without(rolled, oldest)

        # 7. a database it cannot share faithfully is refused, with the reason
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE biomero_task_execution ADD COLUMN queue_s FLOAT"))
        check = tracking_database_check(settings)
        assert not check.ok
        assert "biomero_task_execution has another shape" in check.detail
        with pytest.raises(TrackingStoreError, match="cannot be shared: biomero_task_execution"):
            Tracker(url)
        with engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE biomero_task_execution DROP COLUMN queue_s"))
            conn.execute(
                sa.text(
                    "INSERT INTO workflowtracker_events "
                    "(originator_id, originator_version, topic, state) VALUES "
                    "(:id, 0, 'biomero.eventsourcing:WorkflowRun.WorkflowPaused', '{}')"
                ),
                {"id": UUID(int=1)},
            )
        engine.dispose()
        check = tracking_database_check(settings)
        assert not check.ok
        assert "WorkflowRun.WorkflowPaused" in check.detail
        with pytest.raises(TrackingStoreError, match="does not know"):
            Tracker(url)


def test_tables_we_create_serve_biomero_and_the_dashboards(new_database, peer_python) -> None:  # type: ignore[no-untyped-def]
    with new_database() as ours_url, new_database() as theirs_url:
        with Tracker(ours_url) as tracker:
            mine = our_runs(tracker)
        ours = dump(ours_url)
        # the same DDL as biomero 2.8.3's models, NOT NULL included
        peer(peer_python, theirs_url, "start")

        def shape(url: str) -> dict[str, list[tuple[str, str, bool]]]:
            engine = sa.create_engine(url)
            inspector = sa.inspect(engine)
            found = {
                table.name: sorted(
                    (c["name"], str(c["type"]), c["nullable"])
                    for c in inspector.get_columns(table.name)
                )
                for table in t.DASHBOARD_TABLES
            }
            engine.dispose()
            return found

        assert shape(ours_url) == shape(theirs_url)
        # biomero's tracker on tables we created: our rows stay what they were
        later = peer(peer_python, ours_url, "record", [upstream_run(5, 3, "cellpose", 142)])
        assert without(dump(ours_url), ids_of(later, [141, 142])) == ours
        assert {r[0] for r in ours["biomero_workflow_progress_view"]} == set(mine)
