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


async def test_list_backends_says_which_can_be_used_and_why_not(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DEEPGRAM_API_KEY", raising=False)
    s = await start_server()
    channel, api = await stub(s)
    async with channel:
        every = (await api.ListBackends(pb.ListBackendsRequest())).backends
        by_name = {(b.kind, b.name): b for b in every}
        assert {pb.BACKEND_KIND_STT, pb.BACKEND_KIND_LLM, pb.BACKEND_KIND_TTS} == {
            b.kind for b in every
        }
        flux = by_name[(pb.BACKEND_KIND_STT, "deepgram-flux")]
        assert not flux.available and flux.unavailable_reason == "DEEPGRAM_API_KEY not set"
        assert flux.display_name == "Deepgram Flux (cloud)"
        whisper = by_name[(pb.BACKEND_KIND_STT, "whisper")]  # listed, not loaded in unit tests
        assert whisper.available and not whisper.loaded and not whisper.unavailable_reason
        scripted = by_name[(pb.BACKEND_KIND_STT, "scripted-stt")]
        assert scripted.loaded and scripted.display_name == "scripted-stt"  # no name of its own
        assert by_name[(pb.BACKEND_KIND_TTS, "piper")].display_name == "Piper (on this server)"

        stt = (await api.ListBackends(pb.ListBackendsRequest(kind=pb.BACKEND_KIND_STT))).backends
        assert [b.name for b in stt] == ["deepgram-flux", "scripted-stt", "whisper"]
        monkeypatch.setenv("DEEPGRAM_API_KEY", "key")  # read at each listing, as sessions do
        stt = (await api.ListBackends(pb.ListBackendsRequest(kind=pb.BACKEND_KIND_STT))).backends
        assert all(b.available for b in stt)
        code, details = await code_of(api.ListBackends(pb.ListBackendsRequest(kind=9)))  # type: ignore[arg-type]
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "kind" in details


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


async def test_update_config_checks_the_etag(start_server: StartServer) -> None:
    s = await start_server()
    channel, api = await stub(s)
    async with channel:
        read = await api.GetConfig(pb.GetConfigRequest())
        assert read.etag == "0"
        first = await api.UpdateConfig(
            pb.UpdateConfigRequest(config=pb.Config(tts_voice="bass", etag=read.etag))
        )
        assert (first.tts_voice, first.etag) == ("bass", "1")
        stale = pb.UpdateConfigRequest(config=pb.Config(tts_voice="alto", etag=read.etag))
        code, details = await code_of(api.UpdateConfig(stale))
        assert code == grpc.StatusCode.ABORTED and "etag 1, not 0" in details
        bad = pb.UpdateConfigRequest(config=pb.Config(tts_voice="alto", etag="²"))
        code, details = await code_of(api.UpdateConfig(bad))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "config.etag" in details
        assert (await api.GetConfig(pb.GetConfigRequest())).tts_voice == "bass"


async def test_config_is_shared_by_servers_on_one_store(
    start_server: StartServer, open_call, tmp_path
) -> None:
    """Two replicas on one SQLite file: a change on one reaches the other's WatchConfig and new
    sessions, and a replica started later begins with it."""
    url = f"sqlite:///{tmp_path}/shared.db"
    a, b = await start_server(database_url=url), await start_server(database_url=url)
    channel_a, api_a = await stub(a)
    channel_b, api_b = await stub(b)
    async with channel_a, channel_b:
        watch = api_b.WatchConfig(pb.WatchConfigRequest())
        assert (await watch.read()).tts_voice == "alto"
        await api_a.UpdateConfig(
            pb.UpdateConfigRequest(
                config=pb.Config(tts_voice="bass"), update_mask=FieldMask(paths=["tts_voice"])
            )
        )
        seen = await asyncio.wait_for(watch.read(), 5)
        assert (seen.tts_voice, seen.etag) == ("bass", "1")
        call: Call = await open_call(b.target)
        await call.wait_for(lambda c: bool(c.of("session_started")))
        assert call.of("session_started")[0].config.tts_voice == "bass"
        c = await start_server(database_url=url)
        assert c.server.defaults.value.tts_voice == "bass"
        watch.cancel()


async def test_update_config_is_unavailable_while_the_store_is_down(
    start_server: StartServer,
) -> None:
    s = await start_server()
    channel, api = await stub(s)
    async with channel:
        s.server.campaigns.close()  # what a lost database looks like to the servicer
        request = pb.UpdateConfigRequest(config=pb.Config(tts_voice="bass"))
        code, details = await code_of(api.UpdateConfig(request))
        assert code == grpc.StatusCode.UNAVAILABLE and "config store unavailable" in details
        assert (await api.GetConfig(pb.GetConfigRequest())).tts_voice == "alto"


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


def test_a_renamed_model_is_still_found_under_its_old_id() -> None:
    from server.options import MODEL_ALIASES, model_id

    assert model_id("qwen2.5-0.5b-instruct") == "qwen2.5-coder-0.5b-instruct"
    assert model_id("other-model") == "other-model"
    assert set(MODEL_ALIASES.values()) == {"qwen2.5-coder-0.5b-instruct"}
