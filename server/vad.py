"""Voice activity detection: Silero VAD (ONNX through onnxruntime, no torch).

One detector serves every session of a server. Its single worker thread takes the windows all
streams queued since its last step and runs them through the model as one batch ([N, 576] input,
[2, N, 128] state): a batched window costs half of a lone one, and the event loop is woken once a
step for all sessions instead of once per session (that per-session thread hop cost more than the
VAD itself under load). Each stream keeps its own recurrent state and context.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from abc import ABC, abstractmethod
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

WINDOW = 512  # samples at 16 kHz = 32 ms, the window Silero is trained on
SAMPLE_RATE = 16000
_CONTEXT = 64


@dataclass
class _Job:
    stream: VadStream
    windows: np.ndarray  # int16 (n, WINDOW)
    future: asyncio.Future[list[float]]
    loop: asyncio.AbstractEventLoop
    probabilities: list[float] = field(default_factory=list)


class VadStream:
    """Speech probabilities for consecutive 512-sample windows of one stream."""

    def __init__(self, detector: VoiceActivityDetector) -> None:
        self._detector = detector
        self.state: Any = detector.initial_state()
        self._busy = False

    async def probabilities(self, windows: np.ndarray) -> list[float]:
        """`windows` is int16 shaped (n, 512); one call at a time per stream (state is serial)."""
        if self._busy:
            raise RuntimeError("VadStream.probabilities called again before the last one returned")
        self._busy = True
        try:
            return await self._detector.submit(self, windows)
        finally:
            self._busy = False


class VoiceActivityDetector(ABC):
    """A VAD model shared by all streams, stepped in batches by one worker thread."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()

    @abstractmethod
    def initial_state(self) -> Any:
        """A new stream's model state."""

    @abstractmethod
    def step(self, states: list[Any], windows: np.ndarray) -> np.ndarray:
        """One window for each of len(states) streams: (n, WINDOW) int16 -> (n,) probabilities.

        Updates `states` in place. Runs on the worker thread only.
        """

    def new_stream(self) -> VadStream:
        return VadStream(self)

    def submit(self, stream: VadStream, windows: np.ndarray) -> asyncio.Future[list[float]]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[float]] = loop.create_future()
        if len(windows) == 0:
            future.set_result([])
            return future
        self._ensure_worker()
        self._jobs.put(_Job(stream, windows, future, loop))
        return future

    def close(self) -> None:
        """Stop the worker thread (queued jobs still finish first)."""
        with self._lock:
            worker, self._worker = self._worker, None
        if worker is not None:
            self._jobs.put(None)
            worker.join()

    def _ensure_worker(self) -> None:
        with self._lock:
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name="vad", daemon=True)
                self._worker.start()

    def _run(self) -> None:
        carry: list[_Job] = []  # a stream's second job waits for its first (state is serial)
        stop = False
        while not stop or carry:
            jobs, carry = carry, []
            if not jobs:
                first = self._jobs.get()
                if first is None:
                    return
                jobs = [first]
            while not stop:  # everything queued meanwhile joins this batch
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                else:
                    jobs.append(job)
            batch: list[_Job] = []
            streams: set[int] = set()
            for job in jobs:
                if id(job.stream) in streams:
                    carry.append(job)
                else:
                    streams.add(id(job.stream))
                    batch.append(job)
            self._compute(batch)

    def _compute(self, jobs: list[_Job]) -> None:
        try:
            for i in range(max(len(job.windows) for job in jobs)):
                active = [job for job in jobs if i < len(job.windows)]
                probs = self.step(
                    [job.stream.state for job in active],
                    np.stack([job.windows[i] for job in active]),
                )
                for job, prob in zip(active, probs, strict=True):
                    job.probabilities.append(float(prob))
        except Exception as exc:  # handed to every waiting stream
            self._deliver(jobs, exc)
        else:
            self._deliver(jobs, None)

    @staticmethod
    def _deliver(jobs: list[_Job], error: Exception | None) -> None:
        """One wake-up per event loop for the whole batch."""
        by_loop: dict[asyncio.AbstractEventLoop, list[_Job]] = defaultdict(list)
        for job in jobs:
            by_loop[job.loop].append(job)
        for loop, batch in by_loop.items():
            if not loop.is_closed():
                loop.call_soon_threadsafe(_resolve, batch, error)


def _resolve(jobs: list[_Job], error: Exception | None) -> None:
    for job in jobs:
        if job.future.done():  # the session went away meanwhile
            continue
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(job.probabilities)


class _SileroState:
    __slots__ = ("context", "rnn")

    def __init__(self) -> None:
        self.context = np.zeros(_CONTEXT, dtype=np.float32)
        self.rnn = np.zeros((2, 128), dtype=np.float32)


class SileroVAD(VoiceActivityDetector):
    def __init__(self, model_path: Path) -> None:
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        # Tens of microseconds a window: threads would cost more than they save.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)

    def initial_state(self) -> _SileroState:
        return _SileroState()

    def step(self, states: list[Any], windows: np.ndarray) -> np.ndarray:
        audio = windows.astype(np.float32) / 32768.0
        x = np.concatenate([np.stack([s.context for s in states]), audio], axis=1)
        rnn = np.stack([s.rnn for s in states], axis=1)  # [2, N, 128]
        prob, rnn = self._session.run(None, {"input": x, "state": rnn, "sr": self._sr})
        for i, state in enumerate(states):
            state.context = x[i, -_CONTEXT:]
            state.rnn = rnn[:, i]
        return np.asarray(prob)[:, 0]
