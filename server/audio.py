"""Audio formats at the edge of a session: validation, G.711, resampling, framing.

Inside the server audio is mono int16 numpy arrays at the model's rate; bytes in the client's
format exist only at the stream's two ends.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import soxr
from voiceagent.v1 import voice_agent_pb2 as pb

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


# --- G.711 (ITU-T G.711), vectorised -------------------------------------------------------

_MULAW_BIAS = 0x84  # on 16-bit magnitudes (decoding)
_MULAW_BIAS14 = 0x21  # on 14-bit magnitudes (encoding)
_MULAW_CLIP14 = 8159


def _mulaw_decode_table() -> np.ndarray:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = (((mantissa << 3) + _MULAW_BIAS) << exponent) - _MULAW_BIAS
    return np.where(sign != 0, -magnitude, magnitude).astype(np.int16)


def _alaw_decode_table() -> np.ndarray:
    codes = np.arange(256, dtype=np.int32) ^ 0x55
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = np.where(
        exponent == 0,
        (mantissa << 4) + 8,
        ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0),
    )
    return np.where(sign != 0, magnitude, -magnitude).astype(np.int16)


MULAW_DECODE = _mulaw_decode_table()
ALAW_DECODE = _alaw_decode_table()


def mulaw_encode(pcm: np.ndarray) -> bytes:
    # 14-bit formulation of G.711 (as in the ITU reference code), bit-exact with it.
    x = pcm.astype(np.int32) >> 2
    mask = np.where(x < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(x), _MULAW_CLIP14) + _MULAW_BIAS14
    segment = np.zeros(x.shape, dtype=np.int32)
    for seg, upper in enumerate((0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)):
        segment = np.where(magnitude > upper, seg + 1, segment)
    codes = ((segment << 4) | ((magnitude >> (segment + 1)) & 0x0F)) ^ mask
    codes = np.where(segment >= 8, 0x7F ^ mask, codes)  # full scale
    return bytes(codes.astype(np.uint8).tobytes())


def alaw_encode(pcm: np.ndarray) -> bytes:
    x = pcm.astype(np.int32)
    sign = np.where(x >= 0, 0x80, 0)
    magnitude = np.minimum(np.where(x < 0, -x - 1, x), 32767) >> 3
    exponent = np.zeros(x.shape, dtype=np.int32)
    for e in range(1, 8):
        exponent = np.where(magnitude >= (16 << e), e, exponent)
    mantissa = np.where(exponent == 0, magnitude >> 1, magnitude >> exponent) & 0x0F
    return bytes(((sign | (exponent << 4) | mantissa) ^ 0x55).astype(np.uint8).tobytes())


def decode(data: bytes, encoding: int) -> np.ndarray:
    """Client bytes -> int16 samples. A trailing odd byte of LINEAR16 is the caller's to keep."""
    if encoding == pb.LINEAR16:
        return np.frombuffer(data, dtype="<i2").astype(np.int16)
    codes = np.frombuffer(data, dtype=np.uint8)
    return (MULAW_DECODE if encoding == pb.MULAW else ALAW_DECODE)[codes]


def encode(pcm: np.ndarray, encoding: int) -> bytes:
    if encoding == pb.LINEAR16:
        return pcm.astype("<i2").tobytes()
    if encoding == pb.MULAW:
        return mulaw_encode(pcm)
    return alaw_encode(pcm)


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
