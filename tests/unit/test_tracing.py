"""Tracing: the session's spans with the SDK's in-memory exporter, the caller's trace context
from the metadata, and `voiceagent.tracing.configure` exporting to a real OTLP receiver."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from voiceagent.client import VoiceAgentClient, linear16
from voiceagent.v1 import voice_agent_pb2 as pb

from tests.conftest import Call
from tests.fakes.otlp_collector import FakeOtlpCollector
from tests.unit.conftest import StartServer
from tests.unit.scripted import ScriptedToolLLM
from tests.unit.test_tools import LOOKUP, client_tool
from tests.unit.test_tools import config as tool_config

_EXPORTER = InMemorySpanExporter()
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN_ID = "00f067aa0ba902b7"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The SDK with an in-memory exporter, as the process's tracer provider (it can be set
    once per process; every test here clears what earlier ones recorded)."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


async def test_a_session_span_joins_the_callers_trace(
    start_server: StartServer, spans: InMemorySpanExporter
) -> None:
    s = await start_server()
    traceparent = f"00-{TRACE_ID}-{CALLER_SPAN_ID}-01"
    async with VoiceAgentClient(s.target) as client:
        conversation = client.converse(
            pb.SessionConfig(input_format=linear16(16000)), metadata=[("traceparent", traceparent)]
        )
        async with conversation:
            call = Call(conversation)
            receiver = asyncio.create_task(call.receive())
            await call.wait_for(lambda c: bool(c.of("session_started")))
            await conversation.send_text("Hello there")
            await call.wait_for(lambda c: len(c.of("metrics")) == 1)
            await conversation.hangup()
            await asyncio.wait_for(receiver, 10)
    session_id = call.of("session_started")[0].session_id
    for _ in range(100):  # the span ends as the servicer finishes, just after the stream
        if any(span.name == "session" for span in spans.get_finished_spans()):
            break
        await asyncio.sleep(0.02)
    (session,) = [span for span in spans.get_finished_spans() if span.name == "session"]
    assert format(session.context.trace_id, "032x") == TRACE_ID
    assert session.parent is not None and format(session.parent.span_id, "016x") == CALLER_SPAN_ID
    assert session.attributes["voice_agent.session_id"] == session_id
    assert session.attributes["voice_agent.turns"] == 1
    assert session.status.is_ok

    finished = spans.get_finished_spans()
    (turn,) = [span for span in finished if span.name == "turn"]
    assert turn.parent is not None and turn.parent.span_id == session.context.span_id
    assert (
        turn.attributes["voice_agent.from_text"]
        and turn.attributes["voice_agent.session_id"] == session_id
    )
    stages = {
        span.name: span
        for span in finished
        if span.parent and span.parent.span_id == turn.context.span_id
    }
    assert set(stages) == {"llm", "tts"}  # a typed turn has no speech to transcribe
    assert [e.name for e in stages["llm"].events] == ["first_token"]
    assert [e.name for e in stages["tts"].events] == ["first_audio"]
    metrics = call.of("metrics")[0]
    first_audio_ms = (stages["tts"].events[0].timestamp - turn.start_time) / 1e6
    assert abs(first_audio_ms - metrics.tts_first_audio_ms) < 1
    assert turn.start_time <= stages["llm"].start_time <= stages["llm"].end_time <= turn.end_time


async def test_a_tool_call_is_a_span_of_its_turn(
    start_server: StartServer, open_call, spans: InMemorySpanExporter
) -> None:
    llm = ScriptedToolLLM([LOOKUP], before="Let me look.", after="Your order: {result}")
    s = await start_server(llm=llm)
    call: Call = await open_call(s.target, tool_config(client_tool()))
    await call.conversation.send_text("Where is my order A17?")
    await call.wait_for(lambda c: len(c.of("tool_call")) == 1)
    await asyncio.sleep(0.05)
    await call.conversation.send_tool_result("call_1", result_json='{"status": "shipped"}')
    await call.wait_for(lambda c: len(c.of("metrics")) == 1)
    for _ in range(100):
        if any(span.name == "turn" for span in spans.get_finished_spans()):
            break
        await asyncio.sleep(0.02)
    finished = spans.get_finished_spans()
    (turn,) = [span for span in finished if span.name == "turn"]
    (tool,) = [span for span in finished if span.name == "tool"]
    assert tool.parent is not None and tool.parent.span_id == turn.context.span_id
    assert tool.attributes["voice_agent.tool.name"] == "lookup_order"
    assert tool.attributes["voice_agent.tool.call_id"] == "call_1"
    assert tool.status.is_ok
    assert tool.end_time - tool.start_time >= 40_000_000  # the client took >= 50 ms to answer


async def test_configure_exports_over_otlp_only_when_an_endpoint_is_set() -> None:
    collector = FakeOtlpCollector()
    await collector.start()
    script = (
        "from opentelemetry import trace\n"
        "from voiceagent import tracing\n"
        "print(tracing.configure('test-service'))\n"
        "with trace.get_tracer('t').start_as_current_span('probe'):\n"
        "    print(dict(tracing.trace_metadata()).get('traceparent', ''))\n"
        "tracing.shutdown()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    try:
        off = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-c", script], env=env, capture_output=True, text=True
        )
        assert off.stdout.split("\n")[:2] == ["False", ""], off.stderr
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = collector.endpoint
        on = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-c", script], env=env, capture_output=True, text=True
        )
        enabled, traceparent = on.stdout.split("\n")[:2]
        assert enabled == "True" and traceparent.startswith("00-"), on.stderr
        received = await collector.wait_for(lambda got: bool(got), within=10)
        (probe,) = received
        assert (probe.service, probe.name, probe.trace_id) == (
            "test-service",
            "probe",
            traceparent.split("-")[1],
        )
    finally:
        await collector.stop()
