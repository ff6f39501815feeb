"""What every TTS backend gives the pipeline: audio for a piece of text, as it is synthesized."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import ClassVar

import numpy as np


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


class TTS(ABC):
    """A speech synthesis backend, loaded once and shared by every session."""

    name: ClassVar[str]

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return None

    async def load(self) -> None:  # noqa: B027 - optional hook
        """Load weights or open clients; called once before the first request."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release what `load` took."""

    @abstractmethod
    def voices(self) -> list[VoiceInfo]:
        """Voices this backend offers; the first is its default."""

    @abstractmethod
    def synthesize(
        self, text: str, voice: str, sample_rate: int
    ) -> AsyncIterator[SynthesizedAudio]:
        """Audio for `text`, streamed. `sample_rate` is what the session will send: a backend may
        render at it directly or return its native rate (the session resamples)."""
