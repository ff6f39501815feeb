"""Whisper's log-mel front end, one place for both models that read it: Whisper itself
(server/backends/stt/whisper.py) and Smart Turn v3.2 (server/smart_turn.py), which was trained
on the same features.

16 kHz audio; centred STFT (reflect padding, periodic Hann window of 400, hop 160), power
spectrum, 80 Slaney-scale mel filters with area normalisation, log10 floored 8 decades below the
spectrogram's peak, scaled by (x + 4) / 4.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160
N_MELS = 80


def _mel_filters(n_fft: int = N_FFT, n_mels: int = N_MELS, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Slaney-scale triangular filters with area normalisation, as Whisper's front end uses."""

    def hz_to_mel(hz: np.ndarray) -> np.ndarray:
        hz = np.asarray(hz, dtype=np.float64)
        linear = hz / (200.0 / 3)
        log_region = 1000.0 / (200.0 / 3) + np.log(np.maximum(hz, 1e-10) / 1000.0) / (
            np.log(6.4) / 27.0
        )
        return np.where(hz >= 1000.0, log_region, linear)

    def mel_to_hz(mel: np.ndarray) -> np.ndarray:
        linear = mel * (200.0 / 3)
        log_region = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 1000.0 / (200.0 / 3)))
        return np.where(mel >= 1000.0 / (200.0 / 3), log_region, linear)

    fft_freqs = np.linspace(0, rate / 2, n_fft // 2 + 1)
    mel_points = np.linspace(hz_to_mel(np.array(0.0)), hz_to_mel(np.array(rate / 2)), n_mels + 2)
    hz_points = mel_to_hz(mel_points)
    widths = np.diff(hz_points)
    ramps = hz_points[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    filters = np.maximum(0.0, np.minimum(lower, upper))
    filters *= (2.0 / (hz_points[2:] - hz_points[:-2]))[:, None]
    return filters.astype(np.float32)  # (n_mels, n_fft // 2 + 1)


_FILTERS = _mel_filters()
_WINDOW = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)


def log_mel(audio: np.ndarray, frames: int) -> np.ndarray:
    """float32 16 kHz audio (-1..1) -> float32 (80, frames): frame i is centred on sample i * 160.

    `frames` is at most len(audio) // 160 + 1 (the frames the centred STFT has).
    """
    padded = np.pad(np.asarray(audio, dtype=np.float32), N_FFT // 2, mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP]
    if frames > len(windows):
        raise ValueError(f"{frames} frames asked of {len(audio)} samples (at most {len(windows)})")
    spectrum = np.fft.rfft(windows[:frames] * _WINDOW, axis=1)
    # |X|^2 of the complex64 spectrum, not re^2 + im^2: that differs in the last bit, and int8
    # Whisper then decodes ~1 utterance in 8 differently from the faster-whisper front end.
    power = np.abs(spectrum.astype(np.complex64)) ** 2  # (frames, 201) float32
    log_spec = np.log10(np.maximum(_FILTERS @ power.T, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    scaled: np.ndarray = ((log_spec + 4.0) / 4.0).astype(np.float32)
    return scaled
