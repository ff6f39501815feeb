"""The local model (Qwen2.5-Coder-0.5B-Instruct on llama.cpp) with tools, through the server."""

from __future__ import annotations

import asyncio

import grpc
from voiceagent.client import linear16
from voiceagent.v1 import voice_agent_pb2 as pb

from server.main import VoiceAgentServer
from tests.conftest import Call


async def test_local_model_ends_the_call_on_goodbye(
    offline_server: VoiceAgentServer, open_call
) -> None:
    config = pb.SessionConfig(
        input_format=linear16(16000), builtin_tools=pb.BuiltinTools(end_call=True)
    )
    call: Call = await open_call(f"127.0.0.1:{offline_server.port}", config)
    await call.conversation.send_text("That's all, goodbye.")
    await call.wait_for(lambda c: bool(c.events(pb.AGENT_TURN_DONE)), within=240)
    assert [c.name for c in call.of("tool_call")] == ["end_call"], call.finals()
    await asyncio.wait_for(call.done.wait(), 10)
    assert call.status == grpc.StatusCode.OK, call.details
    assert call.responses[-1].event.type == pb.CALL_ENDED
    assert call.finals()[-1].text, "the agent said a goodbye before ending the call"
    assert call.of("audio"), "the goodbye was spoken"


async def test_local_model_answers_a_question_without_tools(
    offline_server: VoiceAgentServer, open_call
) -> None:
    config = pb.SessionConfig(
        input_format=linear16(16000), builtin_tools=pb.BuiltinTools(end_call=True)
    )
    call: Call = await open_call(f"127.0.0.1:{offline_server.port}", config)
    await call.conversation.send_text("What is the capital of France?")
    await call.wait_for(lambda c: len(c.of("metrics")) == 1, within=240)
    assert not call.of("tool_call")
    assert "paris" in call.finals()[-1].text.lower()
