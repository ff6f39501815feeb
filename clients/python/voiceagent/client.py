"""A small typed SDK around the generated stubs.

async with VoiceAgentClient("127.0.0.1:50051") as client:
    await client.wait_ready()
    async with client.converse(SessionConfig(...)) as call:
        await call.send_audio(frame)
        async for response in call:
            ...
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from types import TracebackType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from voiceagent.tracing import trace_metadata
from voiceagent.v1 import voice_agent_pb2 as pb
from voiceagent.v1 import voice_agent_pb2_grpc as pb_grpc

# Events after which the server ends the stream with OK.
ENDING_EVENTS = (pb.CALL_ENDED, pb.TRANSFER)
# What grpc.aio reports, in place of the server's status, when a request was being written as
# the server ended the stream (grpc/grpc#36066): see Conversation._responses.
WRITE_RACE_DETAILS = "Internal error from Core"


def linear16(rate: int) -> pb.AudioFormat:
    return pb.AudioFormat(encoding=pb.LINEAR16, sample_rate_hertz=rate)


class VoiceAgentClient:
    def __init__(
        self, target: str, token: str | None = None, tls: bool = False, ca_file: str | None = None
    ) -> None:
        """`token`: sent as `authorization: Bearer` (VOICE_AGENT_TOKEN on the server).
        `tls`: connect with TLS, trusting `ca_file` (PEM) or the system's roots."""
        self.target = target
        self._tls = tls or bool(ca_file)
        self._ca_file = ca_file
        self._metadata: Sequence[tuple[str, str]] = (
            (("authorization", f"Bearer {token}"),) if token else ()
        )
        self._channel: grpc.aio.Channel | None = None
        self.stub: pb_grpc.VoiceAgentStub

    async def __aenter__(self) -> VoiceAgentClient:
        options = [("grpc.max_receive_message_length", 8 << 20)]
        if self._tls:
            roots = open(self._ca_file, "rb").read() if self._ca_file else None  # noqa: ASYNC230
            credentials = grpc.ssl_channel_credentials(root_certificates=roots)
            self._channel = grpc.aio.secure_channel(self.target, credentials, options=options)
        else:
            self._channel = grpc.aio.insecure_channel(self.target, options=options)
        self.stub = pb_grpc.VoiceAgentStub(self._channel)  # type: ignore[no-untyped-call]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._channel is not None:
            await self._channel.close()

    async def wait_ready(self, within: float = 300.0) -> None:
        """Wait until the server's health check says SERVING (models loaded)."""
        assert self._channel is not None
        health = health_pb2_grpc.HealthStub(self._channel)
        deadline = asyncio.get_running_loop().time() + within
        while True:
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError as err:
                if err.code() not in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                ):
                    raise
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{self.target} not SERVING after {within:.0f} s")
            await asyncio.sleep(0.5)

    async def preview_voice(
        self, text: str, voice: str = "", output_format: pb.AudioFormat | None = None
    ) -> bytes:
        """`text` spoken in `voice` (empty: the server's default), in `output_format`."""
        request = pb.PreviewVoiceRequest(voice=voice, text=text, output_format=output_format)
        response = await self.stub.PreviewVoice(request, metadata=self._metadata)
        return bytes(response.audio)

    def converse(
        self, config: pb.SessionConfig, metadata: Sequence[tuple[str, str]] = ()
    ) -> Conversation:
        """One Converse stream; `metadata` is sent beside the token (the SIP bridge names the
        caller there), and so is the current OpenTelemetry span's context, if any."""
        return Conversation(self.stub, config, (*self._metadata, *metadata, *trace_metadata()))


class Conversation:
    """One Converse stream: send requests with the methods, iterate to receive responses.

    Requests after the config wait in order until the first response (SessionStarted) has been
    iterated: iterate the conversation while sending, as `voice-agent talk` does. Once the agent
    has ended or transferred the call (Event CALL_ENDED or TRANSFER), nothing more is sent: the
    server is ending the stream.
    """

    def __init__(
        self,
        stub: pb_grpc.VoiceAgentStub,
        config: pb.SessionConfig,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> None:
        self._stub = stub
        self._config = config
        self._metadata = metadata
        self._outbox: asyncio.Queue[pb.ConverseRequest | None] = asyncio.Queue()
        self._call: grpc.aio.StreamStreamCall | None = None
        # Set by the first response (SessionStarted) or the end of the call.
        self._accepted = asyncio.Event()
        self._input_open = True  # until close_input()
        self._over = False  # the server ends the stream (or has): queued requests are dropped

    async def __aenter__(self) -> Conversation:
        await self._outbox.put(pb.ConverseRequest(config=self._config))
        self._call = self._stub.Converse(self._requests(), metadata=self._metadata)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._call is not None and not self._call.done():
            self._call.cancel()

    async def _requests(self) -> AsyncIterator[pb.ConverseRequest]:
        """The config at once; the rest once the server has accepted the stream. A server that
        refuses the config (unknown voice, bad rate, missing token) ends the call before that,
        and a request written meanwhile would make grpc.aio report INTERNAL "Internal error
        from Core" in place of the server's status (grpc/grpc#36066)."""
        config = await self._outbox.get()
        if config is None:
            return
        yield config
        await self._accepted.wait()
        while (request := await self._outbox.get()) is not None:
            if self._over or (self._call is not None and self._call.done()):
                return
            yield request

    def _send(self, request: pb.ConverseRequest | None) -> None:
        if self._input_open and not self._over:
            self._outbox.put_nowait(request)
            self._input_open = request is not None

    def _stop_sending(self) -> None:
        """The server ends the stream: the writer half-closes, whatever is still queued."""
        if not self._over:
            self._over = True
            self._outbox.put_nowait(None)  # wakes the writer

    async def send_audio(self, audio: bytes) -> None:
        self._send(pb.ConverseRequest(audio=audio))

    async def send_text(self, text: str) -> None:
        self._send(pb.ConverseRequest(text=text))

    async def update(
        self, llm_model: str = "", tts_voice: str = "", system_prompt: str = ""
    ) -> None:
        update = pb.ConfigUpdate(
            llm_model=llm_model, tts_voice=tts_voice, system_prompt=system_prompt
        )
        self._send(pb.ConverseRequest(update=update))

    async def send_tool_result(self, call_id: str, result_json: str = "", error: str = "") -> None:
        """Answer a client tool's ToolCall (same id) with a JSON result or an error."""
        result = pb.ToolResult(id=call_id, result_json=result_json, error=error)
        self._send(pb.ConverseRequest(tool_result=result))

    async def hangup(self) -> None:
        self._send(pb.ConverseRequest(hangup=pb.Hangup()))

    async def close_input(self) -> None:
        """Half-close: the agent finishes its current answer, then the stream ends."""
        self._send(None)

    def __aiter__(self) -> AsyncIterator[pb.ConverseResponse]:
        assert self._call is not None, "use `async with client.converse(...)`"
        return self._responses(self._call)

    async def _responses(
        self, call: grpc.aio.StreamStreamCall
    ) -> AsyncIterator[pb.ConverseResponse]:
        ending = False
        last: pb.ConverseResponse | None = None
        try:
            async for response in call:
                self._accepted.set()
                last = response
                if response.WhichOneof("response") == "event" and (
                    response.event.type in ENDING_EVENTS
                ):
                    ending = True
                    self._stop_sending()
                yield response
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.INTERNAL or err.details() != WRITE_RACE_DETAILS:
                raise
            # A request was on its way as the server ended the stream: grpc.aio reports the
            # write's failure in place of the server's status. After CALL_ENDED or TRANSFER
            # that status is OK; a session that fails sends its status as an Error last.
            if ending:
                return
            if last is not None and last.WhichOneof("response") == "error":
                raise _status_from_error(last.error, err) from err
            raise
        finally:
            self._stop_sending()
            self._accepted.set()  # the call is over: the writer finds it done and stops


def _status_from_error(error: pb.Error, reported: grpc.aio.AioRpcError) -> grpc.aio.AioRpcError:
    """The status a failing session sent as its last message, as the error grpc would raise."""
    code = next((c for c in grpc.StatusCode if c.value[0] == error.code), grpc.StatusCode.UNKNOWN)
    return grpc.aio.AioRpcError(
        code, reported.initial_metadata(), reported.trailing_metadata(), error.message
    )
