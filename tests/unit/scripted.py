"""Scripted in-process backends behind our base classes, for unit tests of the pipeline.

Speech is simulated by loud tones: an energy VAD marks them as speech, and the transcriber
names each turn by its count of loud windows ("said 31 windows"), so a test controls words and timing
with plain audio and still runs through the real turn detector, session and servicer. The pitch
carries the rest: a turn whose last loud window is a low tone (LOW_HZ) sounds unfinished to the
scripted completion model, and a turn of high tones only (ACK_HZ) is transcribed "Uh-huh."
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

RATE = 16000
LOW_HZ = 220.0  # a turn ending on this pitch sounds unfinished
ACK_HZ = 1760.0  # a turn of this pitch only is an acknowledgement, "Uh-huh."
# a turn of this pitch only is a hum the recognizer turns into words it is unsure of (as
# Whisper writes a short "mm-hmm": "In a month.", mean log probability -1.1)
HUM_HZ = 2640.0
HUM_WORDS = Transcription("In a month.", -1.1)


def pitch(window: np.ndarray, rate: int = RATE) -> float:
    """The frequency of a pure tone, from its zero crossings (silence around it left out)."""
    nonzero = np.nonzero(window)[0]
    if len(nonzero) < 2:
        return 0.0
    tone = window[nonzero[0] : nonzero[-1] + 1].astype(np.int32)
    signs = np.signbit(tone)
    return float(np.count_nonzero(signs[1:] != signs[:-1])) * rate / (2 * len(tone))


def _loudness(pcm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`pcm`'s whole 32 ms windows, and which of them are loud."""
    n = len(pcm) // 512
    windows = pcm[: n * 512].reshape(n, 512)
    return windows, np.sqrt(np.mean(windows.astype(np.float64) ** 2, axis=1)) > 500


def loud_windows(pcm: np.ndarray) -> list[np.ndarray]:
    windows, loud = _loudness(pcm)
    return list(windows[loud])


def quiet_tail(pcm: np.ndarray) -> int:
    """How many 32 ms windows of silence end `pcm` (the silence a decode or check was given)."""
    loud = np.flatnonzero(_loudness(pcm)[1])
    n = len(pcm) // 512
    return n - 1 - int(loud[-1]) if len(loud) else n


def tone(seconds: float, rate: int = RATE, freq: float = 440.0, level: int = 8000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (level * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def silence(seconds: float, rate: int = RATE) -> np.ndarray:
    return np.zeros(int(seconds * rate), dtype=np.int16)


class EnergyVAD(VoiceActivityDetector):
    """Speech is any window louder than RMS 500; batched by the real detector machinery."""

    def initial_state(self) -> None:
        return None

    def step(self, states: list[Any], windows: np.ndarray) -> np.ndarray:
        rms = np.sqrt(np.mean(windows.astype(np.float64) ** 2, axis=1))
        return (rms > 500).astype(np.float64)


class ScriptedTranscriber:
    """A turn's transcript is "said N windows": N is its count of loud 32 ms windows ("Uh-huh." for a
    turn of ACK_HZ tones only)."""

    def __init__(self, delay: float = 0.01) -> None:
        self.delay = delay
        self.calls: list[tuple[int, bool]] = []
        self.skippable: list[bool] = []  # of each interim decode
        self.final_tails: list[int] = []  # silent windows ending each final decode's audio
        self.openness = 0.0  # what open_ending answers
        self.endings_asked: list[str] = []  # the transcripts open_ending was asked about

    async def transcribe(
        self, pcm: np.ndarray, final: bool, language: str, skippable: bool = False
    ) -> Transcription:
        await asyncio.sleep(self.delay)
        loud = loud_windows(pcm)
        self.calls.append((len(pcm), final))
        if final:
            self.final_tails.append(quiet_tail(pcm))
        else:
            self.skippable.append(skippable)
        if loud and all(abs(pitch(w) - ACK_HZ) < 200 for w in loud):
            return Transcription("Uh-huh.")
        if loud and all(abs(pitch(w) - HUM_HZ) < 200 for w in loud):
            return HUM_WORDS
        return Transcription(f"said {len(loud)} windows" if loud else "")

    async def open_ending(self, pcm: np.ndarray, transcript: str, language: str) -> float:
        await asyncio.sleep(self.delay)
        self.endings_asked.append(transcript)
        return self.openness


class ScriptedCompletion:
    """Turn completion by pitch: a turn whose last loud window is LOW_HZ is unfinished (0.1)."""

    def __init__(self, delay: float = 0.01) -> None:
        self.delay = delay
        self.calls = 0
        self.tails: list[int] = []  # silent windows ending each check's audio

    async def completion(self, pcm: np.ndarray) -> float:
        await asyncio.sleep(self.delay)
        self.calls += 1
        self.tails.append(quiet_tail(pcm))
        loud = loud_windows(pcm)
        return 0.1 if loud and abs(pitch(loud[-1]) - LOW_HZ) < 60 else 0.9


class ScriptedSTT(STT):
    name: ClassVar[str] = "scripted-stt"

    def __init__(self, delay: float = 0.01) -> None:
        self.transcriber = ScriptedTranscriber(delay)
        self.completion = ScriptedCompletion(delay)
        self.vad = EnergyVAD()

    def open_stream(self, options: TurnOptions) -> STTStream:
        semantic = options.mode == TurnMode.SEMANTIC
        return VadTurnStream(
            self.transcriber, self.vad, options, self.completion if semantic else None
        )

    async def aclose(self) -> None:
        await asyncio.to_thread(self.vad.close)


class ScriptedLLM(LLM):
    """Replies with `reply` (or `reply_for(user text)`), one word every `token_delay` seconds."""

    name: ClassVar[str] = "scripted-llm"

    def __init__(
        self, reply: str = "Sure. Here is my answer to that.", token_delay: float = 0.005
    ) -> None:
        self.reply = reply
        self.token_delay = token_delay
        self.calls: list[list[ChatMessage]] = []
        self.finished = 0
        self.closed_early = 0
        self.warmed = 0
        self.heard: list[str] = []  # the interim words each warm-up was given

    def models(self) -> list[str]:
        return ["scripted-small", "scripted-large"]

    async def stream(
        self, messages: list[ChatMessage], model: str, tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[str | ToolCall]:  # type: ignore[override]
        self.calls.append([ChatMessage(m.role, m.content) for m in messages])
        done = False
        try:
            for i, word in enumerate(self.reply.split(" ")):
                await asyncio.sleep(self.token_delay)
                yield word if i == 0 else " " + word
            done = True
            self.finished += 1
        finally:
            if not done:
                self.closed_early += 1

    async def warm(
        self,
        messages: list[ChatMessage],
        model: str,
        tools: Sequence[ToolSpec] = (),
        heard: str = "",
    ) -> None:
        self.warmed += 1
        self.heard.append(heard)


class ScriptedToolLLM(ScriptedLLM):
    """Calls tools as scripted: to a user turn it says `before` and calls `calls` (those among
    the tools offered; with `call_on`, only turns containing it); once the last message is a tool result it says `after`, where
    "{result}" stands for that result. `offered` records the tool names of every request."""

    name: ClassVar[str] = "scripted-tool-llm"

    def __init__(
        self,
        calls: list[ToolCall],
        before: str = "",
        after: str = "All done: {result}",
        token_delay: float = 0.005,
        call_on: str = "",
    ) -> None:
        super().__init__(after, token_delay)
        self.call_on = call_on  # only user turns with these words call the tools
        self.tool_calls = calls
        self.before = before
        self.after = after
        self.offered: list[list[str]] = []

    async def stream(  # type: ignore[override]
        self, messages: list[ChatMessage], model: str, tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[str | ToolCall]:
        self.calls.append(list(messages))
        self.offered.append([t.name for t in tools])
        last = messages[-1]
        names = {t.name for t in tools}
        reply = self.after.format(result=last.content) if last.role == "tool" else self.before
        for i, word in enumerate(reply.split()):
            await asyncio.sleep(self.token_delay)
            yield word if i == 0 else " " + word
        if last.role != "tool" and self.call_on in last.content:
            for call in self.tool_calls:
                if call.name in names:
                    yield call
        self.finished += 1


class ScriptedTTS(TTS):
    """A 200 Hz tone, `seconds_per_word` of it per word, produced at `speed` x real time."""

    name: ClassVar[str] = "scripted-tts"

    def __init__(self, seconds_per_word: float = 0.1, speed: float = 50.0) -> None:
        self.seconds_per_word = seconds_per_word
        self.speed = speed
        self.texts: list[str] = []
        self.voices_used: list[str] = []
        self.cancelled = 0

    def voices(self) -> list[VoiceInfo]:
        return [VoiceInfo("alto", "Alto", "en-US"), VoiceInfo("bass", "Bass", "en-US")]

    async def synthesize(
        self, text: str, voice: str, sample_rate: int
    ) -> AsyncIterator[SynthesizedAudio]:  # type: ignore[override]
        self.texts.append(text)
        self.voices_used.append(voice)
        seconds = self.seconds_per_word * len(text.split())
        done = False
        try:
            await asyncio.sleep(seconds / self.speed)
            yield SynthesizedAudio(tone(seconds, 22050, freq=200, level=3000), 22050)
            done = True
        finally:
            if not done:
                self.cancelled += 1
