"""Google Cloud Text-to-Speech, Chirp 3 HD voices, through bidirectional streaming synthesis.

`TextToSpeechAsyncClient.streaming_synthesize`: the first request carries only the streaming
config (voice, PCM at the session's rate), the next the text; audio comes back as it is rendered.
Each piece of an agent turn is one stream, so a barge-in cancels just that RPC. Credentials are
Google's usual ones (GOOGLE_APPLICATION_CREDENTIALS); GOOGLE_TTS_ENDPOINT points the client
elsewhere, and a loopback endpoint (a test server) is reached over plaintext without credentials.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, ClassVar

import grpc
import numpy as np
from google.api_core import exceptions as google_errors
from google.api_core.client_options import ClientOptions

from server.backends.base import BackendUnavailable, retry_before_first_output
from server.backends.tts.base import TTS, SynthesizedAudio, VoiceInfo

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "texttospeech.googleapis.com"
LANGUAGE = "en-US"
# Chirp 3 HD voices (the only family, with Journey, that streams); ListVoices refines this list.
PRESET_VOICES = [
    VoiceInfo(f"en-US-Chirp3-HD-{name}", f"{name} (Chirp 3 HD)", LANGUAGE, gender)
    for name, gender in (
        ("Charon", "male"),
        ("Kore", "female"),
        ("Aoede", "female"),
        ("Puck", "male"),
    )
]
RETRYABLE = (google_errors.ServiceUnavailable, google_errors.DeadlineExceeded)
# grpc.aio reports a request write that races the server's final status as INTERNAL with these
# details (grpc/aio/_call.py: a failed send_serialized_message -> set_internal_error), hiding
# the server's own status: a refusal (UNAVAILABLE) before it read our words then looks like a
# server fault. About 1 in 15 refusals in tests/unit/test_google_tts.py came back so.
LOCAL_WRITE_RACE = "Internal error from Core"


def retryable(err: Exception) -> bool:
    """Worth another attempt before any audio: the service was unavailable or slow, or our own
    grpc client lost its status to the write race above (AIP-194 retries only UNAVAILABLE from
    the server itself)."""
    if isinstance(err, RETRYABLE):
        return True
    return isinstance(err, google_errors.InternalServerError) and err.message == LOCAL_WRITE_RACE


FIRST_AUDIO_TIMEOUT = 10.0


def _loopback(endpoint: str) -> bool:
    host = endpoint.rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1")


class GoogleTTS(TTS):
    name: ClassVar[str] = "google"
    display_name: ClassVar[str] = "Google Cloud Text-to-Speech (cloud)"

    def __init__(self, endpoint: str | None = None, retries: int = 2) -> None:
        self.endpoint = endpoint or os.environ.get("GOOGLE_TTS_ENDPOINT") or DEFAULT_ENDPOINT
        self.retries = retries
        self._voices = list(PRESET_VOICES)
        self._client: Any = None

    @classmethod
    def unavailable_reason(cls) -> str | None:
        endpoint = os.environ.get("GOOGLE_TTS_ENDPOINT", "")
        if endpoint and _loopback(endpoint):
            return None
        if not os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
            return "GOOGLE_APPLICATION_CREDENTIALS not set"
        return None

    def voices(self) -> list[VoiceInfo]:
        return self._voices

    async def load(self) -> None:
        from google.cloud import texttospeech_v1 as tts
        from google.cloud.texttospeech_v1.services.text_to_speech.transports import (
            TextToSpeechGrpcAsyncIOTransport,
        )

        if _loopback(self.endpoint):
            transport = TextToSpeechGrpcAsyncIOTransport(
                channel=grpc.aio.insecure_channel(self.endpoint)
            )
            self._client = tts.TextToSpeechAsyncClient(transport=transport)
        else:
            self._client = tts.TextToSpeechAsyncClient(
                client_options=ClientOptions(api_endpoint=self.endpoint)
            )
        try:
            listed = await self._client.list_voices(language_code=LANGUAGE, timeout=10)
        except google_errors.GoogleAPICallError as err:
            log.warning("google tts: ListVoices failed (%s); using the preset voices", err)
            return
        chirp = [
            VoiceInfo(
                v.name,
                f"{v.name.rsplit('-', 1)[-1]} (Chirp 3 HD)",
                v.language_codes[0] if v.language_codes else LANGUAGE,
                tts.SsmlVoiceGender(v.ssml_gender).name.lower(),
            )
            for v in listed.voices
            if "Chirp3-HD" in v.name
        ]
        self._voices = chirp or self._voices

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.transport.close()

    async def synthesize(
        self, text: str, voice: str, sample_rate: int
    ) -> AsyncIterator[SynthesizedAudio]:
        if self._client is None:
            await self.load()
        try:
            async for pcm in retry_before_first_output(
                lambda _attempt: self._stream(text, voice, sample_rate),
                self.retries,
                lambda attempt: 0.1 * 2 ** (attempt - 1),
                retryable,
            ):
                yield SynthesizedAudio(pcm, sample_rate)
        except RETRYABLE as err:
            raise BackendUnavailable(f"Google TTS unavailable: {err.message}") from err
        except google_errors.GoogleAPICallError as err:
            raise BackendUnavailable(f"Google TTS error: {err.code}: {err.message}") from err

    async def _stream(
        self, text: str, voice: str, sample_rate: int
    ) -> AsyncGenerator[np.ndarray, None]:
        from google.cloud import texttospeech_v1 as tts

        async def requests() -> AsyncIterator[Any]:
            yield tts.StreamingSynthesizeRequest(
                streaming_config=tts.StreamingSynthesizeConfig(
                    voice=tts.VoiceSelectionParams(language_code=LANGUAGE, name=voice),
                    streaming_audio_config=tts.StreamingAudioConfig(
                        audio_encoding=tts.AudioEncoding.PCM, sample_rate_hertz=sample_rate
                    ),
                )
            )
            yield tts.StreamingSynthesizeRequest(input=tts.StreamingSynthesisInput(text=text))

        call = await self._client.streaming_synthesize(requests=requests())
        carry = b""
        try:
            responses = call.__aiter__()
            while True:
                try:
                    response = await asyncio.wait_for(responses.__anext__(), FIRST_AUDIO_TIMEOUT)
                except StopAsyncIteration:
                    return
                except TimeoutError as err:
                    raise BackendUnavailable(
                        f"Google TTS sent nothing for {FIRST_AUDIO_TIMEOUT:g} s"
                    ) from err
                if response is None:  # grpc could not parse it (and logged why)
                    raise BackendUnavailable("Google TTS sent a malformed response")
                data = carry + response.audio_content
                usable = len(data) - len(data) % 2
                carry = data[usable:]
                if usable:
                    yield np.frombuffer(data[:usable], dtype="<i2").astype(np.int16)
        except grpc.aio.AioRpcError as err:  # errors the wrapper did not translate
            raise BackendUnavailable(
                f"Google TTS error: {err.code().name}: {err.details()}"
            ) from err
        except (ValueError, TypeError) as err:  # a response that does not parse
            raise BackendUnavailable(f"Google TTS sent a malformed response: {err}") from err
        finally:
            call.cancel()  # a barge-in closed us early: end the RPC now
