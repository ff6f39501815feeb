"""Turn completion: is the caller done talking? Smart Turn v3.2 (ONNX) over the turn's audio.

Silence alone cannot tell a caller who has finished from one who pauses mid-sentence ("a table
for ... four people"); the way the voice trails off can. Smart Turn v3.2 (BSD-2-Clause, by
Daily) reads the log-mel spectrogram of the last 8 s of 16 kHz audio and gives the probability
that the turn is complete. We ship only its ONNX file (from the `pipecat-ai` wheel, installed
without its dependencies) and compute the features ourselves.

Like the VAD, one model serves every session: its worker thread takes every request queued since
its last run and scores them as one batch (the batch dimension is free), so many sessions falling
silent together cost one model call, and the event loop is woken once per batch.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from server.inference import CPU
from server.metrics import TURN_MODEL_BATCH, TURN_MODEL_MS

SAMPLE_RATE = 16000
SECONDS = 8
SAMPLES = SAMPLE_RATE * SECONDS
N_FFT = 400
HOP = 160
N_MELS = 80
FRAMES = SAMPLES // HOP  # 800


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


def features(pcm: np.ndarray) -> np.ndarray:
    """int16 (or float) 16 kHz audio -> the model's input, float32 (80, 800).

    The last 8 s, left-padded with zeros; the padded waveform normalised to zero mean and unit
    variance; then Whisper's log-mel: centred STFT (reflect padding, periodic Hann, 400/160),
    power, mel, log10 floored 8 decades below the peak, scaled by (x + 4) / 4.
    """
    audio = np.asarray(pcm[-SAMPLES:], dtype=np.float32)
    if np.issubdtype(pcm.dtype, np.integer):
        audio /= 32768.0
    if len(audio) < SAMPLES:
        audio = np.concatenate([np.zeros(SAMPLES - len(audio), np.float32), audio])
    audio = (audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)
    padded = np.pad(audio, N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP][:FRAMES]
    spectrum = np.fft.rfft(frames * _WINDOW, axis=1)
    power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)  # (800, 201)
    mel = np.maximum(_FILTERS @ power.T, 1e-10)
    log_spec = np.log10(mel)
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    scaled: np.ndarray = ((log_spec + 4.0) / 4.0).astype(np.float32)
    return scaled


@dataclass
class _Job:
    pcm: np.ndarray
    future: asyncio.Future[float]
    loop: asyncio.AbstractEventLoop


class TurnCompletionModel(ABC):
    """Scores turns in batches on one worker thread; `completion` never blocks the loop."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()

    @abstractmethod
    def score(self, batch: list[np.ndarray]) -> np.ndarray:
        """Completion probabilities (0-1) of a batch of 16 kHz int16 turns. Worker thread only."""

    async def completion(self, pcm: np.ndarray) -> float:
        """The probability that the caller has finished the turn whose audio is `pcm`."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[float] = loop.create_future()
        self._ensure_worker()
        self._jobs.put(_Job(pcm, future, loop))
        return await future

    def close(self) -> None:
        with self._lock:
            worker, self._worker = self._worker, None
        if worker is not None:
            self._jobs.put(None)
            worker.join()

    def _ensure_worker(self) -> None:
        with self._lock:
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name="turn-model", daemon=True)
                self._worker.start()

    def _run(self) -> None:
        while True:
            first = self._jobs.get()
            if first is None:
                return
            jobs, stop = [first], False
            while True:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                jobs.append(job)
            live = [job for job in jobs if not job.future.done()]  # cancelled: nobody waits
            if live:
                started = time.perf_counter()
                try:
                    probs: np.ndarray | Exception = self.score([job.pcm for job in live])
                except Exception as exc:  # handed to every waiting session
                    probs = exc
                TURN_MODEL_MS.observe((time.perf_counter() - started) * 1000.0)
                TURN_MODEL_BATCH.observe(len(live))
                self._deliver(live, probs)
            if stop:
                return

    @staticmethod
    def _deliver(jobs: list[_Job], probs: np.ndarray | Exception) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job, float | Exception]]] = (
            defaultdict(list)
        )
        for i, job in enumerate(jobs):
            by_loop[job.loop].append(
                (job, probs if isinstance(probs, Exception) else float(probs[i]))
            )
        for loop, batch in by_loop.items():
            if not loop.is_closed():
                loop.call_soon_threadsafe(_resolve, batch)


def _resolve(batch: list[tuple[_Job, float | Exception]]) -> None:
    for job, outcome in batch:
        if job.future.done():  # the session went away meanwhile
            continue
        if isinstance(outcome, Exception):
            job.future.set_exception(outcome)
        else:
            job.future.set_result(outcome)


class SmartTurnV3(TurnCompletionModel):
    """Smart Turn v3.2 CPU (int8 ONNX): ~50-70 ms a call on one core of this machine."""

    def __init__(self, model_path: Path) -> None:
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        # Two threads are no faster than one here (measured on 2 cores), and the other core is busy with
        # Whisper's final decode at the same moment.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(
            str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )

    def score(self, batch: list[np.ndarray]) -> np.ndarray:
        inputs = np.stack([features(pcm) for pcm in batch])
        # The caller waits on this to end its turn: token generation makes room meanwhile.
        with CPU.pressing():
            (logits,) = self._session.run(None, {"input_features": inputs})
        # The exported graph ends in a sigmoid: its output is the probability itself.
        return np.asarray(logits, dtype=np.float32).reshape(len(batch), -1)[:, 0]
