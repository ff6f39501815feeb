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
    # Monotonic time at which the turn's first voiced audio was received (where known).
    speech_start: float | None = None
    # Voiced audio of the turn so far, first to last voiced frame, in seconds (where known).
    speech_seconds: float = 0.0
    # How sure the recognizer was of `transcript`: the mean log probability of its tokens
    # (0.0 when it does not say). Speech over the agent needs sure words to stop it.
    log_prob: float = 0.0


class TurnMode(enum.Enum):
    SEMANTIC = "semantic"  # a turn-completion model decides, silence is the upper bound
    SILENCE = "silence"  # a fixed silence ends the turn


@dataclass(frozen=True)
class TurnOptions:
    eager_silence_ms: int = 200
    end_of_turn_silence_ms: int = 640  # SILENCE: the silence that ends a turn
    # SEMANTIC: the least silence before a turn judged complete ends (the model and the final
    # decode take about this long anyway). TurnDetection.end_of_turn_silence_ms sets it there.
    min_silence_ms: int = 128
    eager_enabled: bool = True
    language: str = "en"
    mode: TurnMode = TurnMode.SEMANTIC
    max_silence_ms: int = 2000  # SEMANTIC: the longest wait for a caller who has not finished
    completion_threshold: float = 0.5  # SEMANTIC: completion probability that ends a turn
    # False: acknowledgements and noises while the agent talks do not interrupt it.
    barge_in_on_any_speech: bool = False
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

    def watch_for_interruption(self) -> None:  # noqa: B027 - optional hint, no-op by default
        """The caller started talking over the agent: transcribe the first words at once.

        The session tells an interruption ("wait, stop") from an acknowledgement ("uh-huh") by
        the words, so the sooner they come (as UPDATE events) the sooner the agent stops.
        Backends whose updates come at their own pace (Flux) ignore it.
        """

    def interruption_confirmed(self) -> None:  # noqa: B027 - optional hint, no-op by default
        """The speech over the agent did interrupt it: interims back at their pace, and the turn
        waits a little longer before it ends ("Sorry." is most often followed by more)."""


class STT(Backend, ABC):
    """A speech-to-text engine, loaded once and shared by every session."""

    sample_rate: ClassVar[int] = 16000  # what `STTStream.push` takes

    @abstractmethod
    def open_stream(self, options: TurnOptions) -> STTStream: ...

    def language_problem(self, language: str) -> str | None:
        """Why this engine cannot transcribe `language` (a BCP-47 tag), or None if it can."""
        return None
