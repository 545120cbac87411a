"""Who sees which runs."""

from __future__ import annotations

import pytest

from biomeroworker.tracking.access import AccessDeniedError, is_admin, visible_owner


def test_root_is_admin_without_configuration() -> None:
    assert is_admin("root", env={})


def test_names_in_biomero_admins_are_admins() -> None:
    assert is_admin("carol", env={"BIOMERO_ADMINS": "alice, carol bob"})


def test_other_users_are_not_admins() -> None:
    assert not is_admin("dave", env={"BIOMERO_ADMINS": "alice,carol"})


def test_a_user_sees_their_own_runs_by_default() -> None:
    assert visible_owner("alice", env={}) == "alice"


def test_all_runs_need_an_admin() -> None:
    with pytest.raises(AccessDeniedError):
        visible_owner("alice", want_all=True, env={})


def test_an_admin_asking_for_all_gets_no_filter() -> None:
    assert visible_owner("carol", want_all=True, env={"BIOMERO_ADMINS": "carol"}) is None


def test_a_user_may_not_see_someone_elses_run() -> None:
    with pytest.raises(AccessDeniedError):
        visible_owner("alice", owner="bob", env={})


def test_an_admin_may_see_someone_elses_run() -> None:
    assert visible_owner("root", owner="bob", env={}) == "bob"
