"""The Python SDK's Conversation against the real server (scripted backends): how the stream
ends when the agent ends it, and when the client half-closes."""

from __future__ import annotations

import asyncio
import json

import grpc
import numpy as np
import pytest
from voiceagent.client import linear16
from voiceagent.v1 import voice_agent_pb2 as pb

from server.backends.llm.base import ToolCall
from tests.conftest import Call
from tests.unit.conftest import StartServer
from tests.unit.scripted import ScriptedLLM, ScriptedToolLLM

DESK = "sip:desk@127.0.0.1:5070"
FRAME = np.zeros(160, dtype=np.int16).tobytes()  # 10 ms at 16 kHz


async def stream_audio(call: Call) -> None:
    """A phone line's pace and more: a frame every millisecond until the stream ends."""
    while not call.done.is_set():
        await call.conversation.send_audio(FRAME)
        await asyncio.sleep(0.001)


@pytest.mark.parametrize(
    ("tool", "builtins", "event"),
    [
        (ToolCall("c1", "end_call", "{}"), pb.BuiltinTools(end_call=True), pb.CALL_ENDED),
        (
            ToolCall("c1", "transfer_call", json.dumps({"target": DESK})),
            pb.BuiltinTools(transfer_targets=[DESK]),
            pb.TRANSFER,
        ),
    ],
)
async def test_a_call_the_agent_ends_ends_with_ok_while_audio_is_streaming(
    start_server: StartServer,
    open_call,
    tool: ToolCall,
    builtins: pb.BuiltinTools,
    event: int,
) -> None:
    """The server ends the stream right after the event while the client is writing; grpc.aio
    would report INTERNAL for a request caught on its way (grpc/grpc#36066), which made the SIP
    bridge hang up without the REFER. Many calls, since each one is a race."""
    llm = ScriptedToolLLM([tool], before="One moment.", token_delay=0.0)
    s = await start_server(llm=llm)
    config = pb.SessionConfig(input_format=linear16(16000), builtin_tools=builtins)
    for attempt in range(25):
        call: Call = await open_call(s.target, config)
        await call.wait_for(lambda c: bool(c.of("session_started")))
        streamer = asyncio.create_task(stream_audio(call))
        await call.conversation.send_text("Please end this.")
        await asyncio.wait_for(call.done.wait(), 10)
        await streamer
        assert call.events(event), attempt
        assert (call.status, call.details) == (grpc.StatusCode.OK, ""), attempt


async def test_requests_queued_before_close_input_are_still_sent(
    start_server: StartServer, open_call
) -> None:
    llm = ScriptedLLM(reply="Hello there.")
    s = await start_server(llm=llm)
    call: Call = await open_call(s.target, pb.SessionConfig(input_format=linear16(16000)))
    await call.conversation.send_text("Hi.")
    await call.conversation.close_input()
    await call.conversation.send_text("Not sent: the input is closed.")
    await asyncio.wait_for(call.done.wait(), 10)
    assert call.status == grpc.StatusCode.OK, call.details
    assert [t.text for t in call.finals()] == ["Hello there."]
    assert [[m.content for m in c if m.role == "user"] for c in llm.calls] == [["Hi."]]


async def test_a_session_that_fails_while_audio_is_streaming_ends_with_its_own_status(
    start_server: StartServer, open_call
) -> None:
    """A failing session sends its status as an Error, then ends the stream with it; a request
    caught on its way would make grpc.aio report INTERNAL instead (about 1 in 40 calls here)."""
    s = await start_server()
    too_long = b"\0" * (16000 * 2 * 6)  # 6 s in one message: INVALID_ARGUMENT
    for attempt in range(60):
        call: Call = await open_call(s.target, pb.SessionConfig(input_format=linear16(16000)))
        await call.wait_for(lambda c: bool(c.of("session_started")))
        streamer = asyncio.create_task(stream_audio(call))
        await asyncio.sleep(0.02)
        await call.conversation.send_audio(too_long)
        await asyncio.wait_for(call.done.wait(), 10)
        await streamer
        assert call.status == grpc.StatusCode.INVALID_ARGUMENT, (attempt, call.details)
        assert call.details.startswith("an audio message has 192000 bytes"), call.details
