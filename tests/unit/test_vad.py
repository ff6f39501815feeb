"""The shared VAD worker: batches across streams, keeps each stream's state its own."""

import asyncio
import threading
from typing import Any

import numpy as np
import pytest

from server.vad import WINDOW, VoiceActivityDetector


class CountingVAD(VoiceActivityDetector):
    """Probability = the window's first sample / 1000 + windows this stream has seen / 1000."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.batch_sizes: list[int] = []
        self.fail = fail

    def initial_state(self) -> list[int]:
        return [0]

    def step(self, states: list[Any], windows: np.ndarray) -> np.ndarray:
        if self.fail:
            raise ValueError("model exploded")
        self.batch_sizes.append(len(states))
        out = []
        for state, window in zip(states, windows, strict=True):
            state[0] += 1
            out.append(window[0] / 1000 + state[0] / 1000)
        return np.array(out)


def windows(first_samples: list[int]) -> np.ndarray:
    w = np.zeros((len(first_samples), WINDOW), dtype=np.int16)
    w[:, 0] = first_samples
    return w


async def test_streams_are_batched_and_keep_their_own_state() -> None:
    vad = CountingVAD()
    streams = [vad.new_stream() for _ in range(20)]
    try:
        results = await asyncio.gather(
            *(s.probabilities(windows([i, i, i])) for i, s in enumerate(streams))
        )
        for i, probs in enumerate(results):
            assert probs == pytest.approx([i / 1000 + 0.001, i / 1000 + 0.002, i / 1000 + 0.003])
        # 60 windows in far fewer model calls than 60
        assert sum(vad.batch_sizes) == 60
        assert len(vad.batch_sizes) < 30
        # the state goes on from where the stream left it
        again = await streams[5].probabilities(windows([5]))
        assert again == pytest.approx([0.005 + 0.004])
    finally:
        vad.close()


async def test_a_model_error_reaches_every_waiting_stream() -> None:
    vad = CountingVAD(fail=True)
    try:
        results = await asyncio.gather(
            *(vad.new_stream().probabilities(windows([1])) for _ in range(3)),
            return_exceptions=True,
        )
        assert all(isinstance(r, ValueError) for r in results)
    finally:
        vad.close()


async def test_a_stream_takes_one_request_at_a_time() -> None:
    vad = CountingVAD()
    stream = vad.new_stream()
    try:
        first = asyncio.ensure_future(stream.probabilities(windows([1])))
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError):
            await stream.probabilities(windows([1]))
        assert await first == pytest.approx([0.002])
    finally:
        vad.close()


async def test_cancelled_waiters_and_close_leave_no_thread() -> None:
    before = threading.active_count()
    vad = CountingVAD()
    task = asyncio.ensure_future(vad.new_stream().probabilities(windows([1] * 50)))
    await asyncio.sleep(0)
    task.cancel()
    assert await vad.new_stream().probabilities(windows([2])) == pytest.approx([0.003])
    vad.close()
    assert threading.active_count() == before
    assert await vad.new_stream().probabilities(np.zeros((0, WINDOW), np.int16)) == []
