"""A tool webhook on loopback: real HTTP/1.1 (asyncio streams), the other side of a webhook tool.

It records each request (headers and JSON body) and answers as configured: a JSON body, an HTTP
status, a delay, a redirect, or a body larger than the server accepts.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

_REASONS = {200: "OK", 302: "Found", 404: "Not Found", 500: "Internal Server Error"}


@dataclass
class FakeWebhook:
    body: str = '{"status": "shipped", "eta": "Friday"}'
    status: int = 200
    delay: float = 0.0
    redirect_to: str = ""
    body_bytes: int = 0  # when set, a body of this many bytes instead of `body`
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/tools"

    async def start(self) -> FakeWebhook:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            if not line:
                return
            headers: dict[str, str] = {}
            while (header := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = header.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.headers.append(headers)
            self.requests.append(json.loads(body))
            if self.delay:
                await asyncio.sleep(self.delay)
            status = 302 if self.redirect_to else self.status
            payload = b"x" * self.body_bytes if self.body_bytes else self.body.encode()
            extra = f"Location: {self.redirect_to}\r\n" if self.redirect_to else ""
            writer.write(
                f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: application/json\r\n"
                f"{extra}Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
