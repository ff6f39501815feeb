"""A local Cartesia: the TTS WebSocket (/tts/websocket) with contexts, flushes and cancel, and
GET /voices, with Cartesia's headers (X-API-Key, Cartesia-Version) and message shapes.

Audio is a tone, 60 ms per character of transcript, rendered in 40 ms chunks at the requested
rate and encoding, a little faster than real time, so a cancel can arrive mid-generation.
"""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import numpy as np
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from server.g711 import alaw_encode, mulaw_encode
from tests.fakes.websocket_server import FakeWebSocketServer, drop

SECONDS_PER_CHARACTER = 0.06
CHUNK_SECONDS = 0.04
VOICES = [
    {"id": "voice-ada", "name": "Ada", "language": "en", "gender": "feminine", "is_public": True},
    {"id": "voice-bob", "name": "Bob", "language": "en", "gender": "masculine", "is_public": True},
]


@dataclass
class Context:
    id: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    transcript: str = ""
    flush_id: int = 1
    cancelled: bool = False
    work: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    worker: asyncio.Task[None] | None = None


class FakeCartesia(FakeWebSocketServer):
    def __init__(self, api_key: str = "test-cartesia-key", speed: float = 4.0) -> None:
        super().__init__()
        self.api_key = api_key
        self.speed = speed  # x real time
        self.contexts: dict[str, Context] = {}
        self.cancelled: list[str] = []
        self.messages: list[dict[str, Any]] = []  # every client message, in order
        self.sent = 0  # server messages sent, across connections (fault thresholds count these)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/tts/websocket"

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path.split("?")[0] == "/voices":
            if request.headers.get("X-API-Key") != self.api_key:
                return connection.respond(HTTPStatus.UNAUTHORIZED, '{"error": "invalid api key"}')
            return connection.respond(
                HTTPStatus.OK, json.dumps({"data": VOICES, "has_more": False})
            )
        return super()._process_request(connection, request)

    def reject(self, request: Request) -> tuple[HTTPStatus, str] | None:
        from urllib.parse import parse_qs, urlsplit

        url = urlsplit(request.path)
        query = parse_qs(url.query)
        if url.path != "/tts/websocket":
            return HTTPStatus.NOT_FOUND, "not found"
        key = request.headers.get("X-API-Key") or (query.get("api_key") or [""])[0]
        if key != self.api_key:
            return HTTPStatus.UNAUTHORIZED, "invalid api key"
        if not (request.headers.get("Cartesia-Version") or query.get("cartesia_version")):
            return HTTPStatus.BAD_REQUEST, "Cartesia-Version header is required"
        return None

    async def handle(self, ws: ServerConnection) -> None:
        contexts: list[Context] = []
        try:
            async for raw in ws:
                message = json.loads(raw)
                self.messages.append(message)
                context = self.contexts.get(message["context_id"])
                if message.get("cancel"):
                    if context is not None:
                        context.cancelled = True
                        if context.worker is not None:
                            context.worker.cancel()
                    self.cancelled.append(message["context_id"])
                    continue
                if context is None:
                    context = self.contexts[message["context_id"]] = Context(message["context_id"])
                    context.worker = asyncio.create_task(self._work(ws, context))
                    contexts.append(context)
                context.requests.append(message)
                context.work.put_nowait(message)
        except ConnectionClosed:
            pass
        finally:
            for context in contexts:
                if context.worker is not None:
                    context.worker.cancel()

    async def _work(self, ws: ServerConnection, context: Context) -> None:
        while True:
            request = await context.work.get()
            voice = request["voice"]["id"]
            if voice not in {v["id"] for v in VOICES}:
                await self._send(
                    ws,
                    {
                        "type": "error",
                        "done": True,
                        "status_code": 400,
                        "title": "Invalid voice",
                        "message": f"voice {voice} not found",
                        "context_id": context.id,
                    },
                )
                return
            if request["transcript"]:
                context.transcript += request["transcript"]
                await self._render(ws, context, request)
            if request.get("flush"):
                await self._send(
                    ws,
                    {
                        "type": "flush_done",
                        "done": False,
                        "flush_done": True,
                        "flush_id": context.flush_id,
                        "status_code": 206,
                        "context_id": context.id,
                    },
                )
                context.flush_id += 1
            if not request.get("continue", False):
                await self._send(
                    ws, {"type": "done", "done": True, "status_code": 206, "context_id": context.id}
                )
                return

    async def _render(
        self, ws: ServerConnection, context: Context, request: dict[str, Any]
    ) -> None:
        fmt = request["output_format"]
        assert fmt["container"] == "raw"
        rate = int(fmt["sample_rate"])
        seconds = SECONDS_PER_CHARACTER * len(request["transcript"].strip())
        t = np.arange(int(seconds * rate)) / rate
        pcm = (6000 * np.sin(2 * np.pi * 300 * t)).astype(np.int16)
        step = int(CHUNK_SECONDS * rate)
        for start in range(0, len(pcm), step):
            chunk = pcm[start : start + step]
            data = {
                "pcm_s16le": lambda c: c.astype("<i2").tobytes(),
                "pcm_mulaw": mulaw_encode,
                "pcm_alaw": alaw_encode,
            }[fmt["encoding"]](chunk)
            await asyncio.sleep(CHUNK_SECONDS / self.speed)
            await self._send(
                ws,
                {
                    "type": "chunk",
                    "data": base64.b64encode(data).decode(),
                    "done": False,
                    "status_code": 206,
                    "step_time": 5.0,
                    "context_id": context.id,
                    "flush_id": context.flush_id,
                },
            )

    async def _send(self, ws: ServerConnection, message: dict[str, Any]) -> None:
        self.sent += 1
        faults = self.faults
        if faults.drop_after is not None and self.sent > faults.drop_after:
            faults.fire("drop_after")
            drop(ws)
            raise asyncio.CancelledError
        if faults.error_after is not None and self.sent > faults.error_after:
            faults.fire("error_after")
            message = {
                "type": "error",
                "done": True,
                "status_code": 500,
                "title": "Internal error",
                "message": "fake failure",
                "context_id": message["context_id"],
            }
        if faults.malformed_after is not None and self.sent > faults.malformed_after:
            faults.fire("malformed_after")
            await self.send(ws, '{"type": "chunk", "data": ')
            return
        await self.send(ws, json.dumps(message))
