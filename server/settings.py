"""Server settings, read once from the environment (names are public: the README's configuration table)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_SYSTEM_PROMPT = (
    "You are a friendly, helpful voice assistant talking with someone on a call. "
    "Answer in one or two short spoken sentences. Never use lists, markdown, emojis or code."
)


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    try:
        return int(raw) if raw else default
    except ValueError as exc:
        raise SystemExit(f"{name} must be an integer, got {raw!r}") from exc


@dataclass(frozen=True)
class Settings:
    port: int = 50051
    http_port: int = 8080
    host: str = "[::]"
    stt: str = "whisper"
    llm: str = "llama-cpp"
    tts: str = "piper"
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    max_sessions: int = 64
    # New streams are refused while the event loop runs timers later than this (0: never).
    max_loop_lag_ms: int = 200
    drain_seconds: int = 20
    preload: bool = True
    # sqlite:///path, sqlite:///:memory: or postgresql://...; empty: SQLite under the data dir
    database_url: str = ""
    # When set, every RPC but health checks needs `authorization: Bearer <token>` metadata.
    token: str = ""
    # PEM files; both set: TLS on the gRPC port.
    tls_cert: str = ""
    tls_key: str = ""
    # A session that receives no audio or text for this long is closed (0: never).
    idle_timeout_seconds: int = 60
    # A stream whose client reads no response for this long is ended (DEADLINE_EXCEEDED); the
    # agent's audio pauses meanwhile (0: never ended).
    send_timeout_seconds: int = 20
    # The built web page served on http_port; empty: clients/web/dist in this checkout.
    web_dir: str = ""
    # Where the SQLite store and call recordings live; empty: ~/.local/share/voice-agent.
    data_dir: str = ""
    # Keep both sides of every call as a wav under data_dir/recordings (RECORD_CALLS=1).
    record_calls: bool = False
    # Call records and recordings older than this are deleted (0: kept for ever).
    call_retention_days: int = 0

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            port=_int("PORT", 50051),
            http_port=_int("HTTP_PORT", 8080),
            host=os.environ.get("VOICE_AGENT_HOST", "[::]"),
            stt=os.environ.get("VOICE_AGENT_STT") or "whisper",
            llm=os.environ.get("VOICE_AGENT_LLM") or "llama-cpp",
            tts=os.environ.get("VOICE_AGENT_TTS") or "piper",
            system_prompt=os.environ.get("VOICE_AGENT_SYSTEM_PROMPT") or DEFAULT_SYSTEM_PROMPT,
            max_sessions=_int("MAX_SESSIONS", 64),
            max_loop_lag_ms=_int("MAX_LOOP_LAG_MS", 200),
            drain_seconds=_int("DRAIN_SECONDS", 20),
            database_url=os.environ.get("DATABASE_URL", ""),
            token=os.environ.get("VOICE_AGENT_TOKEN", ""),
            tls_cert=os.environ.get("TLS_CERT", ""),
            tls_key=os.environ.get("TLS_KEY", ""),
            idle_timeout_seconds=_int("IDLE_TIMEOUT_SECONDS", 60),
            send_timeout_seconds=_int("SEND_TIMEOUT_SECONDS", 20),
            web_dir=os.environ.get("VOICE_AGENT_WEB_DIR", ""),
            data_dir=os.environ.get("VOICE_AGENT_DATA", ""),
            record_calls=os.environ.get("RECORD_CALLS", "") not in ("", "0"),
            call_retention_days=_int("CALL_RETENTION_DAYS", 0),
        )

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir) if self.data_dir else Path.home() / ".local/share/voice-agent"
