"""What every speech-to-text backend gives the pipeline: a stream of Flux-style turn events."""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from server.backends.base import Backend


class TurnEventKind(enum.IntEnum):
    """Deepgram Flux's turn vocabulary; values match voiceagent.v1.TurnEvent."""

    START_OF_TURN = 1
    UPDATE = 2
    EAGER_END_OF_TURN = 3
    TURN_RESUMED = 4
    END_OF_TURN = 5


@dataclass(frozen=True)
class TurnUpdate:
    kind: TurnEventKind
    turn_index: int
    transcript: str = ""
    # Monotonic time at which the last voiced audio of the turn was received (end of speech);
    # set on EAGER_END_OF_TURN and END_OF_TURN, the zero point of the turn's latency metrics.
    speech_end: float | None = None
    # Monotonic time at which this event was produced.
    at: float = 0.0
    # The input audio the transcript covers, in seconds from the stream's first sample.
    audio_start: float = 0.0
    audio_end: float = 0.0


@dataclass(frozen=True)
class TurnOptions:
    eager_silence_ms: int = 200
    end_of_turn_silence_ms: int = 640
    eager_enabled: bool = True
    language: str = "en"
    # Deepgram Flux's confidence thresholds; None: not sent, the provider's default applies.
    eot_threshold: float | None = None
    eager_eot_threshold: float | None = None


class STTStream(ABC):
    """One session's recognizer. `push` never blocks on inference."""

    @abstractmethod
    async def push(self, pcm: np.ndarray, received_at: float) -> None:
        """Queue int16 mono audio at the backend's sample rate, received at `received_at`."""

    @abstractmethod
    def events(self) -> AsyncIterator[TurnUpdate]:
        """Turn events in order; ends after `aclose`."""

    @abstractmethod
    async def aclose(self) -> None:
        """Stop and release everything the stream started."""


class STT(Backend, ABC):
    """A speech-to-text engine, loaded once and shared by every session."""

    sample_rate: ClassVar[int] = 16000  # what `STTStream.push` takes

    @abstractmethod
    def open_stream(self, options: TurnOptions) -> STTStream: ...
