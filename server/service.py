"""The gRPC servicer: validates each Converse stream's first message and owns its Session."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator

import grpc
from opentelemetry import trace
from voiceagent.v1 import voice_agent_pb2 as pb
from voiceagent.v1 import voice_agent_pb2_grpc as pb_grpc

from server.admission import Admission
from server.audio import AudioFormatError, Format, OutboundAudio, validate_format
from server.backends.registry import BackendError, Backends
from server.backends.stt.base import TurnMode
from server.call_records import CallRecorder, CallRecording, recordings_dir, sip_users, utc_now
from server.campaign_store import (
    CampaignNotFound,
    CampaignRecord,
    CampaignStore,
    ConfigConflict,
    StoredCall,
)
from server.campaigns import stored_tools, version_from_etag
from server.limits import SESSION_CONFIG_LIMITS, overlong
from server.load import LoopLagMonitor
from server.metrics import SESSIONS_TOTAL
from server.options import (
    OptionError,
    ServerDefaults,
    list_backends,
    list_models,
    list_voices,
    llm_backend_for,
    tts_backend_for,
)
from server.sentences import SentenceSplitter, speakable
from server.session import Session, SessionSetup
from server.session_setup import (
    checked_choice,
    config_update_fields,
    offered_choice,
    requested_setup,
    turn_options_for,
)
from server.settings import Settings
from server.status import StatusError, abort, abort_after_first_message, stalled_client, status_for
from server.tasks import TaskSet, run_to_completion
from server.tools.spec import ToolError, blank_header_values, session_specs
from server.tracing import TurnSpans, end_with_status, parent_from_metadata, start_session_span

session_log = logging.getLogger("voice_agent.sessions")
PREVIEW_TEXT_LIMIT = 1000
STREAM_PREVIEW_TEXT_LIMIT = 10000
# How long the status of a session ended for not reading may wait behind unread responses.
STATUS_GRACE_SECONDS = 2.0
DEFAULT_PREVIEW_TEXT = "Hello! This is how I sound. How can I help you today?"


class VoiceAgentService(pb_grpc.VoiceAgentServicer):
    def __init__(
        self,
        settings: Settings,
        backends: Backends,
        ready: asyncio.Event,
        defaults: ServerDefaults,
        campaigns: CampaignStore,
    ) -> None:
        self._settings = settings
        self._backends = backends
        self._defaults = defaults
        self._campaigns = campaigns
        # UpdateConfig's loads of a new default model or voice, in the background
        self._preloads = TaskSet(_preload_failed, name_prefix="preload:")
        self.loop_lag = LoopLagMonitor(settings.max_loop_lag_ms)
        self.admission = Admission(settings.max_sessions, ready, self.loop_lag)

    async def aclose(self) -> None:
        """Server stop: end the background work this servicer started."""
        await self._preloads.cancel_all()
        await self.loop_lag.stop()

    async def Converse(
        self,
        request_iterator: AsyncIterator[pb.ConverseRequest],
        context: grpc.aio.ServicerContext,
    ) -> None:
        """The gRPC handler. It writes the responses itself, not grpc from a generator, so that a
        write to a client that has stopped reading can be timed out here (SEND_TIMEOUT_SECONDS:
        the session has paused its audio meanwhile, see Session.send), and so that a write the
        client's going away failed ends the call quietly instead of in grpc's traceback."""
        limit = self._settings.send_timeout_seconds
        responses = self.converse(request_iterator, context)
        try:
            async for response in responses:
                try:
                    async with asyncio.timeout(limit or None):
                        await context.write(response)
                except TimeoutError:
                    break
                except Exception:
                    if context.cancelled() or context.done():
                        return  # the client went away mid-write (its cancel, a reset)
                    raise
            else:
                return
            # The client read nothing for `limit` seconds: the session ends with that status. It
            # waits behind the responses the client has not read, so give it a moment to get
            # through; past that, the stream is reset.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STATUS_GRACE_SECONDS):
                    await responses.athrow(stalled_client(limit))
        finally:
            await responses.aclose()

    async def converse(
        self,
        request_iterator: AsyncIterator[pb.ConverseRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncGenerator[pb.ConverseResponse, None]:
        """One Converse stream's responses, whichever transport carries them (gRPC, WebSocket)."""
        try:
            self.admission.admit()
        except StatusError as refused:
            await abort_after_first_message(request_iterator, context, refused)
        try:
            try:
                first = await request_iterator.__anext__()
            except StopAsyncIteration:
                await abort(
                    context,
                    StatusError(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        "the stream ended before its SessionConfig",
                    ),
                )
            kind = first.WhichOneof("request")
            if kind != "config":
                await abort(
                    context,
                    StatusError(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"the first ConverseRequest must be `config` (a SessionConfig), got `{kind}`",
                    ),
                )
            try:
                setup = await self._resolve(first.config)
            except StatusError as err:
                await abort(context, err)
            SESSIONS_TOTAL.inc()
            session = Session(setup)
            started, status = time.monotonic(), "OK"
            ending: StatusError | None = None
            span = start_session_span(
                setup.session_id,
                parent_from_metadata(context.invocation_metadata()),
                _span_attributes(setup),
            )
            _log_session("session_start", setup, peer=context.peer())
            recorder = self._call_recorder(setup, context, span)
            turn_spans = TurnSpans(span, setup.session_id) if span.is_recording() else None
            stream = session.run(_Observed(request_iterator, recorder, turn_spans))
            # The session runs (a drain tells it and waits for it) until its record is written.
            with self.admission.running(session):
                try:
                    async for message in stream:
                        recorder.observe_response(message)
                        if turn_spans is not None:
                            turn_spans.response(message, time.time_ns())
                        yield message
                except StatusError as failure:
                    # Abort outside this block: an abort raised here would chain the failure, whose
                    # traceback holds this frame and so the whole Session, into the RPC state grpc
                    # keeps after the call (found by the fuzz tests).
                    ending = StatusError(failure.code, failure.message)  # without its traceback
                    status = failure.code.name
                except (asyncio.CancelledError, GeneratorExit):  # the consumer stopped reading us
                    status = "CANCELLED"
                    raise
                finally:
                    if status == "OK" and context.cancelled():
                        # The client cancelled: its requests ended, so the session ended cleanly.
                        status = "CANCELLED"
                    # grpc may cancel this handler again while a hung-up session winds down:
                    # the end is written, logged and traced all the same.
                    await run_to_completion(
                        _end_session(stream, session, recorder, span, started, status, ending)
                    )
            if ending is not None:
                del session
                await abort(context, ending)
        finally:
            self.admission.release()

    def _call_recorder(
        self, setup: SessionSetup, context: grpc.aio.ServicerContext, span: trace.Span
    ) -> CallRecorder:
        """The session's call record (and recording, with RECORD_CALLS=1), started now."""
        caller, called = sip_users(context.invocation_metadata())
        transport = (
            "sip" if caller or called else "web" if context.peer().startswith("ws:") else "grpc"
        )
        span_context = span.get_span_context()
        call = StoredCall(
            id=setup.session_id,
            campaign_id=setup.config.campaign_id,
            start_time=utc_now(),
            transport=transport,
            sip_caller=caller,
            sip_called=called,
            stt=setup.stt.name,
            llm=f"{setup.llm.name}:{setup.llm_model}",
            tts=f"{setup.tts.name}:{setup.voice}",
            trace_id=format(span_context.trace_id, "032x") if span_context.is_valid else "",
        )
        recording = None
        if self._settings.record_calls:
            folder = recordings_dir(self._settings.data_path)
            try:
                recording = CallRecording(
                    folder, setup.session_id, setup.input_format, setup.output_format
                )
            except OSError as err:  # a full or read-only disk costs the recording, not the call
                session_log.error("call %s: not recorded: %s", setup.session_id, err)
        return CallRecorder(self._campaigns, call, recording)

    def _serving(self, field: str, name: str) -> str:
        """The backend serving the model or voice `name`; StatusError naming config.`field`."""
        return checked_choice(self._backends, field, name, "config").backend

    async def _resolve(self, config: pb.SessionConfig) -> SessionSetup:
        """Defaults, campaign, backends and formats for a new session; StatusError says what is wrong.

        Precedence, field by field: the SessionConfig, then its campaign, then the server defaults.
        """
        if (why := overlong(config, SESSION_CONFIG_LIMITS, "config")) is not None:
            raise StatusError(grpc.StatusCode.INVALID_ARGUMENT, why)
        try:
            input_format = validate_format(config.input_format, "config.input_format")
            output_format = (
                validate_format(config.output_format, "config.output_format")
                if config.HasField("output_format")
                else input_format
            )
        except AudioFormatError as err:
            raise StatusError(grpc.StatusCode.INVALID_ARGUMENT, str(err)) from err
        defaults = self._defaults.value
        campaign = await self._campaign(config.campaign_id) if config.campaign_id else None

        requested = requested_setup(config, campaign, defaults)
        llm_model, voice = requested.llm_model, requested.tts_voice
        # An explicit backend serves the name it is given (or refuses it below, naming what
        # it offers); otherwise the name picks its backend.
        llm_name = config.llm or self._serving("llm_model", llm_model or defaults.llm_model)
        tts_name = config.tts or self._serving("tts_voice", voice or defaults.tts_voice)
        try:
            stt = await self._backends.get_stt(config.stt or defaults.stt)
            llm = await self._backends.get_llm(llm_name)
            tts = await self._backends.get_tts(tts_name)
        except (OptionError, BackendError) as err:
            raise status_for(err) from err
        except Exception as err:  # a backend that failed to load
            raise StatusError(
                grpc.StatusCode.UNAVAILABLE, f"backend failed to load: {err}"
            ) from err

        llm_model = offered_choice(
            llm_model, defaults.llm_model, llm.models(), "llm_model", llm.name
        )
        voice = offered_choice(
            voice, defaults.tts_voice, [v.id for v in tts.voices()], "tts_voice", tts.name
        )
        turn_options = turn_options_for(config.turn_detection, requested.language)
        if (problem := stt.language_problem(turn_options.language)) is not None:
            raise StatusError(grpc.StatusCode.INVALID_ARGUMENT, problem)
        campaign_tools, campaign_builtins = (
            stored_tools(campaign) if campaign else ([], pb.BuiltinTools())
        )
        try:
            tools = session_specs(
                campaign_tools, campaign_builtins, list(config.tools), config.builtin_tools
            )
        except ToolError as err:
            raise StatusError(grpc.StatusCode.INVALID_ARGUMENT, str(err)) from err

        effective = pb.SessionConfig()
        effective.CopyFrom(config)
        blank_header_values(list(effective.tools))
        effective.output_format.CopyFrom(output_format.to_proto())
        effective.stt, effective.llm, effective.tts = stt.name, llm.name, tts.name
        effective.llm_model, effective.tts_voice = llm_model, voice
        effective.system_prompt = requested.system_prompt
        effective.greeting = requested.greeting
        effective.language = turn_options.language
        effective.turn_detection.eager_end_of_turn_silence_ms = turn_options.eager_silence_ms
        effective.turn_detection.end_of_turn_silence_ms = (
            turn_options.min_silence_ms
            if turn_options.mode == TurnMode.SEMANTIC
            else turn_options.end_of_turn_silence_ms
        )
        effective.turn_detection.mode = (
            pb.TURN_DETECTION_SEMANTIC
            if turn_options.mode == TurnMode.SEMANTIC
            else pb.TURN_DETECTION_SILENCE
        )
        if turn_options.mode == TurnMode.SEMANTIC:
            effective.turn_detection.max_silence_ms = turn_options.max_silence_ms
            effective.turn_detection.completion_threshold = turn_options.completion_threshold
        return SessionSetup(
            session_id=uuid.uuid4().hex,
            config=effective,
            input_format=input_format,
            output_format=output_format,
            backends=self._backends,
            stt=stt,
            llm=llm,
            tts=tts,
            llm_model=llm_model,
            voice=voice,
            system_prompt=effective.system_prompt,
            greeting=effective.greeting,
            turn_options=turn_options,
            idle_timeout=float(self._settings.idle_timeout_seconds),
            tools=tools,
        )

    async def _campaign(self, campaign_id: str) -> CampaignRecord:
        try:
            return await asyncio.to_thread(self._campaigns.get, campaign_id)
        except CampaignNotFound as err:
            raise StatusError(
                grpc.StatusCode.NOT_FOUND, f"campaign {campaign_id!r} not found"
            ) from err
        except Exception as err:  # the database is down or unreachable
            raise StatusError(
                grpc.StatusCode.UNAVAILABLE,
                f"campaign store unavailable: {type(err).__name__}: {err}",
            ) from err

    # --- AI options -------------------------------------------------------------------------

    async def ListBackends(
        self, request: pb.ListBackendsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListBackendsResponse:
        try:
            return pb.ListBackendsResponse(backends=list_backends(self._backends, request.kind))
        except OptionError as err:
            await abort(context, status_for(err))

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(models=list_models(self._backends))

    async def ListVoices(
        self, request: pb.ListVoicesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListVoicesResponse:
        try:
            return pb.ListVoicesResponse(voices=list_voices(self._backends, request.backend))
        except OptionError as err:
            await abort(context, status_for(err))

    async def GetConfig(
        self, request: pb.GetConfigRequest, context: grpc.aio.ServicerContext
    ) -> pb.Config:
        return self._defaults.value.to_proto()

    async def UpdateConfig(
        self, request: pb.UpdateConfigRequest, context: grpc.aio.ServicerContext
    ) -> pb.Config:
        expected = None
        if request.config.etag:
            expected = version_from_etag(request.config.etag)
            if expected is None:
                await abort(
                    context,
                    StatusError(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"config.etag {request.config.etag[:40]!r} is not an etag this server "
                        "returned: GetConfig again",
                    ),
                )
        try:
            fields = config_update_fields(
                request.config, list(request.update_mask.paths), self._backends
            )
            value = await self._defaults.update(fields, expected)
        except StatusError as err:
            await abort(context, err)
        except ConfigConflict as err:
            await abort(context, StatusError(grpc.StatusCode.ABORTED, str(err)))
        except Exception as err:  # the shared store is down or unreachable
            await abort(
                context,
                StatusError(
                    grpc.StatusCode.UNAVAILABLE,
                    f"config store unavailable: {type(err).__name__}: {err}",
                ),
            )
        # A new default model or voice loads now, in the background, not in a caller's first turn.
        for kind, name in (
            ("llm", llm_backend_for(self._backends, value.llm_model)),
            ("tts", tts_backend_for(self._backends, value.tts_voice)),
            ("stt", value.stt),
        ):
            if not self._backends.loaded(kind, name):  # type: ignore[arg-type]
                self._preloads.spawn(self._backends.get(kind, name), f"{kind}:{name}")  # type: ignore[arg-type]
        return value.to_proto()

    async def WatchConfig(
        self, request: pb.WatchConfigRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.Config]:
        async for value in self._defaults.watch():
            yield value.to_proto()

    async def PreviewVoice(
        self, request: pb.PreviewVoiceRequest, context: grpc.aio.ServicerContext
    ) -> pb.PreviewVoiceResponse:
        fmt = await self._preview_format(request, context, PREVIEW_TEXT_LIMIT)
        audio = b"".join([chunk async for chunk in self._preview(request, fmt, context)])
        return pb.PreviewVoiceResponse(audio=audio, output_format=fmt.to_proto())

    async def StreamPreviewVoice(
        self, request: pb.PreviewVoiceRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.PreviewVoiceResponse]:
        fmt = await self._preview_format(request, context, STREAM_PREVIEW_TEXT_LIMIT)
        async for chunk in self._preview(request, fmt, context):
            yield pb.PreviewVoiceResponse(audio=chunk, output_format=fmt.to_proto())

    async def _preview_format(
        self, request: pb.PreviewVoiceRequest, context: grpc.aio.ServicerContext, limit: int
    ) -> Format:
        if len(request.text) > limit:
            await abort(
                context,
                StatusError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"text has {len(request.text)} characters; the limit is {limit}"
                    + (
                        " (use StreamPreviewVoice for longer text)"
                        if limit == PREVIEW_TEXT_LIMIT
                        else ""
                    ),
                ),
            )
        if not request.HasField("output_format"):
            return Format(pb.LINEAR16, 24000)
        try:
            return validate_format(request.output_format, "output_format")
        except AudioFormatError as err:
            await abort(context, StatusError(grpc.StatusCode.INVALID_ARGUMENT, str(err)))
            raise

    async def _preview(
        self, request: pb.PreviewVoiceRequest, fmt: Format, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        voice = request.voice or self._defaults.value.tts_voice
        try:
            tts = await self._backends.get_tts(tts_backend_for(self._backends, voice, "voice"))
        except (OptionError, BackendError) as err:
            await abort(context, status_for(err))
            raise
        outbound = OutboundAudio(fmt)
        # Piece by piece, as an agent turn is spoken: the first audio comes early in a stream.
        splitter = SentenceSplitter()
        text = speakable(request.text) or DEFAULT_PREVIEW_TEXT
        try:
            for piece in splitter.push(text) + splitter.flush():
                async for audio in tts.synthesize(piece, voice, fmt.rate):
                    yield outbound.encode(audio.pcm, audio.sample_rate)
        except Exception as err:
            await abort(
                context,
                StatusError(grpc.StatusCode.UNAVAILABLE, f"{tts.name} could not synthesize: {err}"),
            )


class _Observed:
    """The requests, shown to the call record and the turn spans on their way to the session.

    A plain iterator, not an async generator: the session's reader task may be cancelled in
    the middle of a read, and a generator would then be finalized while it still runs."""

    def __init__(
        self,
        requests: AsyncIterator[pb.ConverseRequest],
        recorder: CallRecorder,
        turn_spans: TurnSpans | None,
    ) -> None:
        self._requests = requests
        self._recorder = recorder
        self._turn_spans = turn_spans

    def __aiter__(self) -> _Observed:
        return self

    async def __anext__(self) -> pb.ConverseRequest:
        request = await self._requests.__anext__()
        self._recorder.observe_request(request)
        if self._turn_spans is not None:
            self._turn_spans.request(request.WhichOneof("request"), time.time_ns())
        return request


def _preload_failed(task: asyncio.Task[object], exc: BaseException) -> None:
    """A session that picks this backend gets the load error itself; here it is only logged."""
    session_log.warning("%s failed: %s", task.get_name(), exc)


async def _end_session(
    stream: AsyncGenerator[pb.ConverseResponse, None],
    session: Session,
    recorder: CallRecorder,
    span: trace.Span,
    started: float,
    status: str,
    ending: StatusError | None,
) -> None:
    """Stop the session at once (not when the garbage collector gets to it), then write its
    record's end before it counts as gone (a drain that saw no sessions would stop the server
    under the write), log it and end its span."""
    message = ending.message if ending else ""
    try:
        await stream.aclose()
        await recorder.finish(grpc.StatusCode[status], message)
    finally:
        _log_session(
            "session_end",
            session.setup,
            status=status,
            turns=session.turns,
            duration_s=round(time.monotonic() - started, 3),
        )
        span.set_attribute("voice_agent.turns", session.turns)
        end_with_status(span, grpc.StatusCode[status], message)


def _log_session(event: str, setup: SessionSetup, **fields: object) -> None:
    """One JSON line per session start and end: what log pipelines index and alert on."""
    record = {
        "event": event,
        "session_id": setup.session_id,
        "stt": setup.stt.name,
        "llm": f"{setup.llm.name}:{setup.llm_model}",
        "tts": f"{setup.tts.name}:{setup.voice}",
        "campaign_id": setup.config.campaign_id,
        **fields,
    }
    session_log.info(json.dumps(record))


def _span_attributes(setup: SessionSetup) -> dict[str, str]:
    return {
        "voice_agent.stt": setup.stt.name,
        "voice_agent.llm": f"{setup.llm.name}:{setup.llm_model}",
        "voice_agent.tts": f"{setup.tts.name}:{setup.voice}",
        "voice_agent.campaign_id": setup.config.campaign_id,
    }
