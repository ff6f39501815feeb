"""Whisper's log-mel front end (server/log_mel.py) against a stored reference.

tests/unit/data/log_mel_reference.npy holds the features of `known_signal()` as faster-whisper
1.2.1's FeatureExtractor computed them (the front end Whisper's CTranslate2 model was used with
before we owned it), so a broken window, filter bank, frame count or scaling shows here.
"""

from pathlib import Path

import numpy as np
import pytest

from server.log_mel import HOP, N_MELS, log_mel

REFERENCE = Path(__file__).parent / "data" / "log_mel_reference.npy"


def known_signal() -> np.ndarray:
    """0.3 s of two tones and a chirp, then 0.1 s of silence (as a decode's zero tail), float32."""
    t = np.arange(4800) / 16000
    tones = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 3100 * t)
    chirp = 0.2 * np.sin(2 * np.pi * (300 + 9000 * t) * t)
    return np.concatenate([tones + chirp, np.zeros(1600)]).astype(np.float32)


def test_features_match_the_stored_whisper_reference() -> None:
    audio = known_signal()
    ours = log_mel(audio, len(audio) // HOP)
    reference = np.load(REFERENCE)
    assert ours.shape == reference.shape == (N_MELS, 40) and ours.dtype == np.float32
    assert np.abs(ours - reference).max() < 1e-4


def test_frames_are_centred_every_10_ms() -> None:
    audio = known_signal()
    whole = log_mel(audio, len(audio) // HOP + 1)
    assert whole.shape == (N_MELS, len(audio) // HOP + 1)
    # the silent tail is floored at 8 decades below the peak: (peak - 8 + 4) / 4
    assert np.allclose(whole[:, -3:], whole.max() - 2.0)
    with pytest.raises(ValueError, match="frames asked"):
        log_mel(audio, len(audio) // HOP + 2)
