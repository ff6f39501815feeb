"""Audio formats at the edge of a session: validation, encoding (G.711: server/g711.py),
resampling, framing.

Inside the server audio is mono int16 numpy arrays at the model's rate; bytes in the client's
format exist only at the stream's two ends.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import soxr
from voiceagent.v1 import voice_agent_pb2 as pb

from server.g711 import g711_decode, g711_encode

LINEAR16_RATES = (8000, 16000, 24000, 48000)
G711_RATE = 8000
AUDIO_MESSAGE_MS = 100  # agent audio goes out in messages of at most this much
ENCODING_NAMES = {pb.LINEAR16: "LINEAR16", pb.MULAW: "MULAW", pb.ALAW: "ALAW"}


class AudioFormatError(ValueError):
    """The client asked for an encoding or rate we do not take; the message says what we do take."""


@dataclass(frozen=True)
class Format:
    encoding: int  # pb.AudioEncoding value
    rate: int

    @property
    def bytes_per_sample(self) -> int:
        return 2 if self.encoding == pb.LINEAR16 else 1

    def to_proto(self) -> pb.AudioFormat:
        return pb.AudioFormat(encoding=self.encoding, sample_rate_hertz=self.rate)  # type: ignore[arg-type]


def validate_format(fmt: pb.AudioFormat, field: str) -> Format:
    allowed = "LINEAR16 at 8000, 16000, 24000 or 48000 Hz; MULAW or ALAW at 8000 Hz"
    if fmt.encoding not in ENCODING_NAMES:
        raise AudioFormatError(f"{field}.encoding must be one of LINEAR16, MULAW, ALAW ({allowed})")
    rate = fmt.sample_rate_hertz
    if fmt.encoding == pb.LINEAR16 and rate not in LINEAR16_RATES:
        raise AudioFormatError(f"{field}.sample_rate_hertz {rate} is not supported: {allowed}")
    if fmt.encoding in (pb.MULAW, pb.ALAW) and rate != G711_RATE:
        raise AudioFormatError(
            f"{field}.sample_rate_hertz {rate} is not supported for "
            f"{ENCODING_NAMES[fmt.encoding]}: {allowed}"
        )
    return Format(fmt.encoding, rate)


def decode(data: bytes, encoding: int) -> np.ndarray:
    """Client bytes -> int16 samples. A trailing odd byte of LINEAR16 is the caller's to keep."""
    if encoding == pb.LINEAR16:
        return np.frombuffer(data, dtype="<i2").astype(np.int16)
    return g711_decode(data, "mulaw" if encoding == pb.MULAW else "alaw")


def encode(pcm: np.ndarray, encoding: int) -> bytes:
    if encoding == pb.LINEAR16:
        return pcm.astype("<i2").tobytes()
    return g711_encode(pcm, "mulaw" if encoding == pb.MULAW else "alaw")


class StreamResampler:
    """Stateful soxr resampler for a stream cut in frames (no clicks at frame edges)."""

    def __init__(self, in_rate: int, out_rate: int, quality: str = "HQ") -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._stream = (
            soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=quality)
            if in_rate != out_rate
            else None
        )

    def process(self, pcm: np.ndarray, last: bool = False) -> np.ndarray:
        if self._stream is None:
            return pcm
        return np.asarray(self._stream.resample_chunk(pcm, last=last), dtype=np.int16)


def resample(pcm: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """Whole-buffer resampling (one TTS sentence at a time)."""
    if in_rate == out_rate or len(pcm) == 0:
        return pcm
    return np.asarray(soxr.resample(pcm, in_rate, out_rate, quality="HQ"), dtype=np.int16)


class InboundAudio:
    """Client bytes in any accepted format -> int16 at the model rate, carrying partial samples."""

    def __init__(self, fmt: Format, model_rate: int) -> None:
        self.fmt = fmt
        self._carry = b""
        self._resampler = StreamResampler(fmt.rate, model_rate)

    def push(self, data: bytes) -> np.ndarray:
        data = self._carry + data
        usable = len(data) - len(data) % self.fmt.bytes_per_sample
        self._carry = data[usable:]
        return self._resampler.process(decode(data[:usable], self.fmt.encoding))


class OutboundAudio:
    """Model-rate int16 -> client bytes, cut in messages of `frame_ms` (the last may be shorter)."""

    def __init__(self, fmt: Format, frame_ms: int = AUDIO_MESSAGE_MS) -> None:
        self.fmt = fmt
        self.frame_bytes = fmt.rate * frame_ms // 1000 * fmt.bytes_per_sample

    def encode(self, pcm: np.ndarray, source_rate: int) -> bytes:
        return encode(resample(pcm, source_rate, self.fmt.rate), self.fmt.encoding)

    def frames(self, data: bytes) -> list[bytes]:
        """Encoded audio in the pieces that go out as one Audio message each."""
        return [
            data[start : start + self.frame_bytes]
            for start in range(0, len(data), self.frame_bytes)
        ]

    def seconds(self, nbytes: int) -> float:
        return nbytes / self.fmt.bytes_per_sample / self.fmt.rate
