"""Failed attempts of run steps, kept beside the event store (like the leases).

A step that raises something unexpected is counted here, one row per run: which step,
how many of its attempts failed, the last error and when. A restarted supervisor reads
the count and the time from here, so neither the limit nor the backoff start over. The
event store is left to upstream's event types (biomero reads it after a rollback); the
run's final failure is recorded there as usual.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, Text, insert, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

metadata = MetaData()
attempts = Table(
    "biomero_step_attempt",
    metadata,
    Column("run_id", String(36), primary_key=True),
    Column("step", String(40), nullable=False),
    Column("failed", Integer, nullable=False),
    Column("error", Text, nullable=False),
    Column("at", Float, nullable=False),
)


@dataclass(frozen=True)
class Attempts:
    step: str
    failed: int
    error: str
    at: float  # seconds since the epoch


class AttemptStore:
    def __init__(self, engine: Engine, *, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.clock = clock
        metadata.create_all(engine)

    def failed(self, run_id: str, step: str, error: str) -> int:
        """Count one more failed attempt of ``step``; return how many failed so far.
        A different step than the one recorded starts again at one."""
        now = self.clock()
        with self.engine.begin() as conn:
            try:
                with conn.begin_nested():
                    conn.execute(
                        insert(attempts).values(
                            run_id=run_id, step=step, failed=1, error=error, at=now
                        )
                    )
                return 1
            except IntegrityError:
                pass
            row = conn.execute(
                attempts.select().where(attempts.c.run_id == run_id).with_for_update()
            ).one()
            count = row.failed + 1 if row.step == step else 1
            conn.execute(
                update(attempts)
                .where(attempts.c.run_id == run_id)
                .values(step=step, failed=count, error=error, at=now)
            )
        return count

    def of(self, run_id: str) -> Attempts | None:
        return self.of_all([run_id]).get(run_id)

    def of_all(self, run_ids: Iterable[str]) -> dict[str, Attempts]:
        """The recorded attempts of those of ``run_ids`` that have any, one query per
        thousand runs (a restarted supervisor reads them for every active run at once)."""
        ids = list(dict.fromkeys(run_ids))
        found: dict[str, Attempts] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(ids), 1000):
                chunk = ids[start : start + 1000]
                for row in conn.execute(attempts.select().where(attempts.c.run_id.in_(chunk))):
                    found[row.run_id] = Attempts(row.step, row.failed, row.error, row.at)
        return found
