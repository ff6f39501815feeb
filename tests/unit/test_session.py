"""The Converse pipeline through the real servicer and session, with scripted backends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import grpc
import numpy as np
import pytest
from voiceagent.client import linear16
from voiceagent.v1 import voice_agent_pb2 as pb

from server import audio
from server.backends import registry
from server.backends.base import BackendUnavailable
from server.backends.llm.base import ChatMessage, ToolCall
from server.tools.spec import ToolSpec
from tests.conftest import Call
from tests.unit.conftest import StartServer
from tests.unit.scripted import (
    ACK_HZ,
    HUM_HZ,
    HUM_WORDS,
    LOW_HZ,
    ScriptedLLM,
    ScriptedTTS,
    silence,
    tone,
)

LONG_REPLY = " ".join(f"word{i}." if i % 6 == 5 else f"word{i}" for i in range(30))


def config(**fields: object) -> pb.SessionConfig:
    return pb.SessionConfig(input_format=linear16(16000), **fields)  # type: ignore[arg-type]


async def rejected(open_call, target: str, first: pb.ConverseRequest | None) -> Call:
    call: Call = await open_call(target, pb.SessionConfig())
    # Replace the queued config with the message under test.
    call.conversation._outbox.get_nowait()
    if first is not None:
        await call.conversation._outbox.put(first)
    await call.conversation.close_input()
    await asyncio.wait_for(call.done.wait(), 5)
    return call


async def test_first_message_must_be_config(start_server: StartServer, open_call) -> None:
    s = await start_server()
    call = await rejected(open_call, s.target, pb.ConverseRequest(audio=b"\0\0"))
    assert call.status == grpc.StatusCode.INVALID_ARGUMENT
    assert "first ConverseRequest must be `config`" in call.details


async def test_empty_stream_is_invalid(start_server: StartServer, open_call) -> None:
    s = await start_server()
    call = await rejected(open_call, s.target, None)
    assert call.status == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("session_config", "code", "needle"),
    [
        (pb.SessionConfig(input_format=linear16(44100)), grpc.StatusCode.INVALID_ARGUMENT, "44100"),
        (
            pb.SessionConfig(
                input_format=pb.AudioFormat(encoding=pb.MULAW, sample_rate_hertz=16000)
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "MULAW",
        ),
        (pb.SessionConfig(), grpc.StatusCode.INVALID_ARGUMENT, "LINEAR16, MULAW, ALAW"),
        (config(output_format=linear16(11025)), grpc.StatusCode.INVALID_ARGUMENT, "output_format"),
        (config(stt="nope"), grpc.StatusCode.NOT_FOUND, "unknown stt backend 'nope'"),
        (config(tts_voice="tenor"), grpc.StatusCode.NOT_FOUND, "alto, bass"),
        (config(llm_model="gpt-9"), grpc.StatusCode.NOT_FOUND, "gpt-9"),
        (config(campaign_id="c-1"), grpc.StatusCode.NOT_FOUND, "campaign"),
        (
            config(turn_detection=pb.TurnDetection(end_of_turn_silence_ms=99999)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "end_of_turn_silence_ms",
        ),
    ],
)
async def test_bad_config_gets_a_clear_status(
    start_server: StartServer,
    open_call,
    session_config: pb.SessionConfig,
    code: grpc.StatusCode,
    needle: str,
) -> None:
    s = await start_server()
    call = await rejected(open_call, s.target, pb.ConverseRequest(config=session_config))
    assert call.status == code
    assert needle in call.details


async def test_typed_turns_stream_text_audio_metrics_and_keep_history(
    start_server: StartServer, open_call
) -> None:
    s = await start_server(llm=ScriptedLLM("Paris is the capital, of course. Anything else?"))
    call: Call = await open_call(s.target, config(output_format=linear16(24000)))
    await call.conversation.send_text("What is the capital of France?")
    await call.wait_for(lambda c: len(c.of("metrics")) == 1)
    started = call.of("session_started")[0]
    assert started.config.llm_model == "scripted-small" and started.config.tts_voice == "alto"
    final = call.finals()[0]
    assert final.text == "Paris is the capital, of course. Anything else?"
    assert "".join(t.delta for t in call.of("agent_text")) == final.text
    # one text message per sentence piece (3: "Paris is the capital,", "of course.",
    # "Anything else?"), not one per token (8), then the final
    assert len(call.of("agent_text")) == 3 + 1
    # 8 words at 0.1 s each, at 24 kHz LINEAR16
    audio_bytes = sum(len(a.audio) for a in call.of("audio"))
    assert abs(audio_bytes - 8 * 0.1 * 24000 * 2) < 200
    assert s.tts.texts[0] == "Paris is the capital,"  # first clause spoken on its own
    metrics = call.of("metrics")[0]
    assert metrics.from_text and metrics.turn_id == 1
    assert 0 < metrics.llm_first_token_ms <= metrics.tts_first_audio_ms <= metrics.voice_to_voice_ms

    await call.conversation.send_text("And Germany?")
    await call.wait_for(lambda c: len(c.of("metrics")) == 2)
    roles = [(m.role, m.content) for m in s.llm.calls[-1]]
    assert roles[1:] == [
        ("user", "What is the capital of France?"),
        ("assistant", "Paris is the capital, of course. Anything else?"),
        ("user", "And Germany?"),
    ]
    assert roles[0][0] == "system"


async def test_spoken_turn_in_mulaw_8k(start_server: StartServer, open_call) -> None:
    s = await start_server()
    mulaw = pb.AudioFormat(encoding=pb.MULAW, sample_rate_hertz=8000)
    call: Call = await open_call(s.target, pb.SessionConfig(input_format=mulaw))
    await call.send_pcm(
        np.concatenate([silence(0.2, 8000), tone(1.0, 8000), silence(1.0, 8000)]),
        8000,
        lambda p: audio.encode(p, pb.MULAW),
    )
    await call.wait_for(lambda c: len(c.of("metrics")) == 1)
    events = [t.event for t in call.of("transcript") if t.event != pb.UPDATE]
    # complete: no wait for the eager silence (an EAGER from the last interim may come first)
    assert events in (
        [pb.START_OF_TURN, pb.END_OF_TURN],
        [pb.START_OF_TURN, pb.EAGER_END_OF_TURN, pb.END_OF_TURN],
    )
    end = call.of("transcript")[-1]
    assert end.is_final and end.text.startswith("said ")
    assert s.llm.calls[-1][-1].content == end.text
    # "Sure. Here is my answer to that." = 7 words of 0.1 s, mu-law at 8 kHz: one byte a sample
    assert abs(sum(len(a.audio) for a in call.of("audio")) - 5600) < 50
    m = call.of("metrics")[0]
    assert not m.from_text
    assert 0 < m.stt_final_ms <= m.voice_to_voice_ms
    assert m.llm_first_token_ms <= m.tts_first_audio_ms <= m.voice_to_voice_ms
    # semantic turn detection (the default): a complete turn ends after a short silence (the
    # least is 128 ms), not the 640 ms of silence-only detection
    assert 100 <= m.voice_to_voice_ms < 600


async def test_the_llm_reads_the_callers_words_as_they_are_heard(
    start_server: StartServer, open_call
) -> None:
    s = await start_server()
    call: Call = await open_call(s.target, config())
    await call.send_pcm(np.concatenate([silence(0.2), tone(1.5), silence(1.0)]))
    await call.wait_for(lambda c: len(c.of("metrics")) == 1)
    interims = [t.text for t in call.of("transcript") if t.event == pb.UPDATE]
    heard = [h for h in s.llm.heard if h]  # a warm-up the answer overtook never ran
    assert heard and set(heard) <= set(interims)


async def test_silence_mode_holds_the_answer_until_the_end_of_turn_silence(
    start_server: StartServer, open_call
) -> None:
    s = await start_server()
    silence_only = pb.TurnDetection(mode=pb.TURN_DETECTION_SILENCE)
    call: Call = await open_call(s.target, config(turn_detection=silence_only))
    await call.send_pcm(np.concatenate([silence(0.2), tone(1.0), silence(1.0)]))
    await call.wait_for(lambda c: len(c.of("metrics")) == 1)
    started = call.of("session_started")[0]
    assert started.config.turn_detection.mode == pb.TURN_DETECTION_SILENCE
    assert started.config.turn_detection.end_of_turn_silence_ms == 640
    assert call.of("metrics")[0].voice_to_voice_ms >= 600


async def test_agent_greets_first(start_server: StartServer, open_call) -> None:
    s = await start_server()
    call: Call = await open_call(s.target, config(greeting="Hello, thanks for calling."))
    await call.wait_for(lambda c: len(c.events(pb.AGENT_TURN_DONE)) == 1)
    kinds = [r.WhichOneof("response") for r in call.responses]
    assert kinds[0] == "session_started" and kinds[1] == "agent_text"
    assert call.finals()[0].text == "Hello, thanks for calling." and call.finals()[0].turn_id == 0
    assert call.of("audio") and not call.of("metrics")
    assert s.llm.calls == []


async def test_barge_in_stops_the_agent_and_keeps_only_what_was_heard(
    start_server: StartServer, open_call
) -> None:
    llm = ScriptedLLM(LONG_REPLY, token_delay=0.06)  # 30 words over ~1.8 s
    tts = ScriptedTTS(seconds_per_word=0.1, speed=20)
    s = await start_server(llm=llm, tts=tts)
    any_speech = pb.TurnDetection(barge_in_on_any_speech=True)
    call: Call = await open_call(s.target, config(turn_detection=any_speech))
    await call.conversation.send_text("Tell me a long story.")
    await call.wait_for(lambda c: bool(c.of("audio")))
    await asyncio.sleep(0.5)
    speaking = asyncio.create_task(call.send_pcm(np.concatenate([tone(0.4), silence(1.0)])))
    await call.wait_for(lambda c: bool(c.events(pb.BARGE_IN)))
    await call.wait_for(lambda c: any(m.HasField("barge_in_stop_ms") for m in c.of("metrics")))
    metrics = next(m for m in call.of("metrics") if m.HasField("barge_in_stop_ms"))
    # from the first voiced frame: 96 ms of speech start a turn, then the agent stops
    assert 90 <= metrics.barge_in_stop_ms < 250
    assert llm.closed_early == 1  # the LLM stream was cancelled mid-reply
    audio_after = len(call.of("audio"))
    heard = call.finals()[0].text
    assert 0 < len(heard.split()) < 15, heard
    assert LONG_REPLY.startswith(heard)
    await asyncio.sleep(0.3)
    assert len(call.of("audio")) == audio_after  # nothing more of the cut turn
    # The next turn's history holds what was heard, not the whole reply.
    llm.token_delay = 0.001
    await call.wait_for(
        lambda c: any(t.event == pb.END_OF_TURN for t in c.of("transcript")), within=5
    )
    await call.wait_for(lambda c: len(llm.calls) == 2)
    assert [(m.role, m.content) for m in llm.calls[1][1:3]] == [
        ("user", "Tell me a long story."),
        ("assistant", heard),
    ]
    await speaking


async def test_barge_in_during_playback_after_generation_truncates_history(
    start_server: StartServer, open_call
) -> None:
    llm = ScriptedLLM(LONG_REPLY, token_delay=0.001)
    s = await start_server(llm=llm, tts=ScriptedTTS(seconds_per_word=0.1, speed=100))
    call: Call = await open_call(s.target)
    await call.conversation.send_text("Go on.")
    await call.wait_for(lambda c: len(c.of("metrics")) == 1)  # all 3 s of audio sent already
    await asyncio.sleep(0.6)
    await call.send_pcm(tone(0.6))  # "said 18 windows": as many letters as 0.6 s can hold
    await call.wait_for(lambda c: bool(c.events(pb.BARGE_IN)))
    await call.conversation.send_text("Stop.")
    await call.wait_for(lambda c: len(llm.calls) == 2)
    said = llm.calls[1][2].content
    assert said and LONG_REPLY.startswith(said) and len(said.split()) < 20, said


async def test_speculative_answer_waits_for_the_end_of_turn(
    start_server: StartServer, open_call
) -> None:
    s = await start_server()
    silence_only = pb.TurnDetection(mode=pb.TURN_DETECTION_SILENCE)
    call: Call = await open_call(s.target, config(turn_detection=silence_only))
    await call.send_pcm(np.concatenate([tone(0.8), silence(0.45), tone(0.8), silence(1.0)]))
    await call.wait_for(lambda c: len(c.of("metrics")) == 1)
    events = [
        (
            r.transcript.event
            if r.WhichOneof("response") == "transcript"
            else r.WhichOneof("response")
        )
        for r in call.responses
    ]
    assert pb.TURN_RESUMED in events
    first_agent_output = min(i for i, e in enumerate(events) if e in ("agent_text", "audio"))
    assert events.index(pb.END_OF_TURN) < first_agent_output
    final_transcript = next(t for t in call.of("transcript") if t.is_final).text
    assert s.llm.calls[-1][-1].content == final_transcript
    assert len(s.llm.calls) == 2  # the speculative call on the pause, then the real one
    assert len(call.finals()) == 1


async def test_a_pause_that_sounds_unfinished_is_one_turn(
    start_server: StartServer, open_call
) -> None:
    s = await start_server()
    call: Call = await open_call(s.target)
    # a phrase that trails off on a low pitch, 1.2 s of silence, then the rest
    first = np.concatenate([tone(0.6), tone(0.2, freq=LOW_HZ)])
    await call.send_pcm(np.concatenate([first, silence(1.2), tone(0.8), silence(1.0)]))
    await call.wait_for(lambda c: len(c.of("metrics")) == 1)
    ends = [t for t in call.of("transcript") if t.event == pb.END_OF_TURN]
    assert len(ends) == 1 and ends[0].audio_window_end_ms > 2000
    assert int(ends[0].text.split()[1]) >= 45  # both parts: ~50 voiced windows
    assert len(call.finals()) == 1


async def test_speech_before_the_answer_is_heard_is_answered_with_the_turn_before(
    start_server: StartServer, open_call
) -> None:
    """The turn ended at a pause, and the caller went on before any of the answer was sent:
    that answer is dropped unheard, and one answer goes to both parts' words."""
    from prometheus_client import REGISTRY

    def dropped_so_far() -> float:
        return REGISTRY.get_sample_value("voice_agent_unheard_answers_dropped_total") or 0.0

    llm = ScriptedLLM("First words of a slow answer.", token_delay=0.25)
    s = await start_server(llm=llm)
    before = dropped_so_far()
    call: Call = await open_call(s.target)
    # a complete-sounding first part, a 0.35 s pause (past the end of turn), then more words
    await call.send_pcm(np.concatenate([tone(0.6), silence(0.35), tone(0.8), silence(1.5)]))
    await call.wait_for(lambda c: len(c.of("metrics")) == 1, within=10)
    ends = [t for t in call.of("transcript") if t.event == pb.END_OF_TURN]
    assert len(ends) == 2  # the turn detector did end the turn at the pause
    dropped = call.events(pb.BARGE_IN)
    assert len(dropped) == 1 and "before the answer was heard" in dropped[0].message
    assert not [a for a in call.of("audio") if a.turn_id == dropped[0].turn_id]
    answered = {a.turn_id for a in call.of("audio")}
    assert len(answered) == 1 and dropped[0].turn_id not in answered
    both = f"{ends[0].text} {ends[1].text}"
    assert llm.calls[-1][-1] == ChatMessage("user", both)
    assert [m.role for m in llm.calls[-1]] == ["system", "user"]  # no trace of the dropped one
    assert [f.text for f in call.finals() if f.turn_id == dropped[0].turn_id] == [""]
    assert dropped_so_far() == before + 1


async def test_an_unfinished_turn_still_ends_at_the_maximum_silence(
    start_server: StartServer, open_call
) -> None:
    s = await start_server()
    detection = pb.TurnDetection(max_silence_ms=900)
    call: Call = await open_call(s.target, config(turn_detection=detection))
    started = asyncio.get_running_loop().time()
    await call.send_pcm(np.concatenate([tone(0.6), tone(0.2, freq=LOW_HZ), silence(1.5)]))
    await call.wait_for(lambda c: len(c.of("metrics")) == 1)
    m = call.of("metrics")[0]
    assert 850 <= m.voice_to_voice_ms < 1400, m  # held to 900 ms of silence, not longer
    assert asyncio.get_running_loop().time() - started < 5


async def long_greeting_call(start_server: StartServer, open_call, **detection: object) -> Call:
    tts = ScriptedTTS(seconds_per_word=0.2, speed=100)  # 24 words: ~5 s, rendered at once
    s = await start_server(tts=tts)
    greeting = " ".join(f"word{i}" for i in range(24)) + "."
    turn_detection = pb.TurnDetection(**detection)  # type: ignore[arg-type]
    call: Call = await open_call(s.target, config(greeting=greeting, turn_detection=turn_detection))
    await call.wait_for(lambda c: bool(c.of("audio")))
    await asyncio.sleep(1.0)
    return call


async def test_an_acknowledgement_while_the_agent_talks_does_not_interrupt_it(
    start_server: StartServer, open_call
) -> None:
    call = await long_greeting_call(start_server, open_call)
    await call.send_pcm(np.concatenate([tone(0.4, freq=ACK_HZ), silence(1.0)]))
    await call.wait_for(lambda c: bool(c.events(pb.BACKCHANNEL)))
    assert "Uh-huh." in call.events(pb.BACKCHANNEL)[0].message
    await call.wait_for(lambda c: bool(c.events(pb.AGENT_TURN_DONE)), within=8)
    assert not call.events(pb.BARGE_IN)
    assert [f.turn_id for f in call.finals()] == [0]  # the greeting, whole; no answer to it
    assert call.finals()[0].text.endswith("word23.")


async def test_words_the_recognizer_was_unsure_of_do_not_interrupt_the_agent(
    start_server: StartServer, open_call
) -> None:
    """A short hum heard as three words at a low log probability ("In a month." for
    "mm-hmm"): an acknowledgement, not an interruption."""
    call = await long_greeting_call(start_server, open_call)
    await call.send_pcm(np.concatenate([tone(0.45, freq=HUM_HZ), silence(1.0)]))
    await call.wait_for(lambda c: bool(c.events(pb.BACKCHANNEL)))
    assert HUM_WORDS.text in call.events(pb.BACKCHANNEL)[0].message
    await call.wait_for(lambda c: bool(c.events(pb.AGENT_TURN_DONE)), within=8)
    assert not call.events(pb.BARGE_IN)
    assert [f.turn_id for f in call.finals()] == [0]


async def test_words_over_the_agent_interrupt_it(start_server: StartServer, open_call) -> None:
    call = await long_greeting_call(start_server, open_call)
    await call.send_pcm(np.concatenate([tone(0.7), silence(1.0)]))
    await call.wait_for(lambda c: bool(c.events(pb.BARGE_IN)))
    await call.wait_for(lambda c: any(m.HasField("barge_in_stop_ms") for m in c.of("metrics")))
    stop = next(m for m in call.of("metrics") if m.HasField("barge_in_stop_ms"))
    # the first words are transcribed after ~190 ms of speech: they are no acknowledgement
    assert 150 <= stop.barge_in_stop_ms < 600, stop
    # the greeting (all written, then its text as heard), then the answer
    await call.wait_for(lambda c: [f.turn_id > 0 for f in c.finals()] == [False, False, True])
    assert "word23" not in call.finals()[1].text
    assert not call.events(pb.BACKCHANNEL)


async def test_long_speech_over_the_agent_interrupts_it_whatever_the_words(
    start_server: StartServer, open_call
) -> None:
    call = await long_greeting_call(start_server, open_call)
    await call.send_pcm(np.concatenate([tone(1.8, freq=ACK_HZ), silence(1.0)]))
    await call.wait_for(lambda c: bool(c.events(pb.BARGE_IN)))
    assert not call.events(pb.BACKCHANNEL)


async def test_barge_in_on_any_speech_stops_the_agent_for_an_acknowledgement(
    start_server: StartServer, open_call
) -> None:
    call = await long_greeting_call(start_server, open_call, barge_in_on_any_speech=True)
    await call.send_pcm(np.concatenate([tone(0.4, freq=ACK_HZ), silence(1.0)]))
    await call.wait_for(lambda c: bool(c.events(pb.BARGE_IN)))
    assert not call.events(pb.BACKCHANNEL)


async def test_config_update_applies_to_the_next_turn(start_server: StartServer, open_call) -> None:
    s = await start_server()
    call: Call = await open_call(s.target)
    await call.conversation.update(tts_voice="bass", llm_model="scripted-large")
    await call.wait_for(lambda c: bool(c.events(pb.CONFIG_APPLIED)))
    assert "tts_voice=bass" in call.events(pb.CONFIG_APPLIED)[0].message
    await call.conversation.update(tts_voice="tenor")
    await call.wait_for(lambda c: bool(c.of("error")))
    assert call.of("error")[0].code == grpc.StatusCode.NOT_FOUND.value[0]
    await call.conversation.send_text("Hi")
    await call.wait_for(lambda c: len(c.of("metrics")) == 1)
    assert set(s.tts.voices_used) == {"bass"}


async def test_client_disconnect_mid_turn_leaves_no_task_behind(
    start_server: StartServer, open_call
) -> None:
    s = await start_server(llm=ScriptedLLM(LONG_REPLY, token_delay=0.05))
    call: Call = await open_call(s.target)
    await call.conversation.send_text("Talk for a while.")
    await call.wait_for(lambda c: bool(c.of("agent_text")))
    prefix = call.of("session_started")[0].session_id[:8]
    assert any(t.get_name().startswith(prefix) for t in asyncio.all_tasks())
    call.conversation._call.cancel()  # type: ignore[union-attr]
    for _ in range(100):
        if not s.server.service.admission.sessions and not any(
            t.get_name().startswith(prefix) for t in asyncio.all_tasks()
        ):
            break
        await asyncio.sleep(0.02)
    assert not s.server.service.admission.sessions
    assert [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith(prefix)] == []
    assert s.llm.closed_early == 1


async def test_half_close_lets_the_agent_finish(start_server: StartServer, open_call) -> None:
    s = await start_server()
    call: Call = await open_call(s.target)
    await call.conversation.send_text("Hello?")
    await call.conversation.close_input()
    await asyncio.wait_for(call.done.wait(), 5)
    assert call.status == grpc.StatusCode.OK
    assert call.finals()[0].text == s.llm.reply


async def test_config_mid_stream_is_rejected(start_server: StartServer, open_call) -> None:
    s = await start_server()
    call: Call = await open_call(s.target)
    await call.conversation._outbox.put(pb.ConverseRequest(config=config()))
    await asyncio.wait_for(call.done.wait(), 5)
    assert call.status == grpc.StatusCode.INVALID_ARGUMENT
    assert "only accepted as the first message" in call.details
    assert call.of("error")


async def test_session_limit(start_server: StartServer, open_call) -> None:
    s = await start_server(max_sessions=1)
    first: Call = await open_call(s.target)
    await first.wait_for(lambda c: bool(c.of("session_started")))
    # Refused after its config is read: one refused while writing it would be reported
    # INTERNAL by grpc.aio (grpc/grpc#36066). A race, so many refusals.
    for _ in range(20):
        second: Call = await open_call(s.target)
        await asyncio.wait_for(second.done.wait(), 5)
        assert (second.status, second.details) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "this instance already runs 1 sessions (MAX_SESSIONS=1); retry on another instance "
            "or later",
        )


class SlowLoadingLLM(ScriptedLLM):
    name = "slow-llm"
    release = asyncio.Event()

    async def load(self) -> None:
        await self.release.wait()


async def test_not_ready_until_models_load(
    start_server: StartServer, open_call, monkeypatch: pytest.MonkeyPatch
) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    monkeypatch.setitem(registry.LLM_BACKENDS, "slow-llm", SlowLoadingLLM)
    SlowLoadingLLM.release = asyncio.Event()
    s = await start_server(llm_name="slow-llm", wait_ready=False)
    async with grpc.aio.insecure_channel(s.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        assert (
            await health.Check(health_pb2.HealthCheckRequest())
        ).status == health_pb2.HealthCheckResponse.NOT_SERVING
        call: Call = await open_call(s.target)
        await asyncio.wait_for(call.done.wait(), 5)
        assert call.status == grpc.StatusCode.UNAVAILABLE
        SlowLoadingLLM.release.set()
        await s.server.wait_ready()
        assert (
            await health.Check(health_pb2.HealthCheckRequest())
        ).status == health_pb2.HealthCheckResponse.SERVING


class FailsOnceLLM(ScriptedLLM):
    """A provider that breaks down in its first answer, then works."""

    name = "fails-once-llm"

    async def stream(
        self, messages: list[ChatMessage], model: str, tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[str | ToolCall]:  # type: ignore[override]
        first = not self.calls
        async for word in super().stream(messages, model, tools):
            yield word
            if first:
                raise BackendUnavailable("scripted provider: connection lost")


async def test_a_failed_speculative_answer_is_answered_afresh_at_the_end_of_turn(
    start_server: StartServer, open_call
) -> None:
    s = await start_server(llm=FailsOnceLLM())
    silence_only = pb.TurnDetection(mode=pb.TURN_DETECTION_SILENCE)  # EAGER 440 ms before END
    call: Call = await open_call(s.target, config(turn_detection=silence_only))
    await call.send_pcm(np.concatenate([tone(0.8), silence(1.0)]))
    await call.wait_for(lambda c: len(c.of("metrics")) == 1)
    assert len(s.llm.calls) == 2  # the speculation that failed, then the answer
    assert not call.of("error")  # nothing of the failed speculation reached the caller
    assert call.finals()[0].text == "Sure. Here is my answer to that."


async def test_a_provider_failing_mid_answer_ends_the_turn_not_the_call(
    start_server: StartServer, open_call
) -> None:
    s = await start_server(llm=FailsOnceLLM())
    call: Call = await open_call(s.target)
    await call.conversation.send_text("Hello?")
    await call.wait_for(lambda c: bool(c.events(pb.AGENT_TURN_DONE)))
    error = call.of("error")[0]
    assert error.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert "connection lost" in error.message and "the call goes on" in error.message
    assert call.finals()[0].text == "Sure."
    await call.conversation.send_text("Still there?")
    await call.wait_for(lambda c: len(c.of("metrics")) == 1)
    assert call.finals()[1].text == "Sure. Here is my answer to that."
    # the history keeps what was said before the failure
    assert [m.content for m in s.llm.calls[1][1:]] == ["Hello?", "Sure.", "Still there?"]
