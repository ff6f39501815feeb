"""Campaign storage: one small interface, SQLite by default and PostgreSQL when `DATABASE_URL` says so.

Several server instances may share one PostgreSQL database (scale-out, see deploy/), so every
write is a single SQL statement: two writers touching different fields never lose each other's
change, and `expected_version` (the API's etag) turns a lost update into `CampaignConflict`.
The methods are synchronous; the servicer calls them through `asyncio.to_thread`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import builtins
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Self
from urllib.parse import unquote

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

# `tools` and `builtin_tools` hold JSON text (the Campaigns service writes and reads it).
CAMPAIGN_FIELDS = (
    "name",
    "persona",
    "greeting",
    "llm_model",
    "tts_voice",
    "language",
    "tools",
    "builtin_tools",
)
_FIRST_FIELDS = CAMPAIGN_FIELDS[:6]  # the columns of schema version 1
# The server-wide defaults every replica shares (the `Config` message of the API).
CONFIG_FIELDS = ("stt", "llm_model", "tts_voice", "system_prompt")
# PostgreSQL NOTIFY channel a config write signals on (payload: the new version).
CONFIG_CHANNEL = "voice_agent_config"
# SQLite has no notifications: every replica on the machine polls the config's version this often.
SQLITE_CONFIG_POLL_SECONDS = 0.2
# How long a PostgreSQL listener waits for a notification before checking its connection is alive.
LISTEN_LIVENESS_SECONDS = 5.0
# Reconnect backoff of the PostgreSQL listener (doubling from the first to the last).
LISTEN_BACKOFF_SECONDS = (0.1, 2.0)
MAX_PAGE_SIZE = 1000
SQLITE_FILE_NAME = "voice-agent.db"

_COLUMNS = ("id", *CAMPAIGN_FIELDS, "create_time", "update_time", "version")
_SELECT = ", ".join(_COLUMNS)
_CONFIG_SELECT = ", ".join((*CONFIG_FIELDS, "update_time", "version"))

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# Any fixed 64-bit key works; this one spells "voiceagt", recognisable in pg_locks.
_MIGRATION_LOCK_KEY = int.from_bytes(b"voiceagt", "big")
# How long a SQLite write waits for another process's write to finish before failing.
_SQLITE_BUSY_SECONDS = 10


@dataclass(frozen=True)
class CampaignRecord:
    id: str
    name: str
    persona: str
    greeting: str
    llm_model: str
    tts_voice: str
    language: str
    update_time: datetime
    version: int
    tools: str = ""
    builtin_tools: str = ""


@dataclass(frozen=True)
class ConfigRecord:
    """The shared defaults: only the fields an UpdateConfig has set (the others stay each
    replica's own from its environment), and the version that is the API's etag."""

    fields: Mapping[str, str]
    version: int
    update_time: datetime


@dataclass(frozen=True)
class StoredCall:
    """One call record's own row (its turns are `StoredTurn`s)."""

    id: str
    campaign_id: str
    start_time: datetime
    end_time: datetime | None = None
    transport: str = ""
    sip_caller: str = ""
    sip_called: str = ""
    stt: str = ""
    llm: str = ""
    tts: str = ""
    outcome: str = ""  # "" while running; the CallOutcome enum's name once ended
    status_code: str = ""
    status_message: str = ""
    barge_ins: int = 0
    duration_seconds: float = 0.0
    recording: str = ""  # the recording's file name under the recordings folder, if any
    trace_id: str = ""


CALL_COLUMNS = tuple(StoredCall.__dataclass_fields__)
_CALL_SELECT = ", ".join(CALL_COLUMNS)
_TIME_COLUMNS = ("start_time", "end_time")


@dataclass(frozen=True)
class StoredTurn:
    turn_id: int
    user_text: str
    agent_text: str
    barged_in: bool
    metrics_json: str  # TurnMetrics as JSON (proto field names), "" if none came
    tool_calls_json: str = "[]"


class CallNotFound(KeyError):
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class CampaignNotFound(KeyError):
    def __str__(self) -> str:
        # KeyError's own str() quotes its message, which reads badly in a gRPC status.
        return str(self.args[0]) if self.args else ""


class CampaignConflict(Exception):
    """The campaign is no longer at the version the caller read (maps to gRPC ABORTED)."""


class ConfigConflict(Exception):
    """The config is no longer at the version the caller read (maps to gRPC ABORTED)."""


class InvalidPageToken(ValueError):
    pass


@dataclass(frozen=True)
class Migration:
    """One schema step; its version is recorded in `schema_migrations` once applied."""

    version: int
    sqlite: tuple[str, ...]
    postgres: tuple[str, ...]


def _campaigns_table(time_type: str) -> str:
    text_columns = "".join(f"    {name} TEXT NOT NULL DEFAULT '',\n" for name in _FIRST_FIELDS)
    return (
        "CREATE TABLE campaigns (\n"
        "    id TEXT PRIMARY KEY,\n"
        f"{text_columns}"
        f"    create_time {time_type} NOT NULL,\n"
        f"    update_time {time_type} NOT NULL,\n"
        "    version INTEGER NOT NULL\n"
        ")"
    )


def _config_table(time_type: str, now: str) -> tuple[str, str]:
    """One row (id 1); a NULL field was never set through UpdateConfig."""
    text_columns = "".join(f"    {name} TEXT,\n" for name in CONFIG_FIELDS)
    return (
        "CREATE TABLE server_config (\n"
        "    id INTEGER PRIMARY KEY CHECK (id = 1),\n"
        f"{text_columns}"
        f"    update_time {time_type} NOT NULL,\n"
        "    version INTEGER NOT NULL\n"
        ")",
        f"INSERT INTO server_config (id, update_time, version) VALUES (1, {now}, 0)",
    )


def _call_tables(time_type: str, real_type: str) -> tuple[str, ...]:
    return (
        "CREATE TABLE calls (\n"
        "    id TEXT PRIMARY KEY,\n"
        "    campaign_id TEXT NOT NULL DEFAULT '',\n"
        f"    start_time {time_type} NOT NULL,\n"
        f"    end_time {time_type},\n"
        + "".join(
            f"    {name} TEXT NOT NULL DEFAULT '',\n"
            for name in (
                "transport",
                "sip_caller",
                "sip_called",
                "stt",
                "llm",
                "tts",
                "outcome",
                "status_code",
                "status_message",
            )
        )
        + "    barge_ins INTEGER NOT NULL DEFAULT 0,\n"
        f"    duration_seconds {real_type} NOT NULL DEFAULT 0,\n"
        "    recording TEXT NOT NULL DEFAULT '',\n"
        "    trace_id TEXT NOT NULL DEFAULT ''\n"
        ")",
        "CREATE INDEX calls_by_start ON calls (start_time, id)",
        "CREATE INDEX calls_by_campaign ON calls (campaign_id, start_time, id)",
        "CREATE TABLE call_turns (\n"
        "    call_id TEXT NOT NULL,\n"
        "    turn_id INTEGER NOT NULL,\n"
        "    user_text TEXT NOT NULL DEFAULT '',\n"
        "    agent_text TEXT NOT NULL DEFAULT '',\n"
        "    barged_in INTEGER NOT NULL DEFAULT 0,\n"
        "    metrics_json TEXT NOT NULL DEFAULT '',\n"
        "    tool_calls_json TEXT NOT NULL DEFAULT '[]',\n"
        "    PRIMARY KEY (call_id, turn_id)\n"
        ")",
    )


# Append only: a released migration never changes; the next schema change is a new version.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        version=1,
        # SQLite has no timestamp type: times are integer microseconds since the Unix epoch (UTC),
        # which keeps them exact and ordered.
        sqlite=(
            _campaigns_table("INTEGER"),
            "CREATE INDEX campaigns_by_creation ON campaigns (create_time, id)",
        ),
        postgres=(
            _campaigns_table("TIMESTAMPTZ"),
            "CREATE INDEX campaigns_by_creation ON campaigns (create_time, id)",
        ),
    ),
    Migration(
        version=2,  # agent actions: a campaign's tools (issue 16)
        sqlite=(
            "ALTER TABLE campaigns ADD COLUMN tools TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE campaigns ADD COLUMN builtin_tools TEXT NOT NULL DEFAULT ''",
        ),
        postgres=(
            "ALTER TABLE campaigns ADD COLUMN tools TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE campaigns ADD COLUMN builtin_tools TEXT NOT NULL DEFAULT ''",
        ),
    ),
    Migration(
        version=3,
        sqlite=_config_table("INTEGER", "0"),
        postgres=(
            *_config_table("TIMESTAMPTZ", "now()"),
            # The trigger, not the writer, notifies: every write wakes every replica's listener,
            # whichever program made it, and only once the write has committed.
            "CREATE FUNCTION voice_agent_config_notify() RETURNS trigger AS $$ BEGIN "
            f"PERFORM pg_notify('{CONFIG_CHANNEL}', NEW.version::text); RETURN NEW; "
            "END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER server_config_changed AFTER UPDATE ON server_config "
            "FOR EACH ROW EXECUTE FUNCTION voice_agent_config_notify()",
        ),
    ),
    Migration(
        version=4,
        sqlite=_call_tables("INTEGER", "REAL"),
        postgres=_call_tables("TIMESTAMPTZ", "DOUBLE PRECISION"),
    ),
)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _check_fields(fields: Mapping[str, str]) -> None:
    for key, value in fields.items():
        if key not in CAMPAIGN_FIELDS:
            raise ValueError(
                f"unknown campaign field {key!r}; known fields: {', '.join(CAMPAIGN_FIELDS)}"
            )
        if not isinstance(value, str):
            raise TypeError(f"campaign field {key!r} must be a string, got {type(value).__name__}")


def _not_found(campaign_id: str) -> CampaignNotFound:
    return CampaignNotFound(f"campaign {campaign_id!r} not found")


_MAX_PAGE_TOKEN = 1024  # ours are under 200 characters; a deep JSON nesting must not reach json


def _encode_page_token(create_time: datetime, campaign_id: str) -> str:
    micros = (create_time - _EPOCH) // _MICROSECOND
    raw = json.dumps([micros, campaign_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_page_token(token: str) -> tuple[datetime, str]:
    try:
        if len(token) > _MAX_PAGE_TOKEN:
            raise ValueError("longer than any token we issue")
        raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
        micros, campaign_id = json.loads(raw)
        if type(micros) is not int or not isinstance(campaign_id, str):
            raise ValueError("unexpected cursor shape")
        return _EPOCH + micros * _MICROSECOND, campaign_id
    except (binascii.Error, ValueError, TypeError, OverflowError) as exc:
        # JSONDecodeError and UnicodeDecodeError are ValueErrors; a wrong shape fails to unpack.
        raise InvalidPageToken(
            "invalid page_token: pass the next_page_token of a previous list call"
        ) from exc


class CampaignStore(ABC):
    @abstractmethod
    def create(self, fields: Mapping[str, str]) -> CampaignRecord: ...

    @abstractmethod
    def get(self, campaign_id: str) -> CampaignRecord: ...

    @abstractmethod
    def list(self, page_size: int, page_token: str = "") -> tuple[list[CampaignRecord], str]: ...

    @abstractmethod
    def update(
        self, campaign_id: str, fields: Mapping[str, str], expected_version: int | None = None
    ) -> CampaignRecord: ...

    @abstractmethod
    def delete(self, campaign_id: str, expected_version: int | None = None) -> None: ...

    @abstractmethod
    def get_config(self) -> ConfigRecord: ...

    @abstractmethod
    def update_config(
        self, fields: Mapping[str, str], expected_version: int | None = None
    ) -> ConfigRecord:
        """Set `fields` of the shared config in one statement; ConfigConflict on a stale version."""

    @abstractmethod
    def config_changes(self) -> AsyncGenerator[ConfigRecord, None]:
        """The config now, then again whenever it may have changed (a reader skips versions it
        has seen), until the iterator is closed. Store outages are retried, never raised."""

    # call records: written as a call goes (start, each turn, end), read by the Calls service

    @abstractmethod
    def start_call(self, call: StoredCall) -> None: ...

    @abstractmethod
    def save_turn(self, call_id: str, turn: StoredTurn) -> None:
        """Insert or replace the turn (a turn is saved again when a barge-in cuts it)."""

    @abstractmethod
    def end_call(self, call: StoredCall) -> None:
        """Write the call's final row (outcome, status, end time, counts)."""

    @abstractmethod
    def get_call(self, call_id: str) -> tuple[StoredCall, builtins.list[StoredTurn]]: ...

    @abstractmethod
    def list_calls(
        self,
        page_size: int,
        page_token: str = "",
        campaign_id: str = "",
        start_after: datetime | None = None,
        start_before: datetime | None = None,
    ) -> tuple[builtins.list[StoredCall], str]:
        """Newest first."""

    @abstractmethod
    def delete_call(self, call_id: str) -> StoredCall:
        """Delete the call and its turns; returns the row (its recording is the caller's)."""

    @abstractmethod
    def delete_calls_before(self, cutoff: datetime) -> builtins.list[StoredCall]:
        """Delete every call that started before `cutoff`; returns their rows."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _SQLCampaignStore(CampaignStore):
    """The SQL both databases share; subclasses supply the connection and the dialect details."""

    _PARAM: ClassVar[str]
    # The new update_time: now, but always later than the previous one, so every update moves it
    # forward even when the clock stalls or two instances' clocks disagree.
    _NEXT_UPDATE_TIME: ClassVar[str]

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self._clock = clock

    @abstractmethod
    def _query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """Run one statement in its own transaction and return its rows."""

    @abstractmethod
    def _to_db_time(self, value: datetime) -> object: ...

    @abstractmethod
    def _from_db_time(self, value: Any) -> datetime: ...

    def _record(self, row: Sequence[Any]) -> CampaignRecord:
        """A row in `_COLUMNS` order; create_time stays in the database (it only orders lists)."""
        values = dict(zip(_COLUMNS, row, strict=True))
        return CampaignRecord(
            id=values["id"],
            **{name: values[name] for name in CAMPAIGN_FIELDS},
            update_time=self._from_db_time(values["update_time"]),
            version=int(values["version"]),
        )

    def create(self, fields: Mapping[str, str]) -> CampaignRecord:
        _check_fields(fields)
        now = self._to_db_time(self._clock())
        values: list[object] = [uuid.uuid4().hex]
        values += [fields.get(name, "") for name in CAMPAIGN_FIELDS]
        values += [now, now, 1]
        placeholders = ", ".join([self._PARAM] * len(values))
        rows = self._query(
            f"INSERT INTO campaigns ({_SELECT}) VALUES ({placeholders}) RETURNING {_SELECT}",
            values,
        )
        return self._record(rows[0])

    def get(self, campaign_id: str) -> CampaignRecord:
        rows = self._query(
            f"SELECT {_SELECT} FROM campaigns WHERE id = {self._PARAM}", (campaign_id,)
        )
        if not rows:
            raise _not_found(campaign_id)
        return self._record(rows[0])

    def list(self, page_size: int, page_token: str = "") -> tuple[list[CampaignRecord], str]:
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}, got {page_size}")
        p = self._PARAM
        where, params = "", []
        if page_token:
            after_time, after_id = _decode_page_token(page_token)
            # Keyset, not OFFSET: rows created or deleted meanwhile do not shift later pages.
            where = f"WHERE (create_time, id) > ({p}, {p})"
            params = [self._to_db_time(after_time), after_id]
        # One row more than asked says whether a next page exists, so the last page has no token.
        rows = self._query(
            f"SELECT {_SELECT} FROM campaigns {where} ORDER BY create_time, id LIMIT {p}",
            [*params, page_size + 1],
        )
        page = rows[:page_size]
        next_token = ""
        if len(rows) > page_size:
            last = page[-1]
            created = last[_COLUMNS.index("create_time")]
            next_token = _encode_page_token(self._from_db_time(created), last[0])
        return [self._record(row) for row in page], next_token

    def update(
        self, campaign_id: str, fields: Mapping[str, str], expected_version: int | None = None
    ) -> CampaignRecord:
        _check_fields(fields)
        if not fields:
            # Nothing to write, so the etag must not change; a stale one is still a conflict.
            record = self.get(campaign_id)
            _check_version(campaign_id, record.version, expected_version)
            return record
        p = self._PARAM
        names = [name for name in CAMPAIGN_FIELDS if name in fields]
        assignments = "".join(f"{name} = {p}, " for name in names)
        sql = (
            f"UPDATE campaigns SET {assignments}version = version + 1, "
            f"update_time = {self._NEXT_UPDATE_TIME} WHERE id = {p}"
        )
        params: list[object] = [fields[name] for name in names]
        params += [self._to_db_time(self._clock()), campaign_id]
        if expected_version is not None:
            sql += f" AND version = {p}"
            params.append(expected_version)
        rows = self._query(f"{sql} RETURNING {_SELECT}", params)
        if not rows:
            self._raise_missed(campaign_id, expected_version)
        return self._record(rows[0])

    def delete(self, campaign_id: str, expected_version: int | None = None) -> None:
        p = self._PARAM
        sql = f"DELETE FROM campaigns WHERE id = {p}"
        params: list[object] = [campaign_id]
        if expected_version is not None:
            sql += f" AND version = {p}"
            params.append(expected_version)
        if not self._query(f"{sql} RETURNING id", params):
            self._raise_missed(campaign_id, expected_version)

    def get_config(self) -> ConfigRecord:
        rows = self._query(f"SELECT {_CONFIG_SELECT} FROM server_config WHERE id = 1")
        return self._config_record(rows[0])

    def update_config(
        self, fields: Mapping[str, str], expected_version: int | None = None
    ) -> ConfigRecord:
        for key in fields:
            if key not in CONFIG_FIELDS:
                raise ValueError(
                    f"unknown config field {key!r}; fields: {', '.join(CONFIG_FIELDS)}"
                )
        p = self._PARAM
        names = [name for name in CONFIG_FIELDS if name in fields]
        assignments = "".join(f"{name} = {p}, " for name in names)
        sql = (
            f"UPDATE server_config SET {assignments}version = version + 1, "
            f"update_time = {self._NEXT_UPDATE_TIME} WHERE id = 1"
        )
        params: list[object] = [fields[name] for name in names]
        params.append(self._to_db_time(self._clock()))
        if expected_version is not None:
            sql += f" AND version = {p}"
            params.append(expected_version)
        rows = self._query(f"{sql} RETURNING {_CONFIG_SELECT}", params)
        if not rows:
            version = self.get_config().version
            raise ConfigConflict(
                f"the config is at etag {version}, not {expected_version}: get it again and retry"
            )
        return self._config_record(rows[0])

    def start_call(self, call: StoredCall) -> None:
        values = [self._call_value(name, getattr(call, name)) for name in CALL_COLUMNS]
        placeholders = ", ".join([self._PARAM] * len(values))
        self._query(f"INSERT INTO calls ({_CALL_SELECT}) VALUES ({placeholders})", values)

    def save_turn(self, call_id: str, turn: StoredTurn) -> None:
        p = self._PARAM
        values = [
            call_id,
            turn.turn_id,
            turn.user_text,
            turn.agent_text,
            int(turn.barged_in),
            turn.metrics_json,
            turn.tool_calls_json,
        ]
        self._query(
            "INSERT INTO call_turns (call_id, turn_id, user_text, agent_text, barged_in, "
            f"metrics_json, tool_calls_json) VALUES ({', '.join([p] * len(values))}) "
            "ON CONFLICT (call_id, turn_id) DO UPDATE SET user_text = excluded.user_text, "
            "agent_text = excluded.agent_text, barged_in = excluded.barged_in, "
            "metrics_json = excluded.metrics_json, tool_calls_json = excluded.tool_calls_json",
            values,
        )

    def end_call(self, call: StoredCall) -> None:
        p = self._PARAM
        names = [name for name in CALL_COLUMNS if name not in ("id", "start_time")]
        assignments = ", ".join(f"{name} = {p}" for name in names)
        values = [self._call_value(name, getattr(call, name)) for name in names]
        self._query(f"UPDATE calls SET {assignments} WHERE id = {p}", [*values, call.id])

    def get_call(self, call_id: str) -> tuple[StoredCall, builtins.list[StoredTurn]]:
        p = self._PARAM
        rows = self._query(f"SELECT {_CALL_SELECT} FROM calls WHERE id = {p}", (call_id,))
        if not rows:
            raise CallNotFound(f"call {call_id!r} not found")
        turns = self._query(
            "SELECT turn_id, user_text, agent_text, barged_in, metrics_json, tool_calls_json "
            f"FROM call_turns WHERE call_id = {p} ORDER BY turn_id",
            (call_id,),
        )
        return self._call(rows[0]), [
            StoredTurn(int(t[0]), t[1], t[2], bool(t[3]), t[4], t[5]) for t in turns
        ]

    def list_calls(
        self,
        page_size: int,
        page_token: str = "",
        campaign_id: str = "",
        start_after: datetime | None = None,
        start_before: datetime | None = None,
    ) -> tuple[builtins.list[StoredCall], str]:
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}, got {page_size}")
        p = self._PARAM
        conditions: builtins.list[str] = []
        params: builtins.list[object] = []
        if campaign_id:
            conditions.append(f"campaign_id = {p}")
            params.append(campaign_id)
        if start_after is not None:
            conditions.append(f"start_time >= {p}")
            params.append(self._to_db_time(start_after))
        if start_before is not None:
            conditions.append(f"start_time < {p}")
            params.append(self._to_db_time(start_before))
        if page_token:
            before_time, before_id = _decode_page_token(page_token)
            conditions.append(f"(start_time, id) < ({p}, {p})")  # keyset, newest first
            params += [self._to_db_time(before_time), before_id]
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        rows = self._query(
            f"SELECT {_CALL_SELECT} FROM calls {where} ORDER BY start_time DESC, id DESC LIMIT {p}",
            [*params, page_size + 1],
        )
        calls = [self._call(row) for row in rows[:page_size]]
        token = ""
        if len(rows) > page_size:
            token = _encode_page_token(calls[-1].start_time, calls[-1].id)
        return calls, token

    def delete_call(self, call_id: str) -> StoredCall:
        p = self._PARAM
        rows = self._query(f"DELETE FROM calls WHERE id = {p} RETURNING {_CALL_SELECT}", (call_id,))
        if not rows:
            raise CallNotFound(f"call {call_id!r} not found")
        self._query(f"DELETE FROM call_turns WHERE call_id = {p}", (call_id,))
        return self._call(rows[0])

    def delete_calls_before(self, cutoff: datetime) -> builtins.list[StoredCall]:
        p = self._PARAM
        rows = self._query(
            f"DELETE FROM calls WHERE start_time < {p} RETURNING {_CALL_SELECT}",
            (self._to_db_time(cutoff),),
        )
        calls = [self._call(row) for row in rows]
        for call in calls:
            self._query(f"DELETE FROM call_turns WHERE call_id = {p}", (call.id,))
        return calls

    def _call_value(self, name: str, value: object) -> object:
        if name in _TIME_COLUMNS and isinstance(value, datetime):
            return self._to_db_time(value)
        return value

    def _call(self, row: Sequence[Any]) -> StoredCall:
        values = dict(zip(CALL_COLUMNS, row, strict=True))
        for name in _TIME_COLUMNS:
            if values[name] is not None:
                values[name] = self._from_db_time(values[name])
        values["barge_ins"] = int(values["barge_ins"])
        values["duration_seconds"] = float(values["duration_seconds"])
        return StoredCall(**values)

    def _config_record(self, row: Sequence[Any]) -> ConfigRecord:
        values = dict(zip(CONFIG_FIELDS, row, strict=False))
        return ConfigRecord(
            fields={name: value for name, value in values.items() if value is not None},
            update_time=self._from_db_time(row[len(CONFIG_FIELDS)]),
            version=int(row[len(CONFIG_FIELDS) + 1]),
        )

    def _raise_missed(self, campaign_id: str, expected_version: int | None) -> None:
        """Say why a write matched no row: the id is gone, or the version moved on."""
        rows = self._query(
            f"SELECT version FROM campaigns WHERE id = {self._PARAM}", (campaign_id,)
        )
        if not rows:
            raise _not_found(campaign_id)
        _check_version(campaign_id, int(rows[0][0]), expected_version)
        # Versions only grow, so this is unreachable unless the database is edited by hand.
        raise CampaignConflict(f"campaign {campaign_id!r} changed concurrently; read it again")


def _check_version(campaign_id: str, version: int, expected_version: int | None) -> None:
    if expected_version is not None and version != expected_version:
        raise CampaignConflict(
            f"campaign {campaign_id!r} is at version {version}, not {expected_version}: "
            "read it again and retry"
        )


def _applied(rows: Iterable[Sequence[Any]]) -> set[int]:
    return {int(row[0]) for row in rows}


def _pending(applied: set[int]) -> list[Migration]:
    newer = applied - {m.version for m in MIGRATIONS}
    if newer:
        # A newer release already migrated this database (a rolling deploy): keep serving, the
        # schema only ever grows.
        log.warning("the database has schema versions %s this release does not know", newer)
    return [m for m in MIGRATIONS if m.version not in applied]


class SQLiteCampaignStore(_SQLCampaignStore):
    """One connection shared by all threads behind a lock; WAL lets other processes read meanwhile."""

    _PARAM = "?"
    _NEXT_UPDATE_TIME = "MAX(?, update_time + 1)"

    def __init__(self, path: str | Path, *, clock: Callable[[], datetime] = _utc_now) -> None:
        super().__init__(clock)
        self._lock = threading.Lock()
        # isolation_level=None: the sqlite3 module never opens transactions behind our back; each
        # statement commits on its own, and migrations say BEGIN themselves.
        self._conn = sqlite3.connect(
            str(path),
            timeout=_SQLITE_BUSY_SECONDS,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {_SQLITE_BUSY_SECONDS * 1000}")
            self._use_wal()
            self._migrate()
        except BaseException:
            self._conn.close()
            raise

    def _use_wal(self) -> None:
        """Switch the file to WAL (it stays so); retried, as SQLite answers BUSY without waiting
        when another process opens a new file at the same moment."""
        deadline = time.monotonic() + _SQLITE_BUSY_SECONDS
        while True:
            try:
                self._conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _migrate(self) -> None:
        with self._lock:
            # IMMEDIATE takes the write lock first, so two processes opening one file take turns.
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    "version INTEGER PRIMARY KEY, "
                    "applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"
                )
                applied = _applied(self._conn.execute("SELECT version FROM schema_migrations"))
                for migration in _pending(applied):
                    for statement in migration.sqlite:
                        self._conn.execute(statement)
                    self._conn.execute(
                        "INSERT INTO schema_migrations (version) VALUES (?)", (migration.version,)
                    )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def _query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    async def config_changes(self) -> AsyncGenerator[ConfigRecord, None]:
        """SQLite cannot notify another process: poll the version (one indexed row, ~50 µs)."""
        seen = -1
        while True:
            try:
                rows = await asyncio.to_thread(
                    self._query, "SELECT version FROM server_config WHERE id = 1"
                )
                if int(rows[0][0]) != seen:
                    record = await asyncio.to_thread(self.get_config)
                    seen = record.version
                    yield record
            except sqlite3.Error as exc:
                log.warning("could not read the shared config, retrying: %s", exc)
            await asyncio.sleep(SQLITE_CONFIG_POLL_SECONDS)

    def _to_db_time(self, value: datetime) -> object:
        return (value - _EPOCH) // _MICROSECOND

    def _from_db_time(self, value: Any) -> datetime:
        return _EPOCH + int(value) * _MICROSECOND

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class PostgresCampaignStore(_SQLCampaignStore):
    """A small pool of autocommit connections: every method is one statement, one transaction."""

    _PARAM = "%s"
    _NEXT_UPDATE_TIME = "GREATEST(%s, update_time + interval '1 microsecond')"

    def __init__(
        self,
        url: str,
        *,
        max_connections: int = 4,
        connect_timeout: float = 10.0,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        # Imported here so that a SQLite-only deployment does not need psycopg.
        import psycopg
        from psycopg_pool import ConnectionPool

        super().__init__(clock)
        connect_kwargs: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": max(1, round(connect_timeout)),
        }
        # Migrate on a connection of our own: a bad URL or an unreachable server fails here, at
        # once and with libpq's message, instead of as a pool timeout later.
        with psycopg.connect(url, **connect_kwargs) as conn:
            _migrate_postgres(conn)
        self._url = url
        self._connect_kwargs = connect_kwargs
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max_connections,
            kwargs=connect_kwargs,
            # A database restart leaves dead connections in the pool: test each one before use.
            check=ConnectionPool.check_connection,
            timeout=connect_timeout,
            name="campaign-store",
            open=True,
        )

    def _query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with self._pool.connection() as conn:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    async def config_changes(self) -> AsyncGenerator[ConfigRecord, None]:
        """LISTEN on a connection of its own; after every (re)connect the config is read again,
        since a change made while the listener was away sent it no notification."""
        import psycopg

        delay = LISTEN_BACKOFF_SECONDS[0]
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._url, **self._connect_kwargs, **_KEEPALIVE
                ) as conn:
                    await conn.execute(f"LISTEN {CONFIG_CHANNEL}")
                    yield await asyncio.to_thread(self.get_config)
                    delay = LISTEN_BACKOFF_SECONDS[0]
                    while True:
                        async for _ in conn.notifies(timeout=LISTEN_LIVENESS_SECONDS):
                            yield await asyncio.to_thread(self.get_config)
                        # Quiet for a while: a connection that died silently fails here.
                        await conn.execute("SELECT 1")
            except Exception as exc:  # the database restarted, went away or refused us
                log.warning(
                    "shared-config listener lost PostgreSQL (%s: %s); reconnecting in %.1f s",
                    type(exc).__name__,
                    exc,
                    delay,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, LISTEN_BACKOFF_SECONDS[1])

    def _to_db_time(self, value: datetime) -> object:
        return value

    def _from_db_time(self, value: Any) -> datetime:
        if not isinstance(value, datetime):
            raise TypeError(f"expected a timestamp from PostgreSQL, got {type(value).__name__}")
        return value.astimezone(UTC)

    def close(self) -> None:
        self._pool.close()


# TCP keepalives on the listener: a peer gone without a FIN is noticed in about 15 s, not hours.
_KEEPALIVE: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
}


def _migrate_postgres(conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        # Instances starting together against a fresh database take turns here until commit.
        # The lock must come first: concurrent CREATE TABLE IF NOT EXISTS can fail.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK_KEY,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            "version INTEGER PRIMARY KEY, "
            "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        applied = _applied(conn.execute("SELECT version FROM schema_migrations"))
        for migration in _pending(applied):
            for statement in migration.postgres:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version) VALUES (%s)", (migration.version,)
            )


def open_campaign_store(
    database_url: str | None = None, data_dir: Path | None = None
) -> CampaignStore:
    """The store `DATABASE_URL` names; without one, a SQLite file in the data dir."""
    url = database_url or os.environ.get("DATABASE_URL", "")
    if not url:
        if data_dir is None:
            env_dir = os.environ.get("VOICE_AGENT_DATA", "")
            data_dir = Path(env_dir) if env_dir else Path.home() / ".local/share/voice-agent"
        data_dir.mkdir(parents=True, exist_ok=True)
        return SQLiteCampaignStore(data_dir / SQLITE_FILE_NAME)
    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("postgresql", "postgres"):
        return PostgresCampaignStore(url)
    if sep and scheme == "sqlite" and rest.startswith("/"):
        path = unquote(rest)
        if path == "/:memory:":
            return SQLiteCampaignStore(":memory:")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return SQLiteCampaignStore(path)
    # Name only the scheme: the URL itself may hold a password.
    shown = f"a {scheme!r} URL" if sep else "a value without a scheme"
    raise ValueError(
        f"unsupported DATABASE_URL ({shown}); accepted forms: sqlite:///absolute/path.db, "
        "sqlite:///:memory:, postgresql://user:password@host:port/dbname (or postgres://...)"
    )
