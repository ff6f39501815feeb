"""Shared test helpers: a recording Converse call and a fixture that opens calls."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
import pytest
from voiceagent.client import Conversation, VoiceAgentClient, linear16
from voiceagent.v1 import voice_agent_pb2 as pb


@dataclass
class Call:
    """A Converse stream with a background receiver that records every response."""

    conversation: Conversation
    responses: list[pb.ConverseResponse] = field(default_factory=list)
    status: grpc.StatusCode | None = None
    details: str = ""
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def receive(self) -> None:
        try:
            async for response in self.conversation:
                self.responses.append(response)
            self.status = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as err:
            self.status, self.details = err.code(), err.details() or ""
        except asyncio.CancelledError:  # grpc's way to report a call we cancelled ourselves
            self.status = grpc.StatusCode.CANCELLED
        finally:
            self.done.set()

    def of(self, kind: str) -> list[Any]:
        return [getattr(r, kind) for r in self.responses if r.WhichOneof("response") == kind]

    def events(self, event_type: int) -> list[pb.Event]:
        return [e for e in self.of("event") if e.type == event_type]

    def finals(self) -> list[pb.AgentText]:
        return [t for t in self.of("agent_text") if t.final]

    async def wait_for(self, predicate: Callable[[Call], bool], within: float = 10.0) -> None:
        deadline = time.monotonic() + within
        while not predicate(self):
            if self.done.is_set() or time.monotonic() > deadline:
                raise AssertionError(
                    f"condition not met (status {self.status} {self.details}); got: "
                    + ", ".join(r.WhichOneof("response") or "?" for r in self.responses)
                )
            await asyncio.sleep(0.01)

    async def send_pcm(
        self,
        pcm: np.ndarray,
        rate: int = 16000,
        encode: Callable[[np.ndarray], bytes] | None = None,
    ) -> None:
        """Send audio in 20 ms frames at real time."""
        frame = rate // 50
        start = time.monotonic()
        for k, offset in enumerate(range(0, len(pcm), frame)):
            await asyncio.sleep(max(0.0, start + k * 0.02 - time.monotonic()))
            chunk = pcm[offset : offset + frame]
            await self.conversation.send_audio(encode(chunk) if encode else chunk.tobytes())


@pytest.fixture
async def open_call() -> AsyncIterator[Callable[..., Awaitable[Call]]]:
    opened: list[tuple[VoiceAgentClient, Call, asyncio.Task[None]]] = []

    async def open_(
        target: str,
        config: pb.SessionConfig | None = None,
        token: str | None = None,
        ca_file: str | None = None,
    ) -> Call:
        client = VoiceAgentClient(target, token=token, ca_file=ca_file)
        await client.__aenter__()
        conversation = client.converse(config or pb.SessionConfig(input_format=linear16(16000)))
        await conversation.__aenter__()
        call = Call(conversation)
        opened.append((client, call, asyncio.create_task(call.receive())))
        return call

    yield open_
    for client, call, task in opened:
        await call.conversation.__aexit__(None, None, None)
        await asyncio.wait_for(task, 5)
        await client.__aexit__(None, None, None)
