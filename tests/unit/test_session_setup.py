"""The pure steps of session setup: precedence, the backend's choice, the mid-call update."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from voiceagent.v1 import voice_agent_pb2 as pb

from server.backends.registry import Backends
from server.campaign_store import CampaignRecord
from server.options import Defaults
from server.session_setup import (
    campaign_choices,
    checked_choice,
    config_update_fields,
    offered_choice,
    requested_setup,
    turn_options_for,
    update_plan,
)
from server.status import StatusError
from tests.unit.scripted import ScriptedLLM, ScriptedSTT, ScriptedTTS

DEFAULTS = Defaults(
    stt="s", llm_model="server-model", tts_voice="server-voice", system_prompt="server"
)


def _campaign(**fields: str) -> CampaignRecord:
    values = dict(persona="", greeting="", llm_model="", tts_voice="", language="")
    values.update(fields)
    return CampaignRecord(id="c1", name="C", update_time=datetime.now(UTC), version=1, **values)


def _backends() -> Backends:
    llm, tts, stt = ScriptedLLM(), ScriptedTTS(), ScriptedSTT()
    return Backends(stt={stt.name: stt}, llm={llm.name: llm}, tts={tts.name: tts})


def test_the_session_config_wins_over_its_campaign() -> None:
    config = pb.SessionConfig(
        llm_model="m-session", tts_voice="v-session", system_prompt="p", greeting="g", language="de"
    )
    campaign = _campaign(
        persona="cp", greeting="cg", llm_model="m-c", tts_voice="v-c", language="fr"
    )
    got = requested_setup(config, campaign, DEFAULTS)
    assert (got.llm_model, got.tts_voice, got.system_prompt, got.greeting, got.language) == (
        "m-session",
        "v-session",
        "p",
        "g",
        "de",
    )


def test_the_campaign_wins_over_the_server_defaults() -> None:
    campaign = _campaign(
        persona="cp", greeting="cg", llm_model="m-c", tts_voice="v-c", language="fr"
    )
    got = requested_setup(pb.SessionConfig(), campaign, DEFAULTS)
    assert (got.llm_model, got.tts_voice, got.system_prompt, got.greeting, got.language) == (
        "m-c",
        "v-c",
        "cp",
        "cg",
        "fr",
    )


def test_without_campaign_the_server_then_the_built_in_defaults_apply() -> None:
    got = requested_setup(pb.SessionConfig(), None, DEFAULTS)
    assert got.system_prompt == "server"
    assert got.language == "en"
    assert got.llm_model == got.tts_voice == got.greeting == ""  # the backend picks


def test_an_old_model_id_in_a_campaign_is_read_as_the_new_one() -> None:
    got = requested_setup(
        pb.SessionConfig(), _campaign(llm_model="qwen2.5-0.5b-instruct"), DEFAULTS
    )
    assert got.llm_model == "qwen2.5-coder-0.5b-instruct"


def test_the_backend_offers_the_default_else_its_first() -> None:
    assert offered_choice("", "b", ["a", "b"], "tts_voice", "piper") == "b"
    assert offered_choice("", "z", ["a", "b"], "tts_voice", "piper") == "a"
    assert offered_choice("a", "b", ["a", "b"], "tts_voice", "piper") == "a"


def test_a_choice_the_backend_does_not_offer_names_the_field_and_the_choices() -> None:
    with pytest.raises(StatusError) as caught:
        offered_choice("x", "a", ["a", "b"], "llm_model", "llama")
    assert caught.value.code == grpc.StatusCode.NOT_FOUND
    assert "llm_model 'x' is not served by llama; available: a, b" in caught.value.message


def test_turn_detection_out_of_range_is_invalid_and_names_the_field() -> None:
    with pytest.raises(StatusError) as caught:
        turn_options_for(
            pb.TurnDetection(mode=pb.TURN_DETECTION_SILENCE, end_of_turn_silence_ms=10), "en"
        )
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "config.turn_detection.end_of_turn_silence_ms is 10" in caught.value.message
    assert turn_options_for(pb.TurnDetection(), "de").language == "de"


def test_a_mid_call_update_names_its_backends() -> None:
    plan = update_plan(
        pb.ConfigUpdate(llm_model="scripted-large", tts_voice="bass", system_prompt="new"),
        _backends(),
    )
    assert plan.paths == ("llm_model", "tts_voice", "system_prompt")
    assert (plan.llm_model, plan.tts_voice, plan.system_prompt) == ("scripted-large", "bass", "new")
    assert plan.llm_backend == ScriptedLLM().name
    assert plan.tts_backend == ScriptedTTS().name


def test_a_mid_call_update_of_the_prompt_alone_loads_no_backend() -> None:
    plan = update_plan(
        pb.ConfigUpdate(system_prompt="new", update_mask=FieldMask(paths=["system_prompt"])),
        _backends(),
    )
    assert plan.paths == ("system_prompt",)
    assert plan.llm_backend == plan.tts_backend == ""


@pytest.mark.parametrize(
    ("update", "code", "words"),
    [
        (
            pb.ConfigUpdate(update_mask=FieldMask(paths=["stt"])),
            grpc.StatusCode.INVALID_ARGUMENT,
            "unknown field 'stt'; fields: llm_model, tts_voice, system_prompt",
        ),
        (
            pb.ConfigUpdate(llm_model="nope"),
            grpc.StatusCode.NOT_FOUND,
            "update.llm_model 'nope' is not a known model",
        ),
        (
            pb.ConfigUpdate(tts_voice="nope"),
            grpc.StatusCode.NOT_FOUND,
            "update.tts_voice 'nope' is not a known voice",
        ),
        (
            pb.ConfigUpdate(system_prompt="x" * 1_000_000),
            grpc.StatusCode.INVALID_ARGUMENT,
            "update.system_prompt",
        ),
    ],
)
def test_a_wrong_mid_call_update_is_refused_naming_the_field(
    update: pb.ConfigUpdate, code: grpc.StatusCode, words: str
) -> None:
    with pytest.raises(StatusError) as caught:
        update_plan(update, _backends())
    assert caught.value.code == code
    assert words in caught.value.message


def test_one_check_accepts_the_same_names_everywhere() -> None:
    backends = _backends()
    model = checked_choice(backends, "llm_model", "scripted-large", "config")
    assert (model.name, model.backend) == ("scripted-large", ScriptedLLM().name)
    assert checked_choice(backends, "tts_voice", "bass", "campaign").backend == ScriptedTTS().name
    assert checked_choice(backends, "stt", ScriptedSTT().name, "config").backend == "scripted-stt"
    for prefix in ("config", "campaign", "update"):
        with pytest.raises(StatusError) as caught:
            checked_choice(backends, "tts_voice", "tenor", prefix)
        assert caught.value.code == grpc.StatusCode.NOT_FOUND
        assert caught.value.message.startswith(f"{prefix}.tts_voice 'tenor' is not a known voice")


class QwenLLM(ScriptedLLM):
    name = "qwen-llm"

    def models(self) -> list[str]:
        return ["qwen2.5-coder-0.5b-instruct"]


def test_a_config_update_checks_every_field_and_resolves_old_model_ids() -> None:
    backends = Backends(
        stt={ScriptedSTT.name: ScriptedSTT()},
        llm={QwenLLM.name: QwenLLM()},
        tts={ScriptedTTS.name: ScriptedTTS()},
    )
    config = pb.Config(llm_model="qwen2.5-0.5b-instruct", tts_voice="bass", system_prompt="")
    assert config_update_fields(config, ["llm_model", "system_prompt"], backends) == {
        "llm_model": "qwen2.5-coder-0.5b-instruct",
        "system_prompt": "",
    }
    # no mask: the populated fields
    assert config_update_fields(config, [], backends) == {
        "llm_model": "qwen2.5-coder-0.5b-instruct",
        "tts_voice": "bass",
    }


@pytest.mark.parametrize(
    ("config", "paths", "code", "words"),
    [
        (pb.Config(), ["voice"], grpc.StatusCode.INVALID_ARGUMENT, "update_mask.paths[0] 'voice'"),
        (pb.Config(), ["stt"], grpc.StatusCode.INVALID_ARGUMENT, "config.stt must not be empty"),
        (pb.Config(stt="nope"), ["stt"], grpc.StatusCode.NOT_FOUND, "stt backend 'nope'"),
        (pb.Config(llm_model="gpt-9"), [], grpc.StatusCode.NOT_FOUND, "config.llm_model 'gpt-9'"),
        (
            pb.Config(tts_voice="bass", system_prompt="x" * 9000),
            [],
            grpc.StatusCode.INVALID_ARGUMENT,
            "config.system_prompt has 9000 characters",
        ),
    ],
)
def test_a_wrong_config_update_is_refused_naming_the_field(
    config: pb.Config, paths: list[str], code: grpc.StatusCode, words: str
) -> None:
    with pytest.raises(StatusError) as caught:
        config_update_fields(config, paths, _backends())
    assert caught.value.code == code
    assert words in caught.value.message


def test_a_campaign_names_a_model_and_voice_the_server_has_or_none() -> None:
    backends = _backends()
    fields = {"name": "Sales", "llm_model": "", "tts_voice": "bass", "persona": "p"}
    assert campaign_choices(fields, backends) == fields
    with pytest.raises(StatusError) as caught:
        campaign_choices({"llm_model": "gpt-9"}, backends)
    assert caught.value.code == grpc.StatusCode.NOT_FOUND
    assert "campaign.llm_model 'gpt-9'" in caught.value.message
