"""Cartesia Sonic over its TTS WebSocket: one context per agent turn, cancelled on barge-in.

One WebSocket per server carries every session's contexts (Cartesia multiplexes them; a reader
task routes messages by context_id). A turn sends each piece with `continue: true` followed by a
manual flush, so the piece's audio ends at the matching `flush_done` while prosody carries over
between pieces; the turn ends with an empty transcript and `continue: false`, or with
`{"cancel": true}` when the user barges in. Phone calls get mu-law at 8 kHz straight from Cartesia.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import httpx
import numpy as np
import websockets
from websockets.asyncio.client import ClientConnection, connect

from server.backends.base import BackendUnavailable, retry_before_first_output
from server.backends.tts.base import TTS, Encoding, SynthesizedAudio, TTSTurn, VoiceInfo
from server.g711 import g711_decode
from server.tasks import cancel_and_wait

log = logging.getLogger(__name__)

DEFAULT_URL = "wss://api.cartesia.ai/tts/websocket"
API_VERSION = "2025-04-16"
DEFAULT_MODEL = "sonic-3"
USER_AGENT = "voice-agent/0.1 (self-hosted voice agent server; cartesia TTS backend)"
# Used until GET /voices answers (and when CARTESIA_VOICES is not set): a voice of Cartesia's docs.
PRESET_VOICES = [VoiceInfo("a0e99841-438c-4a64-b679-ae501e7d6091", "Barbershop Man", "en", "male")]
AUDIO_TIMEOUT = 10.0  # seconds without a message while we wait for audio
PIECE_RETRIES = 2  # a piece lost before any of its audio is tried on a new context this often
_ENCODINGS: dict[Encoding, str] = {
    "linear16": "pcm_s16le",
    "mulaw": "pcm_mulaw",
    "alaw": "pcm_alaw",
}


@dataclass(frozen=True)
class CartesiaConfig:
    url: str
    api_key: str
    model: str = DEFAULT_MODEL
    voices: tuple[VoiceInfo, ...] = ()  # configured list; empty: ask GET /voices
    language: str = "en"

    @property
    def voices_url(self) -> str:
        parts = urlsplit(self.url)
        scheme = {"wss": "https", "ws": "http"}.get(parts.scheme, parts.scheme)
        return urlunsplit((scheme, parts.netloc, "/voices", "", ""))

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.api_key, "Cartesia-Version": API_VERSION}


def _configured_voices(spec: str) -> tuple[VoiceInfo, ...]:
    """CARTESIA_VOICES: comma-separated `id` or `id=Name`."""
    voices = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        voice_id, _, name = item.partition("=")
        voices.append(VoiceInfo(voice_id.strip(), name.strip() or voice_id.strip(), "en"))
    return tuple(voices)


class CartesiaTTS(TTS):
    name: ClassVar[str] = "cartesia"
    display_name: ClassVar[str] = "Cartesia (cloud)"

    def __init__(self, config: CartesiaConfig | None = None) -> None:
        self.config = config or CartesiaConfig(
            url=os.environ.get("CARTESIA_URL") or DEFAULT_URL,
            api_key=os.environ.get("CARTESIA_API_KEY", ""),
            model=os.environ.get("CARTESIA_MODEL") or DEFAULT_MODEL,
            voices=_configured_voices(os.environ.get("CARTESIA_VOICES", "")),
        )
        self._voices = list(self.config.voices) or list(PRESET_VOICES)
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._connecting = asyncio.Lock()
        self._contexts: dict[str, asyncio.Queue[dict[str, Any] | BaseException]] = {}

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return None if os.environ.get("CARTESIA_API_KEY") else "CARTESIA_API_KEY not set"

    def voices(self) -> list[VoiceInfo]:
        return self._voices

    async def load(self) -> None:
        if not self.config.voices:
            self._voices = await self._fetch_voices() or self._voices
        await self._connection()  # the first turn should not pay for the handshake

    async def _fetch_voices(self) -> list[VoiceInfo]:
        headers = {**self.config.headers, "User-Agent": USER_AGENT}
        try:
            async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=5.0)) as client:
                response = await client.get(self.config.voices_url, headers=headers)
                response.raise_for_status()
                body = response.json()
        except (httpx.HTTPError, ValueError) as err:
            log.warning("cartesia: GET /voices failed (%s); using the preset voices", err)
            return []
        items = body.get("data", []) if isinstance(body, dict) else body
        return [
            VoiceInfo(
                id=str(item["id"]),
                name=str(item.get("name", item["id"])),
                language=str(item.get("language", "")),
                gender=str(item.get("gender") or ""),
            )
            for item in items
            if isinstance(item, dict) and "id" in item
        ]

    async def aclose(self) -> None:
        await cancel_and_wait(self._reader)
        if self._ws is not None:
            await self._ws.close()

    # --- the shared connection ----------------------------------------------------------------

    async def _connection(self) -> ClientConnection:
        async with self._connecting:
            if self._ws is None:
                try:
                    self._ws = await connect(
                        self.config.url,
                        additional_headers=self.config.headers,
                        user_agent_header=USER_AGENT,
                        open_timeout=5,
                        close_timeout=1,
                        max_size=1 << 24,
                        compression=None,
                    )
                except websockets.InvalidStatus as err:
                    raise BackendUnavailable(
                        f"Cartesia refused the connection: HTTP {err.response.status_code}"
                    ) from err
                except (OSError, TimeoutError, websockets.WebSocketException) as err:
                    raise BackendUnavailable(f"Cartesia unreachable: {err}") from err
                self._reader = asyncio.create_task(self._read(self._ws), name="cartesia-reader")
            return self._ws

    async def _read(self, ws: ClientConnection) -> None:
        """Route each message to its context; on loss, every open context hears of it."""
        failure: BaseException
        try:
            async for raw in ws:
                try:
                    message = json.loads(raw)
                    context_id = message.get("context_id")
                except (ValueError, AttributeError):
                    failure = BackendUnavailable(f"Cartesia sent a malformed message: {raw[:80]!r}")
                    break
                if context_id is None and message.get("type") == "error":
                    # Not tied to a context (a bad request, say): every waiting turn hears it.
                    detail = message.get("message") or message.get("error") or message
                    for waiting in self._contexts.values():
                        waiting.put_nowait(BackendUnavailable(f"Cartesia error: {detail}"))
                    continue
                queue = self._contexts.get(str(context_id))
                if queue is not None:
                    queue.put_nowait(message)
            else:
                failure = BackendUnavailable("Cartesia closed the connection")
        except websockets.ConnectionClosed as err:
            failure = BackendUnavailable(f"Cartesia connection lost: {err}")
        if self._ws is ws:
            self._ws = None
        await ws.close()
        for queue in self._contexts.values():
            queue.put_nowait(failure)

    def _open_context(self) -> tuple[str, asyncio.Queue[dict[str, Any] | BaseException]]:
        context_id = uuid.uuid4().hex
        queue: asyncio.Queue[dict[str, Any] | BaseException] = asyncio.Queue()
        self._contexts[context_id] = queue
        return context_id, queue

    def _request(
        self, context_id: str, voice: str, sample_rate: int, encoding: Encoding
    ) -> dict[str, Any]:
        return {
            "model_id": self.config.model,
            "voice": {"mode": "id", "id": voice},
            "language": self.config.language,
            "context_id": context_id,
            "output_format": {
                "container": "raw",
                "encoding": _ENCODINGS[encoding],
                "sample_rate": 8000 if encoding != "linear16" else sample_rate,
            },
            "add_timestamps": False,
        }

    async def _send(self, message: dict[str, Any]) -> None:
        ws = await self._connection()
        try:
            await ws.send(json.dumps(message))
        except websockets.ConnectionClosed as err:
            raise BackendUnavailable(f"Cartesia connection lost: {err}") from err

    # --- synthesis ------------------------------------------------------------------------------

    def open_turn(self, voice: str, sample_rate: int, encoding: Encoding) -> TTSTurn:
        return CartesiaTurn(self, voice, sample_rate, encoding)

    async def synthesize(
        self, text: str, voice: str, sample_rate: int
    ) -> AsyncIterator[SynthesizedAudio]:
        """One piece on its own context (voice previews)."""
        turn = CartesiaTurn(self, voice, sample_rate, "linear16")
        finished = False
        try:
            async for audio in turn.synthesize(text):
                yield audio
            finished = True
        finally:
            await (turn.aclose() if finished else turn.cancel())


class CartesiaTurn(TTSTurn):
    """One context: pieces in with `continue: true` + flush, audio out until each `flush_done`."""

    def __init__(self, tts: CartesiaTTS, voice: str, sample_rate: int, encoding: Encoding) -> None:
        super().__init__(tts, voice, sample_rate)
        self.cartesia = tts
        self.encoding = encoding
        self.rate = sample_rate if encoding == "linear16" else 8000
        self.context_id = ""
        self._queue: asyncio.Queue[dict[str, Any] | BaseException] | None = None
        self._flush_id = 0

    def _begin(self) -> str:
        if not self.context_id:
            self.context_id, self._queue = self.cartesia._open_context()
        return self.context_id

    async def synthesize(self, text: str) -> AsyncIterator[SynthesizedAudio]:
        def attempt(number: int) -> AsyncGenerator[SynthesizedAudio, None]:
            if number:  # lost before any audio of this piece: a new context on a new connection
                self._end_context()
            return self._piece(text)

        async for audio in retry_before_first_output(
            attempt,
            PIECE_RETRIES,
            lambda number: 0.05 * number,
            lambda err: isinstance(err, BackendUnavailable),
        ):
            yield audio

    async def _piece(self, text: str) -> AsyncGenerator[SynthesizedAudio, None]:
        context_id = self._begin()
        request = self.cartesia._request(context_id, self.voice, self.sample_rate, self.encoding)
        await self.cartesia._send({**request, "transcript": text + " ", "continue": True})
        await self.cartesia._send({**request, "transcript": "", "continue": True, "flush": True})
        self._flush_id += 1
        assert self._queue is not None
        while True:
            try:
                message = await asyncio.wait_for(self._queue.get(), AUDIO_TIMEOUT)
            except TimeoutError as err:
                raise BackendUnavailable(f"Cartesia sent no audio for {AUDIO_TIMEOUT:g} s") from err
            if isinstance(message, BaseException):
                raise message
            kind = message.get("type")
            if kind == "chunk" and message.get("data"):
                yield SynthesizedAudio(self._decode(base64.b64decode(message["data"])), self.rate)
            elif kind == "flush_done" and message.get("flush_id", self._flush_id) >= self._flush_id:
                return
            elif kind == "done":
                return
            elif kind == "error" or message.get("status_code", 200) >= 400:
                detail = message.get("message") or message.get("error") or message.get("title")
                raise BackendUnavailable(
                    f"Cartesia error {message.get('status_code', '')}: {detail or message}"
                )

    def _decode(self, data: bytes) -> np.ndarray:
        if self.encoding != "linear16":
            return g711_decode(data, self.encoding)
        return np.frombuffer(data[: len(data) - len(data) % 2], dtype="<i2").astype(np.int16)

    def _end_context(self) -> None:
        if self.context_id:
            self.cartesia._contexts.pop(self.context_id, None)
        self.context_id, self._queue, self._flush_id = "", None, 0

    async def aclose(self) -> None:
        """Close the context: an empty transcript with `continue: false`."""
        if not self.context_id:
            return
        request = self.cartesia._request(
            self.context_id, self.voice, self.sample_rate, self.encoding
        )
        with contextlib.suppress(BackendUnavailable):
            await self.cartesia._send({**request, "transcript": "", "continue": False})
        self._end_context()

    async def cancel(self) -> None:
        """Barge-in: Cartesia stops generating for this context at once."""
        if not self.context_id:
            return
        with contextlib.suppress(BackendUnavailable):
            await self.cartesia._send({"context_id": self.context_id, "cancel": True})
        self._end_context()
