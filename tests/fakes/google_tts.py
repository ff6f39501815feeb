"""A local Google Cloud Text-to-Speech: grpc.aio serving google.cloud.texttospeech.v1.TextToSpeech
StreamingSynthesize (bidi) and ListVoices, with the library's own message types on the wire.

Like the real service, the first StreamingSynthesizeRequest must carry only `streaming_config`
with a Chirp 3 HD voice, later ones only `input`; anything else is INVALID_ARGUMENT. Each input
is answered with PCM at the configured rate (a tone, 60 ms per character) in 50 ms responses.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
from google.cloud import texttospeech_v1 as tts

from tests.fakes.faults import Faults

SERVICE = "google.cloud.texttospeech.v1.TextToSpeech"
VOICES = ["en-US-Chirp3-HD-Charon", "en-US-Chirp3-HD-Kore", "en-US-Standard-A"]
SECONDS_PER_CHARACTER = 0.06
CHUNK_SECONDS = 0.05


@dataclass
class FakeGoogleTTS:
    faults: Faults = field(default_factory=Faults)
    configs: list[Any] = field(default_factory=list)  # StreamingSynthesizeConfig per stream
    texts: list[str] = field(default_factory=list)
    cancelled: int = 0  # streams the client ended before all audio was sent
    responses_sent: int = 0
    port: int = 0
    _server: grpc.aio.Server | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> FakeGoogleTTS:
        self._server = grpc.aio.server()
        handlers = {
            "StreamingSynthesize": grpc.stream_stream_rpc_method_handler(
                self._streaming_synthesize,
                request_deserializer=tts.StreamingSynthesizeRequest.deserialize,
                response_serializer=self._serialize,
            ),
            "ListVoices": grpc.unary_unary_rpc_method_handler(
                self._list_voices,
                request_deserializer=tts.ListVoicesRequest.deserialize,
                response_serializer=tts.ListVoicesResponse.serialize,
            ),
        }
        self._server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(SERVICE, handlers)]
        )
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()
        return self

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0)

    @staticmethod
    def _serialize(message: Any) -> bytes:
        if isinstance(message, bytes):  # the malformed-response fault
            return message
        return tts.StreamingSynthesizeResponse.serialize(message)

    async def _list_voices(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return tts.ListVoicesResponse(
            voices=[
                tts.Voice(
                    name=name,
                    language_codes=["en-US"],
                    ssml_gender=tts.SsmlVoiceGender.FEMALE
                    if "Kore" in name
                    else tts.SsmlVoiceGender.MALE,
                    natural_sample_rate_hertz=24000,
                )
                for name in VOICES
                if not request.language_code or request.language_code == "en-US"
            ]
        )

    async def _streaming_synthesize(self, requests: Any, context: grpc.aio.ServicerContext) -> Any:
        faults = self.faults
        if faults.refuse_connections > 0:
            faults.refuse_connections -= 1
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, "The service is currently unavailable."
            )
        first = True
        config: Any = None
        try:
            async for request in requests:
                if first:
                    first = False
                    if "streaming_config" not in request or "input" in request:
                        await context.abort(
                            grpc.StatusCode.INVALID_ARGUMENT,
                            "The first request must only contain streaming_config.",
                        )
                    config = request.streaming_config
                    if "Chirp3-HD" not in config.voice.name and "Journey" not in config.voice.name:
                        await context.abort(
                            grpc.StatusCode.INVALID_ARGUMENT,
                            f"Voice {config.voice.name} does not support streaming.",
                        )
                    self.configs.append(config)
                    continue
                if "input" not in request:
                    await context.abort(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        "Only the first request may contain streaming_config.",
                    )
                text = request.input.text
                self.texts.append(text)
                rate = config.streaming_audio_config.sample_rate_hertz or 24000
                t = np.arange(int(SECONDS_PER_CHARACTER * len(text) * rate)) / rate
                pcm = (6000 * np.sin(2 * np.pi * 250 * t)).astype("<i2").tobytes()
                step = int(CHUNK_SECONDS * rate) * 2
                for start in range(0, len(pcm), step):
                    if faults.delay:
                        await asyncio.sleep(faults.delay)
                    self.responses_sent += 1
                    n = self.responses_sent
                    if faults.drop_after is not None and n > faults.drop_after:
                        faults.fire("drop_after")
                        await context.abort(grpc.StatusCode.UNAVAILABLE, "Connection reset by peer")
                    if faults.error_after is not None and n > faults.error_after:
                        faults.fire("error_after")
                        await context.abort(grpc.StatusCode.INTERNAL, "fake internal error")
                    if faults.malformed_after is not None and n > faults.malformed_after:
                        faults.fire("malformed_after")
                        yield b"\xff\xff\xff"
                        continue
                    yield tts.StreamingSynthesizeResponse(audio_content=pcm[start : start + step])
                    await asyncio.sleep(0.005)
        except asyncio.CancelledError:  # the client cancelled the RPC
            self.cancelled += 1
            raise
