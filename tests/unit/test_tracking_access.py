"""Who sees which runs, and who is an admin."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from biomeroworker.config import load_settings
from biomeroworker.tracking.access import (
    AccessDeniedError,
    current_user,
    is_admin,
    trusted_admins,
    visible_owner,
)
from biomeroworker.tracking.errors import UnknownRunError


def test_root_is_admin_without_configuration() -> None:
    assert is_admin("root")


def test_names_given_as_admins_are_admins() -> None:
    assert is_admin("carol", {"alice", "carol"})


def test_other_users_are_not_admins() -> None:
    assert not is_admin("dave", {"alice", "carol"})


def test_the_user_is_the_os_account_not_logname(monkeypatch: pytest.MonkeyPatch) -> None:
    import pwd

    monkeypatch.setenv("LOGNAME", "somebody-else")
    monkeypatch.setenv("USER", "somebody-else")
    assert current_user() == pwd.getpwuid(os.getuid()).pw_name


def test_a_user_sees_their_own_runs_by_default() -> None:
    assert visible_owner("alice") == "alice"


def test_all_runs_need_an_admin() -> None:
    with pytest.raises(AccessDeniedError):
        visible_owner("alice", want_all=True)


def test_an_admin_asking_for_all_gets_no_filter() -> None:
    assert visible_owner("carol", want_all=True, admins={"carol"}) is None


def test_a_user_may_not_see_someone_elses_run() -> None:
    with pytest.raises(AccessDeniedError):
        visible_owner("alice", owner="bob")


def test_an_admin_may_see_someone_elses_run() -> None:
    assert visible_owner("root", owner="bob") == "bob"


def test_someone_elses_run_reads_as_not_yours() -> None:
    from biomeroworker.run_record import RunRecord
    from biomeroworker.tracking.access import check_run_access

    run = RunRecord(run_id="abcdef12-0", workflow="w", version="1", user="bob", state="RUNNING")
    with pytest.raises(UnknownRunError, match="not one of your runs"):
        check_run_access(run, "alice", {"carol"})
    check_run_access(run, "carol", {"carol"})


def _settings(tmp_path: Path, admins: str, mode: int = 0o644):  # type: ignore[no-untyped-def]
    repo = Path(__file__).resolve().parents[2]
    text = (repo / "slurm-config.ini").read_text()
    config = tmp_path / "slurm-config.ini"
    config.write_text(text.replace("[WORKER]\n", f"[WORKER]\nadmins = {admins}\n", 1))
    config.chmod(mode)
    return load_settings([config], env={})


@pytest.mark.skipif(os.geteuid() != 0, reason="a root-owned config file needs root")
def test_admins_come_from_a_root_only_config_file(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("BIOMERO_ADMINS", raising=False)
    admins, warnings = trusted_admins(_settings(tmp_path, "alice, carol"))
    assert admins == {"alice", "carol"} and warnings == []


def test_admins_from_a_file_others_may_write_are_ignored(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("BIOMERO_ADMINS", raising=False)
    admins, warnings = trusted_admins(_settings(tmp_path, "alice", mode=0o666))
    assert admins == frozenset()
    assert "is ignored" in warnings[0]


def test_the_callers_biomero_admins_variable_is_ignored_with_a_message(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("BIOMERO_ADMINS", "alice")
    admins, warnings = trusted_admins(None)
    assert admins == frozenset()
    assert "$BIOMERO_ADMINS is ignored" in warnings[0]
