"""Interim transcripts of telephone speech (8 kHz LINEAR16, what the SIP bridge sends) never loop.

Whisper base looped on these interims before the loop guard ("Please cancel my appointment.
Please cancel, Maya Point. Please cancel my appointing."): an interim decode covers audio cut
mid-word. The check here is the test's own (a phrase said twice that the sentence does not
repeat), not the server's loop guard.
"""

from __future__ import annotations

import re

import numpy as np
from voiceagent.v1 import voice_agent_pb2 as pb

from server.audio import resample
from tests.conftest import Call
from tests.integration.conftest import pause, speak

TIMEOUT = 60
SENTENCES = (
    "Please cancel my appointment on Friday morning.",
    "What are your opening hours on Saturday?",
    "Call me back at five five five, two one eight, four four nine one.",
    "Send it to one hundred fifteen Oak Avenue, apartment three.",
)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def repeated_phrase(text: str, sentence: str) -> str | None:
    """A run of two or more words said twice in `text` that `sentence` does not repeat."""
    words, said = _words(text), " ".join(_words(sentence))
    for n in range(2, len(words) // 2 + 1):
        for i in range(len(words) - n + 1):
            phrase = " ".join(words[i : i + n])
            if f" {' '.join(words)} ".count(f" {phrase} ") >= 2 > f" {said} ".count(f" {phrase} "):
                return phrase
    return None


def test_the_check_finds_the_loops_of_issue_19() -> None:
    looped = "Please cancel my appointment. Please cancel, Maya Point. Please cancel my appointing."
    assert repeated_phrase(looped, SENTENCES[0]) == "please cancel"
    assert repeated_phrase(SENTENCES[0], SENTENCES[0]) is None
    assert repeated_phrase("Five five five, two", SENTENCES[2]) is None


async def test_interims_of_8_khz_speech_never_repeat_a_phrase(offline_server, open_call) -> None:
    fmt = pb.AudioFormat(encoding=pb.LINEAR16, sample_rate_hertz=8000)
    updates: list[tuple[str, str]] = []
    for sentence in SENTENCES:
        call: Call = await open_call(
            f"127.0.0.1:{offline_server.port}", pb.SessionConfig(input_format=fmt)
        )
        audio = np.concatenate([pause(0.3), speak(sentence, varied=False), pause(2.5)])
        await call.send_pcm(resample(audio, 16000, 8000), 8000)
        await call.wait_for(
            lambda c: any(t.event == pb.END_OF_TURN for t in c.of("transcript")), within=TIMEOUT
        )
        transcripts = call.of("transcript")
        updates += [(sentence, t.text) for t in transcripts if t.event == pb.UPDATE]
        final = next(t.text for t in transcripts if t.event == pb.END_OF_TURN)
        assert repeated_phrase(final, sentence) is None, final
    assert len(updates) >= 2 * len(SENTENCES), updates  # interims did come, several a turn
    looping = [(s, text) for s, text in updates if repeated_phrase(text, s)]
    assert not looping, looping
