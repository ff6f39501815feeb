"""The HTTP side (server/web.py) with scripted backends: Connect RPCs, Converse over a WebSocket
and its close codes, the token, /healthz and /metrics. No browser, no models."""

from __future__ import annotations

import asyncio
import json
import struct
import urllib.error
import urllib.request
from typing import Any, ClassVar

import grpc
import pytest
from voiceagent.v1 import campaigns_pb2 as cpb
from voiceagent.v1 import campaigns_pb2_grpc as cpb_grpc
from voiceagent.v1 import voice_agent_pb2 as pb
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from server.backends import registry
from server.main import MAX_MESSAGE_BYTES
from tests.unit.conftest import Scripted, StartServer
from tests.unit.scripted import ScriptedLLM

CONFIG = pb.ConverseRequest(
    config=pb.SessionConfig(
        input_format=pb.AudioFormat(encoding=pb.LINEAR16, sample_rate_hertz=16000)
    )
)


def http(
    s: Scripted, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{s.server.http_port}{path}", data=body, headers=headers or {}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, _lower(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, _lower(err.headers), err.read()


def _lower(headers: Any) -> dict[str, str]:
    return {key.lower(): value for key, value in headers.items()}


async def rpc(
    s: Scripted, method: str, message: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    """A Connect unary call with a JSON body, as a browser's fetch makes it."""
    status, _, body = await asyncio.to_thread(
        http,
        s,
        f"/voiceagent.v1.{method}",
        json.dumps(message).encode(),
        {"content-type": "application/json", **(headers or {})},
    )
    return status, json.loads(body) if body else {}


def converse_url(s: Scripted, query: str = "") -> str:
    return f"ws://127.0.0.1:{s.server.http_port}/converse{query}"


async def receive(ws: ClientConnection, kind: str) -> pb.ConverseResponse:
    """The next response of `kind`, skipping others."""
    async with asyncio.timeout(5):
        while True:
            response = pb.ConverseResponse.FromString(await ws.recv())  # type: ignore[arg-type]
            if response.WhichOneof("response") == kind:
                return response


async def closed_with(ws: ClientConnection) -> tuple[int, str, list[pb.ConverseResponse]]:
    """Read until the server closes; its close code, reason, and what it sent before."""
    seen: list[pb.ConverseResponse] = []
    with pytest.raises(ConnectionClosed) as closed:
        async with asyncio.timeout(5):
            while True:
                seen.append(pb.ConverseResponse.FromString(await ws.recv()))  # type: ignore[arg-type]
    assert closed.value.rcvd is not None, "the server dropped the connection without a close frame"
    return closed.value.rcvd.code, closed.value.rcvd.reason, seen


async def test_unary_rpcs_over_connect_reach_the_grpc_servicers(
    start_server: StartServer,
) -> None:
    s = await start_server()
    status, voices = await rpc(s, "VoiceAgent/ListVoices", {})
    assert status == 200
    assert {v["id"] for v in voices["voices"]} >= {v.id for v in s.tts.voices()}

    # Binary protobuf, as the page's generated client sends it.
    status, headers, body = await asyncio.to_thread(
        http,
        s,
        "/voiceagent.v1.VoiceAgent/ListModels",
        pb.ListModelsRequest().SerializeToString(),
        {"content-type": "application/proto"},
    )
    assert status == 200 and headers["content-type"] == "application/proto"
    assert set(s.llm.models()) <= {m.id for m in pb.ListModelsResponse.FromString(body).models}

    # A servicer's gRPC status comes back as the Connect error with the same code and message.
    status, error = await rpc(s, "VoiceAgent/ListVoices", {"backend": "nope"})
    assert status == 404 and error["code"] == "not_found" and "nope" in error["message"]
    status, error = await rpc(s, "Campaigns/CreateCampaign", {"campaign": {"name": ""}})
    assert status == 400 and error["code"] == "invalid_argument"

    # One store behind both ports: created over HTTP, read over gRPC.
    status, created = await rpc(s, "Campaigns/CreateCampaign", {"campaign": {"name": "Desk"}})
    assert status == 200 and created["id"]
    async with grpc.aio.insecure_channel(s.target) as channel:
        stored = await cpb_grpc.CampaignsStub(channel).GetCampaign(
            cpb.GetCampaignRequest(id=created["id"])
        )
    assert stored.name == "Desk"

    # Converse is not an HTTP RPC: it goes over the WebSocket.
    status, error = await rpc(s, "VoiceAgent/Converse", {})
    assert status == 404


async def test_server_streaming_rpc_over_connect(start_server: StartServer) -> None:
    s = await start_server()
    request = json.dumps({"text": "One. Two. Three."}).encode()
    status, _, body = await asyncio.to_thread(
        http,
        s,
        "/voiceagent.v1.VoiceAgent/StreamPreviewVoice",
        struct.pack(">BI", 0, len(request)) + request,
        {"content-type": "application/connect+json"},
    )
    assert status == 200
    frames = []
    while body:  # Connect envelopes: flags, length, message; flag 2 ends the stream
        flags, length = struct.unpack(">BI", body[:5])
        frames.append((flags, json.loads(body[5 : 5 + length])))
        body = body[5 + length :]
    assert frames[-1] == (2, {})
    assert len(frames) > 2 and all(f[1]["audio"] for f in frames[:-1])


async def test_converse_over_a_websocket(start_server: StartServer) -> None:
    s = await start_server()
    async with connect(converse_url(s), subprotocols=["voiceagent.v1"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "voiceagent.v1"
        await ws.send(CONFIG.SerializeToString())
        started = await receive(ws, "session_started")
        assert started.session_started.config.tts == "scripted-tts"
        await ws.send(pb.ConverseRequest(text="Hello there").SerializeToString())
        await receive(ws, "audio")
        text = await receive(ws, "agent_text")
        while not text.agent_text.final:
            text = await receive(ws, "agent_text")
        assert text.agent_text.text == "Sure. Here is my answer to that."
        assert (await receive(ws, "metrics")).metrics.from_text
        update = pb.ConfigUpdate(tts_voice=s.tts.voices()[0].id)
        await ws.send(pb.ConverseRequest(update=update).SerializeToString())
        event = await receive(ws, "event")
        while event.event.type != pb.CONFIG_APPLIED:
            event = await receive(ws, "event")
        await ws.send(pb.ConverseRequest(hangup=pb.Hangup()).SerializeToString())
        code, _, _ = await closed_with(ws)
    assert code == 1000
    assert not s.server.service.admission.sessions


@pytest.mark.parametrize(
    ("frames", "code", "reason"),
    [
        (["hello"], 1003, "text frames"),
        ([b"\xff\xff\xff\xff"], 1007, "not a protobuf ConverseRequest"),
        ([CONFIG.SerializeToString(), b"\x0a\xff"], 1007, "not a protobuf ConverseRequest"),
        ([pb.ConverseRequest(text="hi").SerializeToString()], 4003, "must be `config`"),
        ([b"\x00" * (MAX_MESSAGE_BYTES + 1)], 1009, ""),
    ],
    ids=["text", "garbage", "garbage-mid-call", "not-config-first", "too-big"],
)
async def test_bad_frames_get_a_close_code_and_the_server_stays_up(
    start_server: StartServer, frames: list[str | bytes], code: int, reason: str
) -> None:
    s = await start_server()
    async with connect(converse_url(s), max_size=None) as ws:
        for frame in frames:
            await ws.send(frame)
        got_code, got_reason, seen = await closed_with(ws)
    assert got_code == code and reason in got_reason
    if code >= 4000:  # a gRPC status: the full message came first as an Error frame
        assert seen[-1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    await asyncio.sleep(0.1)
    assert not s.server.service.admission.sessions
    async with connect(converse_url(s)) as ws:  # the next caller is served as usual
        await ws.send(CONFIG.SerializeToString())
        await receive(ws, "session_started")


async def test_session_errors_close_with_the_grpc_status(start_server: StartServer) -> None:
    s = await start_server()
    config = pb.ConverseRequest()
    config.CopyFrom(CONFIG)
    config.config.tts_voice = "no-such-voice"
    async with connect(converse_url(s)) as ws:
        await ws.send(config.SerializeToString())
        code, reason, seen = await closed_with(ws)
    assert code == 4000 + grpc.StatusCode.NOT_FOUND.value[0] and "no-such-voice" in reason
    assert seen[-1].error.code == grpc.StatusCode.NOT_FOUND.value[0]


async def test_a_browser_that_leaves_ends_its_session(start_server: StartServer) -> None:
    s = await start_server(llm=ScriptedLLM(" ".join(["word"] * 200), token_delay=0.05))
    ws = await connect(converse_url(s))
    await ws.send(CONFIG.SerializeToString())
    await receive(ws, "session_started")
    await ws.send(pb.ConverseRequest(text="Talk for a while").SerializeToString())
    await receive(ws, "agent_text")
    assert len(s.server.service.admission.sessions) == 1
    ws.transport.abort()  # no close frame: the tab was closed
    await asyncio.wait_for(s.server.service.admission.no_sessions.wait(), 3)


async def test_token_guards_http_rpcs_and_the_websocket(start_server: StartServer) -> None:
    s = await start_server(token="s3cret-token")
    status, error = await rpc(s, "VoiceAgent/ListVoices", {})
    assert status == 401 and error["code"] == "unauthenticated"
    assert "missing authorization" in error["message"]
    status, error = await rpc(
        s, "VoiceAgent/ListVoices", {}, {"authorization": "Bearer s3cret-tokeX"}
    )
    assert status == 401 and "invalid token" in error["message"]
    status, _ = await rpc(s, "VoiceAgent/ListVoices", {}, {"authorization": "Bearer s3cret-token"})
    assert status == 200

    for url, protocols, expected in [
        (converse_url(s), ["voiceagent.v1"], 1008),
        (converse_url(s), ["voiceagent.v1", "bearer.wrong"], 1008),
        (converse_url(s, "?token=wrong"), None, 1008),
        (converse_url(s), ["voiceagent.v1", "bearer.s3cret-token"], None),
        (converse_url(s, "?token=s3cret-token"), None, None),
    ]:
        async with connect(url, subprotocols=protocols) as ws:  # type: ignore[arg-type]
            if expected is None:
                await ws.send(CONFIG.SerializeToString())
                await receive(ws, "session_started")
            else:
                code, reason, _ = await closed_with(ws)
                assert code == expected and "token" in reason

    # Probes and scrapers cannot send tokens: health and metrics stay open, like gRPC health.
    assert (await asyncio.to_thread(http, s, "/healthz"))[0] == 200
    assert (await asyncio.to_thread(http, s, "/metrics"))[0] == 200


class SlowLoadingLLM(ScriptedLLM):
    name: ClassVar[str] = "slow-llm"
    release: ClassVar[asyncio.Event]

    async def load(self) -> None:
        await self.release.wait()


async def test_healthz_follows_grpc_health(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(registry.LLM_BACKENDS, "slow-llm", SlowLoadingLLM)
    SlowLoadingLLM.release = asyncio.Event()
    s = await start_server(llm_name="slow-llm", wait_ready=False)
    status, _, body = await asyncio.to_thread(http, s, "/healthz")
    assert status == 503 and json.loads(body) == {"status": "NOT_SERVING"}
    SlowLoadingLLM.release.set()
    await s.server.wait_ready()
    status, _, body = await asyncio.to_thread(http, s, "/healthz")
    assert status == 200 and json.loads(body) == {"status": "SERVING"}


async def test_healthz_is_503_while_draining(start_server: StartServer) -> None:
    s = await start_server(llm=ScriptedLLM(" ".join(["word"] * 40), token_delay=0.02))
    async with connect(converse_url(s)) as ws:  # a call in its turn holds the drain open
        await ws.send(CONFIG.SerializeToString())
        await ws.send(pb.ConverseRequest(text="Talk to me").SerializeToString())
        await receive(ws, "agent_text")
        drain = asyncio.create_task(s.server.drain(5))
        await asyncio.sleep(0.05)
        status, _, body = await asyncio.to_thread(http, s, "/healthz")
        assert status == 503 and json.loads(body) == {"status": "NOT_SERVING"}
        assert (await receive(ws, "event")).event.type == pb.GOING_AWAY
        code, _, _ = await closed_with(ws)
    assert code == 1000  # the turn finished, then the session ended cleanly
    await drain


async def test_metrics_has_the_turn_latency_histograms(start_server: StartServer) -> None:
    s = await start_server()
    status, headers, body = await asyncio.to_thread(http, s, "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert b"voice_agent_voice_to_voice_ms_bucket" in body


async def test_stop_closes_open_websockets(start_server: StartServer) -> None:
    s = await start_server()
    ws = await connect(converse_url(s))
    await ws.send(CONFIG.SerializeToString())
    await receive(ws, "session_started")
    await s.server.stop(0)
    code, _, _ = await closed_with(ws)
    assert code == 1001
