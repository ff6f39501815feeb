"""One Converse session with every stage on a cloud backend, each against its local fake."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest
from voiceagent.client import linear16
from voiceagent.v1 import voice_agent_pb2 as pb

from server.backends.llm.openai import OpenAIConfig, OpenAILLM
from server.backends.stt.deepgram_flux import DeepgramFluxSTT, FluxConnection
from server.backends.tts.base import TTS
from server.backends.tts.cartesia import CartesiaConfig, CartesiaTTS
from server.backends.tts.google import GoogleTTS
from tests.conftest import Call
from tests.fakes.cartesia import FakeCartesia
from tests.fakes.deepgram_flux import FakeFlux
from tests.fakes.google_tts import FakeGoogleTTS
from tests.fakes.openai_chat import FakeChatCompletions
from tests.unit.conftest import Scripted, StartServer
from tests.unit.scripted import silence, tone

QUESTION = "what is the capital of france"
ANSWER = "Paris, of course."


class Fakes:
    flux: FakeFlux
    llm: FakeChatCompletions
    cartesia: FakeCartesia
    google: FakeGoogleTTS


@pytest.fixture
async def fakes(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Fakes]:
    f = Fakes()
    f.flux = await FakeFlux(transcripts=[QUESTION, "thank you"], api_key="dg").start()
    f.llm = await FakeChatCompletions(api_key="llm", reply=ANSWER).start()
    f.cartesia = await FakeCartesia(api_key="car").start()
    f.google = await FakeGoogleTTS().start()
    for name, value in {
        "DEEPGRAM_API_KEY": "dg",
        "LLM_API_KEY": "llm",
        "CARTESIA_API_KEY": "car",
        "GOOGLE_TTS_ENDPOINT": f.google.endpoint,
    }.items():
        monkeypatch.setenv(name, value)
    yield f
    for fake in (f.flux, f.llm, f.cartesia, f.google):
        await fake.stop()


async def cloud_server(start_server: StartServer, f: Fakes, tts_name: str) -> Scripted:
    stt = DeepgramFluxSTT(FluxConnection(url=f.flux.url, api_key="dg"))
    llm = OpenAILLM(OpenAIConfig(base_url=f.llm.base_url, api_key="llm", models=f.llm.models))
    tts: TTS = (
        CartesiaTTS(CartesiaConfig(url=f.cartesia.url, api_key="car"))
        if tts_name == "cartesia"
        else GoogleTTS()
    )
    for backend in (llm, tts):
        await backend.load()
    return await start_server(stt=stt, llm=llm, tts=tts)


@pytest.mark.parametrize("tts_name", ["cartesia", "google"])
async def test_two_spoken_turns_all_in_the_cloud(
    fakes: Fakes, start_server: StartServer, open_call, tts_name: str
) -> None:
    s = await cloud_server(start_server, fakes, tts_name)
    call: Call = await open_call(s.target, pb.SessionConfig(input_format=linear16(16000)))
    await call.wait_for(lambda c: bool(c.of("session_started")))
    config = call.of("session_started")[0].config
    assert (config.stt, config.llm, config.tts) == ("deepgram-flux", "openai", tts_name)
    await call.send_pcm(np.concatenate([tone(1.0), silence(0.8)]))
    await call.wait_for(lambda c: len(c.events(pb.AGENT_TURN_DONE)) == 1, within=10)
    await asyncio.sleep(sum(len(a.audio) for a in call.of("audio")) / 32000)  # let it play
    await call.send_pcm(np.concatenate([tone(0.6), silence(0.8)]))
    await call.wait_for(lambda c: len(c.events(pb.AGENT_TURN_DONE)) == 2, within=10)

    finals = [t.text for t in call.of("transcript") if t.is_final]
    assert finals == [QUESTION, "thank you"]
    assert [t.text for t in call.finals()] == [ANSWER, ANSWER]
    history = fakes.llm.requests[-1]["messages"]
    assert [(m["role"], m["content"]) for m in history[1:]] == [
        ("user", QUESTION),
        ("assistant", ANSWER),
        ("user", "thank you"),
    ]
    assert not call.events(pb.BARGE_IN)
    audio = sum(len(a.audio) for a in call.of("audio")) / 32000
    assert audio == pytest.approx(2 * 0.06 * len(ANSWER), rel=0.1)  # both answers, spoken
    for metrics in call.of("metrics"):
        assert 0 < metrics.stt_final_ms <= metrics.llm_first_token_ms <= metrics.voice_to_voice_ms
    await call.conversation.hangup()
    await asyncio.wait_for(call.done.wait(), 5)
    assert call.status == grpc.StatusCode.OK


async def test_flux_thresholds_come_from_the_session_config(
    fakes: Fakes, start_server: StartServer, open_call
) -> None:
    s = await cloud_server(start_server, fakes, "cartesia")
    detection = pb.TurnDetection(eot_threshold=0.8, eager_eot_threshold=0.5)
    call: Call = await open_call(
        s.target, pb.SessionConfig(input_format=linear16(16000), turn_detection=detection)
    )
    await call.send_pcm(np.concatenate([tone(1.0), silence(0.8)]))
    await call.wait_for(lambda c: len(c.of("metrics")) == 1, within=10)
    query = fakes.flux.handshakes[-1].query
    assert (query["eot_threshold"], query["eager_eot_threshold"]) == (["0.8"], ["0.5"])
    events = [t.event for t in call.of("transcript")]
    assert pb.EAGER_END_OF_TURN in events  # Flux's eager events drive the speculative answer
    assert len(fakes.llm.requests) == 1  # the eager answer was the one committed

    bad = await open_call(
        s.target,
        pb.SessionConfig(
            input_format=linear16(16000), turn_detection=pb.TurnDetection(eot_threshold=0.2)
        ),
    )
    await asyncio.wait_for(bad.done.wait(), 5)
    assert bad.status == grpc.StatusCode.INVALID_ARGUMENT
    assert "config.turn_detection.eot_threshold is 0.2" in bad.details
