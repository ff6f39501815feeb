"""Call records: a session leaves its record (turns, metrics, outcome, recording); the Calls
service lists, reads, streams and deletes them; retention; a store outage loses only the record."""

from __future__ import annotations

import asyncio
import io
import json
import wave
from datetime import timedelta
from pathlib import Path

import grpc
from voiceagent.client import linear16
from voiceagent.v1 import calls_pb2 as cpb
from voiceagent.v1 import calls_pb2_grpc as cpb_grpc
from voiceagent.v1 import voice_agent_pb2 as pb

from server.backends.llm.base import ToolCall
from server.call_records import utc_now
from tests.conftest import Call
from tests.unit.conftest import Scripted, StartServer
from tests.unit.scripted import ScriptedToolLLM, silence, tone
from tests.unit.test_options import code_of


async def finished_call(
    open_call, s: Scripted, texts: list[str], audio_seconds: float = 0.0
) -> str:
    call: Call = await open_call(s.target, pb.SessionConfig(input_format=linear16(16000)))
    await call.wait_for(lambda c: bool(c.of("session_started")))
    for i, text in enumerate(texts):
        await call.conversation.send_text(text)
        await call.wait_for(lambda c, n=i + 1: len(c.of("metrics")) == n)
    if audio_seconds:
        await call.send_pcm(silence(audio_seconds))
    await call.conversation.hangup()
    await asyncio.wait_for(call.done.wait(), 10)
    return str(call.of("session_started")[0].session_id)


async def wait_ended(api: cpb_grpc.CallsStub, call_id: str) -> cpb.Call:
    for _ in range(200):  # the end is written as the servicer finishes, just after the stream
        record = await api.GetCall(cpb.GetCallRequest(id=call_id))
        if record.outcome != cpb.CALL_OUTCOME_UNSPECIFIED:
            return record
        await asyncio.sleep(0.02)
    raise AssertionError(f"call {call_id} never ended in its record")


async def test_a_call_leaves_its_record_and_recording(
    start_server: StartServer, open_call, tmp_path: Path
) -> None:
    s = await start_server(data_dir=str(tmp_path), record_calls=True)
    call_id = await finished_call(open_call, s, ["Hello there", "And goodbye"], audio_seconds=0.5)
    async with grpc.aio.insecure_channel(s.target) as channel:
        api = cpb_grpc.CallsStub(channel)
        record = await wait_ended(api, call_id)
        assert (record.outcome, record.status_code, record.transport) == (
            cpb.CALLER_HUNG_UP,
            "OK",
            "grpc",
        )
        assert record.llm.startswith("scripted-llm:") and record.has_recording
        assert (
            record.duration_seconds > 0.4
            and record.end_time.ToDatetime() > record.start_time.ToDatetime()
        )
        assert [t.user_text for t in record.turns] == ["Hello there", "And goodbye"]
        assert all(t.agent_text and t.metrics.from_text for t in record.turns)
        assert [t.metrics.turn_id for t in record.turns] == [t.turn_id for t in record.turns]

        listed = await api.ListCalls(cpb.ListCallsRequest())
        assert [c.id for c in listed.calls] == [call_id] and not listed.calls[0].turns

        chunks = [
            c.data async for c in api.GetCallRecording(cpb.GetCallRecordingRequest(id=call_id))
        ]
        with wave.open(io.BytesIO(b"".join(chunks))) as wav:
            assert (wav.getframerate(), wav.getnchannels()) == (16000, 1)
            assert wav.getnframes() >= 8000  # the caller's half second at least, plus the agent
            assert any(wav.readframes(wav.getnframes()))  # the agent's speech is in it
        wav_path = tmp_path / "recordings" / f"{call_id}.wav"
        assert wav_path.is_file() and not list((tmp_path / "recordings").glob("*.raw"))

        await api.DeleteCall(cpb.DeleteCallRequest(id=call_id))
        assert not wav_path.exists()
        code, details = await code_of(api.GetCall(cpb.GetCallRequest(id=call_id)))
        assert code == grpc.StatusCode.NOT_FOUND and call_id in details
        code, _ = await code_of(api.DeleteCall(cpb.DeleteCallRequest(id=call_id)))
        assert code == grpc.StatusCode.NOT_FOUND


async def test_list_calls_filters_and_bad_requests(start_server: StartServer, open_call) -> None:
    s = await start_server()
    first = await finished_call(open_call, s, ["one"])
    second = await finished_call(open_call, s, ["two"])
    async with grpc.aio.insecure_channel(s.target) as channel:
        api = cpb_grpc.CallsStub(channel)
        await wait_ended(api, second)
        page = await api.ListCalls(cpb.ListCallsRequest(page_size=1))
        assert [c.id for c in page.calls] == [second] and page.next_page_token
        rest = await api.ListCalls(
            cpb.ListCallsRequest(page_size=1, page_token=page.next_page_token)
        )
        assert [c.id for c in rest.calls] == [first]
        later = cpb.ListCallsRequest()
        later.start_after.FromDatetime(utc_now() + timedelta(minutes=1))
        assert not (await api.ListCalls(later)).calls
        assert not (await api.ListCalls(cpb.ListCallsRequest(campaign_id="nope"))).calls
        for request, needle in [
            (cpb.ListCallsRequest(page_token="garbage"), "page_token"),
            (cpb.ListCallsRequest(page_size=-1), "page_size"),
        ]:
            code, details = await code_of(api.ListCalls(request))
            assert code == grpc.StatusCode.INVALID_ARGUMENT and needle in details
        code, details = await code_of(api.GetCall(cpb.GetCallRequest()))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "id is required" in details
        recording = api.GetCallRecording(cpb.GetCallRecordingRequest(id=first))
        code, details = await code_of(recording.read())
        assert code == grpc.StatusCode.NOT_FOUND and "RECORD_CALLS=1" in details


async def test_the_token_guards_calls(start_server: StartServer) -> None:
    s = await start_server(token="s3cret-token")
    async with grpc.aio.insecure_channel(s.target) as channel:
        api = cpb_grpc.CallsStub(channel)
        code, _ = await code_of(api.ListCalls(cpb.ListCallsRequest()))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        ok = await api.ListCalls(
            cpb.ListCallsRequest(), metadata=[("authorization", "Bearer s3cret-token")]
        )
        assert not ok.calls


async def test_retention_deletes_old_records_and_recordings(
    start_server: StartServer, open_call, tmp_path: Path
) -> None:
    s = await start_server(data_dir=str(tmp_path), record_calls=True, call_retention_days=30)
    call_id = await finished_call(open_call, s, ["Hi"])
    async with grpc.aio.insecure_channel(s.target) as channel:
        api = cpb_grpc.CallsStub(channel)
        await wait_ended(api, call_id)
        assert await s.server.calls.sweep() == 0  # not old yet
        assert await s.server.calls.sweep(now=utc_now() + timedelta(days=31)) == 1
        assert not (await api.ListCalls(cpb.ListCallsRequest())).calls
        assert not list((tmp_path / "recordings").iterdir())


async def test_a_store_outage_loses_the_record_not_the_call(
    start_server: StartServer, open_call, caplog
) -> None:
    s = await start_server()
    call: Call = await open_call(s.target, pb.SessionConfig(input_format=linear16(16000)))
    await call.wait_for(lambda c: bool(c.of("session_started")))
    s.server.campaigns.close()  # the database goes away mid-call
    await call.conversation.send_text("Are you still there?")
    await call.wait_for(lambda c: len(c.of("metrics")) == 1)
    await call.send_pcm(tone(0.1) * 0)
    await call.conversation.hangup()
    await asyncio.wait_for(call.done.wait(), 10)
    assert call.status == grpc.StatusCode.OK and call.finals()
    for _ in range(100):
        if "call record" in caplog.text and "lost" in caplog.text:
            break
        await asyncio.sleep(0.02)
    assert f"call record {call.of('session_started')[0].session_id} lost" in caplog.text


async def test_a_transferred_call_keeps_its_tool_calls_and_outcome(
    start_server: StartServer, open_call, tmp_path: Path
) -> None:
    target = "sip:desk@127.0.0.1:5070"
    llm = ScriptedToolLLM(
        [ToolCall("c1", "transfer_call", json.dumps({"target": target}))],
        before="I am transferring you now.",
    )
    s = await start_server(llm=llm, data_dir=str(tmp_path))
    builtins = pb.BuiltinTools(transfer_targets=[target])
    config = pb.SessionConfig(input_format=linear16(16000), builtin_tools=builtins)
    call: Call = await open_call(s.target, config)
    await call.conversation.send_text("Put me through to the front desk.")
    await asyncio.wait_for(call.done.wait(), 10)
    call_id = str(call.of("session_started")[0].session_id)
    async with grpc.aio.insecure_channel(s.target) as channel:
        record = await wait_ended(cpb_grpc.CallsStub(channel), call_id)
    assert record.outcome == cpb.TRANSFERRED
    [turn] = [t for t in record.turns if t.user_text]
    [made] = [json.loads(c) for c in turn.tool_calls]
    assert (made["id"], made["name"], json.loads(made["arguments"])) == (
        "c1",
        "transfer_call",
        {"target": target},
    )
    assert "result" in made and not made.get("error")
