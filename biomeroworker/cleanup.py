"""`biomero cleanup`: remove remote run folders that finished runs left behind.

It fails closed. A folder in ``slurm_data_path`` is removed only when it is named by a
run id, the tracking database knows that run, the run has finished (completed, failed
or cancelled) and it ended more than ``days`` ago by its own record: a running job
never touches its folder, so the folder's mtime says nothing about the run. A folder
the database does not know is kept and reported (an empty or wrong database makes
every run unknown, so it removes nothing). A database error stops the cleanup before
anything is removed.
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from biomeroworker.config import Settings
from biomeroworker.errors import BiomeroError, CommandError
from biomeroworker.run_record import RunRecord
from biomeroworker.tracking.application import Tracker
from biomeroworker.tracking.errors import UnknownRunError
from biomeroworker.tracking.store import ENV_URL, redact
from biomeroworker.transport.base import Transport

# Run folders are named by run id (a UUID); nothing else in slurm_data_path is touched.
_RUN_FOLDER = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass
class CleanupPlan:
    """What a cleanup removes and what it keeps, with the reason for each kept folder."""

    database: str
    remove: list[str] = field(default_factory=list)
    active: list[str] = field(default_factory=list)
    recent: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    database_configured: bool = True

    def notes(self) -> list[str]:
        lines = []
        if self.active:
            lines.append(f"kept {len(self.active)} folder(s) of runs still under way")
        if self.recent:
            lines.append(f"kept {len(self.recent)} folder(s) of runs that ended too recently")
        if self.unknown:
            lines.append(
                f"kept {len(self.unknown)} folder(s) whose run the tracking database "
                f"{self.database} does not know: cleanup removes only runs it can see "
                f"have ended; remove those by hand if you are sure"
            )
            if not self.database_configured:
                lines.append(
                    f"no tracking database is configured ([ANALYTICS] sqlalchemy_url or "
                    f"${ENV_URL}), so this used the default SQLite file; point it at the "
                    f"database the supervisor records runs in"
                )
        return lines


def _ended(run: RunRecord) -> datetime | None:
    moment = run.ended_at or run.updated_at or run.created_at
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _run_folders(transport: Transport, data: str) -> list[str]:
    found = transport.run(
        ["find", data, "-mindepth", "1", "-maxdepth", "1", "-type", "d", "-printf", "%f\\0"],
        check=False,
        idempotent=True,
    )
    if found.exit_code != 0:
        if "No such file" in found.stderr:
            return []
        raise CommandError(list(found.argv), found.exit_code, found.stdout, found.stderr)
    return sorted(name for name in found.stdout.split("\0") if _RUN_FOLDER.fullmatch(name))


def plan_cleanup(
    transport: Transport,
    tracker: Tracker,
    settings: Settings,
    days: float,
    *,
    now: datetime | None = None,
) -> CleanupPlan:
    """Decide for every run folder; reads the database for each, removes nothing."""
    if days < 0:
        raise BiomeroError("--older-than takes a number of days >= 0")
    configured = bool(settings.analytics.sqlalchemy_url or os.environ.get(ENV_URL, "").strip())
    plan = CleanupPlan(database=redact(tracker.url), database_configured=configured)
    cutoff = (now or datetime.now(UTC)) - timedelta(days=days)
    data = settings.slurm.slurm_data_path
    for name in _run_folders(transport, data):
        path = posixpath.join(data, name)
        try:
            run = tracker.run_record(name)
        except UnknownRunError:
            plan.unknown.append(path)
            continue
        except Exception as exc:  # any doubt about the record: remove nothing at all
            raise BiomeroError(
                f"cannot read run {name} from the tracking database {plan.database}: {exc}. "
                f"Nothing was removed"
            ) from exc
        ended = _ended(run)
        if not run.finished:
            plan.active.append(path)
        elif ended is None or ended > cutoff:
            plan.recent.append(path)
        else:
            plan.remove.append(path)
    return plan


def remove_old_runs(
    transport: Transport, tracker: Tracker, settings: Settings, days: float, dry_run: bool
) -> CleanupPlan:
    """Remove the folders of runs that ended more than ``days`` ago (see the module)."""
    plan = plan_cleanup(transport, tracker, settings, days)
    if plan.remove and not dry_run:
        transport.run(["rm", "-rf", "--", *plan.remove], idempotent=True)
    return plan
