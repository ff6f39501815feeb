"""The campaign store on a real PostgreSQL server: the same contract as SQLite, plus what only
a shared database shows (several server instances writing and migrating at once)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import psycopg
import pytest

from server.campaign_store import (
    CampaignStore,
    PostgresCampaignStore,
    open_campaign_store,
)
from tests.unit.test_campaign_store import StoreContract


def with_database(url: str, dbname: str) -> str:
    return f"{url.rsplit('/', 1)[0]}/{dbname}"


class TestPostgresStore(StoreContract):
    @pytest.fixture
    def url(self, postgres_url: str) -> str:
        """A fresh, empty database for every test."""
        dbname = f"test_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{dbname}"')
        return with_database(postgres_url, dbname)

    def open_store(self, url: str, clock: Callable[[], datetime] | None = None) -> CampaignStore:
        if clock is None:
            return open_campaign_store(url)
        return PostgresCampaignStore(url, clock=clock)

    def applied_migrations(self, url: str) -> list[tuple[int, Any]]:
        with psycopg.connect(url) as conn:
            return conn.execute(
                "SELECT version, applied_at FROM schema_migrations ORDER BY version"
            ).fetchall()

    def test_open_dispatches_both_url_schemes(self, url: str) -> None:
        for scheme_url in (url, "postgres://" + url.removeprefix("postgresql://")):
            with open_campaign_store(scheme_url) as store:
                assert isinstance(store, PostgresCampaignStore)
                store.create({})

    def test_times_are_stored_as_timestamps(self, store: CampaignStore, url: str) -> None:
        record = store.create({"name": "x"})
        with psycopg.connect(url) as conn:
            row = conn.execute(
                "SELECT update_time, pg_typeof(update_time)::text FROM campaigns WHERE id = %s",
                (record.id,),
            ).fetchone()
        assert row is not None
        assert row == (record.update_time, "timestamp with time zone")

    def test_a_bad_database_fails_at_open_with_the_server_message(self, postgres_url: str) -> None:
        with pytest.raises(psycopg.OperationalError, match="does not exist"):
            open_campaign_store(with_database(postgres_url, "no_such_database"))
