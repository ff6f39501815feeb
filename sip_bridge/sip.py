"""PJSIP (pjsua2) in one dedicated thread: the SIP user agent, RTP and the media clock.

Everything SIP happens on the `sip` thread: it polls PJSIP (`libHandleEvents`), so the call
callbacks run there, and it runs the commands the asyncio side queues (answer, hang up, stop).
What the asyncio side must know (a call came in, ended, a DTMF digit) goes the other way with
`loop.call_soon_threadsafe`. Audio does not pass through this thread: PJSIP's media clock
thread calls each call's `AudioPort` every 20 ms, which takes a frame from the call's
PlayoutBuffer and hands the frame it received to the asyncio side.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pjsua2 as pj

from sip_bridge.calls import RtpWatch
from sip_bridge.playout import FRAME_MS, PlayoutBuffer
from sip_bridge.routing import Codec, offered_codec, refer_to, request_uri, uri_user

log = logging.getLogger("sip_bridge.sip")

GAP_MS = 60.0  # an outbound frame later than this after the previous one is a gap in the RTP
# The pjsua2-python 2.15.1 wheel is built with PJSUA_MAX_CALLS = 4 (measured: asking for more
# gets 4): one process carries 4 calls. More calls take more worker processes (dispatch.py).
PJSUA_MAX_CALLS = 4


@dataclass(frozen=True)
class SipSettings:
    host: str = "0.0.0.0"
    port: int = 5060
    rtp_port: int = 4000
    max_calls: int = 30
    rtp_timeout: float = 30.0
    wideband: bool = False  # also G.722 (16 kHz); the media clock then runs at 16 kHz
    pjsip_log_level: int = 1
    # How often PJSIP's media clock asks each call for audio (and hands over what it received).
    # RTP stays at 20 ms packets; a 40 ms tick halves the Python work per call.
    tick_ms: int = FRAME_MS


@dataclass
class MediaStats:
    """Outbound pacing as seen by the media clock: what the bench calls clean RTP."""

    frames_out: int = 0
    frames_in: int = 0
    max_gap_ms: float = 0.0
    gaps: int = 0  # ticks more than GAP_MS after the previous one
    underruns: int = 0
    flushed_bytes: int = 0


class CallEvents(Protocol):
    """What the asyncio side hears from the SIP thread (called on the event loop)."""

    def incoming(self, call_id: int, users: tuple[str, str], codec: Codec) -> None: ...
    def ended(self, call_id: int, reason: str, stats: MediaStats) -> None: ...
    def dtmf(self, call_id: int, digit: str) -> None: ...
    def transfer_status(self, call_id: int, code: int, reason: str, final: bool) -> None: ...


def _frame_reader() -> Callable[[pj.MediaFrame], bytes]:
    """A fast way to copy a MediaFrame's bytes out, checked against the slow one at startup.

    SWIG's ByteVector converts element by element (~170 us for a 20 ms frame, too slow for a
    hundred calls); the vector's begin/end pointers read through ctypes cost ~2 us. If the
    layout ever differs from libstdc++'s, the check fails and the slow path is used.
    """

    def slow(frame: pj.MediaFrame) -> bytes:
        return bytes(frame.buf)

    def fast(frame: pj.MediaFrame) -> bytes:
        vector = frame.buf
        begin, end = ctypes.cast(int(vector.this), ctypes.POINTER(ctypes.c_void_p * 2)).contents
        if not begin or not end or end < begin:
            return b""
        return ctypes.string_at(begin, end - begin)

    probe = pj.MediaFrame()
    sample = bytes(range(256)) + bytes(64)
    probe.buf = pj.ByteVector(sample)
    try:
        if fast(probe) == sample == slow(probe):
            return fast
    except Exception:  # any surprise in the layout: the slow path is always right
        log.warning("fast frame reader unavailable; using the slow one")
    return slow


class AudioPort(pj.AudioMediaPort):  # type: ignore[misc]
    """One call's audio at the media clock: a frame out of the playout buffer, a frame in."""

    def __init__(
        self,
        playout: PlayoutBuffer,
        on_audio: Callable[[bytes], None],
        read_frame: Callable[[pj.MediaFrame], bytes],
    ) -> None:
        super().__init__()
        self.playout = playout
        self.on_audio = on_audio
        self.read_frame = read_frame
        self.stats = MediaStats()
        self._last_tick = 0.0
        self.name_ = ""

    def onFrameRequested(self, frame: pj.MediaFrame) -> None:
        now = time.monotonic()
        if self._last_tick:
            gap = (now - self._last_tick) * 1000
            if gap > self.stats.max_gap_ms:
                self.stats.max_gap_ms = gap
            if gap > GAP_MS:
                self.stats.gaps += 1
                log.debug("%s: %.0f ms since the previous frame", self.name_, gap)
        self._last_tick = now
        data = self.playout.pop()
        frame.type = pj.PJMEDIA_FRAME_TYPE_AUDIO
        frame.buf = pj.ByteVector(data)
        frame.size = len(data)
        self.stats.frames_out += 1

    def onFrameReceived(self, frame: pj.MediaFrame) -> None:
        if frame.type != pj.PJMEDIA_FRAME_TYPE_AUDIO or not frame.size:
            data = self.playout.silence
        else:
            data = self.read_frame(frame)
        self.stats.frames_in += 1
        self.on_audio(data)


@dataclass
class _Media:
    playout: PlayoutBuffer
    on_audio: Callable[[bytes], None]


class BridgeCall(pj.Call):  # type: ignore[misc]
    def __init__(self, stack: SipStack, account: pj.Account, call_id: int) -> None:
        super().__init__(account, call_id)
        self.stack = stack
        self.number = call_id
        self.media: _Media | None = None  # given with the 200 answer
        self.port: AudioPort | None = None
        self.audio: pj.AudioMedia | None = None
        self.on_hold = False
        self.rtp = RtpWatch()

    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        info = self.getInfo()
        if info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.stack.call_disconnected(self, f"{info.lastStatusCode} {info.lastReason}")

    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:
        info = self.getInfo()
        for media in info.media:
            if media.type != pj.PJMEDIA_TYPE_AUDIO:
                continue
            self.on_hold = media.status in (
                pj.PJSUA_CALL_MEDIA_LOCAL_HOLD,
                pj.PJSUA_CALL_MEDIA_REMOTE_HOLD,
                pj.PJSUA_CALL_MEDIA_NONE,
            )
            if media.status in (pj.PJSUA_CALL_MEDIA_ACTIVE, pj.PJSUA_CALL_MEDIA_REMOTE_HOLD):
                self.stack.connect_audio(self, self.getAudioMedia(media.index))
            return

    def onDtmfDigit(self, prm: pj.OnDtmfDigitParam) -> None:
        self.stack.post(self.stack.events.dtmf, self.number, str(prm.digit))

    def onCallTransferStatus(self, prm: pj.OnCallTransferStatusParam) -> None:
        """Our REFER's fate (RFC 3515): its own refusal (405...), then the NOTIFYs' sipfrag
        status of the new call; we stop listening at the first final one."""
        code, final = int(prm.statusCode), bool(prm.finalNotify) or int(prm.statusCode) >= 300
        if final:
            prm.cont = False
        self.stack.post(
            self.stack.events.transfer_status, self.number, code, str(prm.reason), final
        )


class BridgeAccount(pj.Account):  # type: ignore[misc]
    def __init__(self, stack: SipStack) -> None:
        super().__init__()
        self.stack = stack

    def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:
        self.stack.incoming_call(self, prm)


@dataclass
class _Answer:
    call_id: int
    code: int
    media: _Media | None = None
    headers: dict[str, str] = field(default_factory=dict)


class SipStack:
    """Owns the PJSIP endpoint and its thread; every pjsua2 object lives and dies on it."""

    def __init__(
        self, settings: SipSettings, events: CallEvents, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.settings = settings
        self.events = events
        self.loop = loop
        self._commands: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._calls: dict[int, BridgeCall] = {}
        self._ended: list[BridgeCall] = []
        self._accounts: list[BridgeAccount] = []
        self._ready = threading.Event()
        self._stopping = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="sip", daemon=True)
        self.read_frame: Callable[[pj.MediaFrame], bytes] = bytes
        self.endpoint: pj.Endpoint | None = None
        self._prioritized: set[int] = set()
        self._priority_done = False

    # --- called from the asyncio side -------------------------------------------------------

    def start(self, within: float = 10.0) -> None:
        self._thread.start()
        if not self._ready.wait(within):
            raise RuntimeError("the SIP stack did not start")
        if self._error is not None:
            raise RuntimeError(f"the SIP stack did not start: {self._error}") from self._error

    def stop(self) -> None:
        self._stopping = True
        self._thread.join(15)

    def answer(
        self,
        call_id: int,
        code: int,
        media: tuple[PlayoutBuffer, Callable[[bytes], None]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        media_ = _Media(*media) if media else None
        order = _Answer(call_id, code, media_, headers or {})
        self._commands.put(lambda: self._answer(order))

    def hangup(self, call_id: int) -> None:
        self._commands.put(lambda: self._hangup(call_id))

    def transfer(self, call_id: int, target: str) -> None:
        """Blind transfer: REFER with Refer-To `target`; the outcome comes as transfer_status."""
        self._commands.put(lambda: self._transfer(call_id, target))

    # --- the SIP thread ---------------------------------------------------------------------

    def post(self, fn: Callable[..., None], *args: Any) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    def _run(self) -> None:
        try:
            self._create()
        except BaseException as err:
            self._error = err
            self._ready.set()
            return
        self._ready.set()
        assert self.endpoint is not None
        next_check = time.monotonic() + 1
        while not self._stopping:
            self.endpoint.libHandleEvents(20)
            self._run_commands()
            self._reap()
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + 1
                self._check_rtp()
        self._destroy()

    def _create(self) -> None:
        s = self.settings
        ep = pj.Endpoint()
        ep.libCreate()
        config = pj.EpConfig()
        config.uaConfig.threadCnt = 0  # we poll PJSIP on this thread: callbacks arrive here
        config.uaConfig.mainThreadOnly = False
        config.uaConfig.maxCalls = min(PJSUA_MAX_CALLS, s.max_calls + 2)  # room to answer 486
        config.uaConfig.userAgent = "voice-agent-sip"
        config.logConfig.level = s.pjsip_log_level
        config.logConfig.consoleLevel = s.pjsip_log_level
        media = config.medConfig
        media.clockRate = 16000 if s.wideband else 8000
        media.sndClockRate = media.clockRate
        media.maxMediaPorts = 2 * PJSUA_MAX_CALLS + 4
        media.noVad = True
        media.ecTailLen = 0  # no echo canceller: the agent is not a loudspeaker
        media.quality = 4
        media.ptime = FRAME_MS
        media.audioFramePtime = s.tick_ms
        ep.libInit(config)
        ep.audDevManager().setNullDev()  # headless: the media clock runs without a sound card
        self.read_frame = _frame_reader()
        if not s.wideband:
            ep.codecSetPriority("G722/16000/1", 0)
        for codec in (
            "speex/16000/1",
            "speex/8000/1",
            "speex/32000/1",
            "iLBC/8000/1",
            "GSM/8000/1",
        ):
            ep.codecSetPriority(codec, 0)  # we take G.711 and G.722 only
        transport = pj.TransportConfig()
        transport.port = s.port
        if s.host not in ("", "0.0.0.0"):
            transport.boundAddress = s.host
        ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, transport)
        ep.libStart()
        self.endpoint = ep
        local = self._account_config(f"sip:agent@{s.host}:{s.port}")
        self._add_account(local)
        log.info("SIP on udp %s:%d (RTP from %d)", s.host, s.port, s.rtp_port)

    def _account_config(self, id_uri: str) -> pj.AccountConfig:
        config = pj.AccountConfig()
        config.idUri = id_uri
        rtp = config.mediaConfig.transportConfig
        rtp.port = self.settings.rtp_port
        if self.settings.host not in ("", "0.0.0.0"):
            rtp.boundAddress = self.settings.host
        return config

    def _add_account(self, config: pj.AccountConfig) -> None:
        account = BridgeAccount(self)
        account.create(config)
        self._accounts.append(account)

    def incoming_call(self, account: BridgeAccount, prm: pj.OnIncomingCallParam) -> None:
        call = BridgeCall(self, account, prm.callId)
        self._calls[call.number] = call
        message = str(prm.rdata.wholeMsg)
        info = call.getInfo()
        users = (uri_user(info.localUri), uri_user(request_uri(message)))
        sdp = message.partition("\r\n\r\n")[2]
        self._send_answer(call, 180)
        self.post(
            self.events.incoming, call.number, users, offered_codec(sdp, self.settings.wideband)
        )

    def _answer(self, order: _Answer) -> None:
        call = self._calls.get(order.call_id)
        if call is None or not call.isActive():
            return  # cancelled meanwhile: PJSIP already said 487
        call.media = order.media
        self._send_answer(call, order.code, order.headers)

    def _send_answer(
        self, call: BridgeCall, code: int, headers: dict[str, str] | None = None
    ) -> None:
        op = pj.CallOpParam()
        op.statusCode = code
        for name, value in (headers or {}).items():
            header = pj.SipHeader()
            header.hName, header.hValue = name, value
            op.txOption.headers.append(header)
        try:
            call.answer(op)
        except pj.Error as err:
            log.warning("call %d: answering %d failed: %s", call.number, code, err.info())

    def _hangup(self, call_id: int) -> None:
        call = self._calls.get(call_id)
        if call is not None and call.isActive():
            try:
                call.hangup(pj.CallOpParam())
            except pj.Error as err:
                log.warning("call %d: hangup failed: %s", call_id, err.info())

    def _transfer(self, call_id: int, target: str) -> None:
        call = self._calls.get(call_id)
        if call is None or not call.isActive():
            self.post(self.events.transfer_status, call_id, 481, "call gone", True)
            return
        try:
            call.xfer(refer_to(target, call.getInfo().remoteUri), pj.CallOpParam(True))
        except pj.Error as err:
            self.post(self.events.transfer_status, call_id, 500, str(err.info()), True)

    def connect_audio(self, call: BridgeCall, audio: pj.AudioMedia) -> None:
        if call.media is None:
            return
        if call.port is None:
            rate = call.media.playout.rate
            fmt = pj.MediaFormatAudio()
            fmt.init(pj.PJMEDIA_FORMAT_PCM, rate, 1, self.settings.tick_ms * 1000, 16)
            port = AudioPort(call.media.playout, call.media.on_audio, self.read_frame)
            port.createPort(f"call{call.number}", fmt)
            port.name_ = f"call {call.number}"
            call.port = port
        audio.startTransmit(call.port)
        call.port.startTransmit(audio)
        call.audio = audio
        self._raise_media_priority()

    def _raise_media_priority(self) -> None:
        """Real-time scheduling for PJSIP's media threads, where the OS allows it.

        The media clock must wake every tick whatever else the machine runs; under load a
        normal-priority thread waited over 100 ms (measured). Like audio servers (JACK,
        PipeWire via rtkit) we ask for SCHED_RR; without the privilege (CAP_SYS_NICE) the
        threads stay as they are and we say so once.
        """
        if self._priority_done:
            return
        tasks = Path("/proc/self/task")
        raised = []
        for task in tasks.iterdir() if tasks.exists() else ():
            try:
                name = (task / "comm").read_text().strip()
                if name in ("clock", "media") and int(task.name) not in self._prioritized:
                    os.sched_setscheduler(int(task.name), os.SCHED_RR, os.sched_param(10))
                    self._prioritized.add(int(task.name))
                    raised.append(name)
            except PermissionError:
                log.info("no real-time priority for the media clock (needs CAP_SYS_NICE)")
                self._priority_done = True
                return
            except (OSError, ValueError):
                continue
        if raised:  # PJSIP may start a new clock thread after an idle spell: checked per call
            log.debug("media threads at SCHED_RR: %s", raised)

    def call_disconnected(self, call: BridgeCall, reason: str) -> None:
        stats = call.port.stats if call.port else MediaStats()
        if call.media is not None:
            playout = call.media.playout.stats
            stats.underruns, stats.flushed_bytes = playout.underruns, playout.flushed_bytes
        self.post(self.events.ended, call.number, reason, stats)
        self._ended.append(call)

    def _reap(self) -> None:
        """Free ended calls outside their own callbacks (pjsua2 objects die on this thread)."""
        for call in self._ended:
            self._calls.pop(call.number, None)
            call.port = None
            call.audio = None
        self._ended.clear()

    def _run_commands(self) -> None:
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                command()
            except pj.Error as err:
                log.warning("SIP command failed: %s", err.info())

    def _check_rtp(self) -> None:
        """End calls whose caller stopped sending RTP (a vanished phone sends no BYE)."""
        now = time.monotonic()
        for call in list(self._calls.values()):
            if call.port is None or call.audio is None or not call.isActive():
                continue
            try:
                packets = int(call.getStreamStat(0).rtcp.rxStat.pkt)
            except pj.Error:
                continue
            if call.rtp.timed_out(packets, call.on_hold, now, self.settings.rtp_timeout):
                log.info(
                    "call %d: no RTP for %.0f s, hanging up",
                    call.number,
                    now - (call.rtp.idle_since or now),
                )
                self._hangup(call.number)

    def _destroy(self) -> None:
        assert self.endpoint is not None
        self.endpoint.hangupAllCalls()
        deadline = time.monotonic() + 2
        while self._calls and time.monotonic() < deadline:
            self.endpoint.libHandleEvents(20)
            self._reap()
        for call in self._calls.values():
            call.port = None
        self._calls.clear()
        self._accounts.clear()
        self.endpoint.libDestroy()
        self.endpoint = None
