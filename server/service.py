"""The gRPC servicer: validates each Converse stream's first message and owns its Session."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import grpc
from voiceagent.v1 import voice_agent_pb2 as pb
from voiceagent.v1 import voice_agent_pb2_grpc as pb_grpc

from server.audio import AudioFormatError, validate_format
from server.backends.registry import BackendError, Backends
from server.backends.stt.base import TurnOptions
from server.metrics import SESSIONS_ACTIVE, SESSIONS_TOTAL
from server.session import Session, SessionFailure, SessionSetup
from server.settings import Settings

EAGER_RANGE_MS = (64, 2000)
END_OF_TURN_RANGE_MS = (200, 5000)


class VoiceAgentService(pb_grpc.VoiceAgentServicer):
    def __init__(self, settings: Settings, backends: Backends, ready: asyncio.Event) -> None:
        self._settings = settings
        self._backends = backends
        self._ready = ready
        self._active = 0
        self.sessions: set[Session] = set()

    async def Converse(
        self,
        request_iterator: AsyncIterator[pb.ConverseRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.ConverseResponse]:
        if not self._ready.is_set():
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                "models are still loading; retry when the health service reports SERVING",
            )
        if self._active >= self._settings.max_sessions:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this instance already runs {self._active} sessions (MAX_SESSIONS="
                f"{self._settings.max_sessions}); retry on another instance or later",
            )
        self._active += 1
        SESSIONS_ACTIVE.inc()
        try:
            try:
                first = await request_iterator.__anext__()
            except StopAsyncIteration:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, "the stream ended before its SessionConfig"
                )
            kind = first.WhichOneof("request")
            if kind != "config":
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"the first ConverseRequest must be `config` (a SessionConfig), got `{kind}`",
                )
            try:
                setup = await self._resolve(first.config)
            except _Invalid as err:
                await context.abort(err.code, err.message)
            SESSIONS_TOTAL.inc()
            session = Session(setup)
            self.sessions.add(session)
            try:
                async for message in session.run(request_iterator):
                    yield message
            except SessionFailure as failure:
                await context.abort(failure.code, failure.message)
            finally:
                self.sessions.discard(session)
        finally:
            self._active -= 1
            SESSIONS_ACTIVE.dec()

    async def _resolve(self, config: pb.SessionConfig) -> SessionSetup:
        """Defaults, backends and formats for a new session; _Invalid says what is wrong."""
        try:
            input_format = validate_format(config.input_format, "config.input_format")
            output_format = (
                validate_format(config.output_format, "config.output_format")
                if config.HasField("output_format")
                else input_format
            )
        except AudioFormatError as err:
            raise _Invalid(grpc.StatusCode.INVALID_ARGUMENT, str(err)) from err
        if config.campaign_id:
            raise _Invalid(grpc.StatusCode.NOT_FOUND, f"campaign {config.campaign_id!r} not found")
        try:
            stt = await self._backends.get_stt(config.stt or self._settings.stt)
            llm = await self._backends.get_llm(config.llm or self._settings.llm)
            tts = await self._backends.get_tts(config.tts or self._settings.tts)
        except BackendError as err:
            code = (
                grpc.StatusCode.NOT_FOUND if err.not_found else grpc.StatusCode.FAILED_PRECONDITION
            )
            raise _Invalid(code, str(err)) from err
        except Exception as err:  # a backend that failed to load
            raise _Invalid(grpc.StatusCode.UNAVAILABLE, f"backend failed to load: {err}") from err

        models = llm.models()
        llm_model = config.llm_model or models[0]
        if llm_model not in models:
            raise _Invalid(
                grpc.StatusCode.NOT_FOUND,
                f"llm_model {llm_model!r} is not served by {llm.name}; available: {', '.join(models)}",
            )
        voices = [v.id for v in tts.voices()]
        voice = config.tts_voice or voices[0]
        if voice not in voices:
            raise _Invalid(
                grpc.StatusCode.NOT_FOUND,
                f"tts_voice {voice!r} is not offered by {tts.name}; available: {', '.join(voices)}",
            )
        turn_options = _turn_options(config.turn_detection, config.language or "en")

        effective = pb.SessionConfig()
        effective.CopyFrom(config)
        effective.output_format.CopyFrom(output_format.to_proto())
        effective.stt, effective.llm, effective.tts = stt.name, llm.name, tts.name
        effective.llm_model, effective.tts_voice = llm_model, voice
        effective.system_prompt = config.system_prompt or self._settings.system_prompt
        effective.language = turn_options.language
        effective.turn_detection.eager_end_of_turn_silence_ms = turn_options.eager_silence_ms
        effective.turn_detection.end_of_turn_silence_ms = turn_options.end_of_turn_silence_ms
        return SessionSetup(
            session_id=uuid.uuid4().hex,
            config=effective,
            input_format=input_format,
            output_format=output_format,
            stt=stt,
            llm=llm,
            tts=tts,
            llm_model=llm_model,
            voice=voice,
            system_prompt=effective.system_prompt,
            greeting=config.greeting,
            turn_options=turn_options,
        )


class _Invalid(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _turn_options(detection: pb.TurnDetection, language: str) -> TurnOptions:
    eager = detection.eager_end_of_turn_silence_ms or TurnOptions.eager_silence_ms
    end = detection.end_of_turn_silence_ms or TurnOptions.end_of_turn_silence_ms
    for name, value, (low, high) in (
        ("eager_end_of_turn_silence_ms", eager, EAGER_RANGE_MS),
        ("end_of_turn_silence_ms", end, END_OF_TURN_RANGE_MS),
    ):
        if not low <= value <= high:
            raise _Invalid(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"config.turn_detection.{name} is {value}; it must be between {low} and {high}",
            )
    if eager >= end:
        raise _Invalid(
            grpc.StatusCode.INVALID_ARGUMENT,
            "config.turn_detection.eager_end_of_turn_silence_ms must be below end_of_turn_silence_ms",
        )
    return TurnOptions(
        eager_silence_ms=eager,
        end_of_turn_silence_ms=end,
        eager_enabled=not detection.disable_eager_end_of_turn,
        language=language,
    )
