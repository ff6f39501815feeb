"""What a session runs, resolved from its request, its campaign and the server defaults.

Pure functions (no I/O, no model loading), so the precedence and the error messages are
checked by fast unit tests: field by field the SessionConfig wins, then its campaign, then
the server-wide defaults, then the built-in defaults.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc
from voiceagent.v1 import voice_agent_pb2 as pb

from server.backends.registry import Backends
from server.backends.stt.base import TurnMode, TurnOptions
from server.campaign_store import CONFIG_FIELDS, CampaignRecord
from server.limits import CONFIG_UPDATE_LIMITS, MAX_SYSTEM_PROMPT, overlong
from server.options import (
    Defaults,
    OptionError,
    check_stt,
    llm_backend_for,
    model_id,
    tts_backend_for,
)
from server.status import StatusError, status_for

EAGER_RANGE_MS = (64, 2000)
END_OF_TURN_RANGE_MS = (200, 5000)
SEMANTIC_MIN_SILENCE_RANGE_MS = (64, 2000)
MAX_SILENCE_RANGE_MS = (500, 5000)
COMPLETION_THRESHOLD_RANGE = (0.05, 0.95)
FLUX_THRESHOLD_RANGES = {"eot_threshold": (0.5, 1.0), "eager_eot_threshold": (0.3, 0.9)}


@dataclass(frozen=True)
class RequestedSetup:
    """The names a session asked for after precedence; empty llm_model/tts_voice: the backend's pick."""

    llm_model: str
    tts_voice: str
    system_prompt: str
    greeting: str
    language: str


def requested_setup(
    config: pb.SessionConfig, campaign: CampaignRecord | None, defaults: Defaults
) -> RequestedSetup:
    """Field by field: the SessionConfig, then its campaign, then the server defaults."""

    def pick(field: str, fallback: str = "") -> str:
        value: str = getattr(config, field)
        campaign_field = "persona" if field == "system_prompt" else field
        return value or (getattr(campaign, campaign_field) if campaign else "") or fallback

    return RequestedSetup(
        llm_model=model_id(pick("llm_model")),
        tts_voice=pick("tts_voice"),
        system_prompt=pick("system_prompt", defaults.system_prompt),
        greeting=pick("greeting"),
        language=pick("language", "en"),
    )


def offered_choice(wanted: str, default: str, offered: list[str], field: str, by: str) -> str:
    """`wanted`, else the default if `by` offers it, else its first; NOT_FOUND naming the choices."""
    choice = wanted or (default if default in offered else offered[0])
    if choice not in offered:
        verb = "served" if field == "llm_model" else "offered"
        raise StatusError(
            grpc.StatusCode.NOT_FOUND,
            f"{field} {choice!r} is not {verb} by {by}; available: {', '.join(offered)}",
        )
    return choice


@dataclass(frozen=True)
class Choice:
    """A model, voice or STT backend some request names, as the server knows it."""

    name: str  # model aliases resolved
    backend: str  # the backend that serves it


def checked_choice(backends: Backends, field: str, value: str, prefix: str) -> Choice:
    """`value` for the setup field `field` (stt, llm_model or tts_voice), with the backend that
    serves it; StatusError naming `prefix.field` when none does.

    The one check behind Converse's setup, a mid-call update, UpdateConfig and campaigns: a
    name one of them accepts, the others accept too.
    """
    name = f"{prefix}.{field}"
    try:
        if field == "llm_model":
            model = model_id(value)
            return Choice(model, llm_backend_for(backends, model, name))
        if field == "tts_voice":
            return Choice(value, tts_backend_for(backends, value, name))
        if field == "stt":
            check_stt(backends, value, name)
            return Choice(value, value)
    except OptionError as err:
        raise status_for(err) from err
    raise ValueError(f"{field!r} is not a model, voice or STT field")


def config_update_fields(
    config: pb.Config, paths: Sequence[str], backends: Backends
) -> dict[str, str]:
    """The server-wide defaults an UpdateConfig writes, every named field checked before any is
    written; no paths: the populated fields. StatusError naming the field."""
    unknown = [p for p in paths if p not in CONFIG_FIELDS]
    if unknown:
        index = list(paths).index(unknown[0])
        raise StatusError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"update_mask.paths[{index}] {unknown[0]!r} is not a config field; "
            f"fields: {', '.join(CONFIG_FIELDS)}",
        )
    paths = list(paths) or [f for f in CONFIG_FIELDS if getattr(config, f)]
    fields: dict[str, str] = {}
    for path in paths:
        value: str = getattr(config, path)
        if path == "system_prompt":
            if len(value) > MAX_SYSTEM_PROMPT:
                raise StatusError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"config.system_prompt has {len(value)} characters; the limit is "
                    f"{MAX_SYSTEM_PROMPT}",
                )
            fields[path] = value
        elif not value:
            raise StatusError(grpc.StatusCode.INVALID_ARGUMENT, f"config.{path} must not be empty")
        else:
            fields[path] = checked_choice(backends, path, value, "config").name
    return fields


def campaign_choices(fields: Mapping[str, str], backends: Backends) -> dict[str, str]:
    """A campaign's fields with its model and voice checked (empty: the server's default)."""
    checked = dict(fields)
    for field in ("llm_model", "tts_voice"):
        if checked.get(field):
            checked[field] = checked_choice(backends, field, checked[field], "campaign").name
    return checked


UPDATE_FIELDS = ("llm_model", "tts_voice", "system_prompt")


@dataclass(frozen=True)
class UpdatePlan:
    """A mid-call ConfigUpdate, validated: the fields it sets and the backends that serve them."""

    paths: tuple[str, ...]
    llm_model: str
    llm_backend: str  # "" when the update leaves the model alone
    tts_voice: str
    tts_backend: str  # "" when the update leaves the voice alone
    system_prompt: str


def update_plan(update: pb.ConfigUpdate, backends: Backends) -> UpdatePlan:
    """What a ConfigUpdate changes; StatusError naming the field (the call goes on)."""
    if (why := overlong(update, CONFIG_UPDATE_LIMITS, "update")) is not None:
        raise StatusError(grpc.StatusCode.INVALID_ARGUMENT, why)
    paths = list(update.update_mask.paths) or [f for f in UPDATE_FIELDS if getattr(update, f)]
    unknown = [p for p in paths if p not in UPDATE_FIELDS]
    if unknown:
        raise StatusError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"update.update_mask names unknown field {unknown[0]!r}; fields: {', '.join(UPDATE_FIELDS)}",
        )
    model = (
        checked_choice(backends, "llm_model", update.llm_model, "update")
        if "llm_model" in paths
        else Choice(model_id(update.llm_model), "")
    )
    voice = (
        checked_choice(backends, "tts_voice", update.tts_voice, "update")
        if "tts_voice" in paths
        else Choice(update.tts_voice, "")
    )
    return UpdatePlan(
        paths=tuple(paths),
        llm_model=model.name,
        llm_backend=model.backend,
        tts_voice=update.tts_voice,
        tts_backend=voice.backend,
        system_prompt=update.system_prompt,
    )


def turn_options_for(detection: pb.TurnDetection, language: str) -> TurnOptions:
    """The turn detection a session runs; StatusError (INVALID_ARGUMENT) naming a field out of range."""
    semantic = detection.mode != pb.TURN_DETECTION_SILENCE
    eager = detection.eager_end_of_turn_silence_ms or TurnOptions.eager_silence_ms
    default_end = TurnOptions.min_silence_ms if semantic else TurnOptions.end_of_turn_silence_ms
    end = detection.end_of_turn_silence_ms or default_end
    max_silence = detection.max_silence_ms or TurnOptions.max_silence_ms
    for name, value, (low, high) in (
        ("eager_end_of_turn_silence_ms", eager, EAGER_RANGE_MS),
        (
            "end_of_turn_silence_ms",
            end,
            SEMANTIC_MIN_SILENCE_RANGE_MS if semantic else END_OF_TURN_RANGE_MS,
        ),
        ("max_silence_ms", max_silence, MAX_SILENCE_RANGE_MS),
    ):
        if not low <= value <= high:
            raise StatusError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"config.turn_detection.{name} is {value}; it must be between {low} and {high}"
                + (" in semantic mode" if semantic and name == "end_of_turn_silence_ms" else ""),
            )
    if not semantic and eager >= end:
        raise StatusError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "config.turn_detection.eager_end_of_turn_silence_ms must be below end_of_turn_silence_ms",
        )
    if semantic and end >= max_silence:
        raise StatusError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "config.turn_detection.end_of_turn_silence_ms must be below max_silence_ms in "
            "semantic mode",
        )
    threshold = TurnOptions.completion_threshold
    if detection.HasField("completion_threshold"):
        threshold = round(float(detection.completion_threshold), 3)  # float32 on the wire
        low_t, high_t = COMPLETION_THRESHOLD_RANGE
        if not low_t <= threshold <= high_t:
            raise StatusError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"config.turn_detection.completion_threshold is {threshold:g}; it must be between "
                f"{low_t} and {high_t}",
            )
    thresholds: dict[str, float] = {}
    for name, (lowest, highest) in FLUX_THRESHOLD_RANGES.items():
        if detection.HasField(name):
            # a float32 on the wire: 0.7 arrives as 0.699999988
            threshold = round(float(getattr(detection, name)), 3)
            if not lowest <= threshold <= highest:
                raise StatusError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"config.turn_detection.{name} is {threshold:g}; it must be between {lowest} and {highest}",
                )
            thresholds[name] = threshold
    return TurnOptions(
        eager_silence_ms=eager,
        end_of_turn_silence_ms=TurnOptions.end_of_turn_silence_ms if semantic else end,
        min_silence_ms=end if semantic else TurnOptions.min_silence_ms,
        eager_enabled=not detection.disable_eager_end_of_turn,
        language=language,
        mode=TurnMode.SEMANTIC if semantic else TurnMode.SILENCE,
        max_silence_ms=max_silence,
        completion_threshold=threshold,
        barge_in_on_any_speech=detection.barge_in_on_any_speech,
        eot_threshold=thresholds.get("eot_threshold"),
        eager_eot_threshold=thresholds.get("eager_eot_threshold"),
    )
