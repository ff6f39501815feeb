"""`WhisperSTT`'s mean token log probability with the real model: what tells real words over
the agent from Whisper's guesses at a hum (turn_words.UNSURE_LOG_PROB)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from voiceagent.v1 import voice_agent_pb2 as pb

from server.audio import Format, InboundAudio, resample
from server.backends.stt.whisper import WhisperSTT
from server.g711 import mulaw_encode
from server.turn_words import UNSURE_LOG_PROB
from tests.integration.conftest import pause, speak


@pytest.fixture(scope="module")
def whisper() -> Iterator[WhisperSTT]:
    stt = WhisperSTT()
    stt._load_blocking()  # the blocking load: these tests call the blocking methods
    yield stt
    stt._executor.shutdown()


@pytest.mark.parametrize("rate", [16000, 8000])
@pytest.mark.parametrize("final", [True, False])
def test_clear_words_are_heard_surely(whisper: WhisperSTT, rate: int, final: bool) -> None:
    pcm = np.concatenate([pause(0.3), speak("Wait, I have a question.", varied=False)])
    if rate == 8000:  # as a phone call arrives: G.711 mu-law, upsampled
        pcm = InboundAudio(Format(pb.MULAW, 8000), 16000).push(
            mulaw_encode(resample(pcm, 16000, 8000))
        )
    hypothesis = whisper.decode(pcm, final=final, language="en")
    assert "question" in hypothesis.text.lower(), hypothesis
    # a real score (0.0 would mean none came back, and the rule would never apply)
    assert UNSURE_LOG_PROB < hypothesis.log_prob < 0.0, hypothesis
