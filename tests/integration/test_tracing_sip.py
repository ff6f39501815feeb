"""A phone call's trace, end to end: baresip calls the SIP bridge, the bridge streams to a real
server process, both export their spans over OTLP/gRPC to a receiver on loopback. The server's
session span joins the bridge's call span (trace context in the Converse metadata), the turn and
its stages hang under it, and the call record names the SIP caller and called user."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import numpy as np
import pytest
from voiceagent.v1 import calls_pb2 as cpb
from voiceagent.v1 import calls_pb2_grpc as cpb_grpc

from tests.fakes.otlp_collector import FakeOtlpCollector, ReceivedSpan
from tests.integration.conftest import pause, speak, write_wav
from tests.integration.sip_peers import free_udp_port, require, running_bridge
from tests.integration.test_config_scale_out import ServerProcess
from tests.integration.test_sip_baresip import RATE, baresip_config


def one(spans: list[ReceivedSpan], name: str, service: str) -> ReceivedSpan:
    found = [s for s in spans if s.name == name and s.service == service]
    assert len(found) == 1, [(s.service, s.name) for s in spans]
    return found[0]


async def test_a_sip_calls_spans_join_and_its_record_names_the_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    baresip = require("baresip", "baresip")
    collector = FakeOtlpCollector()
    await collector.start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "200")  # export within a fraction of a second
    server = ServerProcess(f"sqlite:///{tmp_path}/store.db", tmp_path)
    try:
        await server.wait_serving()
        question = speak("What is the capital of France?", RATE)
        write_wav(
            tmp_path / "question.wav",
            np.concatenate([pause(1.0, RATE), question, pause(14.0, RATE)]),
            RATE,
        )
        sip_port = free_udp_port(2)
        baresip_config(tmp_path, sip_port, tmp_path / "question.wav")
        async with running_bridge(server.port) as bridge:
            call = await asyncio.to_thread(
                subprocess.run,
                [
                    baresip,
                    "-f",
                    str(tmp_path),
                    "-e",
                    f"/dial sip:agent@127.0.0.1:{bridge.sip_port}",
                    "-t",
                    "30",
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert "Call established" in call.stdout, call.stdout[-3000:]
            await asyncio.to_thread(bridge.wait_for, "call ended", 30)

        def complete(spans: list[ReceivedSpan]) -> bool:
            names = {(s.service, s.name) for s in spans}
            return {
                ("voice-agent-sip", "sip.call"),
                ("voice-agent", "session"),
                ("voice-agent", "tts"),
            } <= names

        spans = await collector.wait_for(complete, within=60)
        sip_call = one(spans, "sip.call", "voice-agent-sip")
        session = one(spans, "session", "voice-agent")
        assert (session.trace_id, session.parent_span_id) == (sip_call.trace_id, sip_call.span_id)
        turns = [s for s in spans if s.name == "turn" and s.parent_span_id == session.span_id]
        assert turns, [(s.name, s.parent_span_id) for s in spans]
        stages = {s.name for s in spans if s.parent_span_id == turns[0].span_id}
        assert stages == {"stt.final", "llm", "tts"}
        assert all(s.trace_id == sip_call.trace_id for s in spans if s.service == "voice-agent")
        assert sip_call.attributes["sip.caller"] == "caller"

        api = cpb_grpc.CallsStub(server.channel)
        (record,) = (await api.ListCalls(cpb.ListCallsRequest())).calls
        assert (record.transport, record.sip_caller, record.sip_called) == (
            "sip",
            "caller",
            "agent",
        )
        assert record.id == session.attributes["voice_agent.session_id"]
        assert record.trace_id == sip_call.trace_id
        full = await api.GetCall(cpb.GetCallRequest(id=record.id))
        assert any("capital" in t.user_text.lower() for t in full.turns), full.turns
    finally:
        await server.close()
        await collector.stop()
