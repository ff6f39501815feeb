"""Backend names -> classes, and the shared instances a server uses.

A new backend is one file in its kind's folder plus one line in the table of its kind here.
Instances are created cheaply on first mention (to list their models and voices) and loaded
(weights, clients) on first use; both happen once per server.
"""

from __future__ import annotations

import asyncio
from typing import Literal, cast

from server.backends.base import Backend
from server.backends.llm.base import LLM
from server.backends.llm.llama_cpp import LlamaCppLLM
from server.backends.llm.openai import OpenAILLM
from server.backends.stt.base import STT
from server.backends.stt.deepgram_flux import DeepgramFluxSTT
from server.backends.stt.whisper import WhisperSTT
from server.backends.tts.base import TTS
from server.backends.tts.cartesia import CartesiaTTS
from server.backends.tts.google import GoogleTTS
from server.backends.tts.piper import PiperTTS

STT_BACKENDS: dict[str, type[STT]] = {
    WhisperSTT.name: WhisperSTT,
    DeepgramFluxSTT.name: DeepgramFluxSTT,
}
LLM_BACKENDS: dict[str, type[LLM]] = {
    LlamaCppLLM.name: LlamaCppLLM,
    OpenAILLM.name: OpenAILLM,
}
TTS_BACKENDS: dict[str, type[TTS]] = {
    PiperTTS.name: PiperTTS,
    CartesiaTTS.name: CartesiaTTS,
    GoogleTTS.name: GoogleTTS,
}

Kind = Literal["stt", "llm", "tts"]
_TABLES: dict[Kind, dict[str, type[Backend]]] = {
    "stt": STT_BACKENDS,  # type: ignore[dict-item]
    "llm": LLM_BACKENDS,  # type: ignore[dict-item]
    "tts": TTS_BACKENDS,  # type: ignore[dict-item]
}


class BackendError(Exception):
    """Unknown name (NOT_FOUND) or unavailable here, e.g. no API key (FAILED_PRECONDITION)."""

    def __init__(self, message: str, not_found: bool) -> None:
        super().__init__(message)
        self.not_found = not_found


class Backends:
    """The server's backend instances, one per (kind, name), shared by every session.

    Tests pass ready instances (scripted backends); they count as loaded.
    """

    def __init__(
        self,
        stt: dict[str, STT] | None = None,
        llm: dict[str, LLM] | None = None,
        tts: dict[str, TTS] | None = None,
    ) -> None:
        self._instances: dict[Kind, dict[str, Backend]] = {
            "stt": dict(stt or {}),
            "llm": dict(llm or {}),
            "tts": dict(tts or {}),
        }
        self._loaded: set[tuple[Kind, str]] = {
            (kind, name) for kind, instances in self._instances.items() for name in instances
        }
        self._loading: dict[tuple[Kind, str], asyncio.Future[None]] = {}

    def names(self, kind: Kind) -> list[str]:
        return sorted(set(_TABLES[kind]) | set(self._instances[kind]))

    def unavailable_reason(self, kind: Kind, name: str) -> str | None:
        if name in self._instances[kind] and name not in _TABLES[kind]:
            return None  # injected instance
        cls = _TABLES[kind].get(name)
        if cls is None:
            raise self._unknown(kind, name)
        return cls.unavailable_reason()

    def instance(self, kind: Kind, name: str) -> Backend:
        """The (possibly not yet loaded) instance, for its models and voices."""
        instances = self._instances[kind]
        if name not in instances:
            cls = _TABLES[kind].get(name)
            if cls is None:
                raise self._unknown(kind, name)
            instances[name] = cls()
        return instances[name]

    def loaded(self, kind: Kind, name: str) -> bool:
        return (kind, name) in self._loaded

    async def get(self, kind: Kind, name: str) -> Backend:
        """The instance, loaded; concurrent callers share one load."""
        reason = self.unavailable_reason(kind, name)
        if reason:
            raise BackendError(f"{kind} backend {name!r} is unavailable: {reason}", False)
        backend = self.instance(kind, name)
        key = (kind, name)
        if key not in self._loaded:
            task = self._loading.get(key)
            if task is None or (task.done() and (task.cancelled() or task.exception())):
                task = self._loading[key] = asyncio.ensure_future(backend.load())
            await asyncio.shield(task)
            self._loaded.add(key)
        return backend

    async def get_stt(self, name: str) -> STT:
        return cast(STT, await self.get("stt", name))

    async def get_llm(self, name: str) -> LLM:
        return cast(LLM, await self.get("llm", name))

    async def get_tts(self, name: str) -> TTS:
        return cast(TTS, await self.get("tts", name))

    def _unknown(self, kind: Kind, name: str) -> BackendError:
        known = ", ".join(self.names(kind)) or "none"
        return BackendError(f"unknown {kind} backend {name!r}; known: {known}", True)

    async def aclose(self) -> None:
        for task in self._loading.values():
            task.cancel()
        for kind, name in self._loaded:
            await self._instances[kind][name].aclose()
