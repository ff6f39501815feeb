import audioop  # the standard library's G.711, our reference (Python 3.11)

import numpy as np
import pytest
from voiceagent.v1 import voice_agent_pb2 as pb

from server import audio

ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)


def test_mulaw_encode_is_bit_exact_with_reference() -> None:
    assert audio.encode(ALL_SAMPLES, pb.MULAW) == audioop.lin2ulaw(ALL_SAMPLES.tobytes(), 2)


def test_alaw_encode_is_bit_exact_with_reference() -> None:
    assert audio.encode(ALL_SAMPLES, pb.ALAW) == audioop.lin2alaw(ALL_SAMPLES.tobytes(), 2)


@pytest.mark.parametrize(
    ("encoding", "reference"), [(pb.MULAW, audioop.ulaw2lin), (pb.ALAW, audioop.alaw2lin)]
)
def test_g711_decode_matches_reference(encoding: int, reference: object) -> None:
    codes = bytes(range(256))
    assert audio.decode(codes, encoding).tobytes() == reference(codes, 2)  # type: ignore[operator]


@pytest.mark.parametrize(
    ("encoding", "rate"),
    [
        (pb.LINEAR16, 8000),
        (pb.LINEAR16, 16000),
        (pb.LINEAR16, 24000),
        (pb.LINEAR16, 48000),
        (pb.MULAW, 8000),
        (pb.ALAW, 8000),
    ],
)
def test_accepted_formats(encoding: int, rate: int) -> None:
    assert (
        audio.validate_format(pb.AudioFormat(encoding=encoding, sample_rate_hertz=rate), "f").rate
        == rate
    )  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("encoding", "rate", "needle"),
    [
        (pb.LINEAR16, 44100, "44100"),
        (pb.LINEAR16, 0, "sample_rate_hertz"),
        (pb.MULAW, 16000, "MULAW"),
        (pb.AUDIO_ENCODING_UNSPECIFIED, 16000, "encoding"),
        (99, 16000, "encoding"),
    ],
)
def test_rejected_formats_name_the_allowed_values(encoding: int, rate: int, needle: str) -> None:
    with pytest.raises(audio.AudioFormatError) as err:
        audio.validate_format(
            pb.AudioFormat(encoding=encoding, sample_rate_hertz=rate), "config.input_format"
        )  # type: ignore[arg-type]
    message = str(err.value)
    assert needle in message
    assert "LINEAR16 at 8000, 16000, 24000 or 48000 Hz" in message


def _peak_hz(pcm: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(len(pcm))))
    return float(np.argmax(spectrum) * rate / len(pcm))


def test_resampling_keeps_pitch_and_length() -> None:
    t = np.arange(48000) / 48000
    tone = (10000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
    out = audio.resample(tone, 48000, 16000)
    assert abs(len(out) - 16000) <= 2
    assert abs(_peak_hz(out, 16000) - 1000) < 5


def test_resampling_filters_instead_of_aliasing() -> None:
    # 7 kHz cannot exist at 8 kHz: a real resampler removes it; decimation would fold it to 1 kHz.
    t = np.arange(48000) / 48000
    tone = (10000 * np.sin(2 * np.pi * 7000 * t)).astype(np.int16)
    out = audio.resample(tone, 48000, 8000)
    assert np.sqrt(np.mean(out.astype(np.float64) ** 2)) < 100


def test_inbound_stream_resamples_frames_without_losing_samples() -> None:
    inbound = audio.InboundAudio(audio.Format(pb.LINEAR16, 48000), 16000)
    t = np.arange(48000) / 48000
    tone = (8000 * np.sin(2 * np.pi * 500 * t)).astype(np.int16).tobytes()
    chunks = []
    # 20 ms frames, with one split in the middle of a sample: the odd byte is carried over.
    frames = [tone[i : i + 1920] for i in range(0, len(tone), 1920)]
    frames[3], frames[4] = frames[3] + frames[4][:1], frames[4][1:]
    for frame in frames:
        chunks.append(inbound.push(frame))
    out = np.concatenate(chunks)
    assert 15500 < len(out) <= 16000
    assert abs(_peak_hz(out, 16000) - 500) < 5


def test_inbound_mulaw_is_decoded() -> None:
    inbound = audio.InboundAudio(audio.Format(pb.MULAW, 8000), 16000)
    t = np.arange(8000) / 8000
    tone = (8000 * np.sin(2 * np.pi * 300 * t)).astype(np.int16)
    out = inbound.push(audio.encode(tone, pb.MULAW))
    assert abs(_peak_hz(out, 16000) - 300) < 5


def test_outbound_encodes_to_the_session_format() -> None:
    outbound = audio.OutboundAudio(audio.Format(pb.MULAW, 8000))
    data = outbound.encode(np.zeros(22050, dtype=np.int16), 22050)
    assert abs(len(data) - 8000) <= 2
    assert outbound.seconds(len(data)) == pytest.approx(1.0, abs=0.01)
