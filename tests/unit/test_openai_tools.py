"""The openai backend's tool calls against the fake endpoint: streamed in pieces, several in one
answer, results sent back as `tool` messages, end to end through the server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from voiceagent.client import linear16
from voiceagent.v1 import voice_agent_pb2 as pb

from server.backends.llm.base import ChatMessage, ToolCall
from server.backends.llm.openai import OpenAIConfig, OpenAILLM
from server.tools.spec import tool_specs
from tests.conftest import Call
from tests.fakes.openai_chat import FakeChatCompletions
from tests.fakes.webhook import FakeWebhook
from tests.unit.conftest import StartServer

WEATHER = pb.Tool(
    name="get_weather",
    description="The weather in a city.",
    parameters_json=json.dumps(
        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    ),
    client=pb.ClientTool(timeout_ms=3000),
)


@pytest.fixture
async def fake() -> AsyncIterator[FakeChatCompletions]:
    f = await FakeChatCompletions(api_key="llm").start()
    yield f
    await f.stop()


def backend(fake: FakeChatCompletions) -> OpenAILLM:
    return OpenAILLM(OpenAIConfig(base_url=fake.base_url, api_key="llm", models=fake.models))


async def test_streamed_tool_calls_are_assembled(fake: FakeChatCompletions) -> None:
    fake.tool_calls = [
        ("get_weather", '{"city": "Paris"}'),
        ("get_weather", '{"city": "Lyon, France"}'),
    ]
    llm = backend(fake)
    specs = tool_specs([WEATHER], "tools")
    out = [
        item
        async for item in llm.stream(
            [ChatMessage("system", "s"), ChatMessage("user", "Weather?")], fake.models[0], specs
        )
    ]
    assert out == [
        ToolCall("call_fake0", "get_weather", '{"city": "Paris"}'),
        ToolCall("call_fake1", "get_weather", '{"city": "Lyon, France"}'),
    ]
    sent = fake.requests[0]["tools"][0]
    assert sent["type"] == "function" and sent["function"]["name"] == "get_weather"
    assert sent["function"]["parameters"]["required"] == ["city"]
    await llm.aclose()


async def test_tool_calls_through_the_server(
    start_server: StartServer, open_call, fake: FakeChatCompletions, monkeypatch
) -> None:
    hook = await FakeWebhook(body='{"forecast": "sunny"}').start()
    monkeypatch.setenv("LLM_API_KEY", "llm")
    monkeypatch.setenv("TOOL_WEBHOOK_ALLOW", f"http://127.0.0.1:{hook.port}/")
    fake.reply = "It is sunny in Paris and Lyon."
    fake.tool_calls = [
        ("get_weather", '{"city": "Paris"}'),
        ("get_forecast", '{"city": "Lyon"}'),
    ]
    forecast = pb.Tool(
        name="get_forecast",
        parameters_json=WEATHER.parameters_json,
        webhook=pb.WebhookTool(url=hook.url),
    )
    s = await start_server(llm=backend(fake))
    call: Call = await open_call(
        s.target, pb.SessionConfig(input_format=linear16(16000), tools=[WEATHER, forecast])
    )
    await call.conversation.send_text("What's the weather in Paris and Lyon?")
    await call.wait_for(lambda c: len(c.of("tool_call")) == 1)
    first = call.of("tool_call")[0]
    assert (first.name, json.loads(first.arguments_json)) == ("get_weather", {"city": "Paris"})
    await call.conversation.send_tool_result(first.id, result_json='{"sky": "clear"}')
    await call.wait_for(lambda c: len(c.of("metrics")) == 1)
    assert [r.name for r in call.of("tool_result")] == ["get_weather", "get_forecast"]
    assert call.finals()[-1].text == "It is sunny in Paris and Lyon."
    assert hook.requests[0]["arguments"] == {"city": "Lyon"}
    # The second request carries the assistant's calls and both results as `tool` messages.
    messages = fake.requests[1]["messages"]
    assistant = messages[-3]
    assert assistant["role"] == "assistant" and assistant["content"] is None
    assert [c["function"]["name"] for c in assistant["tool_calls"]] == [
        "get_weather",
        "get_forecast",
    ]
    assert messages[-2] == {
        "role": "tool",
        "tool_call_id": "call_fake0",
        "content": '{"sky": "clear"}',
    }
    assert messages[-1] == {
        "role": "tool",
        "tool_call_id": "call_fake1",
        "content": '{"forecast": "sunny"}',
    }
    await hook.stop()
