"""The one status vocabulary: a gRPC code and a message a caller can act on.

Servicers, the session and the web gateway all raise `StatusError`; `status_for` is the one
mapping from option and backend errors to codes, and `abort` the one way a handler ends its call.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, NoReturn

import grpc
from voiceagent.v1 import voice_agent_pb2 as pb

from server.backends.registry import BackendError
from server.options import OptionError

FIRST_MESSAGE_WAIT_SECONDS = 1.0

_OPTION_CODES = {
    "not_found": grpc.StatusCode.NOT_FOUND,
    "unavailable": grpc.StatusCode.FAILED_PRECONDITION,
    "invalid": grpc.StatusCode.INVALID_ARGUMENT,
}


class StatusError(Exception):
    """Ends a call (or, sent as an Error message, refuses one request) with this status."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def to_proto(self) -> pb.Error:
        return pb.Error(code=self.code.value[0], message=self.message)


def status_for(err: OptionError | BackendError) -> StatusError:
    """An unknown name is NOT_FOUND; one unavailable here (no API key) FAILED_PRECONDITION."""
    if isinstance(err, OptionError):
        return StatusError(_OPTION_CODES[err.kind], str(err))
    code = grpc.StatusCode.NOT_FOUND if err.not_found else grpc.StatusCode.FAILED_PRECONDITION
    return StatusError(code, str(err))


def stalled_client(limit: float) -> StatusError:
    """How a stream ends whose client has read nothing for `limit` seconds (its transport's
    send timed out, SEND_TIMEOUT_SECONDS)."""
    return StatusError(
        grpc.StatusCode.DEADLINE_EXCEEDED,
        f"the client read no response for {limit:g} s (SEND_TIMEOUT_SECONDS): closing the "
        "session; read the stream as it comes",
    )


async def abort(context: grpc.aio.ServicerContext, status: StatusError) -> NoReturn:
    """End the call with `status` (grpc's context, or the web gateway's, which raises it)."""
    await context.abort(status.code, status.message)
    raise AssertionError("unreachable: abort raises")


async def abort_after_first_message(
    requests: AsyncIterator[Any], context: grpc.aio.ServicerContext, status: StatusError
) -> NoReturn:
    """Refuse a client stream once its first message is in (or FIRST_MESSAGE_WAIT_SECONDS have
    passed): a client still writing it would otherwise see its write fail in place of `status`
    (grpc.aio reports INTERNAL "Internal error from Core", grpc/grpc#36066)."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(FIRST_MESSAGE_WAIT_SECONDS):
            await anext(requests)
    await abort(context, status)
