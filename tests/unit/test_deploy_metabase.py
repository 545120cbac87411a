"""Metabase provisioning (biomeroworker.deploy.metabase) against FakeMetabase, a stand-in
that checks what Metabase's API checks (tests/fake_metabase.py): Metabase itself cannot
run here."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from fake_metabase import FakeMetabase

from biomeroworker.deploy.metabase import (
    Client,
    MetabaseError,
    Target,
    TrackingDatabase,
    provision,
)

ROOT = Path(__file__).resolve().parents[2]
ADMIN_PASSWORD = "mb-admin-Pw-9431"
DB_PASSWORD = "track/pw@7:x"  # URL-unsafe on purpose: the URL carries it percent-encoded
KEY = "5f" * 32
SITE_URL = "https://dashboards.biomero.example.org"


@pytest.fixture
def fake() -> Iterator[FakeMetabase]:
    fake = FakeMetabase()
    with fake.serve():
        yield fake


def env_for(url: str, **extra: str) -> dict[str, str]:
    return {
        "METABASE_URL": url,
        "METABASE_ADMIN_EMAIL": "admin@biomero.example.org",
        "METABASE_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "SQLALCHEMY_URL": (
            f"postgresql+psycopg2://biomero:{quote(DB_PASSWORD, safe='')}"
            "@biomero-database:5432/biomero"
        ),
        "METABASE_SECRET_KEY": KEY,
        "METABASE_SITE_URL": SITE_URL,
        "METABASE_WAIT_S": "5",
        **extra,
    }


def target(fake: FakeMetabase, **extra: str) -> Target:
    return Target.from_env(env_for(fake.url, **extra))


class FakeClock:
    """Time that moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps = 0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.now += seconds


# --- first start, second start --------------------------------------------------------


def test_first_start_creates_the_admin_adds_the_tracking_database_and_embedding(
    fake: FakeMetabase,
) -> None:
    changed = provision(target(fake))

    assert fake.users == {"admin@biomero.example.org": ADMIN_PASSWORD}
    [db] = fake.databases
    assert db["name"] == "BIOMERO"
    assert db["engine"] == "postgres"
    assert {k: db["details"][k] for k in ("host", "port", "dbname", "user")} == {
        "host": "biomero-database",
        "port": 5432,
        "dbname": "biomero",
        "user": "biomero",
    }
    assert db["_password"] == DB_PASSWORD
    assert fake.settings == {
        "embedding-secret-key": KEY,
        "enable-embedding-static": True,
        "site-url": SITE_URL,
    }
    assert changed == [
        "admin admin@biomero.example.org created",
        "database BIOMERO added",
        "embedding secret key set",
        "enable-embedding-static on",
    ]


def test_second_start_logs_in_and_changes_nothing(fake: FakeMetabase) -> None:
    provision(target(fake))
    before = (dict(fake.users), [dict(d) for d in fake.databases], dict(fake.settings))
    fake.requests.clear()

    changed = provision(target(fake))

    assert changed == []
    assert fake.writes() == []
    assert ("POST", "/api/session") in fake.requests
    assert (fake.users, fake.databases, fake.settings) == before


def test_metabase_before_0_51_gets_its_one_embedding_switch() -> None:
    fake = FakeMetabase(static_switch=False)
    with fake.serve():
        provision(target(fake))

    assert fake.settings["embedding-secret-key"] == KEY
    assert fake.settings["enable-embedding"] is True


def test_without_a_secret_key_embedding_is_left_alone(fake: FakeMetabase) -> None:
    changed = provision(target(fake, METABASE_SECRET_KEY=""))

    assert changed == ["admin admin@biomero.example.org created", "database BIOMERO added"]
    assert fake.settings["embedding-secret-key"] is None
    assert fake.settings["enable-embedding-static"] is False


def test_without_a_site_url_metabase_records_the_address_it_was_reached_at(
    fake: FakeMetabase,
) -> None:
    # Metabase's own behaviour, why METABASE_SITE_URL belongs in .env before the first start.
    provision(target(fake, METABASE_SITE_URL=""))

    assert fake.settings["site-url"] == fake.url


# --- what an admin made is left alone -------------------------------------------------


def test_set_up_instance_with_the_database_under_another_name_is_left_alone(
    fake: FakeMetabase,
) -> None:
    fake.admin_setup("admin@biomero.example.org", ADMIN_PASSWORD)
    theirs = fake.admin_adds_database("Tracking (ours)", "biomero-database", "biomero")
    fake.settings.update({"embedding-secret-key": KEY, "enable-embedding-static": True})
    snapshot = dict(theirs)

    changed = provision(target(fake))

    assert changed == []
    assert fake.databases == [snapshot]
    assert fake.writes() == []


def test_a_database_of_the_same_name_elsewhere_is_not_replaced(fake: FakeMetabase) -> None:
    fake.admin_setup("admin@biomero.example.org", ADMIN_PASSWORD)
    fake.admin_adds_database("BIOMERO", "old-host", "old")

    provision(target(fake, METABASE_SECRET_KEY=""))

    assert [(d["name"], d["details"]["host"]) for d in fake.databases] == [("BIOMERO", "old-host")]


def test_other_databases_do_not_count(fake: FakeMetabase) -> None:
    fake.admin_setup("admin@biomero.example.org", ADMIN_PASSWORD)
    fake.admin_adds_database("Sample Database", "h2", "sample")

    changed = provision(target(fake, METABASE_SECRET_KEY=""))

    assert changed == ["database BIOMERO added"]
    assert [d["name"] for d in fake.databases] == ["Sample Database", "BIOMERO"]


def test_an_embedding_key_an_admin_set_is_reported_not_replaced(fake: FakeMetabase) -> None:
    theirs = "a1" * 32
    fake.admin_setup("admin@biomero.example.org", ADMIN_PASSWORD)
    fake.settings["embedding-secret-key"] = theirs

    with pytest.raises(MetabaseError, match="not METABASE_SECRET_KEY"):
        provision(target(fake))

    assert fake.settings["embedding-secret-key"] == theirs
    assert ("PUT", "/api/setting/embedding-secret-key") not in fake.requests


def test_set_up_by_someone_else_fails_with_what_to_set(fake: FakeMetabase) -> None:
    fake.admin_setup("someone@example.org", "their-password-1")

    with pytest.raises(MetabaseError) as caught:
        provision(target(fake))

    message = str(caught.value)
    assert "logging in as admin@biomero.example.org failed" in message
    assert "METABASE_ADMIN_EMAIL and METABASE_ADMIN_PASSWORD" in message
    assert fake.databases == []
    assert ("POST", "/api/setup") not in fake.requests


# --- waiting for Metabase -------------------------------------------------------------


def test_waits_while_metabase_initialises(fake: FakeMetabase) -> None:
    fake.ready = False
    clock = FakeClock()

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if clock.sleeps == 3:
            fake.ready = True

    provision(target(fake), clock=clock, sleep=sleep)

    assert clock.sleeps == 3
    assert fake.users


def test_gives_up_after_metabase_wait_s_with_the_reason(fake: FakeMetabase) -> None:
    fake.ready = False
    clock = FakeClock()

    with pytest.raises(MetabaseError) as caught:
        provision(target(fake), clock=clock, sleep=clock.sleep)

    message = str(caught.value)
    assert f"Metabase at {fake.url} is not up after 5 s (METABASE_WAIT_S)" in message
    assert "HTTP 503" in message and "initializing" in message
    assert "docker compose logs metabase" in message
    assert clock.now >= 5
    assert fake.writes() == []


def test_nothing_listening_is_waited_for_then_reported() -> None:
    client = Client("http://127.0.0.1:9")  # discard port: nothing answers
    clock = FakeClock()
    env = env_for(client.url)

    with pytest.raises(MetabaseError, match="is not up after 5 s") as caught:
        provision(Target.from_env(env), client, clock=clock, sleep=clock.sleep)

    assert "GET /api/health" in str(caught.value)
    assert clock.sleeps >= 2


# --- configuration --------------------------------------------------------------------


def test_missing_settings_are_named() -> None:
    with pytest.raises(MetabaseError, match="METABASE_ADMIN_EMAIL, METABASE_ADMIN_PASSWORD"):
        Target.from_env({"SQLALCHEMY_URL": "postgresql://u:p@h/d"})


def test_a_key_metabase_would_refuse_is_refused_before_anything_is_sent() -> None:
    with pytest.raises(MetabaseError, match="64 hexadecimal characters"):
        Target.from_env(env_for("http://x", METABASE_SECRET_KEY="not-hex-and-short"))


def test_only_a_postgresql_tracking_database_is_given_to_metabase() -> None:
    with pytest.raises(MetabaseError, match="sqlite"):
        TrackingDatabase.from_url("sqlite:////tmp/tracking.db", "BIOMERO")


def test_the_database_payload_has_the_shape_post_api_database_takes() -> None:
    db = TrackingDatabase.from_url("postgresql+psycopg2://u:p%40ss@db.example:5433/track", "X")

    assert db.payload() == {
        "name": "X",
        "engine": "postgres",
        "details": {
            "host": "db.example",
            "port": 5433,
            "dbname": "track",
            "user": "u",
            "password": "p@ss",
        },
    }


# --- the fake says no where Metabase says no ------------------------------------------


def test_fake_refuses_what_metabase_refuses(fake: FakeMetabase) -> None:
    client = Client(fake.url)
    good = {
        "token": fake.setup_token,
        "user": {"email": "a@b.c", "password": "x1"},
        "prefs": {"site_name": "s"},
    }
    with pytest.raises(MetabaseError, match=r"HTTP 400.*token"):
        client.call("POST", "/api/setup", {**good, "token": "not-the-token"})
    with pytest.raises(MetabaseError, match=r"HTTP 400.*site_name"):
        flat = {"token": fake.setup_token, "email": "a@b.c", "password": "x1", "site_name": "s"}
        client.call("POST", "/api/setup", flat)
    with pytest.raises(MetabaseError, match="HTTP 401"):
        client.call("GET", "/api/database")
    client.call("POST", "/api/setup", good)
    with pytest.raises(MetabaseError, match="HTTP 403"):
        client.call("POST", "/api/setup", good)


# --- secrets --------------------------------------------------------------------------


def run_module(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "biomeroworker.deploy.metabase"],
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def secrets_of(fake: FakeMetabase) -> list[str]:
    encoded = quote(DB_PASSWORD, safe="")
    return [ADMIN_PASSWORD, DB_PASSWORD, encoded, KEY, fake.setup_token, *fake.sessions]


def test_secrets_appear_in_no_output_on_first_and_second_start(fake: FakeMetabase) -> None:
    first = run_module(env_for(fake.url))
    second = run_module(env_for(fake.url))

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert "created Metabase's first admin" in first.stderr
    assert "nothing to change" in second.stderr
    for secret in secrets_of(fake):
        for result in (first, second):
            assert secret not in result.stdout + result.stderr


def test_secrets_appear_in_no_error_either(fake: FakeMetabase) -> None:
    # Worst case: the refusal repeats the connection details, password included.
    fake.database_refusal = "could not connect to {host} as {user} with password {password}"

    result = run_module(env_for(fake.url))

    assert result.returncode == 1
    assert "could not connect to biomero-database as biomero with password ***" in result.stderr
    for secret in secrets_of(fake):
        assert secret not in result.stdout + result.stderr


def test_a_wrong_login_is_reported_without_the_password(fake: FakeMetabase) -> None:
    fake.admin_setup("admin@biomero.example.org", "another-password-2")

    result = run_module(env_for(fake.url))

    assert result.returncode == 1
    assert "logging in as admin@biomero.example.org failed" in result.stderr
    for secret in (ADMIN_PASSWORD, DB_PASSWORD, KEY):
        assert secret not in result.stdout + result.stderr
