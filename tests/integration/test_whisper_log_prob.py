"""`WhisperSTT`'s mean token log probability with the real model: what tells real words over
the agent from Whisper's guesses at a hum (turn_words.UNSURE_LOG_PROB)."""

from __future__ import annotations

import numpy as np
import pytest

from server.backends.stt.whisper import WhisperSTT
from server.turn_words import UNSURE_LOG_PROB
from tests.integration.conftest import heard, pause, speak


@pytest.mark.parametrize("rate", [16000, 8000])
@pytest.mark.parametrize("final", [True, False])
def test_clear_words_are_heard_surely(whisper: WhisperSTT, rate: int, final: bool) -> None:
    pcm = heard(np.concatenate([pause(0.3), speak("Wait, I have a question.", varied=False)]), rate)
    hypothesis = whisper.decode(pcm, final=final, language="en")
    assert "question" in hypothesis.text.lower(), hypothesis
    # a real score (0.0 would mean none came back, and the rule would never apply)
    assert UNSURE_LOG_PROB < hypothesis.log_prob < 0.0, hypothesis
