"""Voice activity detection: Silero VAD (ONNX through onnxruntime, no torch).

One ONNX session is shared; each audio stream keeps its own recurrent state and context.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

WINDOW = 512  # samples at 16 kHz = 32 ms, the window Silero is trained on
SAMPLE_RATE = 16000
_CONTEXT = 64


class VadStream(ABC):
    """Speech probabilities for consecutive 512-sample windows of one stream."""

    @abstractmethod
    def probabilities(self, windows: np.ndarray) -> list[float]:
        """`windows` is int16 shaped (n, 512). Blocking: call it from a worker thread."""


class VoiceActivityDetector(ABC):
    @abstractmethod
    def new_stream(self) -> VadStream: ...


class SileroVAD(VoiceActivityDetector):
    def __init__(self, model_path: Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        # 80 microseconds a window: threads would cost more than they save.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )

    def new_stream(self) -> VadStream:
        return _SileroStream(self._session)


class _SileroStream(VadStream):
    def __init__(self, session: object) -> None:
        self._session = session
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros((1, _CONTEXT), dtype=np.float32)
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)

    def probabilities(self, windows: np.ndarray) -> list[float]:
        out: list[float] = []
        for window in windows.astype(np.float32) / 32768.0:
            x = np.concatenate([self._context, window[None, :]], axis=1)
            prob, self._state = self._session.run(  # type: ignore[attr-defined]
                None, {"input": x, "state": self._state, "sr": self._sr}
            )
            self._context = x[:, -_CONTEXT:]
            out.append(float(prob[0][0]))
        return out
