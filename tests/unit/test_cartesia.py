"""Cartesia TTS through a real Converse stream against the local Cartesia fake."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest
from voiceagent.client import linear16
from voiceagent.v1 import voice_agent_pb2 as pb
from voiceagent.v1 import voice_agent_pb2_grpc as pb_grpc

from server.backends.tts.cartesia import API_VERSION, USER_AGENT, CartesiaConfig, CartesiaTTS
from tests.conftest import Call
from tests.fakes.cartesia import FakeCartesia
from tests.unit.conftest import StartServer
from tests.unit.scripted import ScriptedLLM, silence, tone

KEY = "test-cartesia-key"
LONG_REPLY = " ".join(f"word{i}." if i % 6 == 5 else f"word{i}" for i in range(30))


@pytest.fixture
async def cartesia(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeCartesia]:
    monkeypatch.setenv("CARTESIA_API_KEY", KEY)
    fake = FakeCartesia(api_key=KEY)
    await fake.start()
    yield fake
    await fake.stop()


async def backend(fake: FakeCartesia) -> CartesiaTTS:
    """Loaded as the server loads it: voices fetched, the socket opened."""
    tts = CartesiaTTS(CartesiaConfig(url=fake.url, api_key=KEY))
    await tts.load()
    return tts


async def test_a_turn_is_one_context_with_flushed_pieces(
    cartesia: FakeCartesia, start_server: StartServer, open_call
) -> None:
    llm = ScriptedLLM("It is Paris, and a lovely city. Anything else?")
    s = await start_server(llm=llm, tts=await backend(cartesia))
    call: Call = await open_call(s.target, pb.SessionConfig(input_format=linear16(16000)))
    await call.wait_for(lambda c: bool(c.of("session_started")))
    started = call.of("session_started")[0].config
    assert (started.tts, started.tts_voice) == ("cartesia", "voice-ada")  # from GET /voices
    await call.conversation.send_text("What is the capital of France?")
    await call.wait_for(lambda c: bool(c.events(pb.AGENT_TURN_DONE)))
    audio = b"".join(a.audio for a in call.of("audio"))
    text = "It is Paris, and a lovely city. Anything else?"
    pieces = ["It is Paris,", "and a lovely city.", "Anything else?"]
    assert " ".join(pieces) == text
    assert len(audio) / 32000 == pytest.approx(0.06 * sum(map(len, pieces)), rel=0.05)

    handshake = cartesia.handshakes[-1]
    assert handshake.path == "/tts/websocket"
    assert handshake.headers["X-API-Key"] == KEY
    assert handshake.headers["Cartesia-Version"] == API_VERSION
    assert handshake.headers["User-Agent"] == USER_AGENT
    assert len(cartesia.contexts) == 1  # one context for the whole turn
    context = next(iter(cartesia.contexts.values()))
    spoken = [r for r in context.requests if r["transcript"]]
    assert [r["transcript"].strip() for r in spoken] == pieces
    assert all(r["continue"] for r in spoken)
    assert sum(bool(r.get("flush")) for r in context.requests) == 3
    assert context.requests[-1]["continue"] is False  # the turn closed the context
    assert spoken[0]["output_format"] == {
        "container": "raw",
        "encoding": "pcm_s16le",
        "sample_rate": 16000,
    }
    assert spoken[0]["voice"] == {"mode": "id", "id": "voice-ada"}


async def test_phone_calls_get_mulaw_at_8khz_from_cartesia(
    cartesia: FakeCartesia, start_server: StartServer, open_call
) -> None:
    s = await start_server(llm=ScriptedLLM("Hello there."), tts=await backend(cartesia))
    mulaw = pb.AudioFormat(encoding=pb.MULAW, sample_rate_hertz=8000)
    call: Call = await open_call(s.target, pb.SessionConfig(input_format=mulaw))
    await call.conversation.send_text("Hi")
    await call.wait_for(lambda c: bool(c.events(pb.AGENT_TURN_DONE)))
    request = next(iter(cartesia.contexts.values())).requests[0]
    assert request["output_format"] == {
        "container": "raw",
        "encoding": "pcm_mulaw",
        "sample_rate": 8000,
    }
    audio = b"".join(a.audio for a in call.of("audio"))
    assert len(audio) == pytest.approx(8000 * 0.06 * len("Hello there."), rel=0.05)


async def test_barge_in_cancels_the_context(
    cartesia: FakeCartesia, start_server: StartServer, open_call
) -> None:
    cartesia.speed = 1.5  # audio comes slower than the LLM's text: the context is busy
    llm = ScriptedLLM(LONG_REPLY, token_delay=0.02)
    s = await start_server(llm=llm, tts=await backend(cartesia))
    call: Call = await open_call(s.target)
    await call.conversation.send_text("Tell me a long story.")
    await call.wait_for(lambda c: bool(c.of("audio")))
    await asyncio.sleep(0.3)
    await call.send_pcm(np.concatenate([tone(0.4), silence(0.2)]))
    await call.wait_for(lambda c: bool(c.events(pb.BARGE_IN)))
    context_id = next(iter(cartesia.contexts))
    for _ in range(100):
        if cartesia.cancelled:
            break
        await asyncio.sleep(0.01)
    assert cartesia.cancelled == [context_id]
    assert {"context_id": context_id, "cancel": True} in cartesia.messages
    assert not any(r.get("continue") is False for r in cartesia.contexts[context_id].requests)


async def test_voices_come_from_the_voices_api(
    cartesia: FakeCartesia, start_server: StartServer
) -> None:
    s = await start_server(tts=await backend(cartesia))
    async with grpc.aio.insecure_channel(s.target) as channel:
        api = pb_grpc.VoiceAgentStub(channel)
        voices = (await api.ListVoices(pb.ListVoicesRequest(backend="cartesia"))).voices
    assert [(v.id, v.name, v.gender, v.available) for v in voices] == [
        ("voice-ada", "Ada", "feminine", True),
        ("voice-bob", "Bob", "masculine", True),
    ]


async def test_a_drop_before_audio_is_retried_on_a_new_connection(
    cartesia: FakeCartesia, start_server: StartServer, open_call
) -> None:
    s = await start_server(llm=ScriptedLLM("Hello there."), tts=await backend(cartesia))
    cartesia.faults.drop_after = 0  # the first message the server would send
    call: Call = await open_call(s.target)
    await call.conversation.send_text("Hi")
    await call.wait_for(lambda c: bool(c.events(pb.AGENT_TURN_DONE)))
    assert call.of("audio") and len(cartesia.handshakes) == 2


@pytest.mark.parametrize(
    ("fault", "needle"),
    [
        ("drop_after", "connection lost"),
        ("error_after", "fake failure"),
        ("malformed_after", "malformed message"),
    ],
)
async def test_mid_stream_faults_end_the_turn_not_the_call(
    cartesia: FakeCartesia, start_server: StartServer, open_call, fault: str, needle: str
) -> None:
    s = await start_server(llm=ScriptedLLM(LONG_REPLY), tts=await backend(cartesia))
    setattr(cartesia.faults, fault, 3)  # after two chunks of audio; fires once
    call: Call = await open_call(s.target)
    await call.conversation.send_text("Hi")
    await call.wait_for(lambda c: bool(c.events(pb.AGENT_TURN_DONE)))
    error = call.of("error")[0]
    assert error.code == grpc.StatusCode.UNAVAILABLE.value[0] and needle in error.message
    heard = len(call.of("audio"))
    assert heard  # what came before the fault was delivered
    await call.conversation.send_text("Again?")  # the provider is back
    await call.wait_for(lambda c: len(c.events(pb.AGENT_TURN_DONE)) == 2)
    assert len(call.of("audio")) > heard and len(call.of("error")) == 1
    assert not call.done.is_set()


async def test_a_slow_provider_still_answers(
    cartesia: FakeCartesia, start_server: StartServer, open_call
) -> None:
    cartesia.faults.delay = 0.05
    s = await start_server(llm=ScriptedLLM("Hello there."), tts=await backend(cartesia))
    call: Call = await open_call(s.target)
    await call.conversation.send_text("Hi")
    await call.wait_for(lambda c: bool(c.of("metrics")))  # sent just after AGENT_TURN_DONE
    assert call.of("metrics")[0].tts_first_audio_ms >= 50


async def test_a_missing_key_is_unavailable_with_the_reason(
    start_server: StartServer, open_call, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CARTESIA_API_KEY", raising=False)
    s = await start_server()
    async with grpc.aio.insecure_channel(s.target) as channel:
        api = pb_grpc.VoiceAgentStub(channel)
        voices = (await api.ListVoices(pb.ListVoicesRequest(backend="cartesia"))).voices
    assert voices and all(
        not v.available and v.unavailable_reason == "CARTESIA_API_KEY not set" for v in voices
    )
    call: Call = await open_call(
        s.target, pb.SessionConfig(input_format=linear16(16000), tts="cartesia")
    )
    await asyncio.wait_for(call.done.wait(), 5)
    assert call.status == grpc.StatusCode.FAILED_PRECONDITION
    assert "CARTESIA_API_KEY not set" in call.details
