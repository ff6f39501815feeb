"""A local OpenAI-compatible endpoint: POST /v1/chat/completions streamed as server-sent events.

HTTP/1.1 with chunked transfer encoding, as the real APIs answer: `data: {chat.completion.chunk}`
events, one word per event, then `data: [DONE]`. With `tool_calls` set, a request that offers
`tools` and does not end with a `tool` message is answered with those calls instead, streamed as
the API does: per call a first delta with index, id, type and name, then the arguments in pieces,
then `finish_reason: "tool_calls"`. Errors are HTTP statuses with an
`{"error": {"message", "type", "code"}}` body. It notices a client that goes away mid-stream
(`disconnects`), which is how a barge-in looks from the provider's side.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.faults import Faults

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    503: "Service Unavailable",
}


@dataclass
class FakeChatCompletions:
    api_key: str = "test-llm-key"
    models: tuple[str, ...] = ("llama-3.1-8b-instant", "mistralai/Mixtral-8x7B-Instruct-v0.1")
    reply: str = "Paris is the capital of France."
    tool_calls: list[tuple[str, str]] = field(default_factory=list)  # (name, arguments JSON)
    token_delay: float = 0.005
    faults: Faults = field(default_factory=Faults)
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    completed: int = 0
    disconnects: int = 0  # clients gone before the stream's end
    port: int = 0
    _server: asyncio.Server | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> FakeChatCompletions:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        line = await reader.readline()
        if not line:
            return False
        method, path, _ = line.decode().split(" ", 2)
        headers: dict[str, str] = {}
        while (header := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = header.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.headers.append(headers)
        if (method, path) != ("POST", "/v1/chat/completions"):
            await self._error(writer, 404, f"no route {method} {path}", "invalid_request_error")
            return True
        if headers.get("authorization") != f"Bearer {self.api_key}":
            await self._error(writer, 401, "Invalid API Key", "invalid_request_error")
            return True
        if self.faults.refuse_connections > 0:
            self.faults.refuse_connections -= 1
            await self._error(writer, 503, "Service Unavailable", "server_error")
            return True
        request = json.loads(body)
        self.requests.append(request)
        if request.get("model") not in self.models:
            await self._error(
                writer,
                404,
                f"The model `{request.get('model')}` does not exist",
                "invalid_request_error",
            )
            return True
        if request.get("stream") is not True:
            await self._error(writer, 400, "this fake only streams", "invalid_request_error")
            return True
        await self._stream(reader, writer, request)
        return False  # one streamed answer per connection keeps the fake simple (Connection: close)

    async def _error(
        self, writer: asyncio.StreamWriter, status: int, message: str, kind: str
    ) -> None:
        body = json.dumps({"error": {"message": message, "type": kind, "code": None}}).encode()
        writer.write(
            f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()

    async def _stream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: dict[str, Any]
    ) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        gone = asyncio.ensure_future(reader.read(1))  # EOF: the client closed its side
        created = int(time.time())
        messages = request.get("messages") or [{}]
        if self.tool_calls and request.get("tools") and messages[-1].get("role") != "tool":
            try:
                await self._stream_tool_calls(writer, request, created)
            finally:
                gone.cancel()
            return
        words = self.reply.split(" ")
        faults = self.faults
        try:
            if faults.delay:
                await asyncio.sleep(faults.delay)
            for i, word in enumerate(words):
                if faults.drop_after is not None and i >= faults.drop_after:
                    faults.fire("drop_after")
                    writer.transport.abort()
                    return
                if faults.error_after is not None and i >= faults.error_after:
                    faults.fire("error_after")
                    await self._event(
                        writer,
                        json.dumps({"error": {"message": "fake overload", "type": "server_error"}}),
                    )
                    break
                if faults.malformed_after is not None and i >= faults.malformed_after:
                    faults.fire("malformed_after")
                    await self._event(writer, '{"choices": [{"delta": ')
                    break
                chunk = {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": request["model"],
                    "choices": [
                        {
                            "index": 0,
                            "delta": {"content": word if i == 0 else " " + word},
                            "finish_reason": None,
                        }
                    ],
                }
                await asyncio.wait([gone], timeout=self.token_delay)
                if gone.done():
                    self.disconnects += 1
                    return
                await self._event(writer, json.dumps(chunk))
            else:
                await self._event(writer, "[DONE]")
                self.completed += 1
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        except ConnectionError:
            self.disconnects += 1
        finally:
            gone.cancel()
            with contextlib.suppress(BaseException):
                await gone

    async def _stream_tool_calls(
        self, writer: asyncio.StreamWriter, request: dict[str, Any], created: int
    ) -> None:
        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            return json.dumps(
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": request["model"],
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                }
            )

        await self._event(writer, chunk({"role": "assistant", "content": None}))
        for index, (name, arguments) in enumerate(self.tool_calls):
            first = {
                "index": index,
                "id": f"call_fake{index}",
                "type": "function",
                "function": {"name": name, "arguments": ""},
            }
            await self._event(writer, chunk({"tool_calls": [first]}))
            step = max(1, len(arguments) // 3)
            for start in range(0, len(arguments), step):
                await asyncio.sleep(self.token_delay)
                piece = {"index": index, "function": {"arguments": arguments[start : start + step]}}
                await self._event(writer, chunk({"tool_calls": [piece]}))
        await self._event(writer, chunk({}, "tool_calls"))
        await self._event(writer, "[DONE]")
        self.completed += 1
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    @staticmethod
    async def _event(writer: asyncio.StreamWriter, data: str) -> None:
        payload = f"data: {data}\n\n".encode()
        writer.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
        await writer.drain()
