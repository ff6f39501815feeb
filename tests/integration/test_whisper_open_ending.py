"""`WhisperSTT.open_ending` with the real model: how likely a word that leaves the phrase open
("to") was in the place of the transcript's last word."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from voiceagent.v1 import voice_agent_pb2 as pb

from server.audio import Format, InboundAudio, resample
from server.backends.stt.whisper import WhisperSTT
from server.g711 import mulaw_encode
from tests.integration.conftest import pause, speak


@pytest.fixture(scope="module")
def whisper() -> Iterator[WhisperSTT]:
    stt = WhisperSTT()
    stt._load_blocking()  # the blocking load: these tests call the blocking methods
    yield stt
    stt._executor.shutdown()


def heard(pcm: np.ndarray, rate: int) -> np.ndarray:
    """16 kHz speech as the server hears it at `rate` (8 kHz: G.711 mu-law, upsampled)."""
    if rate == 16000:
        return pcm
    return InboundAudio(Format(pb.MULAW, 8000), 16000).push(
        mulaw_encode(resample(pcm, 16000, rate))
    )


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
