"""Issue 14, cases 2-5 and 8: what a Converse client can do to a session, over gRPC and the
WebSocket, against a real server process (scripted backends, a token).

Typed-turn floods, oversized config fields, clients that never read, the SDK's view of an
early refusal, and the statuses a failing or cancelled session leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from voiceagent.client import VoiceAgentClient, linear16
from voiceagent.v1 import voice_agent_pb2 as pb
from voiceagent.v1 import voice_agent_pb2_grpc as pb_grpc
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.abuse.conftest import (
    MB,
    RSS_GROWTH_LIMIT,
    TOKEN,
    Growth,
    ServerProcess,
    start,
)
from tests.abuse.conftest import stop as stop_process

METADATA = (("authorization", f"Bearer {TOKEN}"),)
GREETING = "Hello there, this is a rather long greeting. " * 44  # 1,980 characters
TEXT_TURNS = 2000


def config(**fields: object) -> pb.ConverseRequest:
    return pb.ConverseRequest(config=pb.SessionConfig(input_format=linear16(16000), **fields))  # type: ignore[arg-type]


def converse(server: ServerProcess, requests: Iterator[pb.ConverseRequest]) -> grpc.Future:
    channel = grpc.insecure_channel(server.target)
    stub = pb_grpc.VoiceAgentStub(channel)
    return stub.Converse(requests, metadata=METADATA)


def read_all(call: object) -> tuple[list[pb.ConverseResponse], grpc.StatusCode, str]:
    responses: list[pb.ConverseResponse] = []
    try:
        for response in call:  # type: ignore[attr-defined]
            responses.append(response)
    except grpc.RpcError as err:
        return responses, err.code(), err.details() or ""
    return responses, grpc.StatusCode.OK, ""


def session_ends(server: ServerProcess) -> list[dict[str, object]]:
    ends = []
    for line in server.log_text().splitlines():
        if '"session_end"' in line:
            ends.append(json.loads(line[line.index("{") :]))
    return ends


# --- case 2: a flood of typed turns --------------------------------------------------------


def test_a_flood_of_typed_turns_is_refused_not_queued(server: ServerProcess) -> None:
    def requests() -> Iterator[pb.ConverseRequest]:
        yield config()
        for _ in range(TEXT_TURNS):
            yield pb.ConverseRequest(text="hi")
        time.sleep(1.0)  # the refusals are in, and the session still answers
        yield pb.ConverseRequest(hangup=pb.Hangup())

    with Growth(server) as growth:
        responses, code, details = read_all(converse(server, requests()))
    assert code == grpc.StatusCode.OK, details
    barge_ins = [r for r in responses if r.HasField("event") and r.event.type == pb.BARGE_IN]
    refused = [
        r.error
        for r in responses
        if r.HasField("error") and r.error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    ]
    assert len(barge_ins) <= 10, f"{len(barge_ins)} BARGE_IN for {TEXT_TURNS} typed turns"
    assert len(refused) >= TEXT_TURNS // 2
    assert "typed turn refused" in refused[0].message
    assert growth.grown < RSS_GROWTH_LIMIT, f"RSS grew {growth.grown / MB:.0f} MB"


# --- case 3: free-text fields past their limits ----------------------------------------------


@pytest.mark.parametrize(
    ("field", "size"),
    [("system_prompt", 90_000), ("greeting", 200_000), ("tts_voice", 5_000), ("language", 100)],
)
def test_an_oversized_config_field_is_invalid_argument(
    server: ServerProcess, field: str, size: int
) -> None:
    _, code, details = read_all(converse(server, iter([config(**{field: "a" * size})])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert f"config.{field} has {size} characters; the limit is" in details


def test_an_oversized_update_is_refused_and_the_call_goes_on(server: ServerProcess) -> None:
    def requests() -> Iterator[pb.ConverseRequest]:
        yield config()
        yield pb.ConverseRequest(update=pb.ConfigUpdate(system_prompt="a" * 90_000))
        time.sleep(0.5)
        yield pb.ConverseRequest(hangup=pb.Hangup())

    responses, code, _ = read_all(converse(server, requests()))
    assert code == grpc.StatusCode.OK
    errors = [r.error for r in responses if r.HasField("error")]
    assert [e.code for e in errors] == [grpc.StatusCode.INVALID_ARGUMENT.value[0]]
    assert "update.system_prompt has 90000 characters" in errors[0].message


# --- case 4: a client that does not read -----------------------------------------------------


def typing(stop: threading.Event, out_rate: int = 48000) -> Iterator[pb.ConverseRequest]:
    """A long greeting in 48 kHz audio, then a typed turn every 1.1 s (so the idle timeout is
    not what ends the session) until `stop`."""
    yield config(greeting=GREETING, output_format=linear16(out_rate))
    while not stop.wait(1.1):
        yield pb.ConverseRequest(text="go on")


def test_a_grpc_client_that_never_reads_is_ended(server: ServerProcess) -> None:
    stop = threading.Event()
    with Growth(server) as growth:
        call = converse(server, typing(stop))
        time.sleep(1.0)
        assert server.sessions() == 1
        left = server.wait_sessions(0, within=12)  # SEND_TIMEOUT_SECONDS=3 + 2 s of grace
    stop.set()
    call.cancel()
    assert left == 0, "the session of a client that never reads is still running"
    assert session_ends(server)[-1]["status"] == "DEADLINE_EXCEEDED"
    assert growth.grown < 50 * MB, f"RSS grew {growth.grown / MB:.0f} MB"


def test_a_grpc_client_that_reads_again_gets_deadline_exceeded(server: ServerProcess) -> None:
    stop = threading.Event()
    ended = len(session_ends(server))
    call = converse(server, typing(stop))
    try:
        # The session ends (and says so in the log) once a write has waited 3 s; its status
        # then waits up to 2 s behind the unread responses: read now.
        deadline = time.monotonic() + 15
        while len(session_ends(server)) == ended and time.monotonic() < deadline:
            time.sleep(0.05)
        assert session_ends(server)[-1]["status"] == "DEADLINE_EXCEEDED"
        responses, code, details = read_all(call)
    finally:
        stop.set()
        call.cancel()
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED, details
    assert "SEND_TIMEOUT_SECONDS" in details
    assert responses[0].HasField("session_started")


async def test_a_websocket_that_never_reads_is_ended(server: ServerProcess) -> None:
    url = f"ws://127.0.0.1:{server.http_port}/converse"
    with Growth(server) as growth:
        # A small receive buffer and no compression (the scripted voice is a tone, which deflate
        # shrinks 10x): else the kernel holds tens of MB for a client that reads nothing
        # (outside the server's RSS, and slow to fill).
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        sock.connect(("127.0.0.1", server.http_port))
        sock.setblocking(False)
        async with connect(
            url,
            sock=sock,
            compression=None,
            subprotocols=["voiceagent.v1", f"bearer.{TOKEN}"],  # type: ignore[list-item]
            max_queue=1,
        ) as ws:
            request = config(greeting=GREETING, output_format=linear16(48000))
            await ws.send(request.SerializeToString())

            async def type_on() -> None:  # more than the sockets' buffers hold, and no idling
                with contextlib.suppress(ConnectionClosed):
                    while True:
                        await asyncio.sleep(1.1)
                        await ws.send(pb.ConverseRequest(text="go on").SerializeToString())

            typist = asyncio.create_task(type_on())
            await asyncio.sleep(1.0)
            assert await asyncio.to_thread(server.sessions) == 1
            left = await asyncio.to_thread(server.wait_sessions, 0, 20)
            typist.cancel()
    assert left == 0, "the session of a WebSocket that never reads is still running"
    assert session_ends(server)[-1]["status"] == "DEADLINE_EXCEEDED"
    assert growth.grown < 50 * MB, f"RSS grew {growth.grown / MB:.0f} MB"


def test_the_idle_timeout_ends_a_paused_answer(tmp_path_factory: pytest.TempPathFactory) -> None:
    """With no send timeout, a client that neither sends nor reads is still ended: an answer
    paused for it does not count as activity."""
    idle = start(tmp_path_factory.mktemp("idle"), token=TOKEN, send_timeout=0, idle_timeout=2)
    try:
        stop = threading.Event()

        def silent() -> Iterator[pb.ConverseRequest]:
            yield config(greeting=GREETING, output_format=linear16(48000))
            stop.wait(30)

        call = converse(idle, silent())
        time.sleep(0.5)
        assert idle.sessions() == 1
        left = idle.wait_sessions(0, within=10)
        stop.set()
        call.cancel()
        assert left == 0
        assert session_ends(idle)[-1]["status"] == "DEADLINE_EXCEEDED"
    finally:
        stop_process(idle)


# --- case 5: the SDK reports the server's status ---------------------------------------------


async def sdk_refusal(
    server: ServerProcess, session: pb.SessionConfig, token: str | None
) -> tuple[grpc.StatusCode, str]:
    """Open a stream as `voice-agent talk` does, sending audio at once, until it ends."""
    async with VoiceAgentClient(server.target, token=token) as client:
        async with client.converse(session) as call:

            async def flood() -> None:
                for _ in range(500):
                    await call.send_audio(b"\x00" * 640)
                    await asyncio.sleep(0)

            sender = asyncio.create_task(flood())
            try:
                async for _ in call:
                    pass
            except grpc.aio.AioRpcError as err:
                return err.code(), err.details() or ""
            finally:
                sender.cancel()
    return grpc.StatusCode.OK, ""


@pytest.mark.parametrize(
    ("session", "token", "code"),
    [
        (pb.SessionConfig(input_format=linear16(16000), tts_voice="nope"), TOKEN, "NOT_FOUND"),
        (pb.SessionConfig(input_format=linear16(12345)), TOKEN, "INVALID_ARGUMENT"),
        (pb.SessionConfig(input_format=linear16(16000)), None, "UNAUTHENTICATED"),
    ],
)
async def test_the_sdk_reports_an_early_refusal_as_the_server_said(
    server: ServerProcess, session: pb.SessionConfig, token: str | None, code: str
) -> None:
    seen = [await sdk_refusal(server, session, token) for _ in range(25)]
    assert {status.name for status, _ in seen} == {code}, seen
    assert all("Internal error from Core" not in details for _, details in seen)


# --- case 8: one Error frame; a cancelled stream is CANCELLED, without a traceback -------------


async def test_a_websocket_session_failure_sends_one_error_frame(server: ServerProcess) -> None:
    url = f"ws://127.0.0.1:{server.http_port}/converse"
    frames: list[pb.ConverseResponse] = []
    async with connect(url, subprotocols=["voiceagent.v1", f"bearer.{TOKEN}"]) as ws:  # type: ignore[list-item]
        await ws.send(config().SerializeToString())
        await ws.send(pb.ConverseRequest(audio=b"\x00" * 96_000).SerializeToString())  # 3 s
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                frames.append(pb.ConverseResponse.FromString(await ws.recv()))  # type: ignore[arg-type]
    errors = [f.error for f in frames if f.HasField("error")]
    assert len(errors) == 1, errors
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4003


def test_a_cancelled_non_reading_stream_is_logged_cancelled(server: ServerProcess) -> None:
    # An earlier test's session may log its end meanwhile (its call record is written first).
    before = {str(end["session_id"]) for end in session_ends(server)}
    stop = threading.Event()
    call = converse(server, typing(stop))
    time.sleep(1.0)  # the greeting fills the transport's window: a write is pending
    call.cancel()
    stop.set()
    assert server.wait_sessions(0, within=5) == 0
    time.sleep(0.5)
    ends = [end for end in session_ends(server) if str(end["session_id"]) not in before]
    assert "CANCELLED" in [end["status"] for end in ends], ends
    assert "ExecuteBatchError" not in server.log_text()
    assert "Traceback" not in server.log_text()
