"""Choosing the tracking database and keeping its password out of messages."""

from __future__ import annotations

import pytest

from biomeroworker.tracking.errors import TrackingStoreError
from biomeroworker.tracking.store import parse_url, redact, resolve_url, scrub

PG = "postgresql+psycopg2://biomero:s3cr3t-pw@db.example:5432/biomero"


def test_an_explicit_url_wins_over_env_and_settings() -> None:
    url = resolve_url("sqlite:///x.sqlite", settings_url=PG, env={"SQLALCHEMY_URL": PG})
    assert url == "sqlite:///x.sqlite"


def test_env_wins_over_settings() -> None:
    url = resolve_url(None, settings_url="sqlite:///s.sqlite", env={"SQLALCHEMY_URL": PG})
    assert url == PG


def test_settings_are_used_when_env_is_empty() -> None:
    url = resolve_url(None, settings_url=PG, env={"SQLALCHEMY_URL": " "})
    assert url == PG


def test_nothing_set_means_an_sqlite_file_in_the_user_data_dir(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    url = resolve_url(None, env={})
    assert url == f"sqlite:///{tmp_path / 'biomero' / 'tracking.sqlite'}"
    assert (tmp_path / "biomero").is_dir()


def test_redact_hides_the_password_of_a_valid_url() -> None:
    assert redact(PG) == "postgresql+psycopg2://biomero:***@db.example:5432/biomero"


def test_redact_hides_the_password_of_a_url_that_does_not_parse() -> None:
    assert "s3cr3t" not in redact("postgresql://u:s3cr3t@host:notaport/db")


def test_scrub_removes_the_password_from_any_text() -> None:
    assert "s3cr3t-pw" not in scrub("failed for s3cr3t-pw at host", PG)


def test_a_malformed_url_is_a_clear_error_without_the_password() -> None:
    with pytest.raises(TrackingStoreError) as caught:
        parse_url("postgresql+psycopg2//biomero:s3cr3t-pw@db.example/biomero")
    assert "not a valid SQLAlchemy URL" in str(caught.value)
    assert "s3cr3t-pw" not in str(caught.value)


def test_an_unknown_driver_is_a_clear_error_without_the_password() -> None:
    with pytest.raises(TrackingStoreError) as caught:
        parse_url("postgresql+nosuchdriver://biomero:s3cr3t-pw@db.example/biomero")
    assert "s3cr3t-pw" not in str(caught.value)


def test_only_postgresql_and_sqlite_are_accepted() -> None:
    with pytest.raises(TrackingStoreError, match="only postgresql and sqlite"):
        parse_url("mysql+pymysql://u:s3cr3t-pw@h/db")


def test_redact_hides_a_password_that_contains_at_and_slash() -> None:
    redacted = redact("postgresql://biomero:p@ss/w0rd@db.example/biomero")
    assert redacted == "postgresql://biomero:***@db.example/biomero"


def test_scrub_hides_the_url_encoded_and_decoded_password() -> None:
    url = "postgresql://biomero:p%40ss@db.example/biomero"
    assert "p@ss" not in scrub("auth failed for p@ss", url)


def test_an_unreachable_database_is_a_clear_error_that_never_shows_the_password(caplog) -> None:
    import logging
    import traceback

    from biomeroworker.tracking import Tracker

    caplog.set_level(logging.DEBUG)
    url = "postgresql+psycopg2://biomero:s3cr3t-pw@127.0.0.1:1/biomero"
    with pytest.raises(TrackingStoreError) as caught:
        Tracker(url)
    message = str(caught.value)
    assert "127.0.0.1" in message
    assert "refused" in message.lower()
    shown = "".join(traceback.format_exception(caught.value)) + caplog.text
    assert "s3cr3t-pw" not in shown


def test_without_a_writable_home_the_default_store_says_what_to_configure(
    tmp_path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    from biomeroworker.tracking.errors import TrackingStoreError
    from biomeroworker.tracking.store import default_sqlite_url

    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")
    monkeypatch.setenv("XDG_DATA_HOME", str(blocked))
    with pytest.raises(TrackingStoreError, match="set SQLALCHEMY_URL"):
        default_sqlite_url()


def test_changed_columns_groups_rows_by_the_columns_that_differ() -> None:
    from biomeroworker.tracking import tables as t
    from biomeroworker.tracking.projection import _Row, changed_columns

    def row(slurm_job_id: int, status: str, progress: str | None) -> _Row:
        return _Row(slurm_job_id=slurm_job_id, status=status, progress=progress)

    stored = {
        1: dict(row(1, "PENDING", None)),
        2: dict(row(2, "PENDING", None)),
        3: dict(row(3, "RUNNING", "10%")),
        4: dict(row(4, "RUNNING", "10%")),
    }
    rows = {
        1: row(1, "RUNNING", None),
        2: row(2, "RUNNING", None),
        3: row(3, "RUNNING", "10%"),  # unchanged: not written
        4: row(4, "COMPLETED", None),  # a value made NULL is a change
    }
    assert changed_columns(t.job_progress_view, rows, stored) == {
        ("status",): [1, 2],
        ("status", "progress"): [4],
    }
