"""OpenTelemetry for the server, the SIP bridge and SDK users: export only when asked to.

`configure()` installs the SDK's tracer provider with the OTLP/gRPC exporter when
OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set, and does nothing
otherwise: the API's default tracer then makes spans that record nothing and cost next to
nothing. Every other OTEL_* variable (headers, insecure, sampler, service name...) works as the
SDK documents. `trace_metadata()` carries the current span's context (W3C traceparent) in gRPC
metadata, so the server's spans of a call join the caller's trace.
"""

from __future__ import annotations

import os

from opentelemetry import propagate, trace

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def configure(service_name: str) -> bool:
    """Export spans over OTLP/gRPC when an endpoint is configured; True when it is."""
    if not any(os.environ.get(name) for name in ENDPOINT_VARIABLES):
        return False
    # Imported only here: without an endpoint, the SDK and the exporter are never loaded.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    name = os.environ.get("OTEL_SERVICE_NAME") or service_name
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return True


def shutdown() -> None:
    """Flush the spans still queued (on exit); a no-op without `configure`."""
    provider = trace.get_tracer_provider()
    stop = getattr(provider, "shutdown", None)
    if callable(stop):
        stop()


def trace_metadata() -> tuple[tuple[str, str], ...]:
    """The current trace context as gRPC metadata pairs (empty outside a recording span)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return tuple(carrier.items())
