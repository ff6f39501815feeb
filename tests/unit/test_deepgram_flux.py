"""Deepgram Flux STT against the local fake: protocol, turn events, threads, reconnects, faults."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import threading
import time
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from voiceagent.client import linear16
from voiceagent.v1 import voice_agent_pb2 as pb
from voiceagent.v1 import voice_agent_pb2_grpc as pb_grpc

from server.backends.base import BackendUnavailable
from server.backends.stt.base import TurnEventKind, TurnOptions, TurnUpdate
from server.backends.stt.deepgram_flux import (
    USER_AGENT,
    DeepgramFluxSTT,
    FluxConnection,
    FluxStream,
)
from tests.fakes.deepgram_flux import FakeFlux
from tests.unit.conftest import StartServer
from tests.unit.scripted import silence, tone

KEY = "test-deepgram-key"
K = TurnEventKind


@pytest.fixture
async def flux() -> AsyncIterator[FakeFlux]:
    fake = FakeFlux(transcripts=["what is the capital of france"], api_key=KEY)
    await fake.start()
    yield fake
    await fake.stop()


def backend(fake: FakeFlux, **connection: object) -> DeepgramFluxSTT:
    return DeepgramFluxSTT(FluxConnection(url=fake.url, api_key=KEY, **connection))  # type: ignore[arg-type]


async def push_audio(
    stream: FluxStream, pcm: np.ndarray, frame: int = 320, pace: float = 0.0
) -> None:
    for offset in range(0, len(pcm), frame):
        await stream.push(pcm[offset : offset + frame], time.monotonic())
        await asyncio.sleep(pace)


async def collect(
    stream: FluxStream, until: TurnEventKind, within: float = 5.0
) -> list[TurnUpdate]:
    events: list[TurnUpdate] = []

    async def run() -> None:
        async for event in stream.events():
            events.append(event)
            if event.kind == until:
                return

    await asyncio.wait_for(run(), within)
    return events


async def test_one_turn_follows_the_audio_and_the_handshake_is_flux(flux: FakeFlux) -> None:
    stream = backend(flux).open_stream(TurnOptions())
    speech = tone(1.0)
    await push_audio(stream, np.concatenate([silence(0.3), speech, silence(0.8)]))
    events = await collect(stream, K.END_OF_TURN)
    await stream.aclose()

    kinds = [e.kind for e in events]
    assert kinds[0] == K.START_OF_TURN and kinds[-1] == K.END_OF_TURN
    assert K.UPDATE in kinds and K.EAGER_END_OF_TURN not in kinds  # eager is off unless asked
    assert events[-1].transcript == "what is the capital of france"
    assert events[-1].speech_end is not None
    assert 0.25 <= events[0].audio_start <= 0.35  # where the tone starts in the stream
    handshake = flux.handshakes[0]
    assert handshake.path == "/v2/listen"
    assert handshake.query["model"] == ["flux-general-en"]
    assert handshake.query["encoding"] == ["linear16"] and handshake.query["sample_rate"] == [
        "16000"
    ]
    assert "eot_threshold" not in handshake.query and "eager_eot_threshold" not in handshake.query
    assert handshake.headers["Authorization"] == f"Token {KEY}"
    assert handshake.headers["User-Agent"] == USER_AGENT
    assert flux.controls[-1] == {"type": "CloseStream"}


async def test_thresholds_are_sent_when_set_and_eager_events_follow(flux: FakeFlux) -> None:
    options = TurnOptions(eot_threshold=0.8, eager_eot_threshold=0.5)
    stream = backend(flux).open_stream(options)
    # speech, a 300 ms pause (eager, then resumed), more speech, the end
    pcm = np.concatenate([tone(0.5), silence(0.3), tone(0.5), silence(0.8)])
    await push_audio(stream, pcm)
    events = await collect(stream, K.END_OF_TURN)
    await stream.aclose()
    assert flux.handshakes[0].query["eot_threshold"] == ["0.8"]
    assert flux.handshakes[0].query["eager_eot_threshold"] == ["0.5"]
    kinds = [e.kind for e in events]
    assert kinds.count(K.EAGER_END_OF_TURN) == 2 and K.TURN_RESUMED in kinds
    eager = [e for e in events if e.kind == K.EAGER_END_OF_TURN][-1]
    assert eager.transcript == events[-1].transcript  # Flux: EndOfTurn repeats the eager text


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


async def test_a_ten_minute_call_keeps_every_byte_in_order_and_leaks_nothing() -> None:
    """10 minutes of 20 ms frames pushed many times faster than real time."""
    flux = await FakeFlux(api_key=KEY, keep_audio=False).start()
    before = threading.active_count()
    stream = backend(flux).open_stream(TurnOptions())
    assert [t.name for t in threading.enumerate()].count("deepgram-flux") == 1
    rng = np.random.default_rng(7)
    noise = rng.integers(-50, 50, 60 * 16000).astype(np.int16)
    minute = np.concatenate([tone(2.0), silence(1.0)] * 20) + noise  # 20 turns a minute
    frames = [minute[k : k + 320].astype("<i2").tobytes() for k in range(0, len(minute), 320)]
    pcm = [np.frombuffer(f, dtype="<i2") for f in frames]
    sent = hashlib.sha256()
    turns, baseline = 0, 0
    for m in range(10):
        for k, frame in enumerate(pcm):
            await stream.push(frame, time.monotonic())
            sent.update(frames[k])
            if k % 50 == 0:
                await asyncio.sleep(0.01)  # 1 s of audio every ~10 ms of the loop's time
        while not stream._events.empty():
            item = stream._events.get_nowait()
            assert isinstance(item, TurnUpdate)
            turns += item.kind == K.END_OF_TURN
        if m == 1:
            gc.collect()
            baseline = rss_bytes()
    gc.collect()
    grown = rss_bytes() - baseline
    await stream.aclose()
    await flux.stop()
    # The stream's thread was joined: none left, and no more threads than before.
    assert "deepgram-flux" not in [t.name for t in threading.enumerate()]
    assert threading.active_count() <= before
    assert flux.received_bytes == 10 * len(minute) * 2
    assert flux.received_digest.digest() == sent.digest()  # every byte, in order, once
    assert turns >= 150  # 200 turns spoken; the last ones may still be in flight at close
    assert grown < 8_000_000, f"RSS grew by {grown} bytes over 8 minutes of audio"
    assert stream._dropped_bytes == 0


async def test_a_dropped_connection_reconnects_and_keeps_the_audio(flux: FakeFlux) -> None:
    stream = backend(flux, backoff=0.05).open_stream(TurnOptions())
    flux.faults.drop_after = 16000  # half a second into the first connection
    flux.faults.refuse_connections = 0
    pcm = np.concatenate([tone(1.0), silence(0.8), tone(1.0), silence(0.8)])
    await push_audio(stream, pcm, pace=0.002)
    events = await collect(stream, K.END_OF_TURN, within=10)
    more = await collect(stream, K.END_OF_TURN, within=10)
    await stream.aclose()
    assert stream.connections == 2
    sent = pcm.astype("<i2").tobytes()
    # Everything after the cut reached the new connection; what was in flight at the cut may be lost.
    assert bytes(flux.received).endswith(sent[-(len(sent) - 16000 - 2560) :])
    indexes = [e.turn_index for e in events + more if e.kind == K.END_OF_TURN]
    assert indexes == sorted(indexes) and len(set(indexes)) == len(indexes)
    starts = [e for e in events + more if e.kind == K.START_OF_TURN]
    assert starts[-1].audio_start > 1.5  # the audio clock goes on across connections


async def test_refused_reconnects_end_in_unavailable_not_a_hang(flux: FakeFlux) -> None:
    stream = backend(flux, backoff=0.01, retries=3).open_stream(TurnOptions())
    flux.faults.drop_after = 3200
    flux.faults.refuse_connections = 100
    await push_audio(stream, tone(0.5))
    with pytest.raises(BackendUnavailable, match="after 3 reconnects"):
        await collect(stream, K.END_OF_TURN, within=10)
    await stream.aclose()


@pytest.mark.parametrize("fault", ["error_after", "malformed_after"])
async def test_an_error_or_malformed_message_reconnects(flux: FakeFlux, fault: str) -> None:
    stream = backend(flux, backoff=0.01).open_stream(TurnOptions())
    setattr(flux.faults, fault, 6400)
    await push_audio(stream, np.concatenate([silence(0.5), tone(1.0), silence(0.8)]), pace=0.001)
    events = await collect(stream, K.END_OF_TURN, within=10)
    await stream.aclose()
    assert stream.connections == 2
    assert events[-1].transcript


async def test_a_refused_key_is_unavailable_at_once(flux: FakeFlux) -> None:
    stream = DeepgramFluxSTT(FluxConnection(url=flux.url, api_key="wrong")).open_stream(
        TurnOptions()
    )
    with pytest.raises(BackendUnavailable, match="HTTP 401"):
        await collect(stream, K.END_OF_TURN)
    await stream.aclose()
    assert len(flux.handshakes) == 1  # no retries for a refused key


async def test_a_converse_session_through_flux(
    flux: FakeFlux, start_server: StartServer, open_call, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEEPGRAM_API_KEY", KEY)
    s = await start_server(stt=backend(flux))
    call = await open_call(s.target, pb.SessionConfig(input_format=linear16(16000)))
    await call.wait_for(lambda c: bool(c.of("session_started")))
    assert call.of("session_started")[0].config.stt == "deepgram-flux"
    await call.send_pcm(np.concatenate([tone(0.8), silence(0.8)]))
    await call.wait_for(lambda c: len(c.of("metrics")) == 1)
    finals = [t for t in call.of("transcript") if t.is_final]
    assert finals[0].text == "what is the capital of france"
    assert finals[0].event == pb.END_OF_TURN
    assert s.llm.calls[-1][-1].content == "what is the capital of france"
    assert call.of("audio")
    metrics = call.of("metrics")[0]
    assert (
        400 <= metrics.stt_final_ms < 3000
    )  # Flux's end-of-turn silence, from the last voiced frame
    await call.conversation.hangup()
    await asyncio.wait_for(call.done.wait(), 5)
    assert call.status == grpc.StatusCode.OK


async def test_a_slow_flux_still_gives_every_event(flux: FakeFlux) -> None:
    flux.faults.delay = 0.03  # before every message the fake sends
    stream = backend(flux).open_stream(TurnOptions())
    await push_audio(stream, np.concatenate([tone(1.0), silence(0.8)]))
    events = await collect(stream, K.END_OF_TURN, within=10)
    await stream.aclose()
    assert events[0].kind == K.START_OF_TURN and events[-1].transcript


async def test_flux_gone_for_good_ends_the_session_with_unavailable(
    flux: FakeFlux, start_server: StartServer, open_call, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEEPGRAM_API_KEY", KEY)
    s = await start_server(stt=backend(flux, backoff=0.01, retries=2))
    call = await open_call(s.target, pb.SessionConfig(input_format=linear16(16000)))
    flux.faults.drop_after = 3200
    flux.faults.refuse_connections = 100
    sending = asyncio.create_task(call.send_pcm(tone(2.0)))
    await asyncio.wait_for(call.done.wait(), 10)
    sending.cancel()
    assert call.status == grpc.StatusCode.UNAVAILABLE
    assert "Deepgram Flux unavailable after 2 reconnects" in call.details
    assert call.of("error")[0].code == grpc.StatusCode.UNAVAILABLE.value[0]


async def test_a_missing_key_is_unavailable_with_the_reason(
    start_server: StartServer, open_call, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DEEPGRAM_API_KEY", raising=False)
    s = await start_server()
    async with grpc.aio.insecure_channel(s.target) as channel:
        api = pb_grpc.VoiceAgentStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await api.UpdateConfig(
                pb.UpdateConfigRequest(
                    config=pb.Config(stt="deepgram-flux"), update_mask=FieldMask(paths=["stt"])
                )
            )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "DEEPGRAM_API_KEY not set" in (refused.value.details() or "")
    call = await open_call(
        s.target, pb.SessionConfig(input_format=linear16(16000), stt="deepgram-flux")
    )
    await asyncio.wait_for(call.done.wait(), 5)
    assert call.status == grpc.StatusCode.FAILED_PRECONDITION
    assert "DEEPGRAM_API_KEY not set" in call.details
