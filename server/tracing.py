"""The server's spans: one per session, one per turn, one per stage of a turn.

Spans are parented explicitly (each is started with its parent's context), never through the
ambient context: a session's work runs in several tasks and async generators, where the ambient
context would not follow. Every span carries the session id, which is also the call record's id,
so a trace and a call record join on it. Exporting is set up by `voiceagent.tracing.configure`
(only when OTEL_EXPORTER_OTLP_ENDPOINT is set); otherwise these spans are no-ops.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from voiceagent.v1 import voice_agent_pb2 as pb

TRACER = trace.get_tracer("voice_agent.server")
SESSION_ID = "voice_agent.session_id"


def parent_from_metadata(
    metadata: Iterable[tuple[str, str | bytes]] | None,
) -> otel_context.Context:
    """The caller's trace context (W3C traceparent in the gRPC metadata), or an empty one."""
    carrier = {key: value for key, value in metadata or () if isinstance(value, str)}
    return propagate.extract(carrier)


def start_session_span(
    session_id: str, parent: otel_context.Context, attributes: Mapping[str, Any]
) -> trace.Span:
    return TRACER.start_span(
        "session",
        context=parent,
        kind=trace.SpanKind.SERVER,
        attributes={SESSION_ID: session_id, **attributes},
    )


def start_child(
    parent: trace.Span, name: str, session_id: str, attributes: Mapping[str, Any] | None = None
) -> trace.Span:
    """A span under `parent` (a turn under the session, a stage under a turn)."""
    return TRACER.start_span(
        name,
        context=trace.set_span_in_context(parent),
        attributes={SESSION_ID: session_id, **(attributes or {})},
    )


def end_with_status(span: trace.Span, code: grpc.StatusCode, message: str = "") -> None:
    """End `span`, marked as an error unless the session ended OK or was cancelled by its
    client (hanging up is not a failure)."""
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code not in (grpc.StatusCode.OK, grpc.StatusCode.CANCELLED):
        span.set_status(trace.Status(trace.StatusCode.ERROR, f"{code.name}: {message}"))
    span.end()


class TurnSpans:
    """A session's turn and stage spans, made from what its stream says and when.

    The stream carries everything a turn's timeline needs: the final transcript (or typed text)
    and when it passed, the agent's audio and final text, AGENT_TURN_DONE or BARGE_IN, and last
    the TurnMetrics, measured from the end of the caller's speech. When the metrics pass, the
    turn's spans are made with those times: `turn`, and under it `stt.final`, `llm` (event
    `first_token`), `tts` (event `first_audio`) and one `tool` span per tool call (from its
    ToolCall to its ToolResult). Only made while the session span records, so with tracing off
    a session pays nothing for them.
    """

    def __init__(self, session: trace.Span, session_id: str) -> None:
        self._session = session
        self._session_id = session_id
        self._heard_ns = 0  # when the last final transcript or typed turn passed
        self._from_text = False
        self._times: dict[int, dict[str, int]] = {}  # agent turn id -> event -> time_ns
        self._tools: dict[int, list[_ToolTimes]] = {}  # agent turn id -> its tool calls

    def request(self, kind: str | None, now_ns: int) -> None:
        if kind == "text":
            self._heard_ns, self._from_text = now_ns, True

    def response(self, message: pb.ConverseResponse, now_ns: int) -> None:
        kind = message.WhichOneof("response")
        if kind == "transcript" and message.transcript.is_final:
            self._heard_ns, self._from_text = now_ns, False
        elif kind == "agent_text":
            times = self._times.setdefault(message.agent_text.turn_id, {})
            if message.agent_text.final:
                times.setdefault("text_done", now_ns)
        elif kind == "audio":
            self._times.setdefault(message.audio.turn_id, {}).setdefault("first_audio", now_ns)
        elif kind == "event" and message.event.type in (pb.AGENT_TURN_DONE, pb.BARGE_IN):
            times = self._times.setdefault(message.event.turn_id, {})
            times.setdefault("done", now_ns)
            if message.event.type == pb.BARGE_IN:
                times["barged_in"] = 1
        elif kind == "tool_call":
            call = message.tool_call
            self._tools.setdefault(call.turn_id, []).append(_ToolTimes(call.id, call.name, now_ns))
        elif kind == "tool_result":
            for tool in self._tools.get(message.tool_result.turn_id, []):
                if tool.call_id == message.tool_result.id and not tool.end_ns:
                    tool.end_ns, tool.error = now_ns, message.tool_result.error
        elif kind == "metrics":
            turn_id = message.metrics.turn_id
            tools = self._tools.pop(turn_id, [])
            self._emit(message.metrics, self._times.pop(turn_id, {}), now_ns, tools)

    def _emit(
        self,
        metrics: pb.TurnMetrics,
        times: dict[str, int],
        now_ns: int,
        tools: list[_ToolTimes],
    ) -> None:
        if not metrics.voice_to_voice_ms or not self._heard_ns:
            return  # a greeting: no turn of the caller's to measure from
        ms = 1_000_000
        heard = self._heard_ns
        end_of_speech = heard if metrics.from_text else heard - int(metrics.stt_final_ms * ms)
        end = times.get("done", now_ns)
        attributes = {
            "voice_agent.turn_id": metrics.turn_id,
            "voice_agent.from_text": metrics.from_text,
            "voice_agent.barged_in": bool(times.get("barged_in")),
            "voice_agent.voice_to_voice_ms": metrics.voice_to_voice_ms,
        }
        turn = TRACER.start_span(
            "turn",
            context=trace.set_span_in_context(self._session),
            start_time=end_of_speech,
            attributes={SESSION_ID: self._session_id, **attributes},
        )
        if not metrics.from_text:
            stt = _span_at(turn, "stt.final", self._session_id, end_of_speech)
            stt.set_attribute("voice_agent.stt_final_ms", metrics.stt_final_ms)
            stt.end(end_time=heard)
        first_token = end_of_speech + int(metrics.llm_first_token_ms * ms)
        llm = _span_at(turn, "llm", self._session_id, heard)
        llm.set_attribute("voice_agent.llm_first_token_ms", metrics.llm_first_token_ms)
        llm.add_event("first_token", timestamp=first_token)
        llm.end(end_time=max(first_token, times.get("text_done", end)))
        first_audio = end_of_speech + int(metrics.tts_first_audio_ms * ms)
        tts = _span_at(turn, "tts", self._session_id, first_token)
        tts.set_attribute("voice_agent.tts_first_audio_ms", metrics.tts_first_audio_ms)
        tts.add_event("first_audio", timestamp=first_audio)
        tts.end(end_time=max(first_audio, end))
        for tool in tools:
            span = _span_at(turn, "tool", self._session_id, tool.start_ns)
            span.set_attribute("voice_agent.tool.name", tool.name)
            span.set_attribute("voice_agent.tool.call_id", tool.call_id)
            if tool.error or not tool.end_ns:
                span.set_status(
                    trace.Status(trace.StatusCode.ERROR, tool.error or "no result (barge-in)")
                )
            span.end(end_time=tool.end_ns or end)
        turn.end(end_time=max(end, first_audio))


@dataclass
class _ToolTimes:
    call_id: str
    name: str
    start_ns: int
    end_ns: int = 0
    error: str = ""


def _span_at(parent: trace.Span, name: str, session_id: str, start_ns: int) -> trace.Span:
    return TRACER.start_span(
        name,
        context=trace.set_span_in_context(parent),
        start_time=start_ns,
        attributes={SESSION_ID: session_id},
    )
