"""The campaign store's behaviour, on SQLite here; the PostgreSQL tests reuse `StoreContract`."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import string
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from server.campaign_store import (
    CAMPAIGN_FIELDS,
    MIGRATIONS,
    CallNotFound,
    CampaignConflict,
    CampaignNotFound,
    CampaignStore,
    ConfigConflict,
    InvalidPageToken,
    SQLiteCampaignStore,
    StoredCall,
    StoredTurn,
    open_campaign_store,
)

FROZEN = datetime(2030, 1, 1, tzinfo=UTC)
ALL_FIELDS = {name: f"{name} value" for name in CAMPAIGN_FIELDS}


def token_of(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


def run_together(*jobs: Callable[[], None]) -> None:
    """Run each job in its own thread; re-raise the first failure."""
    with ThreadPoolExecutor(len(jobs)) as pool:
        for future in [pool.submit(job) for job in jobs]:
            future.result(timeout=60)


class StoreContract:
    """Behaviour every backend must have. A subclass provides `url` (a fresh, empty database per
    test), `open_store` and `applied_migrations`."""

    @pytest.fixture
    def url(self) -> str:
        raise NotImplementedError

    def open_store(self, url: str, clock: Callable[[], datetime] | None = None) -> CampaignStore:
        raise NotImplementedError

    def applied_migrations(self, url: str) -> list[tuple[int, Any]]:
        """(version, applied_at) rows of schema_migrations, in version order."""
        raise NotImplementedError

    @pytest.fixture
    def store(self, url: str) -> Iterator[CampaignStore]:
        with self.open_store(url) as store:
            yield store

    # create / get

    def test_create_then_get(self, store: CampaignStore) -> None:
        before = datetime.now(UTC)
        created = store.create({"name": "Support", "persona": "Be kind."})
        after = datetime.now(UTC)
        assert len(created.id) == 32 and set(created.id) <= set(string.hexdigits.lower())
        assert (created.name, created.persona, created.greeting, created.language) == (
            "Support",
            "Be kind.",
            "",
            "",
        )
        assert created.version == 1
        assert created.update_time.tzinfo is not None
        assert created.update_time.utcoffset() == timedelta(0)
        assert before <= created.update_time <= after
        assert store.get(created.id) == created

    def test_ids_are_unique(self, store: CampaignStore) -> None:
        assert len({store.create({}).id for _ in range(20)}) == 20

    def test_create_rejects_an_unknown_field(self, store: CampaignStore) -> None:
        with pytest.raises(ValueError, match="colour"):
            store.create({"name": "x", "colour": "red"})
        assert store.list(10) == ([], "")

    def test_get_of_a_missing_id_is_not_found(self, store: CampaignStore) -> None:
        with pytest.raises(CampaignNotFound, match="nope"):
            store.get("nope")

    # list

    def test_list_pages_through_everything_in_creation_order(self, store: CampaignStore) -> None:
        created = [store.create({"name": f"c{i}"}) for i in range(7)]
        pages: list[list[str]] = []
        token = ""
        while True:
            page, token = store.list(3, token)
            pages.append([record.name for record in page])
            if not token:
                break
        assert pages == [["c0", "c1", "c2"], ["c3", "c4", "c5"], ["c6"]]
        # The pages hold the stored records, and a token gives the same page every time.
        first, token = store.list(3)
        second, next_token = store.list(3, token)
        assert (first, second) == (created[:3], created[3:6])
        assert store.list(3, token) == (second, next_token)
        assert store.list(7) == (created, "")
        assert store.list(1000) == (created, "")

    def test_list_pages_are_not_shifted_by_deletes_and_creates(self, store: CampaignStore) -> None:
        created = [store.create({"name": f"c{i}"}) for i in range(6)]
        first, token = store.list(3)
        store.delete(created[1].id)
        store.delete(created[3].id)
        store.create({"name": "late"})
        rest, token = store.list(3, token)
        assert [r.name for r in first + rest] == ["c0", "c1", "c2", "c4", "c5", "late"]
        assert token == ""

    def test_list_orders_same_time_creations_by_id(self, url: str) -> None:
        with self.open_store(url, clock=lambda: FROZEN) as store:
            ids = [store.create({"name": f"c{i}"}).id for i in range(6)]
            seen: list[str] = []
            page, token = store.list(4)
            seen += [r.id for r in page]
            page, token = store.list(4, token)
            seen += [r.id for r in page]
            assert token == ""
            assert seen == sorted(ids)

    def test_list_of_an_empty_store(self, store: CampaignStore) -> None:
        assert store.list(10) == ([], "")

    @pytest.mark.parametrize(
        "token",
        [
            "not a token!",
            "%%%",
            base64.urlsafe_b64encode(b"\xff\xfe").decode(),
            token_of({"after": 1}),
            token_of([1]),
            token_of(["1", "id"]),
            token_of([True, "id"]),
            token_of([10**30, "id"]),
            token_of([1, 2]),
            base64.urlsafe_b64encode(b"[" * 100_000).decode(),  # json would recurse too deep
        ],
    )
    def test_list_rejects_a_bad_token(self, store: CampaignStore, token: str) -> None:
        store.create({"name": "one"})
        with pytest.raises(InvalidPageToken):
            store.list(10, token)

    def test_list_tokens_are_urlsafe(self, store: CampaignStore) -> None:
        for _ in range(3):
            store.create({})
        _, token = store.list(1)
        assert token and set(token) <= set(string.ascii_letters + string.digits + "-_")

    # update

    def test_update_changes_only_the_given_fields(self, store: CampaignStore) -> None:
        created = store.create(ALL_FIELDS)
        updated = store.update(created.id, {"persona": "Be brief.", "language": "fr"})
        assert updated.persona == "Be brief." and updated.language == "fr"
        for name in ("name", "greeting", "llm_model", "tts_voice"):
            assert getattr(updated, name) == ALL_FIELDS[name]
        assert updated.version == 2
        assert updated.update_time > created.update_time
        assert store.get(created.id) == updated

    def test_update_time_moves_forward_even_if_the_clock_stalls(self, url: str) -> None:
        with self.open_store(url, clock=lambda: FROZEN) as store:
            record = store.create({})
            times = [record.update_time]
            for i in range(3):
                record = store.update(record.id, {"name": str(i)})
                times.append(record.update_time)
            assert times == sorted(set(times)) and times[0] == FROZEN

    def test_update_with_the_current_version(self, store: CampaignStore) -> None:
        created = store.create({"name": "a"})
        updated = store.update(created.id, {"name": "b"}, expected_version=1)
        assert (updated.name, updated.version) == ("b", 2)
        assert store.update(created.id, {"name": "c"}, expected_version=2).version == 3

    def test_update_with_a_stale_version_is_a_conflict(self, store: CampaignStore) -> None:
        created = store.create({"name": "a"})
        current = store.update(created.id, {"name": "b"})
        with pytest.raises(CampaignConflict, match="version 2"):
            store.update(created.id, {"name": "lost"}, expected_version=1)
        assert store.get(created.id) == current

    def test_update_of_a_missing_id_is_not_found(self, store: CampaignStore) -> None:
        with pytest.raises(CampaignNotFound):
            store.update("nope", {"name": "x"})
        with pytest.raises(CampaignNotFound):
            store.update("nope", {"name": "x"}, expected_version=1)

    def test_update_rejects_an_unknown_field(self, store: CampaignStore) -> None:
        created = store.create({"name": "a"})
        with pytest.raises(ValueError, match="id"):
            store.update(created.id, {"name": "b", "id": "mine"})
        with pytest.raises(ValueError, match="version"):
            store.update(created.id, {"version": "7"})
        assert store.get(created.id) == created

    def test_update_without_fields_changes_nothing(self, store: CampaignStore) -> None:
        created = store.create({"name": "a"})
        assert store.update(created.id, {}) == created
        assert store.update(created.id, {}, expected_version=1) == created
        with pytest.raises(CampaignConflict):
            store.update(created.id, {}, expected_version=5)
        with pytest.raises(CampaignNotFound):
            store.update("nope", {})

    # delete

    def test_delete_then_get_is_not_found(self, store: CampaignStore) -> None:
        kept = store.create({"name": "kept"})
        gone = store.create({"name": "gone"})
        store.delete(gone.id)
        with pytest.raises(CampaignNotFound):
            store.get(gone.id)
        assert store.list(10) == ([kept], "")
        with pytest.raises(CampaignNotFound):
            store.delete(gone.id)
        with pytest.raises(CampaignNotFound):
            store.update(gone.id, {"name": "back"})

    def test_delete_with_a_stale_version_is_a_conflict(self, store: CampaignStore) -> None:
        created = store.create({"name": "a"})
        current = store.update(created.id, {"name": "b"})
        with pytest.raises(CampaignConflict):
            store.delete(created.id, expected_version=1)
        assert store.get(created.id) == current
        store.delete(created.id, expected_version=2)
        with pytest.raises(CampaignNotFound):
            store.delete(created.id, expected_version=2)

    # the shared server config

    def test_config_starts_empty_at_version_0(self, store: CampaignStore) -> None:
        record = store.get_config()
        assert (dict(record.fields), record.version) == ({}, 0)

    def test_config_update_sets_only_the_given_fields(self, store: CampaignStore) -> None:
        first = store.update_config({"tts_voice": "bass", "system_prompt": ""})
        assert (dict(first.fields), first.version) == (
            {"tts_voice": "bass", "system_prompt": ""},
            1,
        )
        second = store.update_config({"llm_model": "m"}, expected_version=1)
        assert dict(second.fields) == {"tts_voice": "bass", "system_prompt": "", "llm_model": "m"}
        assert second.version == 2 and second.update_time > first.update_time
        assert store.get_config() == second

    def test_config_update_with_a_stale_version_is_a_conflict(self, store: CampaignStore) -> None:
        store.update_config({"stt": "a"})
        with pytest.raises(ConfigConflict, match="etag 1, not 0"):
            store.update_config({"stt": "b"}, expected_version=0)
        assert dict(store.get_config().fields) == {"stt": "a"}

    def test_config_update_rejects_an_unknown_field(self, store: CampaignStore) -> None:
        with pytest.raises(ValueError, match="unknown config field 'voice'"):
            store.update_config({"voice": "x"})
        assert store.get_config().version == 0

    def test_concurrent_config_updates_lose_nothing(self, url: str) -> None:
        with self.open_store(url) as first, self.open_store(url) as second:
            barrier = threading.Barrier(2)

            def writer(store: CampaignStore, field: str) -> None:
                barrier.wait(timeout=30)
                for i in range(30):
                    store.update_config({field: f"{field} {i}"})

            run_together(lambda: writer(first, "stt"), lambda: writer(second, "tts_voice"))
            final = second.get_config()
            assert (final.fields["stt"], final.fields["tts_voice"], final.version) == (
                "stt 29",
                "tts_voice 29",
                60,
            )

    async def test_config_changes_sees_another_stores_write(self, url: str) -> None:
        with self.open_store(url) as watcher, self.open_store(url) as writer:
            changes = watcher.config_changes()
            try:
                assert (await asyncio.wait_for(anext(changes), 10)).version == 0
                writer.update_config({"tts_voice": "bass"})
                seen = await asyncio.wait_for(anext(changes), 10)
                assert (seen.version, dict(seen.fields)) == (1, {"tts_voice": "bass"})
            finally:
                await changes.aclose()

    # call records

    def test_a_call_is_written_as_it_goes_and_read_back(self, store: CampaignStore) -> None:
        start = FROZEN
        store.start_call(
            StoredCall(
                id="c1",
                campaign_id="k",
                start_time=start,
                transport="sip",
                sip_caller="alice",
                sip_called="agent",
                llm="l:m",
            )
        )
        running, turns = store.get_call("c1")
        assert (running.outcome, running.end_time, running.sip_caller, turns) == (
            "",
            None,
            "alice",
            [],
        )
        store.save_turn("c1", StoredTurn(1, "hi", "Hello there, how", True, '{"turn_id": 1}'))
        store.save_turn("c1", StoredTurn(1, "hi", "Hello there,", True, '{"turn_id": 1}'))
        store.save_turn("c1", StoredTurn(2, "bye", "Bye!", False, ""))
        ended = replace(
            running,
            end_time=start + timedelta(seconds=9),
            outcome="CALLER_HUNG_UP",
            status_code="OK",
            barge_ins=1,
            duration_seconds=9.0,
        )
        store.end_call(ended)
        call, turns = store.get_call("c1")
        assert call == ended
        assert [(t.turn_id, t.agent_text, t.barged_in) for t in turns] == [
            (1, "Hello there,", True),
            (2, "Bye!", False),
        ]

    def test_calls_list_newest_first_with_filters_and_pages(self, store: CampaignStore) -> None:
        for i in range(7):
            store.start_call(
                StoredCall(
                    id=f"c{i}",
                    campaign_id="even" if i % 2 == 0 else "odd",
                    start_time=FROZEN + timedelta(minutes=i),
                )
            )
        ids, token = [], ""
        while True:
            page, token = store.list_calls(3, token)
            ids += [c.id for c in page]
            if not token:
                break
        assert ids == [f"c{i}" for i in reversed(range(7))]
        even, _ = store.list_calls(10, campaign_id="even")
        assert [c.id for c in even] == ["c6", "c4", "c2", "c0"]
        window, _ = store.list_calls(
            10,
            start_after=FROZEN + timedelta(minutes=2),
            start_before=FROZEN + timedelta(minutes=4),
        )
        assert [c.id for c in window] == ["c3", "c2"]

    def test_calls_delete_and_retention(self, store: CampaignStore) -> None:
        for i in range(3):
            store.start_call(
                StoredCall(id=f"c{i}", campaign_id="", start_time=FROZEN + timedelta(days=i))
            )
            store.save_turn(f"c{i}", StoredTurn(1, "u", "a", False, ""))
        assert store.delete_call("c2").id == "c2"
        with pytest.raises(CallNotFound):
            store.get_call("c2")
        with pytest.raises(CallNotFound):
            store.delete_call("c2")
        old = store.delete_calls_before(FROZEN + timedelta(days=1))
        assert [c.id for c in old] == ["c0"]
        assert [c.id for c in store.list_calls(10)[0]] == ["c1"]

    # schema

    def test_reopening_applies_no_migration_twice(self, url: str) -> None:
        with self.open_store(url) as store:
            created = store.create(ALL_FIELDS)
        applied = self.applied_migrations(url)
        assert [version for version, _ in applied] == [m.version for m in MIGRATIONS]
        with self.open_store(url) as store:
            assert store.get(created.id) == created
        assert self.applied_migrations(url) == applied

    # concurrency: two stores stand for two server instances sharing one database

    def test_concurrent_updates_of_different_fields_lose_nothing(self, url: str) -> None:
        with self.open_store(url) as first, self.open_store(url) as second:
            record = first.create({"name": "start", "persona": "start"})
            barrier = threading.Barrier(2)

            def writer(store: CampaignStore, field: str) -> None:
                barrier.wait(timeout=30)
                for i in range(50):
                    store.update(record.id, {field: f"{field} {i}"})

            run_together(lambda: writer(first, "name"), lambda: writer(second, "persona"))
            final = second.get(record.id)
            assert (final.name, final.persona, final.version) == ("name 49", "persona 49", 101)

    def test_conditional_updates_have_one_winner_per_version(self, url: str) -> None:
        contenders, rounds = 6, 15
        with self.open_store(url) as first, self.open_store(url) as second:
            stores = [first, second]
            record = first.create({"name": "start"})
            barrier = threading.Barrier(contenders)
            outcomes: list[list[int | None]] = [[] for _ in range(rounds)]
            lock = threading.Lock()

            def contender(k: int) -> None:
                store = stores[k % 2]
                for r in range(rounds):
                    barrier.wait(timeout=30)
                    try:
                        won: int | None = store.update(
                            record.id, {"name": f"{r}/{k}"}, expected_version=r + 1
                        ).version
                    except CampaignConflict:
                        won = None
                    with lock:
                        outcomes[r].append(won)
                    barrier.wait(timeout=30)  # the round is over for everyone

            run_together(*(lambda k=k: contender(k) for k in range(contenders)))
            for r, round_outcomes in enumerate(outcomes):
                assert sorted(round_outcomes, key=str) == sorted(
                    [r + 2] + [None] * (contenders - 1), key=str
                ), f"round {r}: {round_outcomes}"
            assert first.get(record.id).version == rounds + 1

    def test_stores_opening_a_fresh_database_together_all_succeed(self, url: str) -> None:
        opened: list[CampaignStore] = []
        lock = threading.Lock()
        barrier = threading.Barrier(4)

        def open_one() -> None:
            barrier.wait(timeout=30)
            store = self.open_store(url)
            with lock:
                opened.append(store)

        try:
            run_together(*([open_one] * 4))
            ids = {store.create({}).id for store in opened}
            assert all(len(store.list(10)[0]) == 4 for store in opened) and len(ids) == 4
        finally:
            for store in opened:
                store.close()
        assert [version for version, _ in self.applied_migrations(url)] == [
            m.version for m in MIGRATIONS
        ]


class TestSQLiteStore(StoreContract):
    @pytest.fixture
    def url(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path}/campaigns.db"

    def open_store(self, url: str, clock: Callable[[], datetime] | None = None) -> CampaignStore:
        if clock is None:
            return open_campaign_store(url)
        return SQLiteCampaignStore(url.removeprefix("sqlite://"), clock=clock)

    def applied_migrations(self, url: str) -> list[tuple[int, Any]]:
        with sqlite3.connect(url.removeprefix("sqlite://")) as conn:
            return conn.execute(
                "SELECT version, applied_at FROM schema_migrations ORDER BY version"
            ).fetchall()

    def test_the_file_uses_wal(self, store: CampaignStore, url: str) -> None:
        with sqlite3.connect(url.removeprefix("sqlite://")) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)

    def test_one_store_is_safe_from_many_threads(self, store: CampaignStore) -> None:
        record = store.create({})

        def worker(field: str) -> None:
            for i in range(40):
                store.update(record.id, {field: str(i)})
                store.create({"name": field})
                store.list(5)

        run_together(*(lambda f=f: worker(f) for f in CAMPAIGN_FIELDS))
        final = store.get(record.id)
        assert final.version == 1 + 40 * len(CAMPAIGN_FIELDS)
        assert all(getattr(final, f) == "39" for f in CAMPAIGN_FIELDS)


class TestOpenCampaignStore:
    @pytest.fixture(autouse=True)
    def clean_env(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        monkeypatch.delenv("DATABASE_URL", raising=False)
        monkeypatch.delenv("VOICE_AGENT_DATA", raising=False)
        monkeypatch.setenv("HOME", str(tmp_path / "home"))

    def test_sqlite_url(self, tmp_path: Path) -> None:
        path = tmp_path / "nested" / "dir" / "my.db"
        with open_campaign_store(f"sqlite://{path}") as store:
            assert isinstance(store, SQLiteCampaignStore)
            record = store.create({"name": "x"})
        assert path.exists()
        with open_campaign_store(f"sqlite://{path}") as store:
            assert store.get(record.id) == record

    def test_sqlite_in_memory(self) -> None:
        with open_campaign_store("sqlite:///:memory:") as store:
            record = store.create({"name": "x"})
            assert store.list(5) == ([record], "")

    def test_database_url_from_the_environment(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        monkeypatch.setenv("DATABASE_URL", f"sqlite://{tmp_path}/env.db")
        for url in (None, ""):
            with open_campaign_store(url) as store:
                store.create({})
        assert (tmp_path / "env.db").exists()

    def test_default_is_a_file_in_the_data_dir(self, tmp_path: Path) -> None:
        with open_campaign_store(data_dir=tmp_path / "data") as store:
            store.create({})
        assert (tmp_path / "data" / "voice-agent.db").exists()

    def test_data_dir_from_the_environment(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        monkeypatch.setenv("VOICE_AGENT_DATA", str(tmp_path / "from-env"))
        with open_campaign_store() as store:
            store.create({})
        assert (tmp_path / "from-env" / "voice-agent.db").exists()

    def test_data_dir_defaults_under_home(self, tmp_path: Path) -> None:
        with open_campaign_store() as store:
            store.create({})
        assert (tmp_path / "home/.local/share/voice-agent/voice-agent.db").exists()

    @pytest.mark.parametrize(
        "url",
        [
            "mysql://admin:s3cret@db/voice",
            "sqlite://relative.db",
            "admin:s3cret@db:5432/voice",
            "/var/lib/voice-agent.db",
        ],
    )
    def test_unsupported_urls(self, url: str) -> None:
        with pytest.raises(ValueError, match=r"sqlite:///absolute/path\.db.*postgresql://") as err:
            open_campaign_store(url)
        assert "s3cret" not in str(err.value)
