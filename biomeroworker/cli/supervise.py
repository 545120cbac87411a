"""`biomero supervise`: the long-running process that drives recorded runs."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("supervise", help="drive recorded runs to their end (runs until stopped)")
    p.add_argument("--lease-seconds", type=float, default=60.0, help="lease length (default 60)")
    p.add_argument("--workers", type=int, default=2, help="steps run at once (default 2)")
    p.add_argument("--once", action="store_true", help="run one cycle and exit (for scripts)")
    p.add_argument(
        "--status-dir",
        type=Path,
        default=Path(os.environ["BIOMERO_RUN_DIR"]) if os.environ.get("BIOMERO_RUN_DIR") else None,
        help="write `cycle` (time of the last cycle) and `stalled` (runs waiting on a job "
        "no query can see) here for the healthcheck (default $BIOMERO_RUN_DIR)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging
    import signal

    from biomeroworker.cli.common import settings_from
    from biomeroworker.redaction import redact_logs
    from biomeroworker.runs import RunEngine
    from biomeroworker.supervisor.leases import LeaseStore
    from biomeroworker.supervisor.loop import Supervisor, default_holder
    from biomeroworker.tracking.application import Tracker, dashboards_of
    from biomeroworker.transport import close_all, open_transport

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    redact_logs()
    settings = settings_from(args)
    tracker = Tracker.configured(settings.analytics)
    sides = _data_sides()
    engine = RunEngine(settings, open_transport(settings), tracker, data_sides=sides)
    leases = LeaseStore(tracker.engine, default_holder(), ttl_s=args.lease_seconds)

    def reload() -> tuple[object, object]:
        fresh = settings_from(args)
        transport = open_transport(fresh)
        # [ANALYTICS] enable_* act from the next event on, as the other keys do.
        tracker.use_dashboards(dashboards_of(fresh.analytics))
        return fresh, transport

    supervisor = Supervisor(
        engine, leases, workers=args.workers, status_dir=args.status_dir, reload=reload
    )
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: supervisor.stop())
    try:
        if args.once:
            supervisor.cycle()
            supervisor.shutdown()
        else:
            supervisor.run_forever()
    finally:
        for side in sides.values():
            side.close()  # type: ignore[attr-defined]
        close_all()
        tracker.close()
    return 0


def _data_sides() -> dict[str, object]:
    """OMERO export/import when OMERO_HOST, OMERO_USER and OMERO_PASSWORD are set
    (an admin with the Sudo privilege: runs act as their own user); else local only."""
    import logging
    import os

    from biomeroworker.errors import ConfigError

    if not os.environ.get("OMERO_HOST"):
        logging.getLogger(__name__).info("OMERO not configured: driving local runs only")
        return {}
    try:
        from biomeroworker.omero.side import OmeroSide
    except ImportError as exc:
        raise ConfigError(
            f"OMERO_HOST is set but omero-py cannot be imported ({exc}): install it "
            "(tools/install-omero-py) or unset OMERO_HOST"
        ) from exc
    return {"omero": OmeroSide.from_env()}
