"""One conversation: the turn loop, speculative answers, barge-in, history and metrics.

Every task a session starts is owned by it (`_spawn`) and cancelled by `close()`, which runs
whichever way the stream ends: hangup, half-close, client gone, or failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine
from dataclasses import dataclass, field
from typing import Any

import grpc
from voiceagent.v1 import voice_agent_pb2 as pb

from server.audio import Format, InboundAudio, OutboundAudio
from server.backends.base import BackendUnavailable
from server.backends.llm.base import LLM, ChatMessage, ToolCall
from server.backends.registry import BackendError, Backends
from server.backends.stt.base import STT, STTStream, TurnEventKind, TurnOptions, TurnUpdate
from server.backends.tts.base import TTS, Encoding, TTSTurn
from server.limits import (
    CONFIG_UPDATE_LIMITS,
    MAX_AUDIO_LEAD_SECONDS,
    MAX_OUTPUT_BUFFER_BYTES,
    MAX_TEXT_TURN,
    MAX_TOOL_ROUNDS,
    MIN_TEXT_INTERRUPT_SECONDS,
    OUTPUT_BUFFER_BYTES,
    overlong,
)
from server.metrics import BACKCHANNELS, observe_turn
from server.options import OptionError, llm_backend_for, tts_backend_for
from server.sentences import SentenceSplitter, speakable
from server.tools.runner import ToolOutcome, ToolRunner
from server.tools.spec import ToolSpec
from server.turn_words import interrupts, is_short_acknowledgement

log = logging.getLogger(__name__)

AUDIO_CHUNK_MS = 100  # agent audio goes out in messages of at most this much
# The agent's text goes out once per sentence piece (as it goes to TTS), or after this long:
# a message per LLM token would put several messages ahead of the first audio of a turn.
TEXT_BATCH_SECONDS = 0.15
HISTORY_MESSAGES = 16  # plus the system prompt; older turns fall out of the LLM's context
MAX_AUDIO_SECONDS = 2  # per audio message; clients send 20-100 ms frames
# Speech over the agent longer than this is an interruption whatever its words ("yeah, yeah,
# okay, sure" is about a second).
MAX_BACKCHANNEL_SECONDS = 1.5
ENCODINGS: dict[int, Encoding] = {pb.LINEAR16: "linear16", pb.MULAW: "mulaw", pb.ALAW: "alaw"}
# A tool running longer than this gets a filler spoken (once a turn), so the caller hears no
# dead air while it runs.
FILLER_AFTER_SECONDS = 0.7
FILLER = "One moment, let me check."


class SessionFailure(Exception):
    """Ends the stream with a gRPC status after an in-stream Error message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def stalled_client(limit: float) -> SessionFailure:
    """How a session ends whose client has read nothing for `limit` seconds (its transport's
    send timed out, SEND_TIMEOUT_SECONDS)."""
    return SessionFailure(
        grpc.StatusCode.DEADLINE_EXCEEDED,
        f"the client read no response for {limit:g} s (SEND_TIMEOUT_SECONDS): closing the "
        "session; read the stream as it comes",
    )


@dataclass
class SessionSetup:
    """Everything a session needs, resolved and validated by the servicer."""

    session_id: str
    config: pb.SessionConfig  # the effective config, echoed in SessionStarted
    input_format: Format
    output_format: Format
    backends: Backends
    stt: STT
    llm: LLM
    tts: TTS
    llm_model: str
    voice: str
    system_prompt: str
    greeting: str
    turn_options: TurnOptions
    idle_timeout: float = 0.0  # seconds without input before the session is closed; 0: never
    tools: list[ToolSpec] = field(default_factory=list)


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel `task` and wait until it has stopped.

    Not `with suppress(CancelledError): await task`: that would also swallow a cancellation of
    the *caller* (a hangup closing the session meanwhile), leaving it running forever.
    """
    task.cancel()
    await asyncio.wait([task])


def _ms(start: float | None, end: float | None) -> float:
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

    session: Session
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
    # Tool calls and their results, in the order the LLM saw them: they go into the history
    # (a call cut by a barge-in with an "interrupted" result), so later turns can refer to them.
    tool_messages: list[ChatMessage] = field(default_factory=list)
    said_before_tools: str = ""  # text of the rounds that called tools (in tool_messages)
    action: ToolOutcome | None = None  # end_call or transfer, done once the answer is spoken
    filler_said: bool = False

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
            seconds = self.session.outbound.seconds(len(message.audio.audio))
            start = max(self.play_cursor, now)
            if piece is not None and piece.play_start is None:
                piece.play_start = start
            self.play_cursor = start + seconds
        self.session.send(message)

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
            self.emit(
                pb.ConverseResponse(
                    error=pb.Error(
                        code=grpc.StatusCode.UNAVAILABLE.value[0],
                        message=f"the answer to turn {self.turn_id} stopped: {self.failure}; "
                        "the call goes on",
                    )
                )
            )
        self.emit(_agent_text(self.turn_id, final=True, text=self.text))
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
                self.emit(_agent_text(self.turn_id, delta=self.fixed_text))
                queue.put_nowait(self.fixed_text)
            else:
                await self._write(queue)
            queue.put_nowait(None)
            await speaker
        finally:
            if not speaker.done():
                await cancel_and_wait(speaker)

    async def _write(self, queue: asyncio.Queue[str | None]) -> None:
        """LLM rounds: text, and when the model calls tools, their results and its answer
        again (at most MAX_TOOL_ROUNDS tool rounds a turn)."""
        runner = self.session.tools
        for round_ in range(MAX_TOOL_ROUNDS + 1):
            offered = (
                runner.offered if runner and round_ < MAX_TOOL_ROUNDS and not self.action else []
            )
            start = len(self.text)
            calls = await self._write_round(queue, offered)
            if not calls:
                return
            assert runner is not None
            said = self.text[start:].strip()
            self.said_before_tools = (self.said_before_tools + " " + said).strip()
            self.tool_messages.append(ChatMessage("assistant", said, tool_calls=tuple(calls)))
            self.messages.append(self.tool_messages[-1])
            await self.wait_committed()  # a speculative answer runs no tool: it may be dropped
            for call in calls:
                outcome = await self._run_tool(runner, call, queue)
                if outcome.action and self.action is None:
                    self.action = outcome
            if self.action is not None and said:
                return  # the goodbye (or the transfer's line) has been said

    async def _run_tool(
        self, runner: ToolRunner, call: ToolCall, queue: asyncio.Queue[str | None]
    ) -> ToolOutcome:
        """Run one call; if it takes long, a filler (once a turn) keeps the line alive."""
        self.emit(
            pb.ConverseResponse(
                tool_call=pb.ToolCall(
                    id=call.id, name=call.name, arguments_json=call.arguments, turn_id=self.turn_id
                )
            )
        )
        interrupted = ChatMessage(
            "tool",
            '{"error": "interrupted: the caller spoke before the result came"}',
            tool_call_id=call.id,
        )
        self.tool_messages.append(interrupted)  # replaced by the result when it comes
        running = asyncio.create_task(runner.run(call), name=f"tool-{call.name}")
        try:
            done, _ = await asyncio.wait([running], timeout=FILLER_AFTER_SECONDS)
            if not done and not self.filler_said:
                self.filler_said = True
                self.text += ("" if not self.text or self.text.endswith(" ") else " ") + FILLER
                self.emit(_agent_text(self.turn_id, delta=FILLER))
                queue.put_nowait(FILLER)
            outcome = await running
        finally:
            if not running.done():
                await cancel_and_wait(running)
        self.tool_messages[-1] = ChatMessage("tool", outcome.for_llm(), tool_call_id=call.id)
        self.messages.append(self.tool_messages[-1])
        self.emit(pb.ConverseResponse(tool_result=outcome.to_proto(self.turn_id)))
        return outcome

    async def _write_round(
        self, queue: asyncio.Queue[str | None], tools: list[ToolSpec]
    ) -> list[ToolCall]:
        """LLM tokens -> the reply's text messages (batched) and sentence pieces for TTS; the
        tool calls of the round, if any."""
        splitter = SentenceSplitter()
        unsent, unsent_since = "", 0.0  # text deltas go out in batches, see TEXT_BATCH_SECONDS
        calls: list[ToolCall] = []
        if self.text and not self.text.endswith(" "):
            self.text += " "
        try:
            async for delta in self.llm.stream(self.messages, self.llm_model, tools):
                if isinstance(delta, ToolCall):
                    calls.append(delta)
                    continue
                now = time.monotonic()
                if self.llm_first_token_at is None:
                    self.llm_first_token_at = now
                self.text += delta
                if not unsent:
                    unsent_since = now
                unsent += delta
                pieces = splitter.push(delta)
                if pieces or now - unsent_since >= TEXT_BATCH_SECONDS:
                    self.emit(_agent_text(self.turn_id, delta=unsent))
                    unsent = ""
                for piece in pieces:
                    queue.put_nowait(piece)
        except Exception:
            if unsent:  # the provider failed mid-answer: what it wrote still reaches the client
                self.emit(_agent_text(self.turn_id, delta=unsent))
            raise
        if unsent:
            self.emit(_agent_text(self.turn_id, delta=unsent))
        for piece in splitter.flush():
            queue.put_nowait(piece)
        return calls

    async def _speak(self, queue: asyncio.Queue[str | None]) -> None:
        session = self.session
        rate = session.outbound.fmt.rate
        chunk_bytes = rate * AUDIO_CHUNK_MS // 1000 * session.outbound.fmt.bytes_per_sample
        turn = self.tts.open_turn(self.voice, rate, ENCODINGS[session.outbound.fmt.encoding])
        finished = False
        try:
            await self._speak_pieces(queue, turn, chunk_bytes)
            finished = True
        finally:
            # A barge-in cancels us here: tell the provider to stop (Cartesia: cancel the context).
            await (turn.aclose() if finished else turn.cancel())

    async def _speak_pieces(
        self, queue: asyncio.Queue[str | None], turn: TTSTurn, chunk_bytes: int
    ) -> None:
        session = self.session
        while (text := await queue.get()) is not None:
            spoken = speakable(text)
            if not spoken:
                continue
            piece = _Piece(text)
            self.pieces.append(piece)
            async for audio in turn.synthesize(spoken):
                if self.tts_first_audio_at is None:
                    self.tts_first_audio_at = time.monotonic()
                data = session.outbound.encode(audio.pcm, audio.sample_rate)
                piece.seconds += session.outbound.seconds(len(data))
                for start in range(0, len(data), chunk_bytes):
                    if self.committed:
                        await session.writable()  # paused while the client does not read
                    message = pb.ConverseResponse(
                        audio=pb.Audio(
                            audio=data[start : start + chunk_bytes], turn_id=self.turn_id
                        )
                    )
                    self.emit(message, piece)

    def final_text(self, said: str) -> str:
        """The history's last assistant message of the turn: what was said after its tool calls
        (what came before is in the message that called them)."""
        before = self.said_before_tools
        if before and said.startswith(before):
            return said[len(before) :].strip()
        return said if not before else ""

    def metrics(self, barge_in_stop_ms: float | None = None) -> pb.TurnMetrics:
        metrics = pb.TurnMetrics(
            turn_id=self.turn_id,
            stt_final_ms=_ms(self.speech_end, self.stt_final_at),
            llm_first_token_ms=_ms(self.speech_end, self.llm_first_token_at),
            tts_first_audio_ms=_ms(self.speech_end, self.tts_first_audio_at),
            voice_to_voice_ms=_ms(self.speech_end, self.first_audio_sent_at),
            from_text=self.from_text,
        )
        if barge_in_stop_ms is not None:
            metrics.barge_in_stop_ms = barge_in_stop_ms
        return metrics


def _agent_text(
    turn_id: int, delta: str = "", final: bool = False, text: str = ""
) -> pb.ConverseResponse:
    return pb.ConverseResponse(
        agent_text=pb.AgentText(turn_id=turn_id, delta=delta, final=final, text=text)
    )


class Session:
    def __init__(self, setup: SessionSetup) -> None:
        self.setup = setup
        self.llm = setup.llm
        self.tts = setup.tts
        self.llm_model = setup.llm_model
        self.voice = setup.voice
        self.inbound = InboundAudio(setup.input_format, setup.stt.sample_rate)
        self.outbound = OutboundAudio(setup.output_format)
        self.history: list[ChatMessage] = [ChatMessage("system", setup.system_prompt)]
        self.tools = (
            ToolRunner(setup.tools, setup.session_id, setup.config.campaign_id)
            if setup.tools
            else None
        )
        self._out: asyncio.Queue[pb.ConverseResponse | None] = asyncio.Queue()
        self._out_bytes = 0  # of the responses in `_out`
        self._writable = asyncio.Event()
        self._writable.set()
        self._warming: asyncio.Task[Any] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stt_stream: STTStream | None = None
        self._speculative: AgentResponse | None = None
        self._current: AgentResponse | None = None  # the committed answer being sent or played
        self._turn_id = 0
        self._failure: SessionFailure | None = None
        self._closed = False
        self._user_turn_open = False
        # START_OF_TURN of speech heard while the agent talked, until its words tell an
        # interruption from an acknowledgement.
        self._heard_over_agent: TurnUpdate | None = None
        self._draining = False
        self._last_input = time.monotonic()
        self._last_text_turn_at = -MIN_TEXT_INTERRUPT_SECONDS
        self._audio_until = 0.0  # the time by which the audio received so far plays out
        self.turns = 0

    # --- plumbing ---------------------------------------------------------------------------

    def send(self, message: pb.ConverseResponse) -> None:
        if self._failure is not None:
            return  # the stream ends with its Error: nothing more goes out
        if message.WhichOneof("response") == "metrics":
            observe_turn(message.metrics)
        self._put(message)
        if self._out_bytes > MAX_OUTPUT_BUFFER_BYTES:
            self.fail(
                SessionFailure(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"more than {MAX_OUTPUT_BUFFER_BYTES} bytes of responses wait for the client "
                    "to read them: closing the session; read the stream as it comes",
                )
            )

    # --- output budget: responses wait in `_out` for the transport; a client that does not read
    # pauses the agent's audio once OUTPUT_BUFFER_BYTES wait (the rest of a turn is small), and
    # the transport ends a stream that stays unread (SEND_TIMEOUT_SECONDS).

    def _put(self, message: pb.ConverseResponse | None) -> None:
        if message is not None:
            self._out_bytes += message.ByteSize()
            if self._out_bytes > OUTPUT_BUFFER_BYTES:
                self._writable.clear()
        self._out.put_nowait(message)

    def _taken(self, message: pb.ConverseResponse) -> None:
        self._out_bytes -= message.ByteSize()
        if self._out_bytes <= OUTPUT_BUFFER_BYTES:
            self._writable.set()

    async def writable(self) -> None:
        """Return once the client has read enough for more audio to be queued."""
        await self._writable.wait()

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=f"{self.setup.session_id[:8]}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            if isinstance(exc, SessionFailure):
                self.fail(exc)
            elif isinstance(exc, BackendUnavailable):
                self.fail(SessionFailure(grpc.StatusCode.UNAVAILABLE, str(exc)))
            else:
                log.exception(
                    "session %s: task %s failed",
                    self.setup.session_id,
                    task.get_name(),
                    exc_info=exc,
                )
                self.fail(
                    SessionFailure(grpc.StatusCode.INTERNAL, f"{task.get_name()} failed: {exc}")
                )

    def fail(self, failure: SessionFailure) -> None:
        if self._failure is None:
            self._failure = failure
            if not self._writable.is_set():  # a client this far behind loses what it did not read
                while not self._out.empty():
                    self._out.get_nowait()
                self._out_bytes = 0
            self._put(
                pb.ConverseResponse(
                    error=pb.Error(code=failure.code.value[0], message=failure.message)
                )
            )
            self._put(None)

    def _end(self) -> None:
        self._put(None)

    def drain(self) -> None:
        """The server is shutting down: end after the current turn (at once if there is none)."""
        if self._draining:
            return
        self._draining = True
        self.send(
            pb.ConverseResponse(
                event=pb.Event(
                    type=pb.GOING_AWAY,
                    message="server shutting down: the stream ends after this turn; reconnect to go on",
                )
            )
        )
        self._end_if_drained()

    def _end_if_drained(self) -> None:
        busy = (
            self._user_turn_open
            or self._speculative is not None
            or (
                self._current is not None
                and self._current.task is not None
                and not self._current.task.done()
            )
        )
        if self._draining and not busy:
            self._end()

    async def _watch_idle(self, limit: float) -> None:
        """Close a stream nobody sends to (a client that vanished without closing it)."""
        while True:
            await asyncio.sleep(min(1.0, limit / 4))
            answering = (
                self._current is not None
                and self._current.task is not None
                and not self._current.task.done()
                and self._writable.is_set()  # an answer the client does not read is no activity
            )
            if answering:
                self._last_input = time.monotonic()
            elif time.monotonic() - self._last_input > limit:
                raise SessionFailure(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"no audio or text for {limit:.0f} s (IDLE_TIMEOUT_SECONDS); closing the session",
                )

    async def run(
        self, requests: AsyncIterator[pb.ConverseRequest]
    ) -> AsyncGenerator[pb.ConverseResponse, None]:
        """Yield the responses of the conversation until it ends; raise SessionFailure if it failed."""
        try:
            self._stt_stream = self.setup.stt.open_stream(self.setup.turn_options)
            yield pb.ConverseResponse(
                session_started=pb.SessionStarted(
                    session_id=self.setup.session_id, config=self.setup.config
                )
            )
            self._spawn(self._read(requests), "read")
            self._spawn(self._follow_turns(self._stt_stream), "turns")
            if self.setup.idle_timeout > 0:
                self._spawn(self._watch_idle(self.setup.idle_timeout), "idle-watch")
            if self.setup.greeting:
                self._start_response(
                    user_text="",
                    speech_end=time.monotonic(),
                    stt_final_at=time.monotonic(),
                    committed=True,
                    fixed_text=self.setup.greeting,
                )
            else:
                self._warm()
            while (message := await self._out.get()) is not None:
                self._taken(message)
                yield message
            if self._failure is not None:
                raise self._failure
        finally:
            await self.close()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        if self._stt_stream is not None:
            await self._stt_stream.aclose()

    # --- input ------------------------------------------------------------------------------

    async def _read(self, requests: AsyncIterator[pb.ConverseRequest]) -> None:
        assert self._stt_stream is not None
        max_audio = self.inbound.fmt.rate * self.inbound.fmt.bytes_per_sample * MAX_AUDIO_SECONDS
        async for request in requests:
            self._last_input = time.monotonic()
            kind = request.WhichOneof("request")
            if kind == "audio":
                if len(request.audio) > max_audio:
                    raise SessionFailure(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"an audio message has {len(request.audio)} bytes; at most {max_audio} "
                        f"({MAX_AUDIO_SECONDS} s in the input format) are accepted: send 20-100 ms frames",
                    )
                pcm = self.inbound.push(request.audio)
                if len(pcm):
                    await self._stt_stream.push(pcm, time.monotonic())
                await self._pace_audio(len(request.audio))
            elif kind == "text":
                await self._on_text(request.text)
            elif kind == "update":
                self._apply_update(request.update)
            elif kind == "tool_result":
                wrong = (
                    self.tools.deliver(request.tool_result)
                    if self.tools is not None
                    else "tool_result: this session has no tools"
                )
                if wrong:
                    self._error(grpc.StatusCode.INVALID_ARGUMENT, wrong)
            elif kind == "hangup":
                self._end()
                return
            elif kind == "config":
                raise SessionFailure(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "config is only accepted as the first message; send `update` to change the "
                    "model or voice mid-call",
                )
            else:
                raise SessionFailure(grpc.StatusCode.INVALID_ARGUMENT, "empty ConverseRequest")
        # Half-close: let the agent finish what it is saying, then end.
        for response in (self._speculative, self._current):
            if response is not None and response.task is not None and response.committed:
                await asyncio.wait([response.task])  # its own outcome is reported elsewhere
        self._end()

    async def _pace_audio(self, size: int) -> None:
        """Read audio no faster than real time, after a lead of MAX_AUDIO_LEAD_SECONDS: a client
        sending faster is held back by the transport's flow control, and the turn detector's
        queue stays short."""
        now = time.monotonic()
        fmt = self.inbound.fmt
        self._audio_until = max(self._audio_until, now) + size / fmt.bytes_per_sample / fmt.rate
        ahead = self._audio_until - now - MAX_AUDIO_LEAD_SECONDS
        if ahead > 0:
            await asyncio.sleep(ahead)

    async def _on_text(self, text: str) -> None:
        text = text.strip()
        if not text:
            raise SessionFailure(grpc.StatusCode.INVALID_ARGUMENT, "text turn is empty")
        if len(text) > MAX_TEXT_TURN:
            raise SessionFailure(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"text turn has {len(text)} characters; the limit is {MAX_TEXT_TURN}",
            )
        now = time.monotonic()
        answering = self._current
        if (
            answering is not None
            and not answering.finished
            and now - self._last_text_turn_at < MIN_TEXT_INTERRUPT_SECONDS
        ):
            # A flood of typed turns must not start (and cut) an answer per message.
            self._error(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"typed turn refused: the agent is still answering turn {answering.turn_id}, and "
                f"typed turns may interrupt an answer at most once every "
                f"{MIN_TEXT_INTERRUPT_SECONDS:g} s; wait for AGENT_TURN_DONE, or send it later",
            )
            return
        self._last_text_turn_at = now
        # A typed turn interrupts an answer still being generated, not one only being played.
        await self._barge_in(now, during_playback=False)
        self._cancel_speculative()
        self._commit_user_turn(text, speech_end=now, stt_final_at=now, from_text=True)

    def _apply_update(self, update: pb.ConfigUpdate) -> None:
        """Validate now (an Error in the stream if wrong, the call goes on); switch once loaded.

        A model or voice of another backend may need loading: that happens in the background,
        and the switch applies from the next agent turn after it, with the history kept.
        """
        fields = ("llm_model", "tts_voice", "system_prompt")
        if (why := overlong(update, CONFIG_UPDATE_LIMITS, "update")) is not None:
            self._error(grpc.StatusCode.INVALID_ARGUMENT, why)
            return
        paths = list(update.update_mask.paths) or [f for f in fields if getattr(update, f)]
        unknown = [p for p in paths if p not in fields]
        if unknown:
            self._error(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"update.update_mask names unknown field {unknown[0]!r}; fields: {', '.join(fields)}",
            )
            return
        backends = self.setup.backends
        try:
            llm_name = (
                llm_backend_for(backends, update.llm_model, "update.llm_model")
                if "llm_model" in paths
                else ""
            )
            tts_name = (
                tts_backend_for(backends, update.tts_voice, "update.tts_voice")
                if "tts_voice" in paths
                else ""
            )
        except OptionError as err:
            self._error(grpc.StatusCode.NOT_FOUND, str(err))
            return
        self._spawn(self._switch(update, paths, llm_name, tts_name), "config-update")

    async def _switch(
        self, update: pb.ConfigUpdate, paths: list[str], llm_name: str, tts_name: str
    ) -> None:
        backends = self.setup.backends
        try:
            llm = await backends.get_llm(llm_name) if llm_name else self.llm
            tts = await backends.get_tts(tts_name) if tts_name else self.tts
        except BackendError as err:
            self._error(grpc.StatusCode.FAILED_PRECONDITION, str(err))
            return
        applied = []
        if "llm_model" in paths:
            self.llm, self.llm_model = llm, update.llm_model
            applied.append(f"llm_model={update.llm_model} ({llm.name})")
        if "tts_voice" in paths:
            self.tts, self.voice = tts, update.tts_voice
            applied.append(f"tts_voice={update.tts_voice} ({tts.name})")
        if "system_prompt" in paths:
            self.history[0] = ChatMessage("system", update.system_prompt)
            applied.append("system_prompt")
        self.send(
            pb.ConverseResponse(event=pb.Event(type=pb.CONFIG_APPLIED, message=", ".join(applied)))
        )
        self._warm()

    def _error(self, code: grpc.StatusCode, message: str) -> None:
        """A request the session refuses without ending the call."""
        self.send(pb.ConverseResponse(error=pb.Error(code=code.value[0], message=message)))

    # --- turns ------------------------------------------------------------------------------

    async def _follow_turns(self, stream: STTStream) -> None:
        async for event in stream.events():
            self.send(
                pb.ConverseResponse(
                    transcript=pb.Transcript(
                        text=event.transcript,
                        is_final=event.kind == TurnEventKind.END_OF_TURN,
                        event=int(event.kind),  # type: ignore[arg-type]
                        turn_index=event.turn_index,
                        audio_window_start_ms=round(event.audio_start * 1000),
                        audio_window_end_ms=round(event.audio_end * 1000),
                    )
                )
            )
            await self._on_turn_event(event)

    async def _on_turn_event(self, event: TurnUpdate) -> None:
        kind = event.kind
        if kind == TurnEventKind.START_OF_TURN:
            self._user_turn_open = True
            if self._agent_audible() and not self.setup.turn_options.barge_in_on_any_speech:
                # "uh-huh" or "wait, stop"? The words decide (UPDATE, or END_OF_TURN at the
                # latest); meanwhile the agent goes on.
                self._heard_over_agent = event
                assert self._stt_stream is not None
                self._stt_stream.watch_for_interruption()
            else:
                await self._barge_in(event.speech_start or event.at)
        elif kind == TurnEventKind.UPDATE:
            if self._heard_over_agent is not None and (
                interrupts(event.transcript, event.speech_seconds)
                or event.speech_seconds >= MAX_BACKCHANNEL_SECONDS
            ):
                await self._interrupted()
        elif kind == TurnEventKind.EAGER_END_OF_TURN and self.setup.turn_options.eager_enabled:
            if self._heard_over_agent is not None:
                if is_short_acknowledgement(event.transcript, event.speech_seconds):
                    return  # not worth a speculative answer: it will not be answered
                await self._interrupted()
            self._cancel_speculative()
            self._speculative = self._start_response(
                user_text=event.transcript,
                speech_end=event.speech_end or event.at,
                stt_final_at=event.at,
                committed=False,
            )
        elif kind == TurnEventKind.TURN_RESUMED:
            self._cancel_speculative()
        elif kind == TurnEventKind.END_OF_TURN:
            self._user_turn_open = False
            text = event.transcript.strip()
            if self._heard_over_agent is not None:
                short = event.speech_seconds < MAX_BACKCHANNEL_SECONDS
                if short and is_short_acknowledgement(text, event.speech_seconds):
                    self._heard_over_agent = None
                    self._cancel_speculative()
                    BACKCHANNELS.inc()
                    heard = f"heard {text!r}" if text else "heard a noise"
                    self.send(
                        pb.ConverseResponse(
                            event=pb.Event(
                                type=pb.BACKCHANNEL,
                                message=f"{heard} while the agent spoke: not an interruption",
                            )
                        )
                    )
                    self._end_if_drained()
                    return
                await self._interrupted()
            speculative, self._speculative = self._speculative, None
            if not text:  # noise, a cough: nothing to answer
                if speculative is not None:
                    speculative.task.cancel()  # type: ignore[union-attr]
                self._end_if_drained()
                return
            if (
                speculative is not None
                and speculative.user_text == event.transcript
                and not speculative.failure
            ):
                self.history.append(ChatMessage("user", text))
                self._current = speculative
                speculative.stt_final_at = event.at  # the final transcript, not the guess
                speculative.commit()
            else:
                if speculative is not None:
                    speculative.task.cancel()  # type: ignore[union-attr]
                self._commit_user_turn(
                    text, speech_end=event.speech_end or event.at, stt_final_at=event.at
                )

    def _agent_audible(self) -> bool:
        """The agent is talking (or about to): its answer is being made or still playing."""
        return self._current is not None and self._current.playing(time.monotonic())

    async def _interrupted(self) -> None:
        """The speech over the agent is a real interruption: stop the agent now."""
        start, self._heard_over_agent = self._heard_over_agent, None
        if self._stt_stream is not None:
            self._stt_stream.interruption_confirmed()
        if start is not None:
            await self._barge_in(start.speech_start or start.at)

    def _commit_user_turn(
        self, text: str, speech_end: float, stt_final_at: float, from_text: bool = False
    ) -> None:
        self._current = self._start_response(
            user_text=text,
            speech_end=speech_end,
            stt_final_at=stt_final_at,
            committed=True,
            from_text=from_text,
        )
        self.history.append(ChatMessage("user", text))

    def _cancel_speculative(self) -> None:
        if self._speculative is not None and self._speculative.task is not None:
            self._speculative.task.cancel()
        self._speculative = None

    def _start_response(
        self,
        user_text: str,
        speech_end: float,
        stt_final_at: float,
        committed: bool,
        from_text: bool = False,
        fixed_text: str | None = None,
    ) -> AgentResponse:
        if fixed_text is None:
            self._turn_id += 1
        messages = self._recent_history()
        if user_text:
            messages.append(ChatMessage("user", user_text))
        if len(self.history) > 1 + HISTORY_MESSAGES:  # older turns are never used again
            del self.history[1 : len(self.history) - HISTORY_MESSAGES]
        response = AgentResponse(
            session=self,
            turn_id=self._turn_id,
            user_text=user_text,
            messages=messages,
            llm=self.llm,
            llm_model=self.llm_model,
            tts=self.tts,
            voice=self.voice,
            speech_end=speech_end,
            stt_final_at=stt_final_at,
            from_text=from_text,
            fixed_text=fixed_text,
        )
        if committed:
            response.commit()
            self._current = response
        response.task = self._spawn(self._respond(response), f"respond-{response.turn_id}")
        return response

    async def _respond(self, response: AgentResponse) -> None:
        await response.run()  # returns only once committed: a cancelled speculation never does
        self.history.extend(response.tool_messages)
        response.history_entry = ChatMessage("assistant", response.final_text(response.text))
        self.history.append(response.history_entry)
        if response.fixed_text is None:
            self.turns += 1
        if response.action is not None:
            self._act(response.action, response.turn_id)
            return
        if self._draining:
            self._put(None)  # this was the last turn
            return
        self._warm()

    def _recent_history(self) -> list[ChatMessage]:
        """The system prompt and the newest turns; never a tool result without its call."""
        recent = self.history[1:][-HISTORY_MESSAGES:]
        while recent and recent[0].role == "tool":
            recent.pop(0)
        return [self.history[0], *recent]

    def _warm(self) -> None:
        history = self._recent_history()
        if self._warming is not None:  # one at a time: a stale warm-up is wasted model time
            self._warming.cancel()
        tools = self.tools.offered if self.tools is not None else []
        self._warming = self._spawn(self.llm.warm(history, self.llm_model, tools), "llm-warm")

    def _act(self, outcome: ToolOutcome, turn_id: int) -> None:
        """The agent ended or handed over the call and has said so: the stream ends (OK)."""
        if outcome.action == "end_call":
            event = pb.Event(
                type=pb.CALL_ENDED, turn_id=turn_id, message="the agent ended the call"
            )
        else:
            event = pb.Event(type=pb.TRANSFER, turn_id=turn_id, message=outcome.target)
        log.info("session %s: %s %s", self.setup.session_id, outcome.action, outcome.target)
        self.send(pb.ConverseResponse(event=event))
        self._end()

    async def _barge_in(self, detected_at: float, during_playback: bool = True) -> None:
        """The user spoke: stop the agent if it is talking, keep in history what was heard."""
        response = self._current
        now = time.monotonic()
        if response is None or not response.playing(now):
            return
        if response.finished and not during_playback:
            return
        self._current = None
        was_running = response.task is not None and not response.task.done()
        if was_running:
            await cancel_and_wait(response.task)  # type: ignore[arg-type]
        stopped = time.monotonic()
        heard = response.spoken_text(stopped)
        if response.history_entry is not None:
            response.history_entry.content = response.final_text(heard)
        else:
            self.history.extend(response.tool_messages)
            if heard or response.user_text:
                self.history.append(ChatMessage("assistant", response.final_text(heard)))
        self.send(pb.ConverseResponse(event=pb.Event(type=pb.BARGE_IN, turn_id=response.turn_id)))
        # The turn's final text again, as heard: a client that showed the whole answer (sent
        # ahead of playback) corrects it to what the caller actually heard.
        self.send(_agent_text(response.turn_id, final=True, text=heard))
        stop_ms = _ms(detected_at, stopped)
        if response.fixed_text is None:
            self.send(pb.ConverseResponse(metrics=response.metrics(stop_ms)))
        else:  # a greeting has no latency of its own, but its interruption does
            metrics = pb.TurnMetrics(turn_id=response.turn_id, barge_in_stop_ms=stop_ms)
            self.send(pb.ConverseResponse(metrics=metrics))
        self._warm()
