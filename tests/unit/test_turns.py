"""The VAD + STT turn detector, fed at 4x real time (decodes take 10 ms of wall time).

Silence-only detection, then semantic detection with a scripted completion model (a turn whose
last tone is LOW_HZ sounds unfinished), then the decision rule itself.
"""

import asyncio
import dataclasses

import numpy as np
import pytest
from prometheus_client import REGISTRY

from server.backends.stt.base import TurnEventKind as K
from server.backends.stt.base import TurnMode, TurnOptions, TurnUpdate
from server.turns import Transcription, VadTurnStream, judge_complete
from tests.unit.scripted import (
    LOW_HZ,
    EnergyVAD,
    ScriptedCompletion,
    ScriptedTranscriber,
    silence,
    tone,
)

VAD = EnergyVAD()  # one detector for every stream, as in a server
SILENCE = TurnOptions(mode=TurnMode.SILENCE)


class FailingCompletion:
    async def completion(self, pcm: np.ndarray) -> float:
        raise RuntimeError("turn model exploded")


async def run(
    audio: np.ndarray,
    options: TurnOptions = SILENCE,
    settle: float = 0.3,
    completion: object | None = None,
    watch_at: float | None = None,
    transcriber: ScriptedTranscriber | None = None,
) -> list[TurnUpdate]:
    """Feed `audio`; each event's `at` is replaced by the audio time (s) pushed when it came."""
    if options.mode == TurnMode.SEMANTIC and completion is None:
        completion = ScriptedCompletion()
    stt = transcriber or ScriptedTranscriber()
    stream = VadTurnStream(stt, VAD, options, completion)  # type: ignore[arg-type]
    events: list[TurnUpdate] = []
    clock = [0.0]

    async def collect() -> None:
        async for event in stream.events():
            events.append(dataclasses.replace(event, at=clock[0]))

    collector = asyncio.create_task(collect())
    for start in range(0, len(audio), 320):  # 20 ms frames at 4x real time
        await stream.push(audio[start : start + 320], received_at=clock[0])
        clock[0] += 0.02
        if watch_at is not None and abs(clock[0] - watch_at) < 0.01:
            stream.watch_for_interruption()
        await asyncio.sleep(0.005)
    await asyncio.sleep(settle)
    await stream.aclose()
    await collector
    return events


def kinds(events: list[TurnUpdate]) -> list[K]:
    return [e.kind for e in events if e.kind != K.UPDATE]


async def test_one_utterance_gives_the_flux_sequence() -> None:
    events = await run(np.concatenate([silence(0.3), tone(1.2), silence(1.0)]))
    assert kinds(events) == [K.START_OF_TURN, K.EAGER_END_OF_TURN, K.END_OF_TURN]
    assert any(e.kind == K.UPDATE and e.transcript for e in events)
    eager, end = events[-2], events[-1]
    assert end.transcript == eager.transcript and end.transcript.startswith("said ")
    # speech ended at 1.5 s of audio; the frame carrying its last voiced window arrived then
    assert end.speech_end is not None and 1.4 <= end.speech_end <= 1.56


async def test_a_500_ms_hesitation_is_one_turn() -> None:
    audio = np.concatenate([tone(0.8), silence(0.5), tone(0.8), silence(1.0)])
    events = await run(audio)
    assert kinds(events).count(K.START_OF_TURN) == 1
    assert kinds(events).count(K.END_OF_TURN) == 1
    assert K.TURN_RESUMED in kinds(events)  # eager fired in the pause, then speech resumed
    final = next(e for e in events if e.kind == K.END_OF_TURN)
    assert int(final.transcript.split()[1]) >= 45  # both halves: ~50 voiced windows


async def test_two_questions_three_seconds_apart_are_two_turns() -> None:
    events = await run(np.concatenate([tone(1.0), silence(3.0), tone(0.6), silence(1.0)]))
    ends = [e for e in events if e.kind == K.END_OF_TURN]
    assert [e.turn_index for e in ends] == [0, 1]
    assert ends[0].transcript != ends[1].transcript


async def test_without_eager_the_end_of_turn_still_comes() -> None:
    events = await run(
        np.concatenate([tone(1.0), silence(1.0)]),
        TurnOptions(mode=TurnMode.SILENCE, eager_enabled=False),
    )
    assert kinds(events) == [K.START_OF_TURN, K.END_OF_TURN]


async def test_a_click_is_not_a_turn() -> None:
    events = await run(np.concatenate([silence(0.5), tone(0.03), silence(1.0)]))
    assert events == []


# --- semantic mode ------------------------------------------------------------------------

SEMANTIC = TurnOptions()


def unfinished(seconds: float) -> np.ndarray:
    """Speech that trails off on a low pitch: the scripted model hears it as unfinished."""
    return np.concatenate([tone(seconds - 0.2), tone(0.2, freq=LOW_HZ)])


async def test_a_complete_turn_ends_after_a_short_silence() -> None:
    events = await run(np.concatenate([silence(0.3), tone(1.2), silence(1.0)]), SEMANTIC)
    assert kinds(events) == [K.START_OF_TURN, K.END_OF_TURN]  # before the eager silence
    end = events[-1]
    assert end.speech_end is not None and end.transcript.startswith("said ")
    # speech ended at 1.5 s; the turn ended ~130-250 ms later, far from the 640 ms of silence
    # mode (4x real time: 10 ms of decoding is 40 ms of audio)
    assert end.at - end.speech_end < 0.45


async def test_the_final_decode_starts_at_the_first_silent_window_the_check_at_the_second() -> None:
    """The decode the end of the turn waits for overlaps the silence from its first window; the
    completion model, trained on turns ending in some silence, hears one window more."""
    stt, model = ScriptedTranscriber(), ScriptedCompletion()
    events = await run(
        np.concatenate([silence(0.3), tone(1.0), silence(1.0)]),
        SEMANTIC,
        completion=model,
        transcriber=stt,
    )
    assert kinds(events)[-1] == K.END_OF_TURN
    assert stt.final_tails == [1]  # one final decode, reused for END_OF_TURN
    assert model.tails[0] == 2


async def test_an_unfinished_phrase_and_a_pause_are_one_turn() -> None:
    audio = np.concatenate([unfinished(0.8), silence(1.2), tone(0.8), silence(1.0)])
    events = await run(audio, SEMANTIC)
    assert kinds(events).count(K.END_OF_TURN) == 1
    assert K.TURN_RESUMED in kinds(events)  # the eager answer was prepared, then dropped
    final = next(e for e in events if e.kind == K.END_OF_TURN)
    assert int(final.transcript.split()[1]) >= 45


async def test_an_unfinished_turn_ends_at_the_maximum_silence() -> None:
    options = TurnOptions(max_silence_ms=1000)
    events = await run(np.concatenate([unfinished(0.8), silence(2.0)]), options, settle=0.5)
    end = next(e for e in events if e.kind == K.END_OF_TURN)
    assert end.speech_end is not None
    assert 0.95 <= end.at - end.speech_end < 1.3


async def test_the_model_is_asked_again_as_the_silence_grows() -> None:
    completion = ScriptedCompletion()
    options = TurnOptions(max_silence_ms=2000)
    await run(np.concatenate([unfinished(0.8), silence(2.2)]), options, completion=completion)
    assert completion.calls == 2  # at 64 ms of silence, then at ~220 ms


async def test_a_slow_check_that_hears_unfinished_asks_once_more_when_it_answers() -> None:
    completion = ScriptedCompletion(delay=0.1)  # answers after the recheck's silence has passed
    options = TurnOptions(max_silence_ms=2000)
    await run(np.concatenate([unfinished(0.8), silence(2.2)]), options, completion=completion)
    assert completion.calls == 2


async def test_a_slow_check_that_hears_an_ending_is_not_doubled() -> None:
    completion = ScriptedCompletion(delay=0.1)
    events = await run(np.concatenate([tone(0.8), silence(1.0)]), SEMANTIC, completion=completion)
    assert completion.calls == 1 and kinds(events)[-1] == K.END_OF_TURN


def held_checks() -> float:
    value = REGISTRY.get_sample_value("voice_agent_open_ending_checks_total", {"outcome": "held"})
    return value or 0.0


class ChangingMind:
    """Hears the turn as unfinished at the first check and complete from the second on (as
    Smart Turn does with a pause after "to" that Whisper wrote as "too.")."""

    def __init__(self) -> None:
        self.calls = 0

    async def completion(self, pcm: np.ndarray) -> float:
        await asyncio.sleep(0.01)
        self.calls += 1
        return 0.1 if self.calls == 1 else 0.9


async def test_a_turn_first_heard_unfinished_ends_once_its_last_word_is_checked() -> None:
    stt = ScriptedTranscriber()
    audio = np.concatenate([tone(0.8), silence(2.2)])
    events = await run(audio, SEMANTIC, completion=ChangingMind(), transcriber=stt)
    end = next(e for e in events if e.kind == K.END_OF_TURN)
    assert stt.endings_asked == [end.transcript]  # asked once, about the words it ended with
    assert end.speech_end is not None and end.at - end.speech_end < 0.8  # not max_silence_ms


async def test_a_last_word_that_may_be_a_misheard_open_word_holds_the_turn() -> None:
    held_before = held_checks()
    stt = ScriptedTranscriber()
    stt.openness = 0.5  # "...my flight too." where "to" was likely
    options = TurnOptions(max_silence_ms=1500)
    held = await run(
        np.concatenate([tone(0.8), silence(2.0)]),
        options,
        completion=ChangingMind(),
        transcriber=stt,
        settle=0.5,
    )
    end = next(e for e in held if e.kind == K.END_OF_TURN)
    assert end.speech_end is not None and end.at - end.speech_end >= 1.4
    assert held_checks() > held_before

    stt = ScriptedTranscriber()
    stt.openness = 0.5
    audio = np.concatenate([tone(0.8), silence(1.2), tone(0.8), silence(2.0)])
    events = await run(audio, options, completion=ChangingMind(), transcriber=stt, settle=0.5)
    assert kinds(events).count(K.END_OF_TURN) == 1  # the caller went on: one turn
    final = next(e for e in events if e.kind == K.END_OF_TURN)
    assert int(final.transcript.split()[1]) >= 45


async def test_a_turn_heard_complete_at_once_is_not_delayed_by_the_last_word_check() -> None:
    stt = ScriptedTranscriber()
    stt.openness = 0.9  # would hold it, if asked
    events = await run(np.concatenate([tone(1.0), silence(1.0)]), SEMANTIC, transcriber=stt)
    assert kinds(events)[-1] == K.END_OF_TURN and stt.endings_asked == []


class TooTranscriber(ScriptedTranscriber):
    async def transcribe(
        self, pcm: np.ndarray, final: bool, language: str, skippable: bool = False
    ) -> Transcription:
        said = await super().transcribe(pcm, final, language)
        return Transcription("I need to change my flight too." if said.text else "")


async def test_a_last_word_spelled_like_to_is_checked_though_the_voice_ended() -> None:
    stt = TooTranscriber()
    stt.openness = 0.6
    options = TurnOptions(max_silence_ms=1500)
    events = await run(
        np.concatenate([tone(1.0), silence(2.0)]), options, transcriber=stt, settle=0.5
    )
    end = next(e for e in events if e.kind == K.END_OF_TURN)
    assert stt.endings_asked and end.speech_end is not None
    assert end.at - end.speech_end >= 1.4  # held: the model alone would have ended it at once

    stt = TooTranscriber()  # "Me too." said clearly: asked, and it ends soon
    events = await run(np.concatenate([tone(1.0), silence(1.0)]), SEMANTIC, transcriber=stt)
    end = next(e for e in events if e.kind == K.END_OF_TURN)
    assert stt.endings_asked and end.speech_end is not None and end.at - end.speech_end < 0.6


async def test_silence_mode_never_asks_the_model() -> None:
    completion = ScriptedCompletion()
    events = await run(
        np.concatenate([unfinished(0.8), silence(1.0)]), SILENCE, completion=completion
    )
    assert completion.calls == 0 and kinds(events)[-1] == K.END_OF_TURN


async def test_a_failing_model_ends_the_stream_with_its_error() -> None:
    with pytest.raises(RuntimeError, match="turn model exploded"):
        await run(
            np.concatenate([tone(0.8), silence(1.0)]), SEMANTIC, completion=FailingCompletion()
        )


async def test_watching_for_an_interruption_transcribes_the_first_words_early() -> None:
    audio = np.concatenate([silence(0.3), tone(1.0), silence(1.0)])
    watched = await run(audio, SEMANTIC, watch_at=0.44)
    plain = await run(audio, SEMANTIC)
    first = [e for e in watched if e.kind == K.UPDATE]
    assert first and int(first[0].transcript.split()[1]) <= 8  # after ~6 voiced windows
    assert len(first) > len([e for e in plain if e.kind == K.UPDATE])
    assert first[0].speech_seconds < 0.4


async def test_only_interims_over_the_agent_must_be_decoded_when_the_stt_is_busy() -> None:
    audio = np.concatenate([silence(0.3), tone(1.5), silence(1.0)])
    plain, watched = ScriptedTranscriber(), ScriptedTranscriber()
    await run(audio, SEMANTIC, transcriber=plain)
    await run(audio, SEMANTIC, watch_at=0.44, transcriber=watched)
    assert plain.skippable and all(plain.skippable)
    assert watched.skippable and not any(watched.skippable)


def test_the_words_veto_an_ending_the_voice_suggests() -> None:
    assert judge_complete(0.95, "Can you tell me when the pharmacy opens?", 0.5)
    assert judge_complete(0.6, "I need to change my address.", 0.5)
    assert not judge_complete(0.3, "I need to change my address.", 0.5)
    for text in ("I would like a table for", "I was wondering if.", "So, um", "It's the one with,"):
        assert not judge_complete(0.99, text, 0.5), text
    assert judge_complete(0.3, "What time do you open?", 0.5)  # a question needs less
    assert not judge_complete(0.2, "What time do you open?", 0.5)


class SameWordsTranscriber(ScriptedTranscriber):
    """Hears the same words in any speech, however much of it: interims equal the final."""

    async def transcribe(
        self, pcm: np.ndarray, final: bool, language: str, skippable: bool = False
    ) -> Transcription:
        said = await super().transcribe(pcm, final, language)
        return Transcription("Is the museum open on Mondays?" if said.text else "")


async def test_the_last_interim_starts_the_answer_when_it_heard_the_whole_turn() -> None:
    # 0.9 s of tone (28 windows): the interim at speech window 27 heard nearly all of it
    audio = np.concatenate([silence(0.3), tone(0.9), silence(1.0)])
    stream = VadTurnStream(SameWordsTranscriber(), VAD, SEMANTIC, ScriptedCompletion())
    events: list[TurnUpdate] = []

    async def collect() -> None:
        async for event in stream.events():
            events.append(event)

    collector = asyncio.create_task(collect())
    for start in range(0, len(audio), 320):
        await stream.push(audio[start : start + 320], received_at=0.0)
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.3)
    await stream.aclose()
    await collector
    assert kinds(events) == [K.START_OF_TURN, K.EAGER_END_OF_TURN, K.END_OF_TURN]
    eager, end = events[-2], events[-1]
    assert eager.transcript == end.transcript
    assert eager.at < end.at


async def test_an_interim_that_missed_the_end_of_the_speech_is_not_used() -> None:
    # 1.2 s of tone (38 windows): the last interim, at speech window 27, missed 11 of them
    events = await run(np.concatenate([silence(0.3), tone(1.2), silence(1.0)]), SEMANTIC)
    assert kinds(events) == [K.START_OF_TURN, K.END_OF_TURN]
