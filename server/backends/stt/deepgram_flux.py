"""Deepgram Flux: conversational STT whose turn events come from the provider (WebSocket /v2/listen).

Each session's stream owns one thread running its own asyncio loop for the socket (TLS, JSON,
reconnects), so none of that work is done on the gRPC loop. The gRPC side hands audio over
through a FIFO (`collections.deque`: append and popleft are atomic) that never blocks; the thread
drains it every 10 ms and sends 80 ms chunks, as Deepgram recommends. When a whole chunk is
queued, `push` also wakes the thread at once (one call_soon_threadsafe per 80 ms), so a chunk
does not wait for the next tick (bench/flux_handoff.py: ~1 ms at the median instead of ~6).
TurnInfo messages come back to the session's loop with `call_soon_threadsafe` as TurnUpdates.

A dropped connection is reopened with exponential backoff; audio pushed meanwhile is kept (up to
MAX_BUFFER_SECONDS) and sent first on the new connection. Turn indexes and audio windows continue
across connections. When the retry budget is spent, `events()` raises BackendUnavailable: the
session ends with UNAVAILABLE instead of hanging.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlencode

import numpy as np
import websockets
from websockets.asyncio.client import ClientConnection, connect

from server.backends.base import BackendUnavailable
from server.backends.stt.base import STT, STTStream, TurnEventKind, TurnOptions, TurnUpdate
from server.tasks import cancel_and_wait

log = logging.getLogger(__name__)

DEFAULT_URL = "wss://api.deepgram.com/v2/listen"
MODEL = "flux-general-en"
USER_AGENT = "voice-agent/0.1 (self-hosted voice agent server; deepgram-flux STT backend)"
DRAIN_INTERVAL = 0.010  # seconds between FIFO drains
CHUNK_MS = 80
MAX_BUFFER_SECONDS = 30  # audio kept while reconnecting; the oldest goes first beyond it
VOICED_RMS = 300  # int16 RMS above which a pushed frame counts as voiced (for metrics only)
_EVENTS = {
    "StartOfTurn": TurnEventKind.START_OF_TURN,
    "Update": TurnEventKind.UPDATE,
    "EagerEndOfTurn": TurnEventKind.EAGER_END_OF_TURN,
    "TurnResumed": TurnEventKind.TURN_RESUMED,
    "EndOfTurn": TurnEventKind.END_OF_TURN,
}


@dataclass(frozen=True)
class FluxConnection:
    """Where and how a stream connects, and how hard it tries."""

    url: str
    api_key: str
    sample_rate: int = 16000
    retries: int = 5
    backoff: float = 0.1  # first delay; doubles up to max_backoff
    max_backoff: float = 2.0
    open_timeout: float = 5.0


class DeepgramFluxSTT(STT):
    name: ClassVar[str] = "deepgram-flux"
    sample_rate: ClassVar[int] = 16000

    def __init__(self, connection: FluxConnection | None = None) -> None:
        self.connection = connection or FluxConnection(
            url=os.environ.get("DEEPGRAM_URL") or DEFAULT_URL,
            api_key=os.environ.get("DEEPGRAM_API_KEY", ""),
            sample_rate=self.sample_rate,
        )

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return None if os.environ.get("DEEPGRAM_API_KEY") else "DEEPGRAM_API_KEY not set"

    def open_stream(self, options: TurnOptions) -> FluxStream:
        return FluxStream(self.connection, options)


def listen_url(connection: FluxConnection, options: TurnOptions) -> str:
    """The /v2/listen URL; thresholds only when the session set them (else Flux's defaults)."""
    query: dict[str, Any] = {
        "model": MODEL,
        "encoding": "linear16",
        "sample_rate": connection.sample_rate,
    }
    if options.eot_threshold is not None:
        query["eot_threshold"] = f"{options.eot_threshold:g}"
    if options.eager_eot_threshold is not None and options.eager_enabled:
        query["eager_eot_threshold"] = f"{options.eager_eot_threshold:g}"
    return f"{connection.url}?{urlencode(query)}"


class _Fatal(Exception):
    """Retrying cannot help (the key was refused, the URL is wrong)."""


class FluxStream(STTStream):
    """One session's Flux connection, in its own thread."""

    def __init__(self, connection: FluxConnection, options: TurnOptions) -> None:
        self._connection = connection
        self._url = listen_url(connection, options)
        self._loop = asyncio.get_running_loop()
        self._events: asyncio.Queue[TurnUpdate | BaseException | None] = asyncio.Queue()
        self._fifo: deque[bytes] = deque()  # gRPC loop -> socket thread
        self._closing = threading.Event()
        self._stopped: asyncio.Future[None] = self._loop.create_future()
        # Session-loop side: where pushed audio lies in the stream, to time the end of speech.
        self._marks_end: deque[int] = deque(maxlen=6000)  # sample count after each push
        self._marks: deque[tuple[float, bool]] = deque(maxlen=6000)  # (received_at, voiced)
        self._pushed = 0
        # Socket-thread side.
        self._pending = bytearray()  # drained from the FIFO, not yet sent
        self._socket_loop: asyncio.AbstractEventLoop | None = None
        self._tick: asyncio.Future[None] | None = None  # the sender's next drain
        self._queued = 0  # bytes pushed since the last early wake (session-loop side)
        self._chunk = connection.sample_rate * 2 * CHUNK_MS // 1000
        self._max_pending = connection.sample_rate * 2 * MAX_BUFFER_SECONDS
        self._dropped_bytes = 0
        self._sent_seconds = 0.0  # audio sent on earlier connections: this one's time zero
        self._audio_base = 0.0
        self._turn_base = 0  # turns completed on earlier connections
        self._turns_done = 0
        self._turn_open = False
        self.connections = 0  # how many times we connected (tests watch reconnects)
        self._thread = threading.Thread(target=self._thread_main, name="deepgram-flux", daemon=True)
        self._thread.start()

    # --- the session's loop -------------------------------------------------------------------

    async def push(self, pcm: np.ndarray, received_at: float) -> None:
        data = pcm.astype("<i2").tobytes()
        self._fifo.append(data)  # never blocks: the socket thread takes it within 10 ms
        self._queued += len(data)
        tick, socket_loop = self._tick, self._socket_loop
        if self._queued >= self._chunk and tick is not None and socket_loop is not None:
            # A whole chunk is waiting: drain now rather than at the next 10 ms tick.
            self._queued = 0
            with contextlib.suppress(RuntimeError):  # the socket loop has just ended
                socket_loop.call_soon_threadsafe(_set_done, tick)
        self._pushed += len(pcm)
        rms = float(np.sqrt(np.mean(pcm.astype(np.float32) ** 2))) if len(pcm) else 0.0
        self._marks_end.append(self._pushed)
        self._marks.append((received_at, rms > VOICED_RMS))

    async def events(self) -> AsyncIterator[TurnUpdate]:
        while (item := await self._events.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item

    async def aclose(self) -> None:
        self._closing.set()
        if self._thread.is_alive():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._stopped), 5)
        self._thread.join(timeout=1)
        self._events.put_nowait(None)

    def _deliver(self, event: TurnUpdate) -> None:
        """On the session's loop: add the end-of-speech time, then hand the event on."""
        if event.kind in (TurnEventKind.EAGER_END_OF_TURN, TurnEventKind.END_OF_TURN):
            event = _with_speech_end(event, self._speech_end(event.audio_end))
        self._events.put_nowait(event)

    def _speech_end(self, audio_end: float) -> float:
        """When the last voiced frame up to `audio_end` (stream seconds) was received."""
        sample = int(audio_end * self._connection.sample_rate)
        index = min(bisect.bisect_left(self._marks_end, sample), len(self._marks) - 1)
        for k in range(index, -1, -1):
            received_at, voiced = self._marks[k]
            if voiced:
                return received_at
        return self._marks[index][0] if self._marks else time.monotonic()

    def _post(self, item: TurnUpdate | BaseException) -> None:
        """From the socket thread to the session's loop."""
        deliver = self._deliver if isinstance(item, TurnUpdate) else self._events.put_nowait
        with contextlib.suppress(RuntimeError):  # the session's loop is gone: nobody listens
            self._loop.call_soon_threadsafe(deliver, item)  # type: ignore[arg-type]

    # --- the socket thread --------------------------------------------------------------------

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # reported to the session, never lost in a thread
            log.exception("deepgram-flux thread failed")
            self._post(BackendUnavailable(f"Deepgram Flux client failed: {exc}"))
        finally:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(_set_done, self._stopped)

    async def _run(self) -> None:
        self._socket_loop = asyncio.get_running_loop()
        failures = 0
        while not self._closing.is_set():
            connected_before = self.connections
            try:
                reason = await self._connect_once()
                # A connection that was up and then dropped starts a fresh retry budget.
                failures = 1 if self.connections > connected_before else failures + 1
            except _Fatal as err:
                self._post(BackendUnavailable(str(err)))
                return
            except (OSError, TimeoutError, websockets.WebSocketException) as err:
                reason = f"{type(err).__name__}: {err}"
                failures += 1
            if self._closing.is_set():
                return
            if failures > self._connection.retries:
                self._post(
                    BackendUnavailable(
                        f"Deepgram Flux unavailable after {self._connection.retries} reconnects "
                        f"({reason}); {len(self._pending) // 2} samples were not transcribed"
                    )
                )
                return
            delay = min(
                self._connection.backoff * 2 ** max(0, failures - 1), self._connection.max_backoff
            )
            log.warning("deepgram-flux: %s; reconnecting in %.2f s", reason, delay)
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline and not self._closing.is_set():
                self._drain_fifo()  # keep the caller's audio while we wait
                await asyncio.sleep(DRAIN_INTERVAL)

    async def _connect_once(self) -> str | None:
        """One connection, until we close it (None) or it drops (the reason)."""
        headers = {"Authorization": f"Token {self._connection.api_key}"}
        try:
            ws = await connect(
                self._url,
                additional_headers=headers,
                user_agent_header=USER_AGENT,
                open_timeout=self._connection.open_timeout,
                close_timeout=1,
                max_size=1 << 20,
                compression=None,
            )
        except websockets.InvalidStatus as err:
            status = err.response.status_code
            body = err.response.body.decode(errors="replace")[:200] if err.response.body else ""
            if status in (400, 401, 403, 404):
                raise _Fatal(f"Deepgram Flux refused the connection: HTTP {status} {body}") from err
            raise
        self.connections += 1
        self._audio_base = self._sent_seconds
        self._turn_base = self._turns_done
        async with ws:
            receiver = asyncio.create_task(self._receive(ws))
            sender = asyncio.create_task(self._send(ws))
            done, _ = await asyncio.wait({receiver, sender}, return_when=asyncio.FIRST_COMPLETED)
            if sender in done and sender.exception() is None:
                # We sent CloseStream: Flux flushes its last events, then closes the socket.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(receiver), 1.0)
            await cancel_and_wait(receiver, sender)
            if self._closing.is_set():
                return None
            error = receiver.exception() if receiver.done() and not receiver.cancelled() else None
            if error is None and sender.done() and not sender.cancelled():
                error = sender.exception()
            return f"connection lost: {error}" if error else "connection closed by Deepgram"

    def _drain_fifo(self) -> None:
        while self._fifo:
            self._pending += self._fifo.popleft()
        overflow = len(self._pending) - self._max_pending
        if overflow > 0:
            overflow += overflow % 2
            del self._pending[:overflow]
            self._dropped_bytes += overflow
            log.warning("deepgram-flux: reconnect buffer full, dropped %d bytes", overflow)

    async def _send(self, ws: ClientConnection) -> None:
        while True:
            closing = self._closing.is_set()
            self._drain_fifo()
            while len(self._pending) >= self._chunk or (closing and self._pending):
                chunk = bytes(self._pending[: self._chunk])
                await ws.send(chunk)
                del self._pending[: len(chunk)]
                self._sent_seconds += len(chunk) / 2 / self._connection.sample_rate
            if closing:
                await ws.send(json.dumps({"type": "CloseStream"}))
                return
            await self._next_drain()

    async def _next_drain(self) -> None:
        """Wait DRAIN_INTERVAL, or less when `push` signals that a whole chunk is queued."""
        loop = asyncio.get_running_loop()
        tick: asyncio.Future[None] = loop.create_future()
        timer = loop.call_later(DRAIN_INTERVAL, _set_done, tick)
        self._tick = tick
        try:
            await tick
        finally:
            timer.cancel()

    async def _receive(self, ws: ClientConnection) -> None:
        async for raw in ws:
            if isinstance(raw, bytes):
                continue
            try:
                message = json.loads(raw)
                kind = message["type"]
            except (ValueError, KeyError, TypeError) as err:
                raise websockets.ProtocolError(
                    f"malformed message from Flux: {raw[:80]!r}"
                ) from err
            if kind == "TurnInfo":
                self._on_turn_info(message)
            elif kind == "Error":
                raise websockets.ProtocolError(
                    f"Flux error {message.get('code', '')}: {message.get('description', '')}"
                )

    def _on_turn_info(self, message: dict[str, Any]) -> None:
        kind = _EVENTS.get(str(message.get("event")))
        if kind is None:
            return  # an event this client does not know yet
        if kind == TurnEventKind.START_OF_TURN and self._turn_open:
            return  # the turn began before a reconnect: it is still the same turn for us
        self._turn_open = kind != TurnEventKind.END_OF_TURN
        if kind == TurnEventKind.END_OF_TURN:
            self._turns_done = self._turn_base + int(message.get("turn_index", 0)) + 1
        self._post(
            TurnUpdate(
                kind=kind,
                turn_index=self._turn_base + int(message.get("turn_index", 0)),
                transcript=str(message.get("transcript", "")),
                at=time.monotonic(),
                audio_start=self._audio_base + float(message.get("audio_window_start", 0.0)),
                audio_end=self._audio_base + float(message.get("audio_window_end", 0.0)),
            )
        )


def _with_speech_end(event: TurnUpdate, speech_end: float) -> TurnUpdate:
    return TurnUpdate(
        kind=event.kind,
        turn_index=event.turn_index,
        transcript=event.transcript,
        speech_end=speech_end,
        at=event.at,
        audio_start=event.audio_start,
        audio_end=event.audio_end,
    )


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
