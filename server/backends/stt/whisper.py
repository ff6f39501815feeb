"""Local STT: Whisper base (CTranslate2, int8) with Silero VAD turn-taking and
Smart Turn v3.2 deciding when a turn is complete (server/smart_turn.py).

Whisper's reference decoding pads every input to 30 s (~0.5 s a call whatever the length); we
call the CTranslate2 model on the turn's own log-mel features (server/log_mel.py) plus a short
zero tail instead, which
makes an interim transcript cost 65-250 ms (measured on 2 cores). Finals use beam 2, interims greedy.

An interim decode covers audio cut mid-word, and Whisper then often loops ("Please cancel my
appointment. Please cancel, Maya Point. Please cancel my appointing."). Every decode's output is
bounded by the audio it covers, and an interim that hits the bound, repeats a phrase, starts
again or compresses like a loop is dropped: the turn keeps showing the previous interim. A final
decode that loops (rarer: it hears the whole turn) is decoded once more with a stronger
repetition penalty, and cut where its loop begins if that loops too.

Whisper writes a pause after a word no phrase ends on as a word that can end one ("I need to
change my flight to..." -> "...my flight too."), so the words alone do not hold that turn.
`open_ending` asks the decoder, given the rest of the transcript, how likely such a word was
in place of the last one (0.26-0.95 for "to" at those pauses, under 0.02 on 246 complete
utterances of bench/recognition.py and bench/turn_taking.py at 16 and 8 kHz).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import threading
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np

from server import assets
from server.backends.stt.base import STT, STTStream, TurnMode, TurnOptions
from server.backends.stt.whisper_tokens import WhisperTokenizer, whisper_languages
from server.inference import CPU, single_threaded_blas
from server.log_mel import HOP, log_mel
from server.metrics import FINAL_LOOPS, INTERIMS_SKIPPED
from server.smart_turn import SmartTurnV3
from server.turn_words import OPEN_ALTERNATIVES, before_repetition, leaves_open, looks_repetitive
from server.turns import Transcription, VadTurnStream
from server.vad import SileroVAD

log = logging.getLogger(__name__)
_T = TypeVar("_T")

_TAIL_SECONDS = 1.0  # zero padding after the speech: Whisper drops final words without it
# Output bound: at most TOKEN_SLACK + TOKENS_PER_SECOND tokens per second of audio decoded. Our
# bench sentences at Piper's fastest speed need at most ~5 tokens per second of turn audio
# (digits and punctuation included; bench/recognition.py); a loop runs far past that.
TOKENS_PER_SECOND = 8
TOKEN_SLACK = 6
MAX_TOKENS = 200  # Whisper's decoder holds 448 tokens, the prompt included
# Whisper's own loop test for long-form audio: text that zlib compresses this well
# repeats itself.
COMPRESSION_RATIO_LIMIT = 2.4
# Finals: beam 2. On 2 cores, for a 3.3 s question: greedy 188 ms, beam 2 217, beam 3 240,
# beam 5 464 (medians of 8); beam 2 and beam 5 gave the same words on 20 held-out questions at
# 16 and 8 kHz. The final decode is on the path to every answer; interims stay greedy.
_FINAL_BEAM = 2
# A final decode that loops is decoded again with this repetition penalty (1.1 otherwise):
# 14 of 14 looping finals of cut bench sentences came out loop-free at beam 2, under every
# CPU instruction set CTranslate2 offers (CT2_FORCE_CPU_ISA AVX, AVX2, AVX512); a bigger beam
# alone freed 9, greedy or sampling at 0.4 none. The words change with the ISA: CI's machine
# looped on a whole 8 kHz phone number ("Call me back at 555. Call me Back at 5555. ...").
RETRY_PENALTY = 1.3
# `open_ending` forces the decoder through the words before the last one, ~7 ms a token on 2
# cores while token generation waits: past this many (~12 s of speech) it answers 0.0 rather
# than stall every call's answer for a second.
OPEN_ENDING_MAX_TOKENS = 96


def token_budget(seconds: float) -> int:
    """The most tokens a decode of `seconds` of audio may produce."""
    return min(MAX_TOKENS, TOKEN_SLACK + math.ceil(TOKENS_PER_SECOND * seconds))


def _whisper_language(language: str) -> str:
    """Whisper's code for a BCP-47 tag: its primary subtag ("en-US" -> "en"); "" -> "en"."""
    return language.split("-")[0].lower() or "en"


def _max_length(budget: int, prompt_tokens: int) -> int:
    """CTranslate2's `max_length` for at most `budget` new tokens.

    Measured with CTranslate2 4.8: Whisper's generate() yields at most
    min(max_length - prompt_tokens + 1, max_length // 2) tokens, greedy or beam.
    """
    return max(2 * budget, prompt_tokens + budget - 1)


def _max_length_through(prompt_tokens: int, text_tokens: int) -> int:
    """CTranslate2's `max_length` for a result of `text_tokens` (the prompt's text included):
    by the rule above, max_length // 2 bounds the whole result."""
    return max(prompt_tokens + text_tokens - 1, 2 * text_tokens)


def compression_ratio(text: str) -> float:
    data = text.encode()
    return len(data) / len(zlib.compress(data)) if data else 0.0


def restarts(text: str) -> bool:
    """The first two words come again later: Whisper began the turn again ("The total came to
    the total", "Send it to 150 no-cavenine. Send it"). Rarely speech ("Thank you. Thank you so
    much.", "It is what it is."): only interims are dropped for it, and the final decode
    still carries such a turn."""
    words = re.findall(r"[a-z0-9']+", text.lower())
    opening = words[:2]
    return len(opening) == 2 and any(words[i : i + 2] == opening for i in range(2, len(words)))


def stutters(text: str) -> bool:
    """A word of three letters or more three times in a row ("miser miser miser")."""
    words = re.findall(r"[a-z0-9']+", text.lower())
    return any(len(w) >= 3 and words[i : i + 3] == [w] * 3 for i, w in enumerate(words))


RESTARTS = "starts again"


def looping_reason(text: str, hit_budget: bool) -> str | None:
    """Why a hypothesis looks like a decoding loop rather than speech (None: it does not)."""
    if hit_budget:
        return "ran to the output bound for its audio"
    if looks_repetitive(text):
        return "repeats a phrase"
    if restarts(text):
        return RESTARTS
    if stutters(text):
        return "says a word three times"
    if compression_ratio(text) > COMPRESSION_RATIO_LIMIT:
        return f"compression ratio {compression_ratio(text):.1f} > {COMPRESSION_RATIO_LIMIT}"
    return None


@dataclass(frozen=True)
class Hypothesis:
    text: str
    looping: str | None = None  # why the text looks like a decoding loop, if it does
    tokens: int = 0  # how many the decode produced
    log_prob: float = 0.0  # the mean log probability of those tokens (avg_logprob)


def final_choice(first: Hypothesis, retry: Hypothesis) -> Hypothesis:
    """The transcript of a turn whose final decode looped, given a second decode of it with a
    stronger repetition penalty.

    A final is the turn's transcript (no previous interim stands in for it), so it is never
    dropped: the retry when it is loop-free, else the first decode up to where its loop begins.
    """
    if retry.looping is None:
        return retry
    return Hypothesis(before_repetition(first.text), first.looping, first.tokens)


class WhisperSTT(STT):
    name: ClassVar[str] = "whisper"
    display_name: ClassVar[str] = "Whisper (on this server)"
    sample_rate: ClassVar[int] = 16000

    def __init__(self, workers: int = 2) -> None:
        # Decodes run one thread each, two at a time. A two-thread decode stalls whenever
        # anything else wants a core (audio arriving, the turn model): a final decode of a
        # 2.2 s question took 400-450 ms on two threads in a live stream, 280-340 ms on one.
        # Two workers keep both cores busy when many calls decode at once, and a final decode
        # never queues behind the interim decode still running when the caller falls silent.
        self._workers = workers
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="whisper")
        self._decoding = 0  # decodes submitted and not finished (running or queued)
        self._decoding_lock = threading.Lock()
        self._model: Any = None
        self._vad: SileroVAD | None = None
        self._turn_model: SmartTurnV3 | None = None
        self._tokenizer: WhisperTokenizer | None = None  # set by load()
        self._prompts: dict[str, list[int]] = {}
        self._open_tokens: dict[int, str] = {}  # OPEN_ALTERNATIVES' tokens, set by load()

    async def load(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._load_blocking)

    def _load_blocking(self) -> None:
        import ctranslate2

        single_threaded_blas()  # log_mel's and the turn model's feature products
        model_dir = assets.whisper_model_dir(progress=False)
        self._model = ctranslate2.models.Whisper(
            str(model_dir),
            device="cpu",
            compute_type="int8",
            intra_threads=1,
            inter_threads=self._workers,
        )
        self._tokenizer = WhisperTokenizer(model_dir)
        self._open_tokens = self._tokenizer.word_tokens(OPEN_ALTERNATIVES)
        self._vad = SileroVAD(assets.silero_vad_path())
        self._turn_model = SmartTurnV3(assets.smart_turn_path())
        self._turn_model.score([np.zeros(16000, dtype=np.int16)])  # warm-up
        self.decode(np.zeros(16000, dtype=np.int16), final=True, language="en")  # warm-up

    async def aclose(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._vad is not None:
            await asyncio.to_thread(self._vad.close)
        if self._turn_model is not None:
            await asyncio.to_thread(self._turn_model.close)

    def language_problem(self, language: str) -> str | None:
        languages = whisper_languages(assets.whisper_model_dir(progress=False))
        if _whisper_language(language) in languages:
            return None
        return (
            f"language {language!r} is not one Whisper transcribes; use one of "
            f"{', '.join(sorted(languages))} (a BCP-47 tag such as 'en-US' works too)"
        )

    def open_stream(self, options: TurnOptions) -> STTStream:
        if self._vad is None:
            raise RuntimeError("WhisperSTT.open_stream before load()")
        model = self._turn_model if options.mode == TurnMode.SEMANTIC else None
        return VadTurnStream(self, self._vad, options, model)

    async def transcribe(
        self, pcm: np.ndarray, final: bool, language: str, skippable: bool = False
    ) -> Transcription:
        """The turn's words so far; "" for an interim that loops (the previous interim stands).

        A skippable interim is "" when every worker is busy: with many calls the interims
        (~7 growing decodes for a 3 s question) fill the queue, and the final decodes callers
        wait on queue behind them. Two 20-call SIPp runs at once on 2 cores: 66 of 80
        questions heard within the 12 s calls with skipping, 46 of 80 without.
        """
        if skippable and self._decoding >= self._workers:
            INTERIMS_SKIPPED.inc()
            return Transcription("")
        hypothesis = await self._run(self.decode, pcm, final, language)
        if hypothesis.looping and not final:
            log.debug("interim dropped (%s): %r", hypothesis.looping, hypothesis.text)
            return Transcription("")
        return Transcription(hypothesis.text, hypothesis.log_prob)

    async def open_ending(self, pcm: np.ndarray, transcript: str, language: str) -> float:
        """The probability that the transcript's last word was a word that leaves the phrase
        open ("flight too." for "flight to"), from the decoder given the words before it."""
        return await self._run(self.ending_openness, pcm, transcript, language)

    async def _run(self, work: Callable[..., _T], *args: Any) -> _T:
        with self._decoding_lock:
            self._decoding += 1
        future = self._executor.submit(work, *args)
        future.add_done_callback(self._decode_done)  # also when cancelled before it ran
        return await asyncio.wrap_future(future)

    def _decode_done(self, _: Future[Any]) -> None:
        with self._decoding_lock:
            self._decoding -= 1

    def ending_openness(self, pcm: np.ndarray, transcript: str, language: str) -> float:
        """Blocking `open_ending`: one decoder pass over the words before the last one.

        It holds up an end of turn, so it runs as urgently as a final decode.
        """
        import ctranslate2

        tokenizer, prompt = self._prompt(_whisper_language(language), "")
        tokens = tokenizer.encode(" " + transcript.strip())
        start = tokenizer.last_word_start(tokens)
        if start is None or start > OPEN_ENDING_MAX_TOKENS or len(pcm) < 1600:
            return 0.0
        before = tokenizer.decode(tokens[:start]).strip()
        last = tokenizer.decode(tokens[start:])
        word = last.strip(" .,?!;:").lower()
        ending = last.strip()[len(last.strip().rstrip(".,?!;:")) :]
        with CPU.urgent():
            features = self._features(pcm)
            result = self._model.generate(
                ctranslate2.StorageView.from_array(np.ascontiguousarray(features[None])),
                [prompt + tokens[:start]],
                beam_size=1,
                max_length=_max_length_through(len(prompt), start + 1),
                return_logits_vocab=True,
                suppress_blank=False,
            )
        steps = result[0].logits[0] if result[0].logits else []
        if len(steps) <= start:
            return 0.0
        logits = np.asarray(steps[start], dtype=np.float64).ravel()
        probabilities = np.exp(logits - logits.max())
        probabilities /= probabilities.sum()
        return float(
            sum(
                probabilities[token]
                for token, alternative in self._open_tokens.items()
                if alternative != word and leaves_open(before, alternative, ending)
            )
        )

    def _prompt(self, language: str, vocabulary: str) -> tuple[WhisperTokenizer, list[int]]:
        if self._tokenizer is None:
            raise RuntimeError("WhisperSTT.decode before load()")
        key = f"{language}|{vocabulary}"
        if key not in self._prompts:
            self._prompts[key] = self._tokenizer.prompt(language, vocabulary)
        return self._tokenizer, self._prompts[key]

    def decode(
        self,
        pcm: np.ndarray,
        final: bool,
        language: str,
        beam_size: int | None = None,
        vocabulary: str = "",
    ) -> Hypothesis:
        """Blocking decode of int16 16 kHz audio, loop test included.

        `beam_size` (default: beam 2 for finals, greedy for interims) and `vocabulary` (words
        given to Whisper as the previous text) are what bench/recognition.py compares.
        """
        if len(pcm) < 1600:  # under 0.1 s: nothing to say
            return Hypothesis("")
        # A final decode ends the turn: token generation starts no step meanwhile, and an
        # interim's decode leaves it the other core (see CpuPriority). llama.cpp's two threads
        # meet at a barrier after every layer, so beside a decode on 2 cores each token waits for
        # the scheduler; with token generation paused, the final decode of a question took 78-94
        # ms instead of 128-285 (timed inside the bench server, 2 cores). The features too: under contention
        # they took tens of ms.
        with CPU.urgent() if final else CPU.pressing():
            budget = token_budget(len(pcm) / 16000)
            tokenizer, prompt = self._prompt(_whisper_language(language), vocabulary)
            features = self._features(pcm)
            hypothesis = self._generate(features, prompt, tokenizer, beam_size, final, budget)
            if final and hypothesis.looping not in (None, RESTARTS):
                retry = self._generate(
                    features, prompt, tokenizer, beam_size, final, budget, RETRY_PENALTY
                )
                hypothesis = final_choice(hypothesis, retry)
                FINAL_LOOPS.labels("retried" if retry is hypothesis else "cut").inc()
        return hypothesis

    @staticmethod
    def _features(pcm: np.ndarray) -> np.ndarray:
        audio = np.concatenate(
            [pcm.astype(np.float32) / 32768.0, np.zeros(int(16000 * _TAIL_SECONDS), np.float32)]
        )
        return log_mel(audio, len(audio) // HOP)

    def _generate(
        self,
        features: np.ndarray,
        prompt: list[int],
        tokenizer: WhisperTokenizer,
        beam_size: int | None,
        final: bool,
        budget: int,
        repetition_penalty: float = 1.1,
    ) -> Hypothesis:
        import ctranslate2

        result = self._model.generate(
            ctranslate2.StorageView.from_array(np.ascontiguousarray(features[None])),
            [prompt],
            beam_size=beam_size or (_FINAL_BEAM if final else 1),
            max_length=_max_length(budget, len(prompt)),
            suppress_blank=True,
            suppress_tokens=[-1],
            repetition_penalty=repetition_penalty,
            no_repeat_ngram_size=3,
            return_scores=True,  # with length_penalty 1: the mean log probability of a token
        )
        tokens = result[0].sequences_ids[0]
        text: str = tokenizer.decode(tokens).strip()
        looping = looping_reason(text, len(tokens) >= budget)
        return Hypothesis(text, looping, len(tokens), float(result[0].scores[0]))
