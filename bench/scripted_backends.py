"""Lean scripted backends for benchmarks, behind the server's real base classes.

tests/unit/scripted.py records every call (for assertions), which grows without bound over a
long load test and would be counted as the server's memory; these keep no history. With every
delay at 0 they return at once, so a benchmark measures the framework, not the stand-ins.
Speech is a loud tone: the energy VAD marks it, the transcriber names a turn by its length.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any, ClassVar

import numpy as np

from server.backends.llm.base import LLM, ChatMessage, ToolCall
from server.backends.stt.base import STT, STTStream, TurnMode, TurnOptions
from server.backends.tts.base import TTS, SynthesizedAudio, VoiceInfo
from server.tools.spec import ToolSpec
from server.turns import Transcription, VadTurnStream
from server.vad import VoiceActivityDetector

REPLY = "Sure. Here is my answer to that."
SECONDS_PER_WORD = 0.1
VOICED_RMS = 500.0


class EnergyVAD(VoiceActivityDetector):
    """Speech is any 32 ms window louder than VOICED_RMS: no model, microseconds a window."""

    def initial_state(self) -> None:
        return None

    def step(self, states: list[Any], windows: np.ndarray) -> np.ndarray:
        x = windows.astype(np.float32)
        return (np.sqrt(np.mean(x * x, axis=1)) > VOICED_RMS).astype(np.float32)


class LeanTranscriber:
    """A turn's transcript is "said N", N its count of loud 32 ms windows; no call log."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    async def transcribe(
        self, pcm: np.ndarray, final: bool, language: str, skippable: bool = False
    ) -> Transcription:
        if self.delay:
            await asyncio.sleep(self.delay)
        n = len(pcm) // 512
        x = pcm[: n * 512].reshape(n, 512).astype(np.float32)
        voiced = int(np.sum(np.sqrt(np.mean(x * x, axis=1)) > VOICED_RMS))
        return Transcription(f"said {voiced}" if voiced else "")

    async def open_ending(self, pcm: np.ndarray, transcript: str, language: str) -> float:
        return 0.0  # "said N" is never a mishearing


class LeanCompletion:
    """Every turn sounds complete: the turn ends after the semantic mode's least silence."""

    async def completion(self, pcm: np.ndarray) -> float:
        return 1.0


class BenchSTT(STT):
    """The server's real turn detector (VadTurnStream) over the energy VAD and a lean transcriber."""

    name: ClassVar[str] = "bench-stt"

    def __init__(self, delay: float = 0.0) -> None:
        self.transcriber = LeanTranscriber(delay)
        self.vad = EnergyVAD()

    def open_stream(self, options: TurnOptions) -> STTStream:
        semantic = options.mode == TurnMode.SEMANTIC
        return VadTurnStream(
            self.transcriber, self.vad, options, LeanCompletion() if semantic else None
        )

    async def aclose(self) -> None:
        await asyncio.to_thread(self.vad.close)


class BenchLLM(LLM):
    """Streams REPLY word by word, `token_delay` seconds a word (0: no wait at all)."""

    name: ClassVar[str] = "bench-llm"

    def __init__(self, token_delay: float = 0.0, reply: str = REPLY) -> None:
        self.token_delay = token_delay
        self.words = reply.split(" ")

    def models(self) -> list[str]:
        return ["bench-model"]

    async def stream(
        self, messages: list[ChatMessage], model: str, tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[str | ToolCall]:  # type: ignore[override]
        for i, word in enumerate(self.words):
            if self.token_delay:
                await asyncio.sleep(self.token_delay)
            yield word if i == 0 else " " + word


class BenchTTS(TTS):
    """A 200 Hz tone, SECONDS_PER_WORD a word, after `delay` seconds (0: at once).

    `native_rate` None renders at the rate the session asks for (no resampling); a number makes
    the server resample, as it does for Piper's 22050 Hz.
    """

    name: ClassVar[str] = "bench-tts"

    def __init__(self, delay: float = 0.0, native_rate: int | None = None) -> None:
        self.delay = delay
        self.native_rate = native_rate
        self._cache: dict[tuple[int, int], np.ndarray] = {}

    def voices(self) -> list[VoiceInfo]:
        return [VoiceInfo("bench", "Bench", "en-US")]

    def pcm(self, words: int, rate: int) -> np.ndarray:
        key = (words, rate)
        if key not in self._cache:
            t = np.arange(int(words * SECONDS_PER_WORD * rate)) / rate
            self._cache[key] = (3000 * np.sin(2 * np.pi * 200 * t)).astype(np.int16)
        return self._cache[key]

    async def synthesize(
        self, text: str, voice: str, sample_rate: int
    ) -> AsyncIterator[SynthesizedAudio]:  # type: ignore[override]
        if self.delay:
            await asyncio.sleep(self.delay)
        rate = self.native_rate or sample_rate
        yield SynthesizedAudio(self.pcm(len(text.split()), rate), rate)
