"""The server's HTTP side on $HTTP_PORT, in the gRPC server's process and event loop.

- `/` the web page (clients/web, built by npm into clients/web/dist);
- `/voiceagent.v1.VoiceAgent/*` and `/voiceagent.v1.Campaigns/*`: the unary and server-streaming
  RPCs for browsers, in the Connect protocol (JSON or binary; gRPC-web too) served by
  connect-python and bridged to the same servicer objects the gRPC port uses;
- `/converse`: the Converse stream over a WebSocket (browsers cannot open gRPC bidi streams), one
  protobuf-encoded ConverseRequest per binary frame in, one ConverseResponse per frame out;
- `/metrics` (Prometheus) and `/healthz` (200 while gRPC health is SERVING, else 503).

Hypercorn serves it as a coroutine beside grpc.aio; VoiceAgentServer starts it and stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import socket
import zlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn, cast
from urllib.parse import parse_qs

import grpc
from connectrpc._codec import ProtoBinaryCodec, ProtoJSONCodec, _codecs
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.method import IdempotencyLevel, MethodInfo
from connectrpc.request import RequestContext
from connectrpc.server import ConnectASGIApplication, Endpoint
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from hypercorn.asyncio import serve
from hypercorn.config import Config
from hypercorn.protocol import ws_stream
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect
from voiceagent.v1 import voice_agent_pb2 as pb
from wsproto.extensions import PerMessageDeflate

from server.auth import authorized, denial
from server.limits import MAX_COMPRESSION_RATIO, MIN_INFLATE_BYTES
from server.status import StatusError, stalled_client
from server.tasks import cancel_and_wait

log = logging.getLogger("voice_agent.web")

WEB_DIR = Path(__file__).resolve().parents[1] / "clients" / "web" / "dist"
CONVERSE_PATH = "/converse"
# The WebSocket subprotocol of /converse; a browser offers it, plus `bearer.<token>` when the
# server wants a token (browsers cannot set an Authorization header on a WebSocket).
SUBPROTOCOL = "voiceagent.v1"
TOKEN_SUBPROTOCOL_PREFIX = "bearer."
# Requests waiting for the session: ~1.3 s of 20 ms frames, then the socket is read no further
# (TCP pushes back on the browser) until the session catches up.
REQUEST_QUEUE = 64
# A request body's framing beyond its one message (the 5-byte envelope of streaming protocols).
ENVELOPE_SLACK = 64

# WebSocket close codes of /converse (README "Web page"). Frame-level problems use the standard
# codes; a session that ends with a gRPC status closes with 4000 + that status code (e.g. 4003
# INVALID_ARGUMENT, 4005 NOT_FOUND, 4014 UNAVAILABLE), after an Error frame with the full message.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED_DATA = 1003  # a text frame
CLOSE_INVALID_PAYLOAD = 1007  # a binary frame that is not a ConverseRequest
CLOSE_POLICY_VIOLATION = 1008  # missing or wrong token
CLOSE_INTERNAL_ERROR = 1011
CLOSE_STATUS_BASE = 4000
# How long a last frame may wait for a browser whose socket does not drain.
CLOSE_GRACE_SECONDS = 2.0


class ClientGone(Exception):
    """The browser left while a response was being sent: not an error."""


class BridgeContext:
    """The part of grpc.aio.ServicerContext our servicers use, for calls that come over HTTP."""

    def __init__(self, peer: str) -> None:
        self._peer = peer

    async def abort(self, code: grpc.StatusCode, details: str = "") -> NoReturn:
        raise StatusError(code, details)

    def peer(self) -> str:
        return self._peer

    def cancelled(self) -> bool:
        """A browser that leaves ends its stream's requests (or raises ClientGone on a send);
        there is no separate cancellation over HTTP."""
        return False

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        """No gRPC metadata over HTTP (the WebSocket's token is checked before the servicer)."""
        return ()


def _connect_code(code: grpc.StatusCode) -> Code:
    return Code.CANCELED if code == grpc.StatusCode.CANCELLED else Code[code.name]


def _context(ctx: RequestContext[Any, Any]) -> grpc.aio.ServicerContext:
    return cast(grpc.aio.ServicerContext, BridgeContext(f"http:{ctx.client_address() or ''}"))


def _unary(handler: Callable[..., Awaitable[Message]]) -> Callable[..., Awaitable[Message]]:
    async def call(request: Message, ctx: RequestContext[Any, Any]) -> Message:
        try:
            return await handler(request, _context(ctx))
        except StatusError as status:
            raise ConnectError(_connect_code(status.code), status.message) from None

    return call


def _server_stream(
    handler: Callable[..., AsyncIterator[Message]],
) -> Callable[..., AsyncIterator[Message]]:
    async def call(request: Message, ctx: RequestContext[Any, Any]) -> AsyncIterator[Message]:
        try:
            async for response in handler(request, _context(ctx)):
                yield response
        except StatusError as status:
            raise ConnectError(_connect_code(status.code), status.message) from None

    return call


def _endpoints(servicer: object, service: ServiceDescriptor) -> dict[str, Any]:
    """One Connect endpoint per method of `service` that a browser can call (all but the
    client-streaming ones: Converse goes over the WebSocket), each calling `servicer`'s method.
    (Values are connect-python's EndpointUnary or EndpointServerStream.)"""
    endpoints: dict[str, Any] = {}
    for method in service.methods:
        if method.client_streaming:
            continue
        info = _method_info(service, method)
        handler = getattr(servicer, method.name)
        path = f"/{service.full_name}/{method.name}"
        if method.server_streaming:
            endpoints[path] = Endpoint.server_stream(info, _server_stream(handler))
        else:
            endpoints[path] = Endpoint.unary(info, _unary(handler))
    return endpoints


def _method_info(service: ServiceDescriptor, method: MethodDescriptor) -> MethodInfo[Any, Any]:
    return MethodInfo(
        name=method.name,
        service_name=service.full_name,
        input=message_factory.GetMessageClass(method.input_type),
        output=message_factory.GetMessageClass(method.output_type),
        idempotency_level=IdempotencyLevel.UNKNOWN,
    )


class ConnectService(ConnectASGIApplication[object]):
    """connect-python's ASGI application for one gRPC service, from its descriptor.

    Before connect-python touches a request, the token and the declared size are checked from
    the headers alone: a refused request is answered without reading (let alone inflating or
    parsing) its body. An accepted one may bring at most `max_bytes` of body, inflating to at
    most `max_bytes` (BoundedGzip).
    """

    def __init__(
        self, servicer: object, service: ServiceDescriptor, token: str, max_bytes: int
    ) -> None:
        self._path = f"/{service.full_name}"
        self._token = token
        self._max_bytes = max_bytes
        super().__init__(
            service=servicer,
            endpoints=lambda s: _endpoints(s, service),
            read_max_bytes=max_bytes,
            compressions=[BoundedGzip(max_bytes)],
        )

    @property
    def path(self) -> str:
        return self._path

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        refusal = self._refusal(scope)
        if refusal is None:
            await super().__call__(scope, _capped(receive, self._max_bytes), send)
        elif scope.get("method") == "GET":  # a unary GET has no body whose read could fail
            await _send_unary_error(send, refusal)
        else:
            # connect-python reads the body first thing; failing that read makes it answer
            # with the refusal in the request's own protocol (unary JSON, Connect or gRPC-web
            # streaming), and the body is never read.
            await super().__call__(scope, _refusing(refusal), send)

    def _refusal(self, scope: Scope) -> ConnectError | None:
        headers: dict[bytes, bytes] = dict(scope.get("headers") or ())
        if self._token:
            given = headers.get(b"authorization", b"")
            if not authorized(given, self._token):
                return ConnectError(Code.UNAUTHENTICATED, denial(given) + " header")
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > self._max_bytes + ENVELOPE_SLACK:
            return _too_large(self._max_bytes)
        return None


class BoundedGzip:
    """connect-python's gzip, inflating at most `max_bytes` and MAX_COMPRESSION_RATIO times the
    compressed size: a small gzip bomb is refused (RESOURCE_EXHAUSTED) after at most `max_bytes`
    of work, and corrupt data is INVALID_ARGUMENT, not an unknown error."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes

    def name(self) -> str:
        return "gzip"

    def compress(self, data: bytes | bytearray | memoryview) -> bytes:
        return gzip.compress(data, compresslevel=6)

    def decompress(self, data: bytes | bytearray | memoryview) -> bytes:
        rest = bytes(data)
        limit = min(self._max_bytes, max(MIN_INFLATE_BYTES, len(rest) * MAX_COMPRESSION_RATIO))
        out = bytearray()
        while rest:  # one gzip member after the other, as gzip.decompress reads them
            member = zlib.decompressobj(wbits=31)
            try:
                out += member.decompress(rest, limit + 1 - len(out))
            except zlib.error as err:
                raise ConnectError(
                    Code.INVALID_ARGUMENT, f"the request is not valid gzip: {err}"
                ) from None
            if len(out) > limit or member.unconsumed_tail:
                raise ConnectError(
                    Code.RESOURCE_EXHAUSTED,
                    f"the request inflates to more than {limit} bytes (the limit is "
                    f"{self._max_bytes} bytes, and {MAX_COMPRESSION_RATIO} times the gzip size): "
                    "send less, or send it uncompressed",
                )
            if not member.eof:
                raise ConnectError(Code.INVALID_ARGUMENT, "the request's gzip data is truncated")
            rest = member.unused_data
        return bytes(out)


class _StrictProtoCodec(ProtoBinaryCodec[Message]):
    def decode(self, data: bytes | bytearray, message: Message) -> Message:
        try:
            return super().decode(data, message)
        except Exception as err:  # DecodeError, or whatever upb says of corrupt bytes
            raise _malformed(message, "binary protobuf", err) from None


class _StrictJSONCodec(ProtoJSONCodec[Message]):
    def decode(self, data: bytes | bytearray, message: Message) -> Message:
        try:
            return super().decode(data, message)
        except Exception as err:  # ParseError, invalid UTF-8, nesting too deep
            raise _malformed(message, "JSON", err) from None


def _malformed(message: Message, form: str, err: Exception) -> ConnectError:
    return ConnectError(
        Code.INVALID_ARGUMENT,
        f"the request is not a valid {form} {message.DESCRIPTOR.full_name}: {err}",
    )


# connect-python decodes with the codec registered under the request's content type and
# reports any decoding exception as `unknown` (HTTP 500). A malformed request is the client's
# error, `invalid_argument` (HTTP 400) in the Connect protocol: these codecs say so. The
# registry is connect-python's own (pinned to 0.9.0; tests/abuse checks the statuses).
_codecs.update(
    {
        name: _StrictJSONCodec() if isinstance(codec, ProtoJSONCodec) else _StrictProtoCodec()
        for name, codec in _codecs.items()
    }
)


class _DeclinedDeflate(PerMessageDeflate):
    """permessage-deflate, declined whatever the browser offers. wsproto inflates a compressed
    frame in full before hypercorn sees its size, so a small frame of zeros inflated to
    hundreds of MB (and stalled the loop for a second); the frames are mostly audio, which
    deflate hardly shrinks anyway."""

    def accept(self, offer: str) -> bool | str | None:
        return None


class _BoundedMessageBuffer(ws_stream.WebsocketBuffer):
    """hypercorn's buffer of an incoming message, which past websocket_max_message_size raises
    only after appending: a client that goes on sending after the 1009 close (or after any
    close, authenticated or not) grew it without end. This one appends nothing past the limit."""

    def extend(self, event: Any) -> None:
        if self.length + len(event.data) > self.max_length:
            self.length = self.max_length + 1
            raise ws_stream.FrameTooLargeError()
        super().extend(event)


# hypercorn uses these for every WebSocket and has no setting for either.
ws_stream.PerMessageDeflate = _DeclinedDeflate  # type: ignore[attr-defined]
ws_stream.WebsocketBuffer = _BoundedMessageBuffer  # type: ignore[misc]


def _too_large(max_bytes: int) -> ConnectError:
    return ConnectError(
        Code.RESOURCE_EXHAUSTED,
        f"the request body is larger than {max_bytes} bytes, the limit for any request",
    )


def _capped(receive: Receive, max_bytes: int) -> Receive:
    """`receive`, failing once the body goes past `max_bytes` (when its length was not declared
    up front, or was declared wrong)."""
    received = 0

    async def capped() -> Any:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > max_bytes + ENVELOPE_SLACK:
                raise _too_large(max_bytes)
        return message

    return capped


def _refusing(refusal: ConnectError) -> Receive:
    async def refuse() -> NoReturn:
        raise refusal

    return refuse


# HTTP statuses of the refusals above, as the Connect protocol maps their codes.
_HTTP_STATUS = {Code.UNAUTHENTICATED: 401, Code.RESOURCE_EXHAUSTED: 429}


async def _send_unary_error(send: Send, error: ConnectError) -> None:
    """A Connect unary error response: the HTTP status of its code, `{code, message}` in JSON."""
    body = json.dumps({"code": error.code.value, "message": error.message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": _HTTP_STATUS[error.code],
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


ConverseHandler = Callable[
    [AsyncIterator[pb.ConverseRequest], grpc.aio.ServicerContext],
    AsyncGenerator[pb.ConverseResponse, None],
]


class WebGateway:
    """The HTTP side: binds $HTTP_PORT at construction (so `port` is known), serves from `start`
    until `stop`. The servicers are the gRPC port's own objects."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        token: str,
        converse: ConverseHandler,
        rpc_services: list[tuple[object, ServiceDescriptor]],
        serving: Callable[[], bool],
        max_message_bytes: int,
        web_dir: Path = WEB_DIR,
        send_timeout: float = 0.0,
    ) -> None:
        """`send_timeout`: a /converse browser that reads nothing for this long is ended
        (DEADLINE_EXCEEDED; 0: never)."""
        self._token = token
        self._send_timeout = send_timeout
        self._converse = converse
        self._serving = serving
        self._web_dir = web_dir
        self._max_message_bytes = max_message_bytes
        self._rpc_apps = {
            f"/{service.full_name}/": ConnectService(servicer, service, token, max_message_bytes)
            for servicer, service in rpc_services
        }
        routes: list[Route | WebSocketRoute | Mount] = [
            Route("/healthz", self._healthz),
            Route("/metrics", self._metrics),
            WebSocketRoute(CONVERSE_PATH, self._converse_socket),
        ]
        if (web_dir / "index.html").is_file():
            routes.append(Mount("/", StaticFiles(directory=web_dir, html=True)))
        else:
            routes.append(Route("/", self._not_built))
        self._site = Starlette(routes=routes)
        self._socket: socket.socket | None = _listen(host, port)
        self.port: int = self._socket.getsockname()[1]
        self._config = Config()
        self._shutdown = asyncio.Event()
        self._serving_task: asyncio.Task[None] | None = None
        self._calls: set[asyncio.Task[None]] = set()  # the running Converse pumps

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI application: RPC paths go to connect-python, the rest to the site."""
        path: str = scope.get("path", "")
        for prefix, app in self._rpc_apps.items():
            if scope["type"] == "http" and path.startswith(prefix):
                await app(scope, receive, send)
                return
        await self._site(scope, receive, send)

    async def start(self) -> None:
        assert self._socket is not None, "start() called twice"
        config = self._config
        config.bind = [f"fd://{self._socket.detach()}"]  # hypercorn owns the socket from now on
        self._socket = None
        config.accesslog = None
        config.errorlog = log
        config.websocket_max_message_size = self._max_message_bytes
        self._serving_task = asyncio.create_task(
            serve(self, config, shutdown_trigger=self._shutdown.wait, mode="asgi"),  # type: ignore[arg-type]
            name="web-gateway",
        )

    async def stop(self, grace: float) -> None:
        """Stop taking connections; give open ones `grace` seconds, then end them."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self._serving_task is None:
            return
        for call in list(self._calls):  # a drain has ended their sessions already, if it ran
            call.cancel()
        # Idle keep-alive connections close at once on shutdown, but only if given a moment: a
        # zero timeout cancels their tasks, which Python 3.11's asyncio logs as errors.
        self._config.graceful_timeout = max(grace, 1.0)
        self._shutdown.set()
        try:
            await asyncio.wait_for(self._serving_task, grace + 1)
        except TimeoutError:
            log.warning("the web gateway did not stop within %.1f s", grace + 1)
        except Exception:
            log.exception("the web gateway failed")

    # --- plain HTTP -----------------------------------------------------------------------

    async def _healthz(self, request: Request) -> Response:
        serving = self._serving()
        return JSONResponse(
            {"status": "SERVING" if serving else "NOT_SERVING"}, status_code=200 if serving else 503
        )

    async def _metrics(self, request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def _not_built(self, request: Request) -> Response:
        return PlainTextResponse(
            f"The web page is not built ({self._web_dir} has no index.html): "
            "`make run` builds it with npm (`npm ci && npm run build` in clients/web).",
            status_code=503,
        )

    # --- Converse over a WebSocket --------------------------------------------------------

    async def _converse_socket(self, ws: WebSocket) -> None:
        offered: list[str] = list(ws.scope.get("subprotocols") or [])
        await ws.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
        if self._token:
            given = _websocket_token(ws.scope.get("query_string", b""), offered)
            if not authorized(f"Bearer {given}" if given else "", self._token):
                why = "missing token" if not given else "invalid token"
                await _close(ws, CLOSE_POLICY_VIOLATION, f"{why}: offer subprotocol bearer.<token>")
                return
        client = ws.scope.get("client") or ("", 0)
        context = cast(grpc.aio.ServicerContext, BridgeContext(f"ws:{client[0]}:{client[1]}"))
        requests: asyncio.Queue[pb.ConverseRequest] = asyncio.Queue(REQUEST_QUEUE)

        async def request_stream() -> AsyncIterator[pb.ConverseRequest]:
            while True:
                yield await requests.get()

        last_error: list[pb.Error] = []  # the last in-stream Error sent, if any

        async def responses() -> None:
            stream = self._converse(request_stream(), context)
            try:
                async for response in stream:
                    try:
                        async with asyncio.timeout(self._send_timeout or None):
                            await ws.send_bytes(response.SerializeToString())
                    except TimeoutError:
                        break  # the browser reads nothing: its socket's buffers are full
                    except (WebSocketDisconnect, OSError, RuntimeError) as err:
                        raise ClientGone from err
                    if response.WhichOneof("response") == "error":
                        last_error[:] = [response.error]
                else:
                    return
                await stream.athrow(stalled_client(self._send_timeout))  # raises its StatusError
            finally:
                await stream.aclose()

        pump = asyncio.create_task(responses(), name="ws-converse")
        reader = asyncio.create_task(_read_requests(ws, requests), name="ws-read")
        self._calls.add(pump)
        try:
            await asyncio.wait({pump, reader}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._calls.discard(pump)
            # Cancelling the pump cancels the session, as grpc does when a client goes away.
            await cancel_and_wait(pump, reader)
        if reader.done() and not reader.cancelled():  # the reader ended the call
            if reader.exception() is not None:
                log.warning("reading a WebSocket failed", exc_info=reader.exception())
                await _close(ws, CLOSE_INTERNAL_ERROR, "internal error reading frames")
            elif (closing := reader.result()) is not None:  # a bad frame
                await _close(ws, *closing)
            return  # or the browser went away
        if pump.cancelled():  # only stop() cancels a running pump
            await _close(ws, CLOSE_GOING_AWAY, "the server is shutting down; reconnect")
            return
        error = pump.exception()
        if isinstance(error, ClientGone):
            return
        if error is None:
            await _close(ws, CLOSE_NORMAL, "session ended")
        elif isinstance(error, StatusError):
            status = error.to_proto()
            if last_error != [status]:  # a session that failed has sent its Error already
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(CLOSE_GRACE_SECONDS):
                        await ws.send_bytes(pb.ConverseResponse(error=status).SerializeToString())
            await _close(ws, CLOSE_STATUS_BASE + error.code.value[0], error.message)
        else:
            log.error("Converse over a WebSocket failed", exc_info=error)
            await _close(ws, CLOSE_INTERNAL_ERROR, f"internal error: {type(error).__name__}")


async def _read_requests(
    ws: WebSocket, requests: asyncio.Queue[pb.ConverseRequest]
) -> tuple[int, str] | None:
    """Frames into `requests` until the browser leaves (None) or sends a bad frame (close code,
    reason)."""
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return None
        data = message.get("bytes")
        if data is None:
            return (
                CLOSE_UNSUPPORTED_DATA,
                "text frames are not accepted: send binary protobuf ConverseRequest frames",
            )
        try:
            request = pb.ConverseRequest.FromString(data)
        except DecodeError as err:
            return CLOSE_INVALID_PAYLOAD, f"a frame is not a protobuf ConverseRequest: {err}"
        await requests.put(request)


def _websocket_token(query_string: bytes, offered: list[str]) -> str:
    for protocol in offered:
        if protocol.startswith(TOKEN_SUBPROTOCOL_PREFIX):
            return protocol[len(TOKEN_SUBPROTOCOL_PREFIX) :]
    values = parse_qs(query_string.decode("latin-1")).get("token", [])
    return values[0] if values else ""


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    """Close with a reason cut to the 123 bytes a close frame allows."""
    encoded = reason.encode()[:123]
    with contextlib.suppress(Exception):  # the browser may already be gone, or read nothing
        async with asyncio.timeout(CLOSE_GRACE_SECONDS):
            await ws.close(code, encoded.decode(errors="ignore"))


def _listen(host: str, port: int) -> socket.socket:
    address = host.strip("[]")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        return socket.create_server(
            (address, port),
            family=family,
            dualstack_ipv6=family == socket.AF_INET6 and socket.has_dualstack_ipv6(),
        )
    except OSError as err:
        raise SystemExit(f"cannot listen on {host}:{port} for HTTP (HTTP_PORT): {err}") from err
