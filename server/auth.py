"""Bearer-token access control for every RPC (VOICE_AGENT_TOKEN), on the gRPC port and on the
web gateway (server/web.py) alike: both use `authorized` below.

Health checks stay open: load balancers and orchestrator probes cannot send a token, and the
health service reveals nothing but readiness.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from server.status import StatusError, abort, abort_after_first_message

OPEN_METHODS_PREFIX = "/grpc.health.v1.Health/"


def authorized(given: str | bytes, token: str) -> bool:
    """Whether an `authorization` value is `Bearer <token>`, compared in constant time: the
    comparison must not tell an attacker how much of a guess was right."""
    given_bytes = given.encode() if isinstance(given, str) else bytes(given)
    return hmac.compare_digest(given_bytes, f"Bearer {token}".encode())


def denial(given: str | bytes) -> str:
    """What to tell a caller whose `authorization` value was refused."""
    why = "missing authorization" if not given else "invalid token"
    return f"{why}: send `authorization: Bearer <VOICE_AGENT_TOKEN>`"


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(OPEN_METHODS_PREFIX):
            return handler
        metadata = {key: value for key, value in details.invocation_metadata or ()}
        given = metadata.get("authorization", "")
        if authorized(given, self._token):
            return handler
        return _denied(handler, denial(given) + " metadata")


def _denied(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:

    async def deny(request: Any, context: grpc.aio.ServicerContext) -> None:
        await abort(context, StatusError(grpc.StatusCode.UNAUTHENTICATED, message))

    async def deny_stream(requests: Any, context: grpc.aio.ServicerContext) -> None:
        # The first message comes as raw bytes, not parsed: the refusal reads nothing more.
        denied = StatusError(grpc.StatusCode.UNAUTHENTICATED, message)
        await abort_after_first_message(requests, context, denied)

    codecs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(deny, **codecs)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(deny, **codecs)
    raw = {"request_deserializer": None, "response_serializer": handler.response_serializer}
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(deny_stream, **raw)
    return grpc.stream_stream_rpc_method_handler(deny_stream, **raw)
