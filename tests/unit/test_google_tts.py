"""Google Chirp 3 HD streaming TTS through a real Converse stream against the local gRPC fake."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest
from google.api_core import exceptions as google_errors
from voiceagent.client import linear16
from voiceagent.v1 import voice_agent_pb2 as pb
from voiceagent.v1 import voice_agent_pb2_grpc as pb_grpc

from server.backends.tts.google import LOCAL_WRITE_RACE, GoogleTTS, retryable
from tests.conftest import Call
from tests.fakes.google_tts import FakeGoogleTTS
from tests.unit.conftest import StartServer
from tests.unit.scripted import ScriptedLLM, silence, tone

LONG_REPLY = " ".join(f"word{i}." if i % 6 == 5 else f"word{i}" for i in range(30))


@pytest.fixture
async def google(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeGoogleTTS]:
    fake = await FakeGoogleTTS().start()
    monkeypatch.setenv("GOOGLE_TTS_ENDPOINT", fake.endpoint)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    yield fake
    await fake.stop()


async def backend() -> GoogleTTS:
    tts = GoogleTTS()  # GOOGLE_TTS_ENDPOINT: the fake
    await tts.load()
    return tts


async def test_a_turn_is_synthesized_by_streaming_synthesize(
    google: FakeGoogleTTS, start_server: StartServer, open_call
) -> None:
    s = await start_server(
        llm=ScriptedLLM("Paris is the capital, and a lovely city."), tts=await backend()
    )
    call: Call = await open_call(s.target, pb.SessionConfig(input_format=linear16(24000)))
    await call.conversation.send_text("What is the capital of France?")
    await call.wait_for(lambda c: bool(c.events(pb.AGENT_TURN_DONE)))
    assert call.of("session_started")[0].config.tts_voice == "en-US-Chirp3-HD-Charon"
    assert google.texts == ["Paris is the capital,", "and a lovely city."]
    config = google.configs[0]
    assert config.voice.name == "en-US-Chirp3-HD-Charon" and config.voice.language_code == "en-US"
    assert (
        config.streaming_audio_config.sample_rate_hertz == 24000
    )  # rendered at the session's rate
    audio = b"".join(a.audio for a in call.of("audio"))
    assert len(audio) / 48000 == pytest.approx(0.06 * (21 + 18), rel=0.05)


async def test_voices_are_the_chirp3_hd_ones_listvoices_returns(
    google: FakeGoogleTTS, start_server: StartServer
) -> None:
    s = await start_server(tts=await backend())
    async with grpc.aio.insecure_channel(s.target) as channel:
        voices = (
            await pb_grpc.VoiceAgentStub(channel).ListVoices(pb.ListVoicesRequest(backend="google"))
        ).voices
    assert [(v.id, v.gender) for v in voices] == [
        ("en-US-Chirp3-HD-Charon", "male"),
        ("en-US-Chirp3-HD-Kore", "female"),
    ]


async def test_barge_in_cancels_the_stream(
    google: FakeGoogleTTS, start_server: StartServer, open_call
) -> None:
    google.faults.delay = 0.03  # slower than real time: a piece is still streaming
    s = await start_server(llm=ScriptedLLM(LONG_REPLY), tts=await backend())
    call: Call = await open_call(s.target)
    await call.conversation.send_text("Tell me a long story.")
    await call.wait_for(lambda c: bool(c.of("audio")))
    await call.send_pcm(np.concatenate([tone(0.4), silence(0.2)]))
    await call.wait_for(lambda c: bool(c.events(pb.BARGE_IN)))
    for _ in range(100):
        if google.cancelled:
            break
        await asyncio.sleep(0.01)
    assert google.cancelled == 1


async def test_unavailable_before_audio_is_retried(
    google: FakeGoogleTTS, start_server: StartServer, open_call
) -> None:
    google.faults.refuse_connections = 1
    s = await start_server(llm=ScriptedLLM("Hello there."), tts=await backend())
    call: Call = await open_call(s.target)
    await call.conversation.send_text("Hi")
    await call.wait_for(lambda c: bool(c.events(pb.AGENT_TURN_DONE)))
    assert call.of("audio") and len(google.configs) == 1


@pytest.mark.parametrize(
    ("fault", "needle"),
    [
        ("drop_after", "Connection reset by peer"),
        ("error_after", "fake internal error"),
        ("malformed_after", "Google TTS"),
    ],
)
async def test_mid_stream_faults_end_the_turn_not_the_call(
    google: FakeGoogleTTS, start_server: StartServer, open_call, fault: str, needle: str
) -> None:
    setattr(google.faults, fault, 2)  # fires once
    s = await start_server(llm=ScriptedLLM(LONG_REPLY), tts=await backend())
    call: Call = await open_call(s.target)
    await call.conversation.send_text("Hi")
    await call.wait_for(lambda c: bool(c.events(pb.AGENT_TURN_DONE)))
    error = call.of("error")[0]
    assert error.code == grpc.StatusCode.UNAVAILABLE.value[0] and needle in error.message, error
    await call.conversation.send_text("Again?")  # the provider is back
    await call.wait_for(lambda c: len(c.events(pb.AGENT_TURN_DONE)) == 2)
    assert call.of("audio") and len(call.of("error")) == 1
    assert not call.done.is_set()


async def test_missing_credentials_make_it_unavailable(
    start_server: StartServer, open_call, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GOOGLE_TTS_ENDPOINT", raising=False)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    s = await start_server()
    async with grpc.aio.insecure_channel(s.target) as channel:
        voices = (
            await pb_grpc.VoiceAgentStub(channel).ListVoices(pb.ListVoicesRequest(backend="google"))
        ).voices
    assert voices and {v.unavailable_reason for v in voices} == {
        "GOOGLE_APPLICATION_CREDENTIALS not set"
    }
    call: Call = await open_call(
        s.target, pb.SessionConfig(input_format=linear16(16000), tts_voice="en-US-Chirp3-HD-Kore")
    )
    await asyncio.wait_for(call.done.wait(), 5)
    assert call.status == grpc.StatusCode.FAILED_PRECONDITION
    assert "GOOGLE_APPLICATION_CREDENTIALS not set" in call.details


def test_a_refusal_hidden_by_the_grpc_write_race_is_retryable() -> None:
    assert retryable(google_errors.ServiceUnavailable("The service is currently unavailable."))
    assert retryable(google_errors.InternalServerError(LOCAL_WRITE_RACE))
    assert not retryable(google_errors.InternalServerError("a fault of the service"))
    assert not retryable(google_errors.InvalidArgument("Voice x does not support streaming."))
