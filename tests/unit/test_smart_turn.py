"""Smart Turn's input features and the batching worker (no model: a scripted scorer)."""

import asyncio

import numpy as np

from server.log_mel import N_MELS, log_mel
from server.smart_turn import FRAMES, SAMPLES, TurnCompletionModel, features


def test_features_match_whisper_log_mel_of_the_normalised_last_8_seconds() -> None:
    rng = np.random.default_rng(7)
    pcm = (rng.standard_normal(16000 * 3) * 3000).astype(np.int16)
    ours = features(pcm)
    assert ours.shape == (N_MELS, FRAMES) and ours.dtype == np.float32
    # the reference: left-pad to 8 s, normalise the waveform, Whisper's own log-mel
    audio = np.concatenate([np.zeros(SAMPLES - len(pcm), np.float32), pcm / 32768.0])
    audio = (audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)
    # Whisper's log-mel (checked against a stored reference in test_log_mel.py)
    reference = log_mel(audio.astype(np.float32), FRAMES)
    assert np.abs(ours - reference).max() < 1e-5


def test_only_the_last_8_seconds_count() -> None:
    rng = np.random.default_rng(3)
    tail = (rng.standard_normal(SAMPLES) * 2000).astype(np.int16)
    longer = np.concatenate([np.full(16000 * 5, 9000, np.int16), tail])
    np.testing.assert_array_equal(features(longer), features(tail))


class CountingModel(TurnCompletionModel):
    """Scores a turn by its length; records the batch sizes it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def score(self, batch: list[np.ndarray]) -> np.ndarray:
        self.batches.append(len(batch))
        if any(len(pcm) == 13 for pcm in batch):
            raise ValueError("unlucky turn")
        return np.array([min(1.0, len(pcm) / 16000) for pcm in batch], dtype=np.float32)


async def test_turns_queued_together_are_scored_in_one_batch() -> None:
    model = CountingModel()
    try:
        results = await asyncio.gather(
            *(model.completion(np.zeros(n * 1600, np.int16)) for n in range(1, 9))
        )
        assert results == [np.float32(n / 10) for n in range(1, 9)]
        assert sum(model.batches) == 8 and len(model.batches) < 8
    finally:
        model.close()


async def test_a_failing_batch_fails_its_callers_and_the_worker_goes_on() -> None:
    model = CountingModel()
    try:
        try:
            await model.completion(np.zeros(13, np.int16))
        except ValueError as exc:
            assert "unlucky" in str(exc)
        else:
            raise AssertionError("expected the model's error")
        assert await model.completion(np.zeros(8000, np.int16)) == 0.5
    finally:
        model.close()


async def test_a_cancelled_caller_is_not_waited_for() -> None:
    model = CountingModel()
    try:
        task = asyncio.create_task(model.completion(np.zeros(1600, np.int16)))
        task.cancel()
        assert await model.completion(np.zeros(3200, np.int16)) == np.float32(0.2)
    finally:
        model.close()
