"""`WhisperSTT.open_ending` with the real model: how likely a word that leaves the phrase open
("to") was in the place of the transcript's last word."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from server.backends.stt.base import TurnEventKind, TurnOptions
from server.backends.stt.whisper import OPEN_ENDING_MAX_TOKENS, WhisperSTT
from tests.integration.conftest import heard, pause, speak


def cut_at_the_comma(sentence: str) -> tuple[np.ndarray, np.ndarray]:
    """One sentence spoken through, cut at its comma's pause: the words before the cut keep the
    voice of a sentence that goes on, as a caller's do before a hesitation."""
    pcm = speak(sentence, varied=False)
    blocks = np.abs(pcm[: len(pcm) // 160 * 160].reshape(-1, 160)).max(axis=1) < 300
    runs, start = [], None  # quiet runs of 10 ms blocks, away from the ends
    for i, quiet in enumerate(blocks):
        if quiet and start is None:
            start = i
        elif not quiet and start is not None:
            runs.append((start, i))
            start = None
    first, last = max(runs, key=lambda run: run[1] - run[0])
    return pcm[: first * 160], pcm[last * 160 :]


@pytest.mark.parametrize("rate", [16000, 8000])
def test_a_pause_after_to_written_as_too_is_heard_as_open(whisper: WhisperSTT, rate: int) -> None:
    audio = heard(
        np.concatenate(
            [pause(0.3), speak("I need to change my flight to", varied=False), pause(0.064)]
        ),
        rate,
    )
    openness = whisper.ending_openness(audio, "I need to change my flight too.", "en")
    assert openness >= 0.1, openness


@pytest.mark.parametrize("rate", [16000, 8000])
def test_a_complete_question_is_not(whisper: WhisperSTT, rate: int) -> None:
    for question in ("Where can I park my car near the station?", "Is it going to rain tomorrow?"):
        audio = heard(
            np.concatenate([pause(0.3), speak(question, varied=False), pause(0.064)]), rate
        )
        text = whisper.decode(audio, final=True, language="en").text
        openness = whisper.ending_openness(audio, text, "en")
        assert openness < 0.1, (question, text, openness)


def test_no_words_give_no_answer(whisper: WhisperSTT) -> None:
    assert whisper.ending_openness(np.zeros(16000, np.int16), "", "en") == 0.0
    assert whisper.ending_openness(np.zeros(800, np.int16), "Hello.", "en") == 0.0


def test_a_monologue_is_not_checked(whisper: WhisperSTT) -> None:
    """Past OPEN_ENDING_MAX_TOKENS the check would stall token generation for a second."""
    words = " ".join(["I need to change my flight"] * (OPEN_ENDING_MAX_TOKENS // 6 + 1))
    audio = speak("I need to change my flight to", varied=False)
    assert whisper.ending_openness(audio, words + " too.", "en") == 0.0
    assert whisper.ending_openness(audio, "I need to change my flight too.", "en") >= 0.1


async def test_a_pause_after_to_is_one_turn_though_the_voice_sounds_finished(
    whisper: WhisperSTT,
) -> None:
    """Smart Turn hears "I need to change my flight to" as finished (0.89) and Whisper writes
    "...my flight tube." or "too.": the check of the last word keeps the turn open."""
    head, tail = cut_at_the_comma("I need to change my flight to, the one on Tuesday morning.")
    audio = np.concatenate([pause(0.3), head, pause(1.2), tail, pause(2.5)])
    stream = whisper.open_stream(TurnOptions())
    ends: list[str] = []

    async def collect() -> None:
        async for event in stream.events():
            if event.kind == TurnEventKind.END_OF_TURN:
                ends.append(event.transcript)

    collector = asyncio.create_task(collect())
    loop = asyncio.get_running_loop()
    for start in range(0, len(audio), 320):  # 20 ms frames in real time
        await stream.push(audio[start : start + 320], loop.time())
        await asyncio.sleep(0.02)
    await stream.aclose()
    await collector
    assert len(ends) == 1, ends  # two without the check: "...my flight tube." answered at once
    assert "flight" in ends[0].lower() and "tuesday" in ends[0].lower(), ends[0]
