"""Provenance key-value pairs for what a run imports: pure, no omero import.

Every object a run creates in OMERO carries one map annotation in namespace
``biomero/workflow`` with the run's identity (run id, workflow, version, user,
parameters, job ids) plus what the object is (``kind``), which result file it came
from (``result``) and where it was put (``target``). The run-level summary also gets a
``biomero/workflow/task/<workflow>`` annotation with the job's details.

The (kind, result, target) triple is what makes import idempotent: an object whose
triple is already annotated for this run is not created again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from biomeroworker.run_record import RunRecord, thawed

NS_WORKFLOW = "biomero/workflow"
NS_TASK_PREFIX = "biomero/workflow/task/"
RUN_KEY = "run_id"
KIND_KEY = "kind"
RESULT_KEY = "result"
TARGET_KEY = "target"

Done = tuple[str, str, str]


def task_namespace(name: str) -> str:
    return NS_TASK_PREFIX + name


def run_pairs(run: RunRecord) -> list[tuple[str, str]]:
    """The pairs every annotation of this run carries."""
    pairs = [
        (RUN_KEY, run.run_id),
        ("workflow", run.workflow),
        ("version", run.version),
        ("user", run.user),
        ("job_ids", ",".join(run.job_ids())),
    ]
    for name, value in sorted(run.parameters.items()):
        pairs.append((f"param.{name}", json.dumps(thawed(value))))
    return pairs


def object_pairs(run: RunRecord, kind: str, result: str, target: str) -> list[tuple[str, str]]:
    return [*run_pairs(run), (KIND_KEY, kind), (RESULT_KEY, result), (TARGET_KEY, target)]


def task_pairs(run: RunRecord) -> list[tuple[str, str]]:
    """One job task's details, for the ``biomero/workflow/task/<name>`` annotation."""
    pairs = [(RUN_KEY, run.run_id)]
    for task in run.tasks:
        if task.kind != "job":
            continue
        pairs += [
            ("task_id", task.task_id),
            ("slurm_job_id", task.slurm_job_id or ""),
            ("job_state", task.job_state or ""),
            ("elapsed_s", "" if task.elapsed_s is None else f"{task.elapsed_s:g}"),
        ]
    return pairs


def done_set(annotations: Iterable[dict[str, str]]) -> set[Done]:
    """The (kind, result, target) triples a run's existing annotations record."""
    return {
        (a.get(KIND_KEY, ""), a.get(RESULT_KEY, ""), a.get(TARGET_KEY, ""))
        for a in annotations
        if a.get(KIND_KEY)
    }


def image_marker(run_id: str, result: str) -> str:
    """Written into a new image's description before its pixels are uploaded: an image
    with this marker but no provenance annotation was left half-made by a crash."""
    return f"biomero run {run_id}: {result}"


def marker_pattern(run_id: str) -> str:
    return f"%biomero run {run_id}: %"
