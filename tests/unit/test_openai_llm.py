"""OpenAI-compatible LLM through a real Converse stream against the local SSE fake."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest
from voiceagent.client import linear16
from voiceagent.v1 import voice_agent_pb2 as pb
from voiceagent.v1 import voice_agent_pb2_grpc as pb_grpc

from server.backends.llm.openai import PRESET_MODELS, USER_AGENT, OpenAIConfig, OpenAILLM
from tests.conftest import Call
from tests.fakes.openai_chat import FakeChatCompletions
from tests.unit.conftest import StartServer
from tests.unit.scripted import ScriptedTTS, silence, tone

KEY = "test-llm-key"
MODEL = "llama-3.1-8b-instant"
LONG_REPLY = " ".join(f"word{i}." if i % 6 == 5 else f"word{i}" for i in range(40))


@pytest.fixture
async def endpoint(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeChatCompletions]:
    monkeypatch.setenv("LLM_API_KEY", KEY)
    fake = await FakeChatCompletions(api_key=KEY).start()
    yield fake
    await fake.stop()


async def backend(fake: FakeChatCompletions, api_key: str = KEY) -> OpenAILLM:
    llm = OpenAILLM(
        OpenAIConfig(base_url=fake.base_url, api_key=api_key, models=fake.models, backoff=0.01)
    )
    await llm.load()
    return llm


def session(model: str = MODEL) -> pb.SessionConfig:
    return pb.SessionConfig(input_format=linear16(16000), llm_model=model)


async def answer(start_server: StartServer, open_call, fake: FakeChatCompletions, **kw) -> Call:
    s = await start_server(llm=await backend(fake, **kw))
    call: Call = await open_call(s.target, session())
    await call.conversation.send_text("What is the capital of France?")
    await call.wait_for(lambda c: bool(c.finals()) or c.done.is_set(), within=10)
    return call


async def test_a_turn_streams_chat_completions(
    endpoint: FakeChatCompletions, start_server: StartServer, open_call
) -> None:
    call = await answer(start_server, open_call, endpoint)
    assert call.finals()[0].text == "Paris is the capital of France."
    # streamed: the first piece ("Paris is the capital") is cut before the last token arrives
    deltas = [t.delta for t in call.of("agent_text") if t.delta]
    assert len(deltas) == 2 and "".join(deltas) == "Paris is the capital of France."
    request = endpoint.requests[0]
    assert request["model"] == MODEL and request["stream"] is True and request["max_tokens"] > 0
    assert [m["role"] for m in request["messages"]] == ["system", "user"]
    assert request["messages"][-1]["content"] == "What is the capital of France?"
    assert endpoint.headers[0]["authorization"] == f"Bearer {KEY}"
    assert endpoint.headers[0]["user-agent"] == USER_AGENT
    assert call.of("session_started")[0].config.llm == "openai"


async def test_models_are_configurable_with_llama_and_mixtral_presets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LLM_MODELS", raising=False)
    assert any("llama-3" in m.lower() for m in OpenAILLM().models())
    assert any("mixtral" in m.lower() for m in OpenAILLM().models())
    assert OpenAILLM().models() == list(PRESET_MODELS)
    monkeypatch.setenv("LLM_MODELS", "my-model, other-model")
    assert OpenAILLM().models() == ["my-model", "other-model"]


async def test_barge_in_closes_the_stream(
    endpoint: FakeChatCompletions, start_server: StartServer, open_call
) -> None:
    endpoint.reply, endpoint.token_delay = LONG_REPLY, 0.05
    s = await start_server(llm=await backend(endpoint), tts=ScriptedTTS(speed=20))
    call: Call = await open_call(s.target, session())
    await call.conversation.send_text("Tell me a long story.")
    await call.wait_for(lambda c: bool(c.of("audio")))
    await call.send_pcm(np.concatenate([tone(0.4), silence(0.2)]))
    await call.wait_for(lambda c: bool(c.events(pb.BARGE_IN)))
    for _ in range(100):
        if endpoint.disconnects:
            break
        await asyncio.sleep(0.01)
    assert endpoint.disconnects == 1 and endpoint.completed == 0


@pytest.mark.parametrize("fault", ["refuse", "drop_before_first_token", "delay"])
async def test_faults_before_the_first_token_recover(
    endpoint: FakeChatCompletions, start_server: StartServer, open_call, fault: str
) -> None:
    if fault == "refuse":
        endpoint.faults.refuse_connections = 2
    elif fault == "drop_before_first_token":
        endpoint.faults.drop_after = 0
    else:
        endpoint.faults.delay = 0.3
    call = await answer(start_server, open_call, endpoint)
    assert call.finals()[0].text == "Paris is the capital of France."
    await call.wait_for(lambda c: bool(c.of("metrics")))  # a message after the final text
    assert call.of("metrics")[0].llm_first_token_ms >= (300 if fault == "delay" else 0)


@pytest.mark.parametrize(
    ("fault", "needle"),
    [
        ("drop_after", "failed mid-answer"),
        ("error_after", "fake overload"),
        ("malformed_after", "malformed JSON"),
    ],
)
async def test_faults_mid_answer_end_the_turn_not_the_call(
    endpoint: FakeChatCompletions, start_server: StartServer, open_call, fault: str, needle: str
) -> None:
    setattr(endpoint.faults, fault, 2)  # fires once
    call = await answer(start_server, open_call, endpoint)
    await call.wait_for(lambda c: bool(c.events(pb.AGENT_TURN_DONE)))
    error = call.of("error")[0]
    assert error.code == grpc.StatusCode.UNAVAILABLE.value[0] and needle in error.message
    assert "".join(t.delta for t in call.of("agent_text")) == "Paris is"  # what came before
    assert call.finals()[0].text == "Paris is" and not call.of("metrics")
    await call.conversation.send_text("And once more?")  # the provider is back
    await call.wait_for(lambda c: len(c.finals()) == 2)
    assert call.finals()[1].text == "Paris is the capital of France."
    assert not call.done.is_set()


async def test_a_refused_key_is_not_retried(
    endpoint: FakeChatCompletions, start_server: StartServer, open_call
) -> None:
    call = await answer(start_server, open_call, endpoint, api_key="wrong")
    await call.wait_for(lambda c: bool(c.events(pb.AGENT_TURN_DONE)))
    error = call.of("error")[0]
    assert error.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert "HTTP 401: Invalid API Key" in error.message
    assert len(endpoint.headers) == 1
    assert not call.done.is_set()  # the caller may switch to another model and go on


async def test_a_missing_key_is_unavailable_with_the_reason(
    start_server: StartServer, open_call, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LLM_API_KEY", raising=False)
    s = await start_server()
    async with grpc.aio.insecure_channel(s.target) as channel:
        models = (await pb_grpc.VoiceAgentStub(channel).ListModels(pb.ListModelsRequest())).models
    listed = {m.id: m for m in models if m.backend == "openai"}
    assert listed[MODEL].unavailable_reason == "LLM_API_KEY not set" and not listed[MODEL].available
    call: Call = await open_call(s.target, session())
    await asyncio.wait_for(call.done.wait(), 5)
    assert call.status == grpc.StatusCode.FAILED_PRECONDITION
    assert "LLM_API_KEY not set" in call.details
