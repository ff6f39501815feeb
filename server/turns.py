"""Flux-style turn events for STT engines that only transcribe: VAD for timing, STT for words.

State per stream:
  idle --(speech for min_speech_ms)--> START_OF_TURN
  in turn: UPDATE with an interim transcript every ~interim_ms of new audio
           after 96 ms of silence a final (beam 5) decode starts; once eager_silence_ms of
           silence have passed and it is done -> EAGER_END_OF_TURN
           speech again after an eager event: TURN_RESUMED
           after end_of_turn_silence_ms of silence: END_OF_TURN (the eager transcript when it
           still covers all the audio, otherwise a fresh final decode)
Decodes run as tasks so the VAD keeps up with live audio meanwhile; a result that arrives after
the user resumed speaking is dropped (each resume starts a new "epoch").
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Protocol

import numpy as np

from server.backends.stt.base import STTStream, TurnEventKind, TurnOptions, TurnUpdate
from server.vad import WINDOW, VoiceActivityDetector

SPEECH_THRESHOLD = 0.5
SILENCE_THRESHOLD = 0.35  # hysteresis: between the two, the previous state holds
# The eager decode starts after this much silence (96 ms) and its event is held until the eager
# silence has passed: the decode overlaps the wait instead of following it.
EAGER_PREPARE_WINDOWS = 3
MIN_SPEECH_WINDOWS = 3  # 96 ms of speech before a turn (or a barge-in) starts
PREROLL_WINDOWS = 10  # 320 ms of audio kept before the start so the first word is whole
INTERIM_WINDOWS = 12  # an interim transcript every ~384 ms of speech
MAX_TURN_SECONDS = 30


class Transcriber(Protocol):
    """Batch speech recognition over a whole turn's audio (int16, 16 kHz).

    `final` asks for the careful decode (beam search) used for END_OF_TURN; interim decodes
    are greedy and cheap.
    """

    async def transcribe(self, pcm: np.ndarray, final: bool, language: str) -> str: ...


class VadTurnStream(STTStream):
    def __init__(
        self,
        transcriber: Transcriber,
        vad: VoiceActivityDetector,
        options: TurnOptions,
    ) -> None:
        self._stt = transcriber
        self._vad = vad.new_stream()
        self._opt = options
        self._eager_windows = max(1, options.eager_silence_ms // 32)
        self._eot_windows = max(self._eager_windows + 1, options.end_of_turn_silence_ms // 32)
        self._inbox: asyncio.Queue[tuple[np.ndarray, float] | None] = asyncio.Queue()
        self._events: asyncio.Queue[TurnUpdate | None] = asyncio.Queue()
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
        self._epoch = 0
        self._last_voiced_at = 0.0
        self._eager_sent = False
        self._eager_result: tuple[int, str] | None = None  # (epoch, transcript)
        self._eager_event: tuple[str, float, int, tuple[float, float]] = ("", 0.0, 0, (0.0, 0.0))
        self._eager_due = False  # the eager silence has passed; emit when the decode is in
        self._eager_task: asyncio.Task[None] | None = None
        self._interim_task: asyncio.Task[None] | None = None
        self._final_task: asyncio.Task[None] | None = None
        self._worker = asyncio.create_task(self._run(), name="vad-turns")

    async def push(self, pcm: np.ndarray, received_at: float) -> None:
        self._inbox.put_nowait((pcm, received_at))

    async def events(self) -> AsyncIterator[TurnUpdate]:
        while (event := await self._events.get()) is not None:
            yield event

    async def aclose(self) -> None:
        tasks = [self._worker, self._eager_task, self._interim_task, self._final_task]
        running = [task for task in tasks if task is not None]
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running)  # not suppress(CancelledError): ours must propagate
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
            if self._silence_run > 0 and self._eager_sent:
                self._emit(TurnEventKind.TURN_RESUMED, span=self._span())
                self._eager_sent = False
            if self._silence_run > 0:
                self._epoch += 1  # audio changed: earlier decodes no longer cover it
                self._eager_result = None
                self._eager_due = False
            self._silence_run = 0
            self._windows_since_interim += 1
            if self._windows_since_interim >= INTERIM_WINDOWS:
                self._schedule_interim()
            if len(self._turn_audio) * WINDOW >= MAX_TURN_SECONDS * 16000:
                await self._end_turn()  # a monologue: answer what we have
            return

        self._silence_run += 1
        if self._opt.eager_enabled:
            if self._silence_run == min(EAGER_PREPARE_WINDOWS, self._eager_windows):
                self._schedule_eager()
            if self._silence_run == self._eager_windows:
                self._eager_due = True
                self._maybe_emit_eager()
        if self._silence_run >= self._eot_windows:
            await self._end_turn()

    async def _start_turn(self, received_at: float) -> None:
        if self._final_task is not None:
            await self._final_task  # the previous END_OF_TURN goes out before this START
        self._in_turn = True
        self._turn_audio = list(self._preroll)
        self._turn_first_window = self._windows_seen - len(self._turn_audio)
        self._preroll.clear()
        self._silence_run = 0
        self._speech_run = 0
        self._windows_since_interim = 0
        self._eager_sent = False
        self._eager_result = None
        self._eager_due = False
        self._epoch += 1
        self._last_voiced_at = received_at
        self._emit(TurnEventKind.START_OF_TURN, span=self._span())

    async def _end_turn(self) -> None:
        self._in_turn = False
        audio, span = self._audio(), self._span()
        epoch = self._epoch
        turn_index, speech_end = self._turn_index, self._last_voiced_at
        eager_task = self._eager_task
        self._turn_index += 1
        self._turn_audio = []
        self._speech_run = 0
        if self._interim_task is not None:
            self._interim_task.cancel()

        async def finish() -> None:
            if eager_task is not None and not eager_task.done():
                await eager_task
            result = self._eager_result
            if result is not None and result[0] == epoch:
                text = result[1]
            else:
                text = await self._stt.transcribe(audio, True, self._opt.language)
            self._emit(TurnEventKind.END_OF_TURN, text, speech_end, turn_index, span)

        self._final_task = asyncio.create_task(finish(), name="final-decode")

    # --- decodes ----------------------------------------------------------------------------

    def _span(self) -> tuple[float, float]:
        """Where the current turn's audio lies in the stream, in seconds."""
        start = self._turn_first_window * WINDOW / 16000
        return start, start + len(self._turn_audio) * WINDOW / 16000

    def _audio(self) -> np.ndarray:
        return np.concatenate(self._turn_audio) if self._turn_audio else np.zeros(0, np.int16)

    def _schedule_interim(self) -> None:
        if self._interim_task is not None and not self._interim_task.done():
            return
        self._windows_since_interim = 0
        audio, turn_index, span = self._audio(), self._turn_index, self._span()

        async def interim() -> None:
            text = await self._stt.transcribe(audio, False, self._opt.language)
            if text and self._in_turn and not self._eager_sent and turn_index == self._turn_index:
                self._emit(TurnEventKind.UPDATE, text, span=span)

        self._interim_task = asyncio.create_task(interim(), name="interim-decode")

    def _schedule_eager(self) -> None:
        audio, epoch, speech_end = self._audio(), self._epoch, self._last_voiced_at
        turn_index, span = self._turn_index, self._span()

        async def eager() -> None:
            text = await self._stt.transcribe(audio, True, self._opt.language)
            if epoch != self._epoch:
                return  # the user went on speaking while we decoded
            self._eager_result = (epoch, text)
            self._eager_event = (text, speech_end, turn_index, span)
            self._maybe_emit_eager()

        self._eager_task = asyncio.create_task(eager(), name="eager-decode")

    def _maybe_emit_eager(self) -> None:
        """EAGER_END_OF_TURN once both the decode and the eager silence are there."""
        result = self._eager_result
        if not self._eager_due or self._eager_sent or result is None or result[0] != self._epoch:
            return
        text, speech_end, turn_index, span = self._eager_event
        if text:
            self._eager_sent = True
            self._emit(TurnEventKind.EAGER_END_OF_TURN, text, speech_end, turn_index, span)

    def _emit(
        self,
        kind: TurnEventKind,
        transcript: str = "",
        speech_end: float | None = None,
        turn_index: int | None = None,
        span: tuple[float, float] = (0.0, 0.0),
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
            )
        )
