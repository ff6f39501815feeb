"""What every TTS backend gives the pipeline: audio for a piece of text, as it is synthesized."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass

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
