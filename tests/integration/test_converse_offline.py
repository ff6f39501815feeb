"""Converse end to end with the real offline stack: Silero + Whisper, llama.cpp, Piper."""

from __future__ import annotations

import asyncio
import threading

import grpc
import numpy as np
from voiceagent.v1 import voice_agent_pb2 as pb

from server.main import VoiceAgentServer
from tests.conftest import Call
from tests.integration.conftest import pause, speak

TIMEOUT = 60


def target(server: VoiceAgentServer) -> str:
    return f"127.0.0.1:{server.port}"


def rms(audio: bytes) -> float:
    pcm = np.frombuffer(audio, dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(pcm**2))) if len(pcm) else 0.0


async def test_spoken_question_gets_transcript_reply_and_metrics(offline_server, open_call) -> None:
    call: Call = await open_call(target(offline_server))
    await call.send_pcm(
        np.concatenate(
            [pause(0.3), speak("What is the weather in Paris today?", varied=False), pause(1.5)]
        )
    )
    await call.wait_for(lambda c: len(c.of("metrics")) == 1, within=TIMEOUT)
    final = next(t for t in call.of("transcript") if t.is_final)
    assert "weather" in final.text.lower() and "paris" in final.text.lower(), final.text
    assert any(t.event == 2 and t.text for t in call.of("transcript")), "no interim transcript"
    reply = b"".join(a.audio for a in call.of("audio"))
    assert len(reply) / 2 / 16000 > 0.5, "reply shorter than half a second"
    assert rms(reply) > 300, "reply is silent"
    assert call.finals()[0].text
    m = call.of("metrics")[0]
    assert (
        0 < m.stt_final_ms
        and 0 < m.llm_first_token_ms <= m.tts_first_audio_ms <= m.voice_to_voice_ms
    )
    assert m.voice_to_voice_ms < 10_000


async def test_a_500_ms_hesitation_is_one_turn_in_silence_mode(offline_server, open_call) -> None:
    silence_only = pb.TurnDetection(mode=pb.TURN_DETECTION_SILENCE)
    config = pb.SessionConfig(
        input_format=pb.AudioFormat(encoding=pb.LINEAR16, sample_rate_hertz=16000),
        turn_detection=silence_only,
    )
    call: Call = await open_call(target(offline_server), config)
    audio = np.concatenate(
        [
            pause(0.3),
            speak("I would like to know", varied=False),
            pause(0.5),
            speak("the weather in Paris today.", varied=False),
            pause(1.5),
        ]
    )
    await call.send_pcm(audio)
    await call.wait_for(lambda c: len(c.of("metrics")) >= 1, within=TIMEOUT)
    await asyncio.sleep(1.0)
    finals = [t for t in call.of("transcript") if t.is_final]
    assert len(finals) == 1, [t.text for t in finals]
    assert "paris" in finals[0].text.lower() and "know" in finals[0].text.lower(), finals[0].text
    assert len([t for t in call.of("transcript") if t.event == 1]) == 1  # one START_OF_TURN


async def test_two_questions_three_seconds_apart_are_two_turns(offline_server, open_call) -> None:
    call: Call = await open_call(target(offline_server))
    audio = np.concatenate(
        [
            pause(0.3),
            speak("What is the weather in Paris today?", varied=False),
            pause(3.0),
            speak("And what about Germany?", varied=False),
            pause(1.5),
        ]
    )
    await call.send_pcm(audio)
    await call.wait_for(
        lambda c: len([t for t in c.of("transcript") if t.is_final]) == 2, within=TIMEOUT
    )
    finals = [t for t in call.of("transcript") if t.is_final]
    assert [t.turn_index for t in finals] == [0, 1]
    assert "germany" in finals[1].text.lower(), finals[1].text
    await call.wait_for(
        lambda c: len([a for a in c.finals() if a.turn_id == 2]) == 1, within=TIMEOUT
    )


async def test_bad_first_message_gets_invalid_argument(offline_server, open_call) -> None:
    from voiceagent.v1 import voice_agent_pb2 as pb

    call: Call = await open_call(target(offline_server), pb.SessionConfig())
    await asyncio.wait_for(call.done.wait(), 10)
    assert call.status == grpc.StatusCode.INVALID_ARGUMENT
    assert "LINEAR16" in call.details


async def test_client_disconnect_mid_turn_leaves_no_running_task(offline_server, open_call) -> None:
    call: Call = await open_call(target(offline_server))
    await call.conversation.send_text("Tell me a long story about a dragon and a knight.")
    await call.wait_for(lambda c: bool(c.of("agent_text")), within=TIMEOUT)
    prefix = call.of("session_started")[0].session_id[:8]
    call.conversation._call.cancel()  # type: ignore[union-attr]
    for _ in range(200):
        leftover = [t for t in asyncio.all_tasks() if t.get_name().startswith(prefix)]
        if not leftover and not offline_server.service.admission.sessions:
            break
        await asyncio.sleep(0.02)
    assert not offline_server.service.admission.sessions
    assert [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith(prefix)] == []
    # The inference threads are the models' own long-lived workers; no new ones were left.
    names = [t.name for t in threading.enumerate()]
    assert len([n for n in names if n.startswith("llama")]) <= 1
    assert len([n for n in names if n.startswith("piper")]) <= 1


async def test_barge_in_over_the_real_agent(offline_server, open_call) -> None:
    call: Call = await open_call(target(offline_server))
    await call.conversation.send_text(
        "Tell me a long story about a dragon and a knight, with many details."
    )
    await call.wait_for(lambda c: len(c.of("audio")) >= 5, within=TIMEOUT)
    await call.send_pcm(np.concatenate([speak("Wait, stop please."), pause(1.5)]))
    await call.wait_for(lambda c: bool(c.events(pb.BARGE_IN)), within=TIMEOUT)
    await call.wait_for(
        lambda c: any(m.HasField("barge_in_stop_ms") for m in c.of("metrics")), within=10
    )
    stop = next(m for m in call.of("metrics") if m.HasField("barge_in_stop_ms"))
    # from the first voiced frame, through the first words ("Wait"): a generous bound
    assert stop.barge_in_stop_ms < 1500
    heard = [t for t in call.finals() if t.turn_id == 1][-1].text  # the last final: as heard
    # "Wait," may end a turn of its own (heard as an acknowledgement when misheard, "way."):
    # the interruption is the turn that says "stop"
    await call.wait_for(
        lambda c: any(t.is_final and "stop" in t.text.lower() for t in c.of("transcript")),
        within=TIMEOUT,
    )
    # What the caller heard is in the session's history for the next turn.
    session = next(iter(offline_server.service.admission.sessions))
    assert next(m.content for m in session.history if m.role == "assistant") == heard
