"""One agent turn: LLM tokens -> sentence pieces -> TTS -> framed audio, with its metrics.

It knows nothing of the session: it is given a send function, a wait for the client to have
read enough (the session's output budget) and the outbound audio. A speculative answer holds its
messages until the turn it answers has ended (`commit`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc
from voiceagent.v1 import voice_agent_pb2 as pb

from server.audio import OutboundAudio
from server.backends.base import BackendUnavailable
from server.backends.llm.base import LLM, ChatMessage
from server.backends.tts.base import TTS, Encoding, TTSTurn
from server.sentences import SentenceSplitter, speakable
from server.status import StatusError
from server.tasks import cancel_and_wait

# The agent's text goes out once per sentence piece (as it goes to TTS), or after this long:
# a message per LLM token would put several messages ahead of the first audio of a turn.
TEXT_BATCH_SECONDS = 0.15
ENCODINGS: dict[int, Encoding] = {pb.LINEAR16: "linear16", pb.MULAW: "mulaw", pb.ALAW: "alaw"}


def elapsed_ms(start: float | None, end: float | None) -> float:
    if start is None or end is None:
        return 0.0
    return round(max(0.0, end - start) * 1000.0, 1)


@dataclass
class _Piece:
    text: str
    seconds: float = 0.0
    play_start: float | None = (
        None  # estimated, from send times and the client's real-time playback
    )


@dataclass
class AgentResponse:
    """One agent turn: LLM tokens -> sentence pieces -> TTS -> audio, held until committed."""

    send: Callable[[pb.ConverseResponse], None]  # into the session's output
    writable: Callable[[], Awaitable[None]]  # returns once the client has read enough
    outbound: OutboundAudio
    turn_id: int
    user_text: str
    messages: list[ChatMessage]
    llm: LLM
    llm_model: str
    tts: TTS
    voice: str
    speech_end: float  # zero point of the turn's metrics
    stt_final_at: float
    from_text: bool = False
    fixed_text: str | None = None  # the greeting: spoken as is, no LLM
    committed: bool = False
    text: str = ""
    pieces: list[_Piece] = field(default_factory=list)
    llm_first_token_at: float | None = None
    tts_first_audio_at: float | None = None
    first_audio_sent_at: float | None = None
    play_cursor: float = 0.0
    finished: bool = False
    history_entry: ChatMessage | None = None
    _held: list[tuple[pb.ConverseResponse, _Piece | None]] = field(default_factory=list)
    _committed_event: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    failure: str = ""  # why a provider stopped this answer

    # --- output gate: a speculative answer is prepared but not sent until the turn ends ------

    def emit(self, message: pb.ConverseResponse, piece: _Piece | None = None) -> None:
        if self.committed:
            self._send(message, piece)
        else:
            self._held.append((message, piece))

    def commit(self) -> None:
        self.committed = True
        self._committed_event.set()
        for message, piece in self._held:
            self._send(message, piece)
        self._held.clear()

    async def wait_committed(self) -> None:
        await self._committed_event.wait()

    def _send(self, message: pb.ConverseResponse, piece: _Piece | None) -> None:
        now = time.monotonic()
        if message.WhichOneof("response") == "audio":
            if self.first_audio_sent_at is None:
                self.first_audio_sent_at = now
            seconds = self.outbound.seconds(len(message.audio.audio))
            start = max(self.play_cursor, now)
            if piece is not None and piece.play_start is None:
                piece.play_start = start
            self.play_cursor = start + seconds
        self.send(message)

    def playing(self, now: float) -> bool:
        return not self.finished or now < self.play_cursor

    def spoken_text(self, now: float) -> str:
        """What the caller has heard by `now`: whole pieces, then the heard share of the words
        of the piece being played (a client plays audio in real time from its arrival)."""
        words: list[str] = []
        for piece in self.pieces:
            if piece.play_start is None or piece.play_start >= now:
                break
            piece_words = piece.text.split()
            heard = (now - piece.play_start) / piece.seconds if piece.seconds else 1.0
            if heard >= 1.0:
                words.extend(piece_words)
            else:
                words.extend(piece_words[: int(len(piece_words) * heard)])
                break
        return " ".join(words)

    # --- the work ---------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._produce()
        except BackendUnavailable as exc:
            # A provider that fails ends this answer, not the call: the caller can go on, or
            # switch model or voice. A failed speculation is never committed: END_OF_TURN
            # answers afresh.
            self.failure = str(exc)
        self.finished = True
        self.text = self.text.strip()
        # A speculative answer may be complete before its turn ends; its metrics need the
        # send times, which exist once it is committed.
        await self.wait_committed()
        if self.failure:
            stopped = StatusError(
                grpc.StatusCode.UNAVAILABLE,
                f"the answer to turn {self.turn_id} stopped: {self.failure}; the call goes on",
            )
            self.emit(pb.ConverseResponse(error=stopped.to_proto()))
        self.emit(agent_text(self.turn_id, final=True, text=self.text))
        self.emit(
            pb.ConverseResponse(event=pb.Event(type=pb.AGENT_TURN_DONE, turn_id=self.turn_id))
        )
        if self.fixed_text is None and not self.failure:
            self.emit(pb.ConverseResponse(metrics=self.metrics()))

    async def _produce(self) -> None:
        """Text and audio of the answer, as they come."""
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        speaker = asyncio.create_task(self._speak(queue), name=f"tts-turn-{self.turn_id}")
        try:
            if self.fixed_text is not None:
                self.text = self.fixed_text
                self.emit(agent_text(self.turn_id, delta=self.fixed_text))
                queue.put_nowait(self.fixed_text)
            else:
                await self._write(queue)
            queue.put_nowait(None)
            await speaker
        finally:
            if not speaker.done():
                await cancel_and_wait(speaker)

    async def _write(self, queue: asyncio.Queue[str | None]) -> None:
        """LLM tokens -> the reply's text messages (batched) and sentence pieces for TTS."""
        splitter = SentenceSplitter()
        unsent, unsent_since = "", 0.0  # text deltas go out in batches, see TEXT_BATCH_SECONDS
        try:
            async for delta in self.llm.stream(self.messages, self.llm_model):
                now = time.monotonic()
                if self.llm_first_token_at is None:
                    self.llm_first_token_at = now
                self.text += delta
                if not unsent:
                    unsent_since = now
                unsent += delta
                pieces = splitter.push(delta)
                if pieces or now - unsent_since >= TEXT_BATCH_SECONDS:
                    self.emit(agent_text(self.turn_id, delta=unsent))
                    unsent = ""
                for piece in pieces:
                    queue.put_nowait(piece)
        except Exception:
            if unsent:  # the provider failed mid-answer: what it wrote still reaches the client
                self.emit(agent_text(self.turn_id, delta=unsent))
            raise
        if unsent:
            self.emit(agent_text(self.turn_id, delta=unsent))
        for piece in splitter.flush():
            queue.put_nowait(piece)

    async def _speak(self, queue: asyncio.Queue[str | None]) -> None:
        fmt = self.outbound.fmt
        turn = self.tts.open_turn(self.voice, fmt.rate, ENCODINGS[fmt.encoding])
        finished = False
        try:
            await self._speak_pieces(queue, turn)
            finished = True
        finally:
            # A barge-in cancels us here: tell the provider to stop (Cartesia: cancel the context).
            await (turn.aclose() if finished else turn.cancel())

    async def _speak_pieces(self, queue: asyncio.Queue[str | None], turn: TTSTurn) -> None:
        while (text := await queue.get()) is not None:
            spoken = speakable(text)
            if not spoken:
                continue
            piece = _Piece(text)
            self.pieces.append(piece)
            async for audio in turn.synthesize(spoken):
                if self.tts_first_audio_at is None:
                    self.tts_first_audio_at = time.monotonic()
                data = self.outbound.encode(audio.pcm, audio.sample_rate)
                piece.seconds += self.outbound.seconds(len(data))
                for frame in self.outbound.frames(data):
                    if self.committed:
                        await self.writable()  # paused while the client does not read
                    message = pb.ConverseResponse(audio=pb.Audio(audio=frame, turn_id=self.turn_id))
                    self.emit(message, piece)

    def metrics(self, barge_in_stop_ms: float | None = None) -> pb.TurnMetrics:
        metrics = pb.TurnMetrics(
            turn_id=self.turn_id,
            stt_final_ms=elapsed_ms(self.speech_end, self.stt_final_at),
            llm_first_token_ms=elapsed_ms(self.speech_end, self.llm_first_token_at),
            tts_first_audio_ms=elapsed_ms(self.speech_end, self.tts_first_audio_at),
            voice_to_voice_ms=elapsed_ms(self.speech_end, self.first_audio_sent_at),
            from_text=self.from_text,
        )
        if barge_in_stop_ms is not None:
            metrics.barge_in_stop_ms = barge_in_stop_ms
        return metrics


def agent_text(
    turn_id: int, delta: str = "", final: bool = False, text: str = ""
) -> pb.ConverseResponse:
    return pb.ConverseResponse(
        agent_text=pb.AgentText(turn_id=turn_id, delta=delta, final=final, text=text)
    )
