"""The glue every OMERO script shares: its session, the tracker, the Message output.

Nothing here runs at parse time; a script calls ``serve`` only after
``omero.scripts.client`` returned (which it does not when the form is only parsed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from biomeroworker.errors import BiomeroError
from biomeroworker.omero.forms import Catalog
from biomeroworker.run_record import RunRecord

log = logging.getLogger(__name__)

Action = Callable[[Any, Mapping[str, Any]], str]


def serve(client: Any, action: Action) -> None:
    """Run ``action(conn, inputs)`` and show its message; a BiomeroError becomes the
    message instead of a traceback (the user can act on it)."""
    from omero.gateway import BlitzGateway
    from omero.rtypes import rstring

    try:
        conn = BlitzGateway(client_obj=client)
        inputs = client.getInputs(unwrap=True)
        try:
            message = action(conn, inputs)
        except BiomeroError as exc:
            message = f"ERROR: {exc}"
        print(message)
        client.setOutput("Message", rstring(message))
    finally:
        client.closeSession()


@contextmanager
def tracker_for(catalog: Catalog) -> Iterator[Any]:
    from biomeroworker.tracking.application import Tracker

    if catalog.settings is None:
        raise BiomeroError("; ".join(catalog.problems) or "no configuration")
    tracker = Tracker.configured(catalog.settings.analytics)
    try:
        yield tracker
    finally:
        tracker.close()


def results_dir(run: RunRecord) -> Path:
    """Where the worker keeps a run's downloaded results (as RunEngine.output_dir)."""
    from biomeroworker.runs import results_dir as engine_results_dir

    return engine_results_dir(run)


def require_admin(conn: Any) -> None:
    if not conn.isAdmin():
        raise BiomeroError("only OMERO administrators may run this script")


def engine_cancel(catalog: Catalog, tracker: Any) -> Callable[[str, str], list[str]]:
    """RunEngine.cancel over the configured transport (opened only when called)."""

    def cancel(run_id: str, reason: str) -> list[str]:
        from biomeroworker.runs import RunEngine
        from biomeroworker.transport import close_all, open_transport

        try:
            engine = RunEngine(catalog.settings, open_transport(catalog.settings), tracker)
            return engine.cancel(run_id, reason)
        finally:
            close_all()

    return cancel


def cluster_partitions(settings: Any) -> Callable[[], Any]:
    """What the cluster offers, asked once (cached) over the configured transport; the
    connection is closed again, a script process holds none while it waits."""
    from biomeroworker.inputs import cluster_key
    from biomeroworker.slurm.offer import cached_partitions, read_offer

    def fetch() -> Any:
        from biomeroworker.slurm.rest.modes import slurm_client
        from biomeroworker.transport import close_all, open_transport

        try:
            return read_offer(slurm_client(settings, open_transport(settings)))
        finally:
            close_all()

    return lambda: cached_partitions(cluster_key(settings), fetch)


def init_environment(catalog: Catalog) -> str:
    from biomeroworker.prepare import init_cluster
    from biomeroworker.transport import close_all, open_transport

    if catalog.settings is None:
        raise BiomeroError("; ".join(catalog.problems))
    try:
        actions = init_cluster(open_transport(catalog.settings), catalog.settings)
        return "\n".join(
            f"{'done   ' if a.done else 'skipped'}  {a.what}: {a.detail}" for a in actions
        )
    finally:
        close_all()


def check_setup(catalog: Catalog) -> str:
    from biomeroworker.checks import run_checks
    from biomeroworker.transport import close_all, open_transport

    if catalog.settings is None:
        return "FAIL  config\n" + "\n".join(f"      {p}" for p in catalog.problems)
    lines = [f"PASS  config: {', '.join(str(p) for p in catalog.settings.sources)}"]
    lines += [f"WARN  workflow {p}" for p in catalog.problems]
    try:
        for check in run_checks(open_transport(catalog.settings), catalog.settings):
            lines.append(f"{'PASS' if check.ok else 'FAIL'}  {check.name}: {check.detail}")
            if not check.ok and check.hint:
                lines.append(f"      hint: {check.hint}")
    finally:
        close_all()
    return "\n".join(lines)
