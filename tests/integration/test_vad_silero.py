"""Silero VAD through the shared batching worker: batched results equal one-stream-at-a-time."""

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest

from server import assets
from server.vad import WINDOW, SileroVAD
from tests.integration.conftest import pause, speak


@pytest.fixture(scope="module")
def silero() -> Iterator[SileroVAD]:
    vad = SileroVAD(assets.silero_vad_path())
    yield vad
    vad.close()


def as_windows(pcm: np.ndarray) -> np.ndarray:
    n = len(pcm) // WINDOW
    return pcm[: n * WINDOW].reshape(n, WINDOW)


async def test_speech_and_silence_are_told_apart(silero: SileroVAD) -> None:
    audio = np.concatenate([pause(0.5), speak("I would like to know the weather."), pause(0.5)])
    probs = await silero.new_stream().probabilities(as_windows(audio))
    quiet = int(0.4 * 16000 / WINDOW)
    assert max(probs[:quiet]) < 0.35
    assert max(probs[-quiet:]) < 0.35
    assert np.mean(np.array(probs) > 0.5) > 0.4


async def test_batched_streams_match_streams_run_alone(silero: SileroVAD) -> None:
    clips = [
        as_windows(np.concatenate([pause(0.1 * i), speak(text)]))
        for i, text in enumerate(["Wait, stop please.", "And what about Germany?", "Hello."])
    ]
    alone = [await silero.new_stream().probabilities(clip) for clip in clips]
    # together, fed in 3-window pieces as live sessions would, so batches mix streams
    streams = [silero.new_stream() for _ in clips]

    async def feed(stream, clip: np.ndarray) -> list[float]:
        out: list[float] = []
        for start in range(0, len(clip), 3):
            out += await stream.probabilities(clip[start : start + 3])
        return out

    together = await asyncio.gather(*(feed(s, c) for s, c in zip(streams, clips, strict=True)))
    for a, b in zip(alone, together, strict=True):
        assert b == pytest.approx(a, abs=1e-5)
