"""Claiming many runs at once keeps what claiming one does: a free or expired lease is
taken, our own is kept, another live holder's is left alone; reading many runs' failed
attempts at once reads what reading each does (SQLite here; the supervisor's
integration tests run the same on PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine

from biomeroworker.supervisor.attempts import AttemptStore
from biomeroworker.supervisor.leases import CHUNK, LeaseStore


def stores(tmp_path: Path) -> tuple[LeaseStore, LeaseStore, list[float]]:
    engine = create_engine(f"sqlite:///{tmp_path / 'leases.sqlite'}")
    now = [1000.0]
    ours = LeaseStore(engine, "ours", ttl_s=60, clock=lambda: now[0])
    theirs = LeaseStore(engine, "theirs", ttl_s=60, clock=lambda: now[0])
    return ours, theirs, now


def test_claim_all_takes_free_and_expired_runs_and_leaves_live_ones(tmp_path: Path) -> None:
    ours, theirs, now = stores(tmp_path)
    assert theirs.claim("live") and theirs.claim("stale") and ours.claim("mine")
    now[0] += 30
    assert theirs.renew(["live"]) == {"live"}  # "stale" is not renewed
    now[0] += 40  # "stale" expired, "live" has 20 s left
    assert ours.claim_all(["free", "live", "stale", "mine", "free"]) == {"free", "stale", "mine"}
    assert {r: ours.holder_of(r) for r in ("free", "live", "stale", "mine")} == {
        "free": "ours",
        "live": "theirs",
        "stale": "ours",
        "mine": "ours",
    }
    assert theirs.claim_all(["free", "stale"]) == set()


def test_claim_all_claims_more_runs_than_one_statement_holds(tmp_path: Path) -> None:
    ours, theirs, _ = stores(tmp_path)
    runs = [f"run-{i}" for i in range(CHUNK * 2 + 5)]
    assert theirs.claim(runs[CHUNK])
    assert ours.claim_all(runs) == set(runs) - {runs[CHUNK]}
    assert ours.claim_all([]) == set()


def test_attempts_of_many_runs_are_those_of_each(tmp_path: Path) -> None:
    store = AttemptStore(create_engine(f"sqlite:///{tmp_path / 'attempts.sqlite'}"))
    for _ in range(2):
        store.failed("twice", "stage up", "OSError: disk full")
    store.failed("once", "submit job", "KeyError: 'x'")
    runs = ["twice", "never", "once", *(f"run-{i}" for i in range(2500))]
    found = store.of_all(runs)
    assert set(found) == {"twice", "once"}
    assert (found["twice"].step, found["twice"].failed) == ("stage up", 2)
    assert found["once"] == store.of("once")
    assert store.of("never") is None
