"""One conversation: the turn loop, speculative answers, barge-in and history.

Each answer is an `AgentResponse` (server/agent_response.py) that sends through `send`.

Every task a session starts is owned by its TaskSet and cancelled by `close()`, which runs
whichever way the stream ends: hangup, half-close, client gone, or failure.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from voiceagent.v1 import voice_agent_pb2 as pb

from server.agent_response import AgentResponse, agent_text, elapsed_ms
from server.audio import Format, InboundAudio, OutboundAudio
from server.backends.base import BackendUnavailable
from server.backends.llm.base import LLM, ChatMessage
from server.backends.registry import BackendError, Backends
from server.backends.stt.base import STT, STTStream, TurnEventKind, TurnOptions, TurnUpdate
from server.backends.tts.base import TTS
from server.limits import (
    MAX_AUDIO_LEAD_SECONDS,
    MAX_OUTPUT_BUFFER_BYTES,
    MAX_TEXT_TURN,
    MIN_TEXT_INTERRUPT_SECONDS,
    OUTPUT_BUFFER_BYTES,
)
from server.metrics import BACKCHANNELS, UNHEARD_ANSWERS, observe_turn
from server.session_setup import UpdatePlan, update_plan
from server.status import StatusError, status_for
from server.tasks import TaskSet, cancel_and_wait
from server.tools.runner import ToolOutcome, ToolRunner
from server.tools.spec import ToolSpec
from server.turn_words import interrupts, is_short_acknowledgement

log = logging.getLogger(__name__)

HISTORY_MESSAGES = 16  # plus the system prompt; older turns fall out of the LLM's context
MAX_AUDIO_SECONDS = 2  # per audio message; clients send 20-100 ms frames
# Speech over the agent longer than this is an interruption whatever its words ("yeah, yeah,
# okay, sure" is about a second).
MAX_BACKCHANNEL_SECONDS = 1.5


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
        self._tasks = TaskSet(self._task_failed, name_prefix=f"{setup.session_id[:8]}:")
        self._stt_stream: STTStream | None = None
        self._speculative: AgentResponse | None = None
        self._current: AgentResponse | None = None  # the committed answer being sent or played
        self._turn_id = 0
        self._failure: StatusError | None = None
        self._closed = False
        self._user_turn_open = False
        # START_OF_TURN of speech heard while the agent talked, until its words tell an
        # interruption from an acknowledgement.
        self._heard_over_agent: TurnUpdate | None = None
        # The words of a turn whose answer was dropped unheard because the caller went on:
        # answered together with the turn now being spoken (`_take_back_unheard_answer`).
        self._unanswered = ""
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
                StatusError(
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

    def _task_failed(self, task: asyncio.Task[Any], exc: BaseException) -> None:
        """A task of the session failed: the session ends with a status saying why."""
        if isinstance(exc, StatusError):
            self.fail(exc)
        elif isinstance(exc, BackendUnavailable):
            self.fail(StatusError(grpc.StatusCode.UNAVAILABLE, str(exc)))
        else:
            log.exception(
                "session %s: task %s failed", self.setup.session_id, task.get_name(), exc_info=exc
            )
            self.fail(StatusError(grpc.StatusCode.INTERNAL, f"{task.get_name()} failed: {exc}"))

    def fail(self, failure: StatusError) -> None:
        if self._failure is None:
            self._failure = failure
            if not self._writable.is_set():  # a client this far behind loses what it did not read
                while not self._out.empty():
                    self._out.get_nowait()
                self._out_bytes = 0
            self._put(pb.ConverseResponse(error=failure.to_proto()))
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
                raise StatusError(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"no audio or text for {limit:.0f} s (IDLE_TIMEOUT_SECONDS); closing the session",
                )

    async def run(
        self, requests: AsyncIterator[pb.ConverseRequest]
    ) -> AsyncGenerator[pb.ConverseResponse, None]:
        """Yield the responses of the conversation until it ends; raise StatusError if it failed."""
        try:
            self._stt_stream = self.setup.stt.open_stream(self.setup.turn_options)
            yield pb.ConverseResponse(
                session_started=pb.SessionStarted(
                    session_id=self.setup.session_id, config=self.setup.config
                )
            )
            self._tasks.spawn(self._read(requests), "read")
            self._tasks.spawn(self._follow_turns(self._stt_stream), "turns")
            if self.setup.idle_timeout > 0:
                self._tasks.spawn(self._watch_idle(self.setup.idle_timeout), "idle-watch")
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
        try:
            await self._tasks.cancel_all()
        finally:
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
                    raise StatusError(
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
                    self._refuse(StatusError(grpc.StatusCode.INVALID_ARGUMENT, wrong))
            elif kind == "hangup":
                self._end()
                return
            elif kind == "config":
                raise StatusError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "config is only accepted as the first message; send `update` to change the "
                    "model or voice mid-call",
                )
            else:
                raise StatusError(grpc.StatusCode.INVALID_ARGUMENT, "empty ConverseRequest")
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
            raise StatusError(grpc.StatusCode.INVALID_ARGUMENT, "text turn is empty")
        if len(text) > MAX_TEXT_TURN:
            raise StatusError(
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
            self._refuse(
                StatusError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"typed turn refused: the agent is still answering turn {answering.turn_id}, and "
                    f"typed turns may interrupt an answer at most once every "
                    f"{MIN_TEXT_INTERRUPT_SECONDS:g} s; wait for AGENT_TURN_DONE, or send it later",
                )
            )
            return
        self._last_text_turn_at = now
        # A typed turn interrupts an answer still being generated, not one only being played.
        await self._barge_in(now, during_playback=False)
        self._cancel_speculative()
        self._commit_user_turn(
            self._with_unanswered(text), speech_end=now, stt_final_at=now, from_text=True
        )

    def _apply_update(self, update: pb.ConfigUpdate) -> None:
        """Validate now (an Error in the stream if wrong, the call goes on); switch once loaded.

        A model or voice of another backend may need loading: that happens in the background,
        and the switch applies from the next agent turn after it, with the history kept.
        """
        try:
            plan = update_plan(update, self.setup.backends)
        except StatusError as err:
            self._refuse(err)
            return
        self._tasks.spawn(self._switch(plan), "config-update")

    async def _switch(self, plan: UpdatePlan) -> None:
        backends = self.setup.backends
        try:
            llm = await backends.get_llm(plan.llm_backend) if plan.llm_backend else self.llm
            tts = await backends.get_tts(plan.tts_backend) if plan.tts_backend else self.tts
        except BackendError as err:
            self._refuse(status_for(err))
            return
        applied = []
        if "llm_model" in plan.paths:
            self.llm, self.llm_model = llm, plan.llm_model
            applied.append(f"llm_model={self.llm_model} ({llm.name})")
        if "tts_voice" in plan.paths:
            self.tts, self.voice = tts, plan.tts_voice
            applied.append(f"tts_voice={plan.tts_voice} ({tts.name})")
        if "system_prompt" in plan.paths:
            self.history[0] = ChatMessage("system", plan.system_prompt)
            applied.append("system_prompt")
        self.send(
            pb.ConverseResponse(event=pb.Event(type=pb.CONFIG_APPLIED, message=", ".join(applied)))
        )
        self._warm()

    def _refuse(self, status: StatusError) -> None:
        """A request the session refuses without ending the call: an Error message."""
        self.send(pb.ConverseResponse(error=status.to_proto()))

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
            if await self._take_back_unheard_answer():
                return
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
                interrupts(event.transcript, event.speech_seconds, event.log_prob)
                or event.speech_seconds >= MAX_BACKCHANNEL_SECONDS
            ):
                await self._interrupted()
            elif self._heard_over_agent is None and not self._generating():
                # The answer then reads only the turn's end.
                self._warm(heard=self._with_unanswered(event.transcript))
        elif kind == TurnEventKind.EAGER_END_OF_TURN and self.setup.turn_options.eager_enabled:
            if self._heard_over_agent is not None:
                if is_short_acknowledgement(event.transcript, event.speech_seconds, event.log_prob):
                    return  # not worth a speculative answer: it will not be answered
                await self._interrupted()
            self._cancel_speculative()
            self._speculative = self._start_response(
                user_text=self._with_unanswered(event.transcript),
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
                if short and is_short_acknowledgement(text, event.speech_seconds, event.log_prob):
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
            text = self._with_unanswered(text)  # a noise after a dropped answer: answer that
            if not text:  # noise, a cough: nothing to answer
                if speculative is not None:
                    speculative.task.cancel()  # type: ignore[union-attr]
                self._end_if_drained()
                return
            if (
                speculative is not None
                and speculative.user_text == self._with_unanswered(event.transcript)
                and not speculative.failure
            ):
                self.history.append(ChatMessage("user", text))
                self._unanswered = ""
                self._current = speculative
                speculative.stt_final_at = event.at  # the final transcript, not the guess
                speculative.commit()
            else:
                if speculative is not None:
                    speculative.task.cancel()  # type: ignore[union-attr]
                self._commit_user_turn(
                    text, speech_end=event.speech_end or event.at, stt_final_at=event.at
                )

    def _generating(self) -> bool:
        """An answer is still being written (the LLM is busy with it)."""
        current = self._current
        return current is not None and current.task is not None and not current.task.done()

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

    async def _take_back_unheard_answer(self) -> bool:
        """The caller speaks again before a word of the answer was sent: drop the answer and
        answer this turn's words together with the next turn's.

        The end of turn came too soon ("Why do leaves change color in the autumn, | and when
        does it start?": a complete question, and the voice paused ~250 ms at the comma). Had
        the answer gone on, it would start over the caller and be barged in on; a person waits
        for the other to finish and answers all of it. A cough or a noise instead of words:
        the next END_OF_TURN (no words) answers the dropped turn's words alone.
        """
        response = self._current
        if response is None or response.fixed_text is not None or not response.user_text:
            return False
        if response.finished or response.first_audio_sent_at is not None or response.tool_messages:
            return False  # heard, or it acted: the usual barge-in rules apply
        last = self.history[-1] if len(self.history) > 1 else None
        if last is None or last.role != "user" or last.content != response.user_text:
            return False
        self._current = None
        if response.task is not None and not response.task.done():
            await cancel_and_wait(response.task)
        self.history.pop()
        self._unanswered = response.user_text
        UNHEARD_ANSWERS.inc()
        self.send(
            pb.ConverseResponse(
                event=pb.Event(
                    type=pb.BARGE_IN,
                    turn_id=response.turn_id,
                    message="the caller went on before the answer was heard: it answers both",
                )
            )
        )
        self.send(agent_text(response.turn_id, final=True, text=""))  # nothing was heard
        return True

    def _with_unanswered(self, text: str) -> str:
        return f"{self._unanswered} {text}".strip() if self._unanswered else text

    def _commit_user_turn(
        self, text: str, speech_end: float, stt_final_at: float, from_text: bool = False
    ) -> None:
        self._unanswered = ""
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
            if self._warming is not None:  # a warm-up not yet begun would hold the model's
                self._warming.cancel()  # one worker ahead of this answer, for words now stale
        messages = self._recent_history()
        if user_text:
            messages.append(ChatMessage("user", user_text))
        if len(self.history) > 1 + HISTORY_MESSAGES:  # older turns are never used again
            del self.history[1 : len(self.history) - HISTORY_MESSAGES]
        response = AgentResponse(
            send=self.send,
            writable=self.writable,
            outbound=self.outbound,
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
            tools=self.tools,
        )
        if committed:
            response.commit()
            self._current = response
        response.task = self._tasks.spawn(self._respond(response), f"respond-{response.turn_id}")
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

    def _warm(self, heard: str = "") -> None:
        history = self._recent_history()
        if self._warming is not None:  # one at a time: a stale warm-up is wasted model time
            self._warming.cancel()
        tools = self.tools.offered if self.tools is not None else []
        self._warming = self._tasks.spawn(
            self.llm.warm(history, self.llm_model, tools, heard), "llm-warm"
        )

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
            await cancel_and_wait(response.task)
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
        self.send(agent_text(response.turn_id, final=True, text=heard))
        stop_ms = elapsed_ms(detected_at, stopped)
        if response.fixed_text is None:
            self.send(pb.ConverseResponse(metrics=response.metrics(stop_ms)))
        else:  # a greeting has no latency of its own, but its interruption does
            metrics = pb.TurnMetrics(turn_id=response.turn_id, barge_in_stop_ms=stop_ms)
            self.send(pb.ConverseResponse(metrics=metrics))
        self._warm()
