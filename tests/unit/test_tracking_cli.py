"""`biomero status`, `biomero stats` and `biomero tracking rebuild` over an SQLite store."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from biomeroworker.cli import stats, status, tracking
from biomeroworker.tracking import Tracker, UnknownRunError
from biomeroworker.tracking.access import AccessDeniedError


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="biomero")
    parser.add_argument("--config")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (status, stats, tracking):
        module.register(sub)
    args = parser.parse_args(argv)
    return args.func(args)


def _as_user(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """The commands take the user from the OS account; these tests pretend to be one."""
    monkeypatch.setattr("biomeroworker.tracking.access.current_user", lambda: name)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    url = f"sqlite:///{tmp_path / 'tracking.sqlite'}"
    monkeypatch.setenv("SQLALCHEMY_URL", url)
    monkeypatch.delenv("BIOMERO_ADMINS", raising=False)
    monkeypatch.delenv("BIOMERO_CONFIG", raising=False)
    _as_user(monkeypatch, "alice")
    ids = {}
    with Tracker(url) as tracker:
        for user in ("alice", "bob"):
            run_id = tracker.record_run_requested(workflow="cellpose", version="v1", user_name=user)
            job = tracker.start_task(run_id, "job")
            tracker.record_job_submitted(job, "100" if user == "alice" else "200", "c")
            tracker.record_job_status(job, "COMPLETED", 0, 30.0, 2**20)
            tracker.complete_task(job)
            if user == "bob":
                tracker.fail_run(run_id, "ImportError", "no dataset")
            ids[user] = run_id
    return ids


def test_status_lists_only_the_callers_runs(store: dict[str, str], capsys) -> None:
    assert cli("status", "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in shown] == [store["alice"]]


def test_status_all_is_refused_to_a_non_admin(store: dict[str, str]) -> None:
    with pytest.raises(AccessDeniedError, match="--all needs an admin"):
        cli("status", "--all")


def test_status_all_shows_everyones_runs_to_an_admin(store, capsys, monkeypatch) -> None:
    _as_user(monkeypatch, "root")
    cli("status", "--all", "--json")
    assert {r["user"] for r in json.loads(capsys.readouterr().out)} == {"alice", "bob"}


def test_status_of_someone_elses_run_is_not_shown(store: dict[str, str]) -> None:
    with pytest.raises(UnknownRunError):
        cli("status", store["bob"])


def test_status_of_one_run_prints_its_steps(store: dict[str, str], capsys) -> None:
    cli("status", store["alice"][:8])
    out = capsys.readouterr().out
    assert store["alice"] in out
    assert "COMPLETED" in out
    assert "100" in out


def test_status_table_names_each_run(store: dict[str, str], capsys) -> None:
    cli("status")
    assert store["alice"][:8] in capsys.readouterr().out


def test_biomero_admins_in_the_environment_makes_nobody_an_admin(store, capsys, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("BIOMERO_ADMINS", "alice")
    with pytest.raises(AccessDeniedError, match="--all needs an admin"):
        cli("status", "--all")
    assert "$BIOMERO_ADMINS is ignored" in capsys.readouterr().err


def test_stats_json_counts_the_admins_view_of_all_users(store, capsys, monkeypatch) -> None:
    _as_user(monkeypatch, "root")
    cli("stats", "--all", "--json")
    result = json.loads(capsys.readouterr().out)
    assert {(r["user"], r["runs"]) for r in result["runs"]} == {("alice", 1), ("bob", 1)}
    assert result["failures"] == [{"error_type": "ImportError", "step": "job", "runs": 1}]
    assert {r["user"]: r["max_rss_bytes"] for r in result["slurm_use"]} == {
        "alice": 2**20,
        "bob": 2**20,
    }


def test_stats_tables_print_the_four_analyses(store: dict[str, str], capsys) -> None:
    cli("stats")
    out = capsys.readouterr().out
    for title in ("Runs per month", "Duration per step", "Failures by cause", "Slurm use"):
        assert title in out


def test_tracking_rebuild_reports_the_events_replayed(store: dict[str, str], capsys) -> None:
    cli("tracking", "rebuild")
    # per run: requested, task added, task started, job submitted, status, completed; bob failed
    assert "replayed 13 events" in capsys.readouterr().out


def test_status_pages_name_the_command_for_the_next_page(store, capsys, monkeypatch) -> None:
    _as_user(monkeypatch, "root")
    cli("status", "--all", "--limit", "1", "--json")
    captured = capsys.readouterr()
    (first,) = json.loads(captured.out)
    hint = captured.err.strip()
    assert hint == f"older runs: biomero status --all --limit 1 --after {first['run_id']}"
    cli(*hint.split()[3:], "--json")
    captured = capsys.readouterr()
    (second,) = json.loads(captured.out)
    assert {first["user"], second["user"]} == {"alice", "bob"}
    assert captured.err == ""  # the last page


def test_status_after_someone_elses_run_is_refused(store: dict[str, str]) -> None:
    with pytest.raises(UnknownRunError):
        cli("status", "--after", store["bob"])
