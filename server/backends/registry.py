"""Backend names -> classes, and the loaded, shared instances a server uses.

A new backend is one file in its kind's folder plus one line in the table of its kind here.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from server.backends.llm.base import LLM
from server.backends.llm.llama_cpp import LlamaCppLLM
from server.backends.stt.base import STT
from server.backends.stt.whisper import WhisperSTT
from server.backends.tts.base import TTS
from server.backends.tts.piper import PiperTTS

STT_BACKENDS: dict[str, type[STT]] = {
    WhisperSTT.name: WhisperSTT,
}
LLM_BACKENDS: dict[str, type[LLM]] = {
    LlamaCppLLM.name: LlamaCppLLM,
}
TTS_BACKENDS: dict[str, type[TTS]] = {
    PiperTTS.name: PiperTTS,
}


class BackendError(Exception):
    """A backend cannot be used: unknown name (NOT_FOUND) or unavailable here (FAILED_PRECONDITION)."""

    def __init__(self, message: str, not_found: bool) -> None:
        super().__init__(message)
        self.not_found = not_found


@dataclass
class Backends:
    """Loaded backend instances, one per name, shared by every session of the server.

    Tests pass instances directly (scripted backends); the server fills it from the tables above.
    """

    stt: dict[str, STT] = field(default_factory=dict)
    llm: dict[str, LLM] = field(default_factory=dict)
    tts: dict[str, TTS] = field(default_factory=dict)
    _loading: dict[tuple[str, str], asyncio.Task[None]] = field(default_factory=dict)

    async def get_stt(self, name: str) -> STT:
        return await self._get("stt", name, self.stt, STT_BACKENDS)  # type: ignore[return-value]

    async def get_llm(self, name: str) -> LLM:
        return await self._get("llm", name, self.llm, LLM_BACKENDS)  # type: ignore[return-value]

    async def get_tts(self, name: str) -> TTS:
        return await self._get("tts", name, self.tts, TTS_BACKENDS)  # type: ignore[return-value]

    async def _get(self, kind: str, name: str, loaded: dict, table: dict) -> object:  # type: ignore[type-arg]
        if name in loaded and (kind, name) not in self._loading:
            return loaded[name]
        if (kind, name) not in self._loading:
            cls = table.get(name)
            if cls is None:
                known = ", ".join(sorted(set(table) | set(loaded))) or "none"
                raise BackendError(f"unknown {kind} backend {name!r}; known: {known}", True)
            reason = cls.unavailable_reason()
            if reason:
                raise BackendError(f"{kind} backend {name!r} is unavailable: {reason}", False)
            instance = cls()
            loaded[name] = instance
            self._loading[(kind, name)] = asyncio.ensure_future(instance.load())
        task = self._loading[(kind, name)]
        try:
            await asyncio.shield(task)
        except Exception:
            loaded.pop(name, None)
            raise
        finally:
            if task.done():
                self._loading.pop((kind, name), None)
        return loaded[name]

    async def aclose(self) -> None:
        for group in (self.stt, self.llm, self.tts):
            for backend in group.values():
                await backend.aclose()
