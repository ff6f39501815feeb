"""The server's spans: one per session, one per turn, one per stage of a turn.

Spans are parented explicitly (each is started with its parent's context), never through the
ambient context: a session's work runs in several tasks and async generators, where the ambient
context would not follow. Every span carries the session id, which is also the call record's id,
so a trace and a call record join on it. Exporting is set up by `voiceagent.tracing.configure`
(only when OTEL_EXPORTER_OTLP_ENDPOINT is set); otherwise these spans are no-ops.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

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
