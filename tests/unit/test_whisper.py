"""The local Whisper STT without its model (its tokenizer only): the loop guard, the prompt tokens
and the languages it takes.

Loop guard: interim hypotheses that loop are dropped, speech is kept. The looping texts are real outputs of Whisper base on interim decodes (audio cut mid-word):
from issue 19 (8 kHz LINEAR16) and from bench/recognition.py.
"""

import asyncio
import threading

import grpc
import numpy as np
import pytest
from voiceagent.client import linear16
from voiceagent.v1 import voice_agent_pb2 as pb

from server import assets
from server.backends.stt.whisper import (
    COMPRESSION_RATIO_LIMIT,
    RETRY_PENALTY,
    Hypothesis,
    WhisperSTT,
    compression_ratio,
    final_choice,
    looping_reason,
    token_budget,
)
from server.backends.stt.whisper_tokens import WhisperTokenizer, whisper_languages
from tests.conftest import Call
from tests.unit.conftest import StartServer

RECORDED_LOOPS = [
    "Clean council, my appointment on clean council. My appointment on Clean Council, my "
    "appointments on clean Council,",
    "Please cancel my appointment on Friday morning. Clean council my appointment, on Friday "
    "Morning. Clean Council, my appointments on Friday, Morning.",
    "Please cancel my appointment. Please cancel, Maya Point. Please cancel my appointing.",
    "Please cancel my appointment. Please cancel, my appointment",
    "Send it to 150 no-cavenine. Send it",
    # let by an earlier guard, from bench/recognition.py
    "The total came to the total",
    "Send it 150 Noke Send it 115 Noke",
    "The office is the office.",
    "Please can please can",
    "My internet is my Internet.",
    "The flight leaves the flight leases.",
    "Send it to 150 no-cavenue apartment three Send it 1,150 no-cavanu apartment 3",
    "D of D of",
    "miser miser miser",
    "Please cancel my appointment on Friday morning. My number is 555-0123. I pay $1,250. "
    "I pay $1,250.",
]

SPEECH = [
    "Please cancel my appointment on Friday morning.",
    "What are your opening hours on Saturday?",
    "Call me back at 555-218-4491.",
    "My account number is 471928.",
    "The total came to $340.",
    "Send it to 115 Oak Avenue, Apartment 3.",
    "Yes.",
    "No, no, no.",
    "Bye bye.",
    "My name is Anna, my number is 42.",
    "Yes, yes.",
    "Please.",
    "Please cancel my",
    "I said Tuesday, not Thursday, Tuesday.",
    "No. No, thank you.",
    "Yes. Yes, please.",
]


@pytest.mark.parametrize("text", RECORDED_LOOPS)
def test_recorded_looping_interims_are_rejected(text: str) -> None:
    assert looping_reason(text, hit_budget=False) is not None


@pytest.mark.parametrize("text", SPEECH)
def test_speech_within_its_bound_is_kept(text: str) -> None:
    assert looping_reason(text, hit_budget=False) is None


def test_a_decode_that_ran_to_its_output_bound_is_rejected() -> None:
    # "Please, can't you admire? Please, cancel mine. Please, candle mine." from 1.15 s of
    # audio: no phrase repeats, but it needs more tokens than the audio can hold.
    reason = looping_reason("Please, can't you admire? Please, cancel", hit_budget=True)
    assert reason is not None and "bound" in reason


def test_a_long_loop_compresses_past_faster_whispers_limit() -> None:
    loop = "thank you for calling " * 12
    assert compression_ratio(loop) > COMPRESSION_RATIO_LIMIT
    assert looping_reason(loop, hit_budget=False) is not None
    assert compression_ratio(SPEECH[0]) < COMPRESSION_RATIO_LIMIT
    assert compression_ratio("") == 0.0


def test_the_output_bound_grows_with_the_audio_and_leaves_room_for_fast_speech() -> None:
    assert token_budget(0.5) < token_budget(1.0) < token_budget(3.0)
    # "Please cancel my appointment on Friday morning." is 8 tokens in about 2 s of audio;
    # a phone number read out fast about 12 tokens in 2.5 s.
    assert token_budget(2.0) >= 16
    assert token_budget(2.5) >= 2 * 12
    assert token_budget(30.0) == token_budget(60.0) <= 448 // 2  # within Whisper's context


@pytest.mark.parametrize("language", ["en", "en-US", "EN-gb", "fr", "de-CH", "haw", ""])
def test_whisper_takes_its_languages_as_bcp47_tags(language: str) -> None:
    assert WhisperSTT().language_problem(language) is None


async def test_a_language_whisper_does_not_know_gets_invalid_argument(
    start_server: StartServer, open_call
) -> None:
    s = await start_server(stt=WhisperSTT())  # never loaded: the session is refused first
    config = pb.SessionConfig(input_format=linear16(8000), stt="whisper", language="tlh")
    call: Call = await open_call(s.target, config)
    await call.done.wait()
    assert call.status == grpc.StatusCode.INVALID_ARGUMENT
    assert "'tlh' is not one Whisper transcribes" in call.details and "en, es" in call.details


def test_prompt_tokens_are_whispers_multilingual_layout() -> None:
    """The ids faster-whisper 1.2.1's get_prompt gave for the same prompts (checked once)."""
    tokenizer = WhisperTokenizer(assets.whisper_model_dir())
    start, english, german, transcribe, no_timestamps, previous = (
        50258, 50259, 50261, 50359, 50363, 50361
    )  # fmt: skip
    assert tokenizer.prompt("en") == [start, english, transcribe, no_timestamps]
    assert tokenizer.prompt("de") == [start, german, transcribe, no_timestamps]
    with_vocabulary = tokenizer.prompt("en", " Maya Point, Kowalczyk ")
    words = tokenizer.encode(" Maya Point, Kowalczyk")
    assert with_vocabulary == [previous, *words, start, english, transcribe, no_timestamps]
    assert words[:2] == [21695, 12387]  # " Maya", " Point"
    assert (
        tokenizer.decode([*words, tokenizer.end_of_text, no_timestamps]) == " Maya Point, Kowalczyk"
    )


def test_the_languages_are_the_models_language_tokens() -> None:
    languages = whisper_languages(assets.whisper_model_dir())
    assert (
        len(languages) == 99 and languages["en"] == 50259 and languages["haw"] in languages.values()
    )
    assert "yue" not in languages  # a large-v3 language; base has no token for it


LOOPED_FINAL = "Call me back at 555. Call me Back at 5555. Call Me Back at 555."


def _scripted_generate(stt: WhisperSTT, first: str, retry: str) -> list[tuple[bool, float]]:
    """The CTranslate2 model's place: `first` at the usual repetition penalty, `retry` at any
    other; returns the (final, penalty) of each call."""
    stt._tokenizer = WhisperTokenizer(assets.whisper_model_dir())
    calls: list[tuple[bool, float]] = []

    def generate(
        features: np.ndarray,
        prompt: list[int],
        tokenizer: WhisperTokenizer,
        beam_size: int | None,
        final: bool,
        budget: int,
        repetition_penalty: float = 1.1,
    ) -> Hypothesis:
        calls.append((final, repetition_penalty))
        text = first if repetition_penalty == 1.1 else retry
        return Hypothesis(text, looping_reason(text, hit_budget=False))

    stt._generate = generate  # type: ignore[method-assign]
    return calls


def test_a_final_that_loops_is_decoded_again_with_a_stronger_penalty() -> None:
    stt = WhisperSTT(workers=1)
    calls = _scripted_generate(stt, LOOPED_FINAL, "Call me back at 555-218-4491.")
    audio = np.zeros(16000, np.int16)
    assert stt.decode(audio, True, "en") == Hypothesis("Call me back at 555-218-4491.")
    assert calls == [(True, 1.1), (True, RETRY_PENALTY)]
    calls.clear()
    assert stt.decode(audio, False, "en").looping is not None  # an interim: dropped, not retried
    assert calls == [(False, 1.1)]


def test_a_final_whose_retry_loops_too_is_cut_where_its_loop_begins() -> None:
    stt = WhisperSTT(workers=1)
    _scripted_generate(stt, LOOPED_FINAL, "Call me back at 5555. Call me Back at 555. Call me")
    assert stt.decode(np.zeros(16000, np.int16), True, "en").text == "Call me back at 555."


def test_a_final_that_only_starts_again_is_kept_as_it_is() -> None:
    """ "Thank you. Thank you so much." starts again like a loop, and is speech."""
    stt = WhisperSTT(workers=1)
    calls = _scripted_generate(stt, "Thank you. Thank you so much.", "Thank you so much.")
    assert stt.decode(np.zeros(16000, np.int16), True, "en").text == "Thank you. Thank you so much."
    assert calls == [(True, 1.1)]


def test_the_final_choice_keeps_a_clean_retry_or_cuts_the_loop() -> None:
    looped = Hypothesis(LOOPED_FINAL, "repeats a phrase", 30)
    clean = Hypothesis("Call me back at 555-218-4491.", None, 14)
    assert final_choice(looped, clean) is clean
    assert final_choice(looped, looped).text == "Call me back at 555."


async def test_a_skippable_interim_gives_way_when_every_worker_is_busy() -> None:
    """Decodes callers wait on (finals, interims over the agent) are never skipped; an interim
    nobody waits on is "" while the workers are busy, and decodes again once one is free."""
    stt = WhisperSTT(workers=1)
    release = threading.Event()
    started = threading.Event()

    def decode(pcm: np.ndarray, final: bool, language: str) -> Hypothesis:
        started.set()
        release.wait(5)
        return Hypothesis("final words" if final else "interim words")

    stt.decode = decode  # type: ignore[method-assign]  # the CTranslate2 model's place
    audio = np.zeros(16000, np.int16)
    try:
        final = asyncio.create_task(stt.transcribe(audio, True, "en"))
        await asyncio.to_thread(started.wait, 5)
        assert (await stt.transcribe(audio, False, "en", skippable=True)).text == ""
        waiting = asyncio.create_task(stt.transcribe(audio, False, "en"))  # not skippable
        await asyncio.sleep(0.05)
        assert not waiting.done()
        release.set()
        assert (await final).text == "final words"
        assert (await waiting).text == "interim words"
        assert (await stt.transcribe(audio, False, "en", skippable=True)).text == "interim words"
    finally:
        release.set()
        await stt.aclose()


async def test_a_cancelled_decode_frees_its_worker_slot() -> None:
    stt = WhisperSTT(workers=1)
    release = threading.Event()

    def decode(pcm: np.ndarray, final: bool, language: str) -> Hypothesis:
        release.wait(5)
        return Hypothesis("words")

    stt.decode = decode  # type: ignore[method-assign]
    audio = np.zeros(16000, np.int16)
    try:
        running = asyncio.create_task(stt.transcribe(audio, False, "en"))
        queued = asyncio.create_task(stt.transcribe(audio, False, "en"))
        await asyncio.sleep(0.05)
        queued.cancel()  # cancelled before it ran
        running.cancel()  # cancelled while its thread decodes
        await asyncio.gather(running, queued, return_exceptions=True)
        release.set()
        for _ in range(100):
            if (await stt.transcribe(audio, False, "en", skippable=True)).text:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the worker slots were never freed")
    finally:
        release.set()
        await stt.aclose()
