"""`voice-agent talk --input`: any PCM wav the usual tools write; anything else one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
from voiceagent.cli import main, read_wav


def tone(rate: int, seconds: float = 0.5, channels: int = 1) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    mono = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    return np.stack([mono] * channels, axis=1) if channels > 1 else mono


@pytest.mark.parametrize(
    ("fmt", "subtype", "rate", "channels"),
    [
        ("WAVEX", "PCM_16", 16000, 1),  # WAVE_FORMAT_EXTENSIBLE, as sox writes it
        ("WAVEX", "PCM_24", 48000, 2),
        ("WAV", "PCM_16", 8000, 1),
        ("WAV", "PCM_U8", 16000, 1),
        ("WAV", "FLOAT", 24000, 1),
    ],
)
def test_pcm_wavs_are_read_as_mono_int16(
    tmp_path: Path, fmt: str, subtype: str, rate: int, channels: int
) -> None:
    path = tmp_path / "in.wav"
    soundfile.write(path, tone(rate, channels=channels), rate, subtype=subtype, format=fmt)
    pcm, got_rate = read_wav(str(path))
    assert got_rate == rate and pcm.dtype == np.int16 and pcm.ndim == 1
    assert len(pcm) == rate // 2
    assert 0.25 * 32767 < np.abs(pcm).max() < 0.35 * 32767


def test_a_rate_the_server_does_not_take_is_resampled_to_16k(tmp_path: Path) -> None:
    path = tmp_path / "in.wav"
    soundfile.write(path, tone(44100), 44100, subtype="PCM_16", format="WAVEX")
    pcm, rate = read_wav(str(path))
    assert rate == 16000 and abs(len(pcm) - 8000) <= 2


def write_ulaw(path: Path) -> None:
    soundfile.write(path, tone(8000), 8000, subtype="ULAW", format="WAV")


def write_empty(path: Path) -> None:
    soundfile.write(path, np.zeros(0, dtype=np.int16), 16000, subtype="PCM_16")


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda p: p.write_text("not audio"), "cannot be read as a wav file"),
        (lambda p: None, "cannot be read as a wav file"),  # no such file
        (write_ulaw, "only PCM (or float) wav files"),
        (write_empty, "holds no audio"),
    ],
)
def test_other_inputs_end_talk_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: object, says: str
) -> None:
    path = tmp_path / "in.wav"
    make(path)  # type: ignore[operator]
    with pytest.raises(SystemExit) as ended:
        main(["talk", "--server", "127.0.0.1:1", "--input", str(path)])
    message = str(ended.value.code)
    assert says in message and "\n" not in message
