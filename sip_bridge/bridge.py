"""The asyncio side: one Converse stream per call, opened before the call is answered.

The INVITE gets 180 at once; the stream is opened with the call's audio format and campaign,
and only when the server has said SessionStarted does the caller get 200 (so an unreachable
server is a 503 with Retry-After, not a call that connects to silence). Then the caller's
frames go up the stream as the media clock delivers them, the agent's audio goes into the
call's playout buffer, BARGE_IN flushes that buffer, and whichever side ends first ends both.

The agent may end the call itself: after CALL_ENDED the bridge lets the goodbye play out, then
sends BYE; after TRANSFER it lets the agent's line play out and sends REFER to the target (a
blind transfer, RFC 3515), then BYE once the caller's NOTIFY reports the new call; a caller that
refuses REFER (405...) or whose new call fails hears an apology (the server's voice, through
PreviewVoice) and is hung up on.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import grpc
from voiceagent.client import Conversation, VoiceAgentClient, linear16
from voiceagent.v1 import voice_agent_pb2 as pb

from sip_bridge.calls import (
    BUSY_HERE,
    NOT_FOUND,
    RETRY_AFTER_SECONDS,
    SERVICE_UNAVAILABLE,
    CallRecord,
    CallState,
    DigitCollector,
    admission,
)
from sip_bridge.playout import PlayoutBuffer
from sip_bridge.routing import Codec, route_call
from sip_bridge.sip import MediaStats, SipStack

log = logging.getLogger("sip_bridge")

TRANSFER_TIMEOUT = 30.0  # seconds for the REFER's final NOTIFY
PLAYOUT_TIMEOUT = 60.0  # the most the bridge waits for the agent's last words to play
TRANSFER_FAILED = "Sorry, I could not transfer your call. Please call again later. Goodbye."


@dataclass(frozen=True)
class BridgeSettings:
    routes: dict[str, str]
    max_calls: int = 30
    answer_timeout: float = 5.0  # for the server's SessionStarted before we answer 503
    prebuffer_ms: int = 60
    tick_ms: int = 20  # the media clock's frame: the playout buffer hands out frames this long
    dtmf_pause: float = 1.5


class CallSession:
    """One call: its state, its playout buffer and the task that runs its Converse stream."""

    def __init__(self, bridge: Bridge, record: CallRecord) -> None:
        self.bridge = bridge
        self.record = record
        self.playout = PlayoutBuffer(
            record.rate, bridge.settings.prebuffer_ms, frame_ms=bridge.settings.tick_ms
        )
        # Caller audio from the media clock thread (deque appends are thread-safe) and DTMF text
        # turns; Bridge.pump sends both up the stream once per tick for every call.
        self.frames: collections.deque[bytes] = collections.deque()
        self.texts: list[str] = []
        self.digits = DigitCollector(bridge.settings.dtmf_pause)
        self.conversation: Conversation | None = None
        self.started = time.monotonic()
        self.task: asyncio.Task[None] | None = None
        self.loop = asyncio.get_running_loop()
        self.voice = ""  # the session's voice, for an apology when a transfer fails
        self.ending: pb.Event | None = None  # CALL_ENDED or TRANSFER from the agent
        self.transferred: asyncio.Future[tuple[int, str]] | None = None

    def on_audio(self, frame: bytes) -> None:
        """Called on PJSIP's media clock thread with each frame the caller sent."""
        self.frames.append(frame)

    async def run(self) -> None:
        stack, call_id = self.bridge.stack, self.record.call_id
        config = pb.SessionConfig(
            input_format=linear16(self.record.rate),
            output_format=linear16(self.record.rate),
            campaign_id=self.record.campaign_id,
        )
        try:
            async with self.bridge.client.converse(config) as conversation:
                self.conversation = conversation
                responses = aiter(conversation)
                try:
                    first = await asyncio.wait_for(
                        anext(responses), self.bridge.settings.answer_timeout
                    )
                except (grpc.aio.AioRpcError, TimeoutError, StopAsyncIteration) as err:
                    self._unavailable(err)
                    return
                if first.WhichOneof("response") != "session_started":
                    self._unavailable(first)
                    return
                if self.record.state is CallState.ENDED:  # cancelled while we waited
                    return
                self.record.answer()
                stack.answer(call_id, 200, (self.playout, self.on_audio))
                log.info("call %d answered: session %s", call_id, first.session_started.session_id)
                self.voice = first.session_started.config.tts_voice
                await self._receive(responses)
                if self.ending is not None and self.record.state is CallState.ANSWERED:
                    await self._agent_ends(self.ending)
        except grpc.aio.AioRpcError as err:
            log.warning("call %d: stream ended: %s %s", call_id, err.code().name, err.details())
        finally:
            if self.record.end("stream ended"):
                stack.hangup(call_id)  # BYE from our side: the agent's stream is over

    def _unavailable(self, why: object) -> None:
        log.warning("call %d: server not ready, answering 503: %s", self.record.call_id, why)
        if self.record.end("server unavailable"):
            self.bridge.stack.answer(
                self.record.call_id,
                SERVICE_UNAVAILABLE,
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )

    async def send_pending(self) -> None:
        """Send what the caller said since the last tick as one message, then any DTMF turn."""
        if self.conversation is None or self.record.state is not CallState.ANSWERED:
            self.frames.clear()
            return
        count = len(self.frames)
        if count:
            audio = b"".join(self.frames.popleft() for _ in range(count))
            await self.conversation.send_audio(audio)
        while self.texts:
            typed = self.texts.pop(0)
            log.info("call %d keys: %s", self.record.call_id, typed)
            await self.conversation.send_text(typed)

    async def _receive(self, responses: object) -> None:
        async for response in responses:  # type: ignore[attr-defined]
            kind = response.WhichOneof("response")
            if kind == "audio":
                self.playout.push(response.audio.audio)
            elif kind == "event":
                if response.event.type == pb.BARGE_IN:
                    self.playout.flush()
                elif response.event.type == pb.AGENT_TURN_DONE:
                    self.playout.end_turn()
                elif response.event.type in (pb.CALL_ENDED, pb.TRANSFER):
                    self.ending = response.event
            elif kind == "transcript" and response.transcript.is_final:
                log.info("call %d heard: %s", self.record.call_id, response.transcript.text)
            elif kind == "error":
                log.warning("call %d: server error: %s", self.record.call_id, response.error)

    async def _agent_ends(self, event: pb.Event) -> None:
        """The agent ended the call or hands it over: its last words first, then BYE or REFER."""
        call_id = self.record.call_id
        self.playout.end_turn()
        await self._played_out()
        if event.type == pb.CALL_ENDED:
            log.info("call %d: the agent ended the call", call_id)
            return  # run() sends the BYE
        target = event.message
        log.info("call %d: transferring to %s (REFER)", call_id, target)
        self.transferred = self.loop.create_future()
        self.bridge.stack.transfer(call_id, target)
        try:
            code, reason = await asyncio.wait_for(self.transferred, TRANSFER_TIMEOUT)
        except TimeoutError:
            code, reason = 408, "no final NOTIFY"
        if 200 <= code < 300:
            log.info("call %d: transferred to %s: %d %s", call_id, target, code, reason)
            return
        log.info("call %d: transfer refused: %d %s; telling the caller", call_id, code, reason)
        try:
            audio = await self.bridge.client.preview_voice(
                TRANSFER_FAILED, self.voice, linear16(self.record.rate)
            )
        except grpc.aio.AioRpcError as err:
            log.warning("call %d: no apology audio: %s", call_id, err.details())
            return
        self.playout.push(audio)
        self.playout.end_turn()
        await self._played_out()

    async def _played_out(self) -> None:
        """Until the caller has heard what is queued (plus the media path's last frames)."""
        deadline = time.monotonic() + PLAYOUT_TIMEOUT
        while self.playout.buffered_ms() > 0 and time.monotonic() < deadline:
            if self.record.state is not CallState.ANSWERED:
                return
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)

    def transfer_status(self, code: int, reason: str, final: bool) -> None:
        if final and self.transferred is not None and not self.transferred.done():
            self.transferred.set_result((code, reason))

    def dtmf(self, digit: str) -> None:
        """Digits become one text turn, on `#` or after a pause (DigitCollector)."""
        typed = self.digits.add(digit, time.monotonic())
        if typed:
            self.texts.append(typed)
        else:
            self.loop.call_later(self.digits.pause, self._digits_due)

    def _digits_due(self) -> None:
        typed = self.digits.due(time.monotonic())
        if typed and self.record.state is CallState.ANSWERED:
            self.texts.append(typed)

    def end(self, reason: str) -> None:
        """The SIP side ended the call (BYE, CANCEL, RTP timeout): end the stream too."""
        if self.record.end(reason) and self.task is not None:
            self.task.cancel()


class Bridge:
    """Takes calls from the SIP thread and runs a CallSession for each."""

    def __init__(self, settings: BridgeSettings, client: VoiceAgentClient) -> None:
        self.settings = settings
        self.client = client
        self.stack: SipStack
        self.sessions: dict[int, CallSession] = {}
        self.on_load: Callable[[int], None] | None = None  # calls in progress, on each change

    async def pump(self) -> None:
        """Every media tick, each call's new audio goes up its stream: one timer for all calls
        instead of a cross-thread wakeup per frame per call."""
        tick = self.settings.tick_ms / 1000
        while True:
            await asyncio.sleep(tick)
            for session in list(self.sessions.values()):
                await session.send_pending()

    def _load_changed(self) -> None:
        if self.on_load is not None:
            self.on_load(len(self.sessions))

    def incoming(self, call_id: int, users: tuple[str, str], codec: Codec) -> None:
        refusal = admission(len(self.sessions), self.settings.max_calls)
        route = route_call(self.settings.routes, *users)
        if not refusal and not route.found:
            refusal = NOT_FOUND
        if refusal:
            log.info("call %d to %s refused: %d", call_id, users[0] or users[1], refusal)
            self.stack.answer(call_id, refusal)
            return
        record = CallRecord(call_id, route.campaign_id, codec.rate)
        session = CallSession(self, record)
        self.sessions[call_id] = session
        session.task = asyncio.create_task(session.run(), name=f"call-{call_id}")
        self._load_changed()
        log.info("call %d to %s: %s, campaign %r", call_id, users[0], codec.name, route.campaign_id)

    def ended(self, call_id: int, reason: str, stats: MediaStats) -> None:
        session = self.sessions.pop(call_id, None)  # PJSIP reports every call's end once
        if session is None:
            return
        self._load_changed()
        session.end(reason)
        seconds = time.monotonic() - session.started
        line = {"call": call_id, "reason": reason, "seconds": round(seconds, 2), **asdict(stats)}
        log.info("call ended %s", json.dumps(line))

    def dtmf(self, call_id: int, digit: str) -> None:
        session = self.sessions.get(call_id)
        if session is not None:
            session.dtmf(digit)

    def transfer_status(self, call_id: int, code: int, reason: str, final: bool) -> None:
        session = self.sessions.get(call_id)
        if session is not None:
            session.transfer_status(code, reason, final)

    async def hang_up_all(self) -> None:
        for session in list(self.sessions.values()):
            session.end("bridge shutting down")
            self.stack.hangup(session.record.call_id)
        tasks = [s.task for s in self.sessions.values() if s.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=5)


__all__ = ["BUSY_HERE", "Bridge", "BridgeSettings", "CallSession"]
