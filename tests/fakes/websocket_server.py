"""What the WebSocket fakes share: a loopback server, the handshake check and the fault switches."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from tests.fakes.faults import Faults


@dataclass
class Handshake:
    path: str
    query: dict[str, list[str]]
    headers: Headers


@dataclass
class FakeWebSocketServer:
    """Subclasses check the handshake (`reject`) and talk (`handle`)."""

    faults: Faults = field(default_factory=Faults)
    handshakes: list[Handshake] = field(default_factory=list)
    _server: Server | None = None
    port: int = 0
    open_connections: int = 0

    async def start(self) -> FakeWebSocketServer:
        self._server = await serve(
            self._handle, "127.0.0.1", 0, process_request=self._process_request, compression=None
        )
        self.port = self._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def reject(self, request: Request) -> tuple[HTTPStatus, str] | None:
        return None

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        from urllib.parse import parse_qs, urlsplit

        url = urlsplit(request.path)
        self.handshakes.append(Handshake(url.path, parse_qs(url.query), request.headers))
        if self.faults.refuse_connections > 0:
            self.faults.refuse_connections -= 1
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "temporarily unavailable\n")
        rejected = self.reject(request)
        if rejected is not None:
            return connection.respond(rejected[0], rejected[1] + "\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        self.open_connections += 1
        try:
            await self.handle(ws)
        finally:
            self.open_connections -= 1

    async def handle(self, ws: ServerConnection) -> None:
        raise NotImplementedError

    async def send(self, ws: ServerConnection, message: str | bytes) -> None:
        if self.faults.delay:
            await asyncio.sleep(self.faults.delay)
        await ws.send(message)


def drop(ws: ServerConnection) -> None:
    """Cut the TCP connection without a close frame, as a network failure does."""
    transport: Any = ws.transport
    transport.abort()
