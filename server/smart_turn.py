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
from server.log_mel import HOP, SAMPLE_RATE, log_mel
from server.metrics import TURN_MODEL_BATCH, TURN_MODEL_MS

SECONDS = 8
SAMPLES = SAMPLE_RATE * SECONDS
FRAMES = SAMPLES // HOP  # 800


def features(pcm: np.ndarray) -> np.ndarray:
    """int16 (or float) 16 kHz audio -> the model's input, float32 (80, 800).

    The last 8 s, left-padded with zeros, normalised to zero mean and unit variance, then
    Whisper's log-mel (server/log_mel.py).
    """
    audio = np.asarray(pcm[-SAMPLES:], dtype=np.float32)
    if np.issubdtype(pcm.dtype, np.integer):
        audio /= 32768.0
    if len(audio) < SAMPLES:
        audio = np.concatenate([np.zeros(SAMPLES - len(audio), np.float32), audio])
    audio = (audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)
    return log_mel(audio, FRAMES)


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
        # The caller waits on this to end its turn: token generation pauses meanwhile.
        with CPU.urgent():
            inputs = np.stack([features(pcm) for pcm in batch])
            (logits,) = self._session.run(None, {"input_features": inputs})
        # The exported graph ends in a sigmoid: its output is the probability itself.
        return np.asarray(logits, dtype=np.float32).reshape(len(batch), -1)[:, 0]
