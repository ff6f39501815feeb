"""Bearer-token access control for every RPC (VOICE_AGENT_TOKEN).

Health checks stay open: load balancers and orchestrator probes cannot send a token, and the
health service reveals nothing but readiness.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

OPEN_METHODS_PREFIX = "/grpc.health.v1.Health/"


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

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
        given_bytes = given.encode() if isinstance(given, str) else bytes(given)
        # Constant time: the comparison must not tell an attacker how much of a guess was right.
        if hmac.compare_digest(given_bytes, self._expected):
            return handler
        return _denied(handler, "missing authorization" if not given else "invalid token")


def _denied(handler: grpc.RpcMethodHandler, why: str) -> grpc.RpcMethodHandler:
    message = f"{why}: send metadata `authorization: Bearer <VOICE_AGENT_TOKEN>`"

    async def deny(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    codecs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(deny, **codecs)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(deny, **codecs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(deny, **codecs)
    return grpc.stream_stream_rpc_method_handler(deny, **codecs)
