from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from server.backends.llm.base import LLM
from server.backends.registry import Backends
from server.backends.stt.base import STT
from server.backends.tts.base import TTS
from server.main import VoiceAgentServer
from server.settings import Settings
from tests.unit.scripted import ScriptedLLM, ScriptedSTT, ScriptedTTS


@dataclass
class Scripted:
    server: VoiceAgentServer
    stt: ScriptedSTT
    llm: ScriptedLLM
    tts: ScriptedTTS

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"


StartServer = Callable[..., Awaitable[Scripted]]


@pytest.fixture
async def start_server() -> AsyncIterator[StartServer]:
    started: list[Scripted] = []

    async def start(
        stt: STT | None = None,
        llm: LLM | None = None,
        tts: TTS | None = None,
        llm_name: str | None = None,
        wait_ready: bool = True,
        more_llms: dict[str, ScriptedLLM] | None = None,
        **settings: Any,
    ) -> Scripted:
        scripted = Scripted(None, stt or ScriptedSTT(), llm or ScriptedLLM(), tts or ScriptedTTS())  # type: ignore[arg-type]
        backends = Backends(
            stt={scripted.stt.name: scripted.stt},
            llm={scripted.llm.name: scripted.llm, **(more_llms or {})},
            tts={scripted.tts.name: scripted.tts},
        )
        config = {
            "port": 0,
            "http_port": 0,
            "host": "127.0.0.1",
            "stt": scripted.stt.name,
            "llm": llm_name or scripted.llm.name,
            "tts": scripted.tts.name,
            "database_url": "sqlite:///:memory:",
        }
        config.update(settings)
        scripted.server = VoiceAgentServer(Settings(**config), backends)
        await scripted.server.start()
        if wait_ready:
            await scripted.server.wait_ready()
        started.append(scripted)
        return scripted

    yield start
    for scripted in started:
        await scripted.server.stop(0)
