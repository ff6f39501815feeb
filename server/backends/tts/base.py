"""What every TTS backend gives the pipeline: audio for a piece of text, as it is synthesized."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from server.backends.base import Backend


@dataclass(frozen=True)
class VoiceInfo:
    id: str
    name: str
    language: str
    gender: str = ""


@dataclass(frozen=True)
class SynthesizedAudio:
    pcm: np.ndarray  # int16 mono
    sample_rate: int


Encoding = Literal["linear16", "mulaw", "alaw"]


class TTSTurn:
    """One agent turn's speech: its pieces (first clause, then sentences) in order.

    This default synthesizes each piece on its own. A provider with turn-level contexts (Cartesia)
    keeps one context across the pieces, for prosody, and stops it on `cancel` (barge-in).
    """

    def __init__(self, tts: TTS, voice: str, sample_rate: int) -> None:
        self.tts = tts
        self.voice = voice
        self.sample_rate = sample_rate

    def synthesize(self, text: str) -> AsyncIterator[SynthesizedAudio]:
        """The audio of one piece; ends when that piece is fully rendered."""
        return self.tts.synthesize(text, self.voice, self.sample_rate)

    async def aclose(self) -> None:
        """Every piece was spoken: end the turn."""

    async def cancel(self) -> None:
        """Barge-in or hangup: stop generating now."""


class TTS(Backend, ABC):
    """A speech synthesis backend, loaded once and shared by every session."""

    @abstractmethod
    def voices(self) -> list[VoiceInfo]:
        """Voices this backend offers; the first is its default."""

    @abstractmethod
    def synthesize(
        self, text: str, voice: str, sample_rate: int
    ) -> AsyncIterator[SynthesizedAudio]:
        """Audio for `text`, streamed. `sample_rate` is what the session will send: a backend may
        render at it directly or return its native rate (the session resamples)."""

    def open_turn(self, voice: str, sample_rate: int, encoding: Encoding) -> TTSTurn:
        """A turn's speech; `encoding` is the session's output (a provider may render mu-law
        for a phone call directly; the audio still comes back as int16)."""
        return TTSTurn(self, voice, sample_rate)
