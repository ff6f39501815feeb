"""Flux-style turn events for STT engines that only transcribe: VAD for timing, STT for words,
and (in the default semantic mode) a turn-completion model for "has the caller finished?".

State per stream:
  idle --(speech for min_speech_ms)--> START_OF_TURN
  in turn: UPDATE with an interim transcript every ~interim_ms of new audio (every ~128 ms at
           first while the caller talks over the agent: `watch_for_interruption`)
           after 32 ms of silence a final (beam search) decode starts, and in semantic mode at 64
           ms the completion model scores the turn's audio (again at ~220 ms if it was unfinished)
           EAGER_END_OF_TURN once the decode is in and eager_silence_ms have passed (not when
           the turn is judged complete before that: END_OF_TURN comes straight away); in
           semantic mode already at 32 ms of silence from the last interim transcript when it
           heard nearly all the speech (END_OF_TURN keeps it if the final has the same words)
           speech again after an eager event: TURN_RESUMED
           END_OF_TURN: silence mode, after end_of_turn_silence_ms of silence; semantic mode, as
           soon as the model and the words say the turn is complete (when the model first heard
           it unfinished, or the last word is "too", "two", "four"..., only once the STT says it
           was no misheard "to", "for"...), otherwise after max_silence_ms (the eager
           transcript when it still covers all the audio, otherwise a fresh final decode)
Decodes and model calls run as tasks so the VAD keeps up with live audio meanwhile; a result
that arrives after the user resumed speaking is dropped (each resume starts a new "epoch"). A
task that fails hands its error to `events()`, which raises it, so the session ends with it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from server.backends.stt.base import STTStream, TurnEventKind, TurnMode, TurnOptions, TurnUpdate
from server.metrics import OPEN_ENDINGS
from server.tasks import TaskSet
from server.turn_words import (
    ends_sentence,
    is_question,
    looks_repetitive,
    may_be_open_word,
    same_words,
    sounds_unfinished,
)
from server.vad import WINDOW, VoiceActivityDetector

SPEECH_THRESHOLD = 0.5
SILENCE_THRESHOLD = 0.35  # hysteresis: between the two, the previous state holds
# The eager decode and the speculative answer start at the first silent window (32 ms): they
# overlap the wait instead of following it. Silero's hysteresis leaves almost no one-window gaps
# inside speech (none in the 22 utterances of bench/turn_taking.py at 16 or 8 kHz), so starting
# there costs few decodes that a resumed turn throws away.
PREPARE_WINDOWS = 1
# The first completion check waits one window more (64 ms): the model is trained on turns that
# end in some silence, and the final decode, which the end of the turn also waits for, takes
# longer than the check.
CHECK_WINDOWS = 2
# Semantic mode checks completion again at this silence (~220 ms) when the first check heard an
# unfinished turn: the model is trained on turns ending in up to ~200 ms of silence. Later checks
# would not help: past ~300 ms the silence itself makes the model call nearly any turn complete
# (measured on our own hesitations), so an unfinished turn waits for max_silence_ms instead.
RECHECK_WINDOWS = (7,)
MIN_SPEECH_WINDOWS = 3  # 96 ms of speech before a turn (or a barge-in) starts
PREROLL_WINDOWS = 10  # 320 ms of audio kept before the start so the first word is whole
INTERIM_WINDOWS = 12  # an interim transcript every ~384 ms of speech
# While the caller talks over the agent: the first interim after ~190 ms of speech, then one
# every ~130 ms, so the session can tell "wait" from "uh-huh" quickly.
WATCH_FIRST_WINDOWS = 6  # counted from the first voiced window (START comes at 3)
WATCH_INTERIM_WINDOWS = 4
MAX_TURN_SECONDS = 30
# An interim transcript "covers" the turn when it heard all but this much of its speech (the
# last ~250 ms: the end of the last word, which the final decode then confirms).
COVER_WINDOWS = 8
# A turn whose words end a sentence ends after this much silence (~1 s) even when the model
# heard it as unfinished (it does for some finished sentences).
WORDS_COMPLETE_SILENCE_WINDOWS = 31
# A turn that interrupted the agent ends on completion only after ~0.5 s of silence: "Sorry."
# or "Wait." is most often followed by what the caller wants to say.
INTERRUPTION_MIN_SILENCE_WINDOWS = 16
# A turn the model first heard as unfinished, or whose last word is spelled like a trailing "to"
# or "for", is held when the STT puts at least this probability on a word no phrase ends on in
# its last word's place: Whisper writes the pause in
# "my flight to ... the one on Tuesday" as "my flight too." (0.26-0.95 on "to" there, under 0.02
# on complete utterances: see `WhisperSTT.open_ending`).
OPEN_ENDING_THRESHOLD = 0.1


@dataclass(frozen=True)
class Transcription:
    """What a decode heard, and how sure the recognizer was of it."""

    text: str
    # The mean log probability of its tokens (Whisper's avg_logprob); 0.0 when not known.
    # Below turn_words.UNSURE_LOG_PROB the words are a guess (the figures are there).
    log_prob: float = 0.0


class Transcriber(Protocol):
    """Batch speech recognition over a whole turn's audio (int16, 16 kHz).

    `final` asks for the careful decode (beam search) used for END_OF_TURN; interim decodes
    are greedy and cheap. `skippable`: an interim nobody waits on, which a busy transcriber
    may answer with "" (the previous interim stands) so the decodes callers wait on go first.
    """

    async def transcribe(
        self, pcm: np.ndarray, final: bool, language: str, skippable: bool = False
    ) -> Transcription: ...

    async def open_ending(self, pcm: np.ndarray, transcript: str, language: str) -> float:
        """The probability that `transcript`'s last word was in fact a word that leaves its
        phrase open ("...my flight too." for "...my flight to"); 0.0 when it cannot tell."""
        ...


class CompletionModel(Protocol):
    """The probability that a turn (int16, 16 kHz, ending in the silence so far) is complete."""

    async def completion(self, pcm: np.ndarray) -> float: ...


def judge_complete(probability: float, transcript: str, threshold: float) -> bool:
    """The turn is over: the model hears an ending, and the words do not stop mid-phrase.

    A transcript ending in "for", "and", "um" is held whatever the voice did (a flat or
    synthetic voice can fall at any word); a question needs less certainty from the model.
    """
    if sounds_unfinished(transcript):
        return False
    if is_question(transcript):
        return probability >= threshold / 2
    return probability >= threshold


class VadTurnStream(STTStream):
    def __init__(
        self,
        transcriber: Transcriber,
        vad: VoiceActivityDetector,
        options: TurnOptions,
        completion: CompletionModel | None = None,
    ) -> None:
        if options.mode == TurnMode.SEMANTIC and completion is None:
            raise ValueError("semantic turn detection needs a completion model")
        self._stt = transcriber
        self._completion_model = completion
        self._semantic = options.mode == TurnMode.SEMANTIC
        self._vad = vad.new_stream()
        self._opt = options
        self._eager_windows = max(1, options.eager_silence_ms // 32)
        if self._semantic:
            self._min_windows = max(CHECK_WINDOWS, options.min_silence_ms // 32)
            self._eot_windows = max(self._min_windows + 1, options.max_silence_ms // 32)
        else:
            self._min_windows = self._eot_windows = max(
                self._eager_windows + 1, options.end_of_turn_silence_ms // 32
            )
        self._inbox: asyncio.Queue[tuple[np.ndarray, float] | None] = asyncio.Queue()
        self._events: asyncio.Queue[TurnUpdate | BaseException | None] = asyncio.Queue()
        self._pending = np.zeros(0, dtype=np.int16)
        self._preroll: deque[np.ndarray] = deque(maxlen=PREROLL_WINDOWS)
        self._turn_audio: list[np.ndarray] = []
        self._in_turn = False
        self._speaking = False
        self._speech_run = 0
        self._silence_run = 0
        self._windows_since_interim = 0
        self._turn_index = 0
        self._windows_seen = 0  # windows of the whole stream, to place transcripts in time
        self._turn_first_window = 0
        self._voiced_windows = (0, 0)  # first and last voiced window of the turn (stream index)
        self._epoch = 0
        self._speech_start = 0.0
        self._last_voiced_at = 0.0
        self._watching = False  # the caller talks over the agent: early, frequent interims
        self._interrupting = False  # ...and did interrupt it
        self._eager_sent = False
        self._eager_result: tuple[int, Transcription] | None = None  # (epoch, what it heard)
        self._eager_audio = np.zeros(0, dtype=np.int16)  # what the eager decode heard
        # (epoch, open_ending of its eager text): None while asked and not answered
        self._ending: tuple[int, float | None] | None = None
        self._ending_task: asyncio.Task[None] | None = None
        # (speech end, turn index, span) of the eager decode in `_eager_result`
        self._eager_event: tuple[float, int, tuple[float, float]] = (0.0, 0, (0.0, 0.0))
        self._eager_due = False  # the eager silence has passed; emit when the decode is in
        self._interim_result: tuple[int, str, int] | None = None  # (turn, text, windows heard)
        self._speculated: tuple[int, str] | None = None  # (epoch, interim text of an EAGER)
        self._completion: tuple[int, float] | None = None  # (epoch, latest probability)
        self._rechecked = False  # this silence had its second completion check
        self._eager_task: asyncio.Task[None] | None = None
        self._interim_task: asyncio.Task[None] | None = None
        self._final_task: asyncio.Task[None] | None = None
        self._checks: set[asyncio.Task[None]] = set()  # of this turn, cancelled when it ends
        # The VAD loop, decodes and model calls: one that fails ends the stream with its error.
        self._tasks = TaskSet(lambda _task, exc: self._events.put_nowait(exc))
        self._worker = self._tasks.spawn(self._run(), "vad-turns")

    async def push(self, pcm: np.ndarray, received_at: float) -> None:
        self._inbox.put_nowait((pcm, received_at))

    async def events(self) -> AsyncIterator[TurnUpdate]:
        while (event := await self._events.get()) is not None:
            if isinstance(event, BaseException):
                raise event
            yield event

    def watch_for_interruption(self) -> None:
        self._watching = self._in_turn

    def interruption_confirmed(self) -> None:
        self._watching = False
        self._interrupting = self._in_turn

    async def aclose(self) -> None:
        await self._tasks.cancel_all()
        self._events.put_nowait(None)

    # --- the VAD loop -----------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            item = await self._inbox.get()
            if item is None:
                break
            pcm, received_at = item
            # Take everything queued meanwhile: one VAD request per batch.
            while not self._inbox.empty():
                more = self._inbox.get_nowait()
                if more is None:
                    break
                pcm = np.concatenate([pcm, more[0]])
                received_at = more[1]
            audio = np.concatenate([self._pending, pcm])
            n = len(audio) // WINDOW
            self._pending = audio[n * WINDOW :]
            if n == 0:
                continue
            windows = audio[: n * WINDOW].reshape(n, WINDOW)
            probs = await self._vad.probabilities(windows)
            for window, prob in zip(windows, probs, strict=True):
                await self._on_window(window, prob, received_at)

    async def _on_window(self, window: np.ndarray, prob: float, received_at: float) -> None:
        self._windows_seen += 1
        if prob >= SPEECH_THRESHOLD:
            self._speaking = True
        elif prob < SILENCE_THRESHOLD:
            self._speaking = False

        if not self._in_turn:
            self._preroll.append(window)
            self._speech_run = self._speech_run + 1 if self._speaking else 0
            if self._speech_run >= MIN_SPEECH_WINDOWS:
                await self._start_turn(received_at)
            return

        self._turn_audio.append(window)
        if self._speaking:
            self._last_voiced_at = received_at
            self._voiced_windows = (self._voiced_windows[0], self._windows_seen)
            if self._silence_run > 0 and self._eager_sent:
                self._emit(TurnEventKind.TURN_RESUMED, span=self._span())
                self._eager_sent = False
            if self._silence_run > 0:
                self._epoch += 1  # audio changed: earlier decodes no longer cover it
                self._eager_result = None
                self._eager_due = False
                self._completion = None
                self._rechecked = False
            self._silence_run = 0
            self._windows_since_interim += 1
            if self._interim_due():
                self._schedule_interim()
            if len(self._turn_audio) * WINDOW >= MAX_TURN_SECONDS * 16000:
                self._end_turn()  # a monologue: answer what we have
            return

        self._silence_run += 1
        if self._silence_run == PREPARE_WINDOWS and (self._opt.eager_enabled or self._semantic):
            self._schedule_eager()
            self._maybe_speculate_from_interim()
        if self._semantic and self._silence_run == CHECK_WINDOWS:
            self._schedule_check()
        elif self._semantic and self._silence_run in RECHECK_WINDOWS and self._heard_unfinished():
            self._rechecked = True
            self._schedule_check()
        if self._opt.eager_enabled and self._silence_run == self._eager_windows:
            self._eager_due = True
            self._maybe_emit_eager()
        if self._silence_run >= self._eot_windows:
            self._end_turn()
        elif self._semantic:
            self._maybe_end_complete()

    def _interim_due(self) -> bool:
        if not self._watching:
            return self._windows_since_interim >= INTERIM_WINDOWS
        voiced = self._windows_seen - self._voiced_windows[0] + 1
        if voiced < WATCH_FIRST_WINDOWS:
            return False
        return voiced == WATCH_FIRST_WINDOWS or self._windows_since_interim >= WATCH_INTERIM_WINDOWS

    async def _start_turn(self, received_at: float) -> None:
        if self._final_task is not None:
            await self._final_task  # the previous END_OF_TURN goes out before this START
        self._in_turn = True
        self._watching = False
        self._interrupting = False
        self._turn_audio = list(self._preroll)
        self._turn_first_window = self._windows_seen - len(self._turn_audio)
        self._voiced_windows = (self._windows_seen - self._speech_run + 1, self._windows_seen)
        # Audio arrives in frames and is processed in batches: the first voiced window began
        # about this long before the frame that completed the START window was received.
        self._speech_start = received_at - self._speech_run * WINDOW / 16000
        self._preroll.clear()
        self._silence_run = 0
        self._speech_run = 0
        self._windows_since_interim = 0
        self._eager_sent = False
        self._eager_result = None
        self._eager_due = False
        self._completion = None
        self._rechecked = False
        self._interim_result = None
        self._speculated = None
        self._epoch += 1
        self._last_voiced_at = received_at
        self._emit(TurnEventKind.START_OF_TURN, span=self._span())

    def _end_turn(self) -> None:
        self._in_turn = False
        self._watching = False
        audio, span = self._audio(), self._span()
        epoch = self._epoch
        turn_index, speech_end = self._turn_index, self._last_voiced_at
        speech_seconds, speech_start = self._speech_seconds(), self._speech_start
        speculated = self._speculated if self._speculated and self._speculated[0] == epoch else None
        eager_task = self._eager_task
        self._turn_index += 1
        self._turn_audio = []
        self._speech_run = 0
        if self._interim_task is not None:
            self._interim_task.cancel()
        for check in self._checks:
            check.cancel()
        if self._ending_task is not None:
            self._ending_task.cancel()

        async def finish() -> None:
            if eager_task is not None and not eager_task.done():
                await eager_task
            result = self._eager_result
            if result is not None and result[0] == epoch:
                heard = result[1]
            else:
                heard = await self._stt.transcribe(audio, True, self._opt.language)
            text = heard.text
            if speculated is not None and same_words(speculated[1], text):
                text = speculated[1]  # the speculative answer to it stands
            self._emit(
                TurnEventKind.END_OF_TURN,
                text,
                speech_end,
                turn_index,
                span,
                speech_seconds=speech_seconds,
                speech_start=speech_start,
                log_prob=heard.log_prob,
            )

        self._final_task = self._tasks.spawn(finish(), "final-decode")

    # --- semantic end of turn ---------------------------------------------------------------

    def _schedule_check(self) -> None:
        model = self._completion_model
        assert model is not None
        audio, epoch = self._audio(), self._epoch

        async def check() -> None:
            probability = await model.completion(audio)
            if epoch != self._epoch or not self._in_turn:
                return  # the caller went on (or the turn already ended)
            self._completion = (epoch, probability)
            late = self._silence_run >= RECHECK_WINDOWS[0] and not self._rechecked
            if late and probability < self._opt.completion_threshold:
                self._rechecked = True  # the recheck's silence came while this one ran
                self._schedule_check()
            self._maybe_end_complete()

        task = self._tasks.spawn(check(), "turn-completion")
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    def _heard_unfinished(self) -> bool:
        """The last check of this silence said "unfinished". A check still running answers for
        itself: when it hears "unfinished" after the recheck's silence, it asks again."""
        if self._checks:
            return False
        completion = self._completion
        if completion is None or completion[0] != self._epoch:
            return True
        return completion[1] < self._opt.completion_threshold

    def _maybe_end_complete(self) -> None:
        """END_OF_TURN now if the decode and the model are in and say "finished".

        Two ways to finish: the model hears an ending and the words do not stop mid-phrase
        (after min_silence_ms), or, whatever the model heard, the words end a sentence and
        the caller has been silent for WORDS_COMPLETE_SILENCE_MS (the model misses some
        finished turns: a caller should not wait max_silence_ms for them).
        """
        result, completion = self._eager_result, self._completion
        least = self._min_windows
        if self._interrupting:
            least = max(least, INTERRUPTION_MIN_SILENCE_WINDOWS)
        if not self._in_turn or self._silence_run < least:
            return
        if result is None or completion is None:
            return
        if result[0] != self._epoch or completion[0] != self._epoch:
            return
        text, probability = result[1].text, completion[1]
        threshold = self._opt.completion_threshold
        if self._watching:
            # Over the agent, a few words are most often an acknowledgement: no word veto (an
            # "uh..." is not held for max_silence_ms while the agent goes on).
            finished = probability >= threshold
        else:
            finished = judge_complete(probability, text, threshold)
            # The voice ended clearly at the first check: no more questions asked, unless the
            # last word is how Whisper writes a trailing "to" or "for" (the model hears
            # "...my flight to" as finished: 0.89-0.94).
            at_once = finished and not self._rechecked and not may_be_open_word(text)
            if not finished and self._silence_run >= WORDS_COMPLETE_SILENCE_WINDOWS:
                finished = ends_sentence(text)
            if finished and text and not at_once and not self._ending_closed(text):
                return
        if text and not finished:
            return
        self._end_turn()  # no EAGER_END_OF_TURN first: the answer can start for real now

    def _ending_closed(self, text: str) -> bool:
        """The STT heard no open word ("to", "for") in the place of the last one. Asked once per
        epoch; the answer comes back to _maybe_end_complete."""
        ending = self._ending
        if ending is not None and ending[0] == self._epoch:
            return ending[1] is not None and ending[1] < OPEN_ENDING_THRESHOLD
        self._ending = (epoch := self._epoch, None)
        audio = self._eager_audio

        async def ask() -> None:
            openness = await self._stt.open_ending(audio, text, self._opt.language)
            OPEN_ENDINGS.labels("held" if openness >= OPEN_ENDING_THRESHOLD else "passed").inc()
            if epoch != self._epoch or not self._in_turn:
                return
            self._ending = (epoch, openness)
            self._maybe_end_complete()

        self._ending_task = self._tasks.spawn(ask(), "open-ending")
        return False

    # --- decodes ----------------------------------------------------------------------------

    def _span(self) -> tuple[float, float]:
        """Where the current turn's audio lies in the stream, in seconds."""
        start = self._turn_first_window * WINDOW / 16000
        return start, start + len(self._turn_audio) * WINDOW / 16000

    def _speech_seconds(self) -> float:
        first, last = self._voiced_windows
        return max(0, last - first + 1) * WINDOW / 16000

    def _audio(self) -> np.ndarray:
        return np.concatenate(self._turn_audio) if self._turn_audio else np.zeros(0, np.int16)

    def _schedule_interim(self) -> None:
        if self._interim_task is not None and not self._interim_task.done():
            return
        self._windows_since_interim = 0
        audio, turn_index, span = self._audio(), self._turn_index, self._span()
        speech_seconds = self._speech_seconds()

        covered = self._windows_seen

        # Over the agent an interim decides whether the agent stops: it is never skipped.
        skippable = not self._watching

        async def interim() -> None:
            heard = await self._stt.transcribe(audio, False, self._opt.language, skippable)
            text = heard.text
            if text and self._in_turn and not self._eager_sent and turn_index == self._turn_index:
                self._emit(
                    TurnEventKind.UPDATE,
                    text,
                    span=span,
                    speech_seconds=speech_seconds,
                    log_prob=heard.log_prob,
                )
                self._interim_result = (turn_index, text, covered)
                self._maybe_speculate_from_interim()

        self._interim_task = self._tasks.spawn(interim(), "interim-decode")

    def _schedule_eager(self) -> None:
        audio, epoch, speech_end = self._audio(), self._epoch, self._last_voiced_at
        turn_index, span = self._turn_index, self._span()

        async def eager() -> None:
            heard = await self._stt.transcribe(audio, True, self._opt.language)
            if epoch != self._epoch:
                return  # the user went on speaking while we decoded
            self._eager_result = (epoch, heard)
            self._eager_audio = audio
            self._eager_event = (speech_end, turn_index, span)
            self._maybe_emit_eager()
            if self._semantic:
                self._maybe_end_complete()

        self._eager_task = self._tasks.spawn(eager(), "eager-decode")

    def _maybe_speculate_from_interim(self) -> None:
        """Semantic mode: EAGER_END_OF_TURN from the last interim as soon as the caller falls
        silent, when that interim heard (nearly) all the speech and is no repetition loop.

        The speculative answer then starts ~32 ms into the silence instead of after the final
        decode (~150-250 ms more); END_OF_TURN keeps it when the final decode has the same
        words, otherwise the session answers the final transcript afresh.
        """
        interim = self._interim_result
        if not (self._semantic and self._opt.eager_enabled and self._in_turn) or self._watching:
            return
        if self._eager_sent or self._silence_run < PREPARE_WINDOWS or interim is None:
            return
        turn_index, text, covered = interim
        if turn_index != self._turn_index or self._voiced_windows[1] - covered > COVER_WINDOWS:
            return
        if looks_repetitive(text):
            return
        self._eager_sent = True
        self._speculated = (self._epoch, text)
        span = self._span()
        self._emit(TurnEventKind.EAGER_END_OF_TURN, text, self._last_voiced_at, turn_index, span)

    def _maybe_emit_eager(self) -> None:
        """EAGER_END_OF_TURN once both the decode and the eager silence are there."""
        result = self._eager_result
        if not self._eager_due or self._eager_sent or result is None or result[0] != self._epoch:
            return
        if not self._in_turn:
            return
        heard = result[1]
        speech_end, turn_index, span = self._eager_event
        if heard.text:
            self._eager_sent = True
            self._emit(
                TurnEventKind.EAGER_END_OF_TURN,
                heard.text,
                speech_end,
                turn_index,
                span,
                log_prob=heard.log_prob,
            )

    def _emit(
        self,
        kind: TurnEventKind,
        transcript: str = "",
        speech_end: float | None = None,
        turn_index: int | None = None,
        span: tuple[float, float] = (0.0, 0.0),
        speech_seconds: float | None = None,
        speech_start: float | None = None,
        log_prob: float = 0.0,
    ) -> None:
        self._events.put_nowait(
            TurnUpdate(
                kind=kind,
                turn_index=self._turn_index if turn_index is None else turn_index,
                transcript=transcript,
                speech_end=speech_end,
                at=time.monotonic(),
                audio_start=span[0],
                audio_end=span[1],
                speech_start=self._speech_start if speech_start is None else speech_start,
                speech_seconds=self._speech_seconds() if speech_seconds is None else speech_seconds,
                log_prob=log_prob,
            )
        )
