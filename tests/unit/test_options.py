"""AI options: ListModels, ListVoices, PreviewVoice, Get/Update/WatchConfig, and live switches."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from voiceagent.client import linear16
from voiceagent.v1 import voice_agent_pb2 as pb
from voiceagent.v1 import voice_agent_pb2_grpc as pb_grpc

from tests.conftest import Call
from tests.unit.conftest import Scripted, StartServer
from tests.unit.scripted import ScriptedLLM


class OtherLLM(ScriptedLLM):
    name = "other-llm"

    def models(self) -> list[str]:
        return ["other-model"]


async def stub(s: Scripted) -> tuple[grpc.aio.Channel, pb_grpc.VoiceAgentStub]:
    channel = grpc.aio.insecure_channel(s.target)
    return channel, pb_grpc.VoiceAgentStub(channel)


async def code_of(call: object) -> tuple[grpc.StatusCode, str]:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as err:
        return err.code(), err.details() or ""
    raise AssertionError("the call succeeded")


async def test_list_models_and_voices(start_server: StartServer) -> None:
    s = await start_server(more_llms={"other-llm": OtherLLM()})
    channel, api = await stub(s)
    async with channel:
        models = {
            (m.id, m.backend): m for m in (await api.ListModels(pb.ListModelsRequest())).models
        }
        assert models[("scripted-small", "scripted-llm")].available
        assert models[("other-model", "other-llm")].loaded
        local = models[
            ("qwen2.5-coder-0.5b-instruct", "llama-cpp")
        ]  # listed, not loaded in unit tests
        assert local.available and not local.loaded
        voices = (await api.ListVoices(pb.ListVoicesRequest(backend="scripted-tts"))).voices
        assert [(v.id, v.backend, v.language) for v in voices] == [
            ("alto", "scripted-tts", "en-US"),
            ("bass", "scripted-tts", "en-US"),
        ]
        every = {v.id for v in (await api.ListVoices(pb.ListVoicesRequest())).voices}
        assert {"alto", "bass", "en_US-joe-medium"} <= every
        code, details = await code_of(api.ListVoices(pb.ListVoicesRequest(backend="nope")))
        assert code == grpc.StatusCode.NOT_FOUND and "scripted-tts" in details


async def test_update_config_validates_and_is_watched(start_server: StartServer) -> None:
    s = await start_server(more_llms={"other-llm": OtherLLM()})
    channel, api = await stub(s)
    async with channel:
        config = await api.GetConfig(pb.GetConfigRequest())
        assert (config.stt, config.llm_model, config.tts_voice) == (
            "scripted-stt",
            "scripted-small",
            "alto",
        )
        watch = api.WatchConfig(pb.WatchConfigRequest())
        first = await watch.read()
        assert first.tts_voice == "alto"

        updated = await api.UpdateConfig(
            pb.UpdateConfigRequest(
                config=pb.Config(tts_voice="bass", llm_model="other-model"),
                update_mask=FieldMask(paths=["tts_voice", "llm_model"]),
            )
        )
        assert (updated.tts_voice, updated.llm_model, updated.stt) == (
            "bass",
            "other-model",
            "scripted-stt",
        )
        seen = await asyncio.wait_for(watch.read(), 5)
        assert (seen.tts_voice, seen.llm_model) == ("bass", "other-model")
        assert (await api.GetConfig(pb.GetConfigRequest())).tts_voice == "bass"

        cases = [
            (
                pb.Config(tts_voice="tenor"),
                ["tts_voice"],
                grpc.StatusCode.NOT_FOUND,
                "config.tts_voice 'tenor'",
            ),
            (
                pb.Config(llm_model="gpt-9"),
                ["llm_model"],
                grpc.StatusCode.NOT_FOUND,
                "config.llm_model 'gpt-9'",
            ),
            (pb.Config(stt="nope"), ["stt"], grpc.StatusCode.NOT_FOUND, "stt backend 'nope'"),
            (
                pb.Config(),
                ["stt"],
                grpc.StatusCode.INVALID_ARGUMENT,
                "config.stt must not be empty",
            ),
            (pb.Config(), ["voice"], grpc.StatusCode.INVALID_ARGUMENT, "update_mask.paths[0]"),
            (
                pb.Config(system_prompt="x" * 9000),
                ["system_prompt"],
                grpc.StatusCode.INVALID_ARGUMENT,
                "config.system_prompt",
            ),
        ]
        for config, paths, code, needle in cases:
            got, details = await code_of(
                api.UpdateConfig(
                    pb.UpdateConfigRequest(config=config, update_mask=FieldMask(paths=paths))
                )
            )
            assert got == code and needle in details, (paths, got, details)
        assert (
            await api.GetConfig(pb.GetConfigRequest())
        ).tts_voice == "bass"  # failed updates changed nothing
        watch.cancel()


async def test_update_config_leaves_running_sessions_alone(
    start_server: StartServer, open_call
) -> None:
    s = await start_server()
    channel, api = await stub(s)
    async with channel:
        running: Call = await open_call(s.target)
        await running.wait_for(lambda c: bool(c.of("session_started")))
        await api.UpdateConfig(
            pb.UpdateConfigRequest(
                config=pb.Config(tts_voice="bass"), update_mask=FieldMask(paths=["tts_voice"])
            )
        )
        await running.conversation.send_text("Hi")
        await running.wait_for(lambda c: len(c.of("metrics")) == 1)
        assert set(s.tts.voices_used) == {"alto"}
        fresh: Call = await open_call(s.target)
        await fresh.wait_for(lambda c: bool(c.of("session_started")))
        assert fresh.of("session_started")[0].config.tts_voice == "bass"


async def test_preview_voice(start_server: StartServer) -> None:
    s = await start_server()
    channel, api = await stub(s)
    async with channel:
        mulaw = pb.AudioFormat(encoding=pb.MULAW, sample_rate_hertz=8000)
        reply = await api.PreviewVoice(
            pb.PreviewVoiceRequest(
                voice="bass", text="one two three four five", output_format=mulaw
            )
        )
        assert abs(len(reply.audio) - 0.5 * 8000) < 20 and reply.output_format.encoding == pb.MULAW
        assert s.tts.voices_used[-1] == "bass"
        default = await api.PreviewVoice(pb.PreviewVoiceRequest())
        assert default.output_format.sample_rate_hertz == 24000 and len(default.audio) > 0
        chunks = [
            r
            async for r in api.StreamPreviewVoice(
                pb.PreviewVoiceRequest(text="One. Two three. Four five six.")
            )
        ]
        assert len(chunks) >= 2
        for request, code in [
            (pb.PreviewVoiceRequest(voice="tenor"), grpc.StatusCode.NOT_FOUND),
            (pb.PreviewVoiceRequest(text="x" * 1001), grpc.StatusCode.INVALID_ARGUMENT),
            (
                pb.PreviewVoiceRequest(output_format=linear16(44100)),
                grpc.StatusCode.INVALID_ARGUMENT,
            ),
        ]:
            assert (await code_of(api.PreviewVoice(request)))[0] == code


async def test_config_update_mid_call_switches_backend_and_keeps_history(
    start_server: StartServer, open_call
) -> None:
    other = OtherLLM("Answer from the other model.")
    s = await start_server(more_llms={"other-llm": other})
    call: Call = await open_call(s.target)
    await call.conversation.send_text("First question")
    await call.wait_for(lambda c: len(c.of("metrics")) == 1)
    await call.conversation.update(llm_model="other-model", tts_voice="bass")
    await call.wait_for(lambda c: bool(c.events(pb.CONFIG_APPLIED)))
    applied = call.events(pb.CONFIG_APPLIED)[0].message
    assert "llm_model=other-model (other-llm)" in applied and "tts_voice=bass" in applied
    await call.conversation.send_text("Second question")
    await call.wait_for(lambda c: len(c.of("metrics")) == 2)
    assert call.finals()[-1].text == "Answer from the other model."
    history = [(m.role, m.content) for m in other.calls[-1][1:]]
    assert history == [
        ("user", "First question"),
        ("assistant", s.llm.reply),
        ("user", "Second question"),
    ]
    assert s.tts.voices_used[-1] == "bass"
    await call.conversation.update(llm_model="gpt-9")
    await call.wait_for(lambda c: bool(c.of("error")))
    assert "gpt-9" in call.of("error")[0].message
    assert call.status is None  # the call goes on


@pytest.mark.parametrize("field", ["llm_model", "tts_voice"])
async def test_session_config_picks_the_backend_of_its_model_or_voice(
    start_server: StartServer, open_call, field: str
) -> None:
    s = await start_server(more_llms={"other-llm": OtherLLM()})
    value = "other-model" if field == "llm_model" else "bass"
    call: Call = await open_call(
        s.target, pb.SessionConfig(input_format=linear16(16000), **{field: value})
    )
    await call.wait_for(lambda c: bool(c.of("session_started")))
    config = call.of("session_started")[0].config
    assert getattr(config, field) == value
    if field == "llm_model":
        assert config.llm == "other-llm"
