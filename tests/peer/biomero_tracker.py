"""Drive biomero 2.8.3's own tracking (WorkflowTracker and its four view listeners).

Runs with the peer virtualenv's python (tools/install-peer-biomero), never with ours: it
imports biomero, not biomeroworker. The analytics system is wired by biomero's own
``SlurmClient.initialize_analytics_system`` (the code an OMERO script runs); only the
SSH/GitHub parts of ``SlurmClient.__init__`` are skipped.

    python biomero_tracker.py URL record   < runs.json   # record runs, print their ids
    python biomero_tracker.py URL start                  # start the system (catch up)
    python biomero_tracker.py URL reset                  # what "Slurm Init" does: drop
                                                         # the views and replay every event

A run in runs.json: {"name", "description", "user", "group", "tasks": [task...],
"end": "complete" | "fail" | null, "error"}; a task: {"name", "version", "job_id",
"polls": [[status, progress], ...], "end": "complete" | "fail" | null, "message"}.
Tasks follow the calls biomero-scripts' SLURM_Run_Workflow.py makes.
"""

from __future__ import annotations

import json
import logging
import os
import sys

from biomero.slurm_client import SlurmClient


class Analytics:
    """The analytics half of a SlurmClient: biomero's own methods on a plain object
    (a real SlurmClient is a Fabric connection that validates SSH and GitHub on init)."""

    _CONFIG_ENV_VARS = SlurmClient._CONFIG_ENV_VARS
    _get_config_value = staticmethod(SlurmClient._get_config_value)
    initialize_analytics_system = SlurmClient.initialize_analytics_system
    setup_listeners = SlurmClient.setup_listeners
    get_listeners = SlurmClient.get_listeners
    _find_analytics_start_id = SlurmClient._find_analytics_start_id
    bring_listener_uptodate = SlurmClient.bring_listener_uptodate


def analytics(url: str, reset: bool) -> Analytics:
    os.environ["SQLALCHEMY_URL"] = url
    client = Analytics()
    client.track_workflows = True
    client.enable_job_accounting = True
    client.enable_job_progress = True
    client.enable_workflow_analytics = True
    client.sqlalchemy_url = url
    client.analytics_rebuild_start_time = None
    client.analytics_rebuild_days_ago = None
    client.initialize_analytics_system(reset_tables=reset)
    return client


def record(client: Analytics, runs: list[dict]) -> list[dict]:
    tracker = client.workflowTracker
    recorded = []
    for run in runs:
        wf_id = tracker.initiate_workflow(
            run["name"], run.get("description", ""), run["user"], run["group"]
        )
        task_ids = []
        for task in run["tasks"]:
            task_id = tracker.add_task_to_workflow(
                wf_id, task["name"], task.get("version"), task.get("input", ""), {}
            )
            task_ids.append(str(task_id))
            tracker.start_task(task_id)
            if task.get("job_id") is not None:
                tracker.add_job_id(task_id, task["job_id"])
            for status, progress in task.get("polls", []):
                tracker.update_task_status(task_id, status)
                if progress is not None:
                    tracker.update_task_progress(task_id, progress)
            if task.get("end") == "complete":
                tracker.complete_task(task_id, task.get("message", "done"))
            elif task.get("end") == "fail":
                tracker.fail_task(task_id, task.get("message", "failed"))
        if run.get("end") == "complete":
            tracker.complete_workflow(wf_id)
        elif run.get("end") == "fail":
            tracker.fail_workflow(wf_id, run.get("error", "Workflow execution failed"))
        recorded.append({"run_id": str(wf_id), "task_ids": task_ids})
    return recorded


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    url, command = sys.argv[1], sys.argv[2]
    client = analytics(url, reset=command == "reset")
    if command == "record":
        print(json.dumps(record(client, json.load(sys.stdin))))
    elif command not in ("start", "reset"):
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main()
