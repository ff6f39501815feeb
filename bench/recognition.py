"""Speech recognition quality of the local Whisper STT: word error rate, looping interims, time.

    .venv/bin/python bench/recognition.py --write

Speech is ours: sentences written for this benchmark (numbers, names, addresses, short answers
like "yes" and "no", everyday requests), spoken by the packaged Piper voice without synthesis
noise (the same audio every run) at three speeds (Piper's length_scale 0.85, 1.0, 1.2). Each is
heard two ways:

- 16k: Piper's audio resampled to 16 kHz, as a LINEAR16 16 kHz client sends it;
- 8k G.711: resampled to 8 kHz, mu-law encoded and decoded with the project's own G.711
  (server/audio.py), then upsampled to 16 kHz by the server's inbound path (InboundAudio), as
  a SIP call reaches the server.

Each utterance is decoded as the turn stream (server/turns.py) decodes it: the turn's audio
starts with 0.32 s of pre-roll silence and ends 64 ms into the silence (where the final decode
starts); interim decodes cover the audio up to every 384 ms (12 VAD windows) after the start.
The decodes go through `WhisperSTT.decode` (the server's own decode path, one thread).

Scoring: lower case, punctuation dropped, numbers as digits whether Whisper writes them as
digits or words ("four two", "forty-two" and "42" are all "42"; digit runs join, so a phone
number is one word), "Dr." = "doctor". WER = (substitutions + deletions + insertions) / reference
words over the whole set; word recall = reference words matched / reference words.

A looping interim (this benchmark's own test, independent of the server's loop guard): a run
of two or more words said twice that the sentence itself does not repeat, or more words than the
whole sentence has plus three, or a word said three times that the sentence says less. Counted on what the model produced ("raw") and on what the
server would send as UPDATE events (after its loop guard drops looping interims).

The 8 kHz variants (finals only) compare what might help telephone audio: beam size, the
resampler's quality for 8 -> 16 kHz, low white noise filling the empty band above 4 kHz, and
the sentences' names given to Whisper as vocabulary (a campaign's own words).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from benchmarks_md import write_section  # bench/ is sys.path[0] when run as a script
from turn_taking import speak

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from voiceagent.v1 import voice_agent_pb2 as pb  # noqa: E402

from server.audio import Format, InboundAudio, StreamResampler, decode  # noqa: E402
from server.backends.stt.whisper import WhisperSTT  # noqa: E402
from server.g711 import mulaw_encode  # noqa: E402

SECTION = "## Speech recognition: word error rate and looping interims (local Whisper)"
SPEEDS = (0.85, 1.0, 1.2)
PREROLL_S = 0.32
TAIL_S = 0.064
INTERIM_STEP_S = 0.384

# (category, what Piper says). The reference is the same text.
SENTENCES: tuple[tuple[str, str], ...] = (
    ("number", "My account number is four seven one nine two eight."),
    ("number", "I would like to order twelve boxes of paper."),
    ("number", "The total came to three hundred and forty dollars."),
    ("number", "Call me back at five five five, two one eight, four four nine one."),
    ("number", "We need a table for six at seven thirty."),
    ("number", "The flight leaves in forty five minutes."),
    ("number", "I have been waiting for two weeks."),
    ("name", "My name is Sarah Johnson."),
    ("name", "This is Michael from the billing department."),
    ("name", "Can I speak to Doctor Patel, please?"),
    ("name", "Please put me through to Emily Rodriguez."),
    ("name", "I am calling on behalf of Thomas Wright."),
    ("address", "I live at forty two Maple Street."),
    ("address", "Send it to one hundred fifteen Oak Avenue, apartment three."),
    ("address", "The office is on Elm Road in Springfield."),
    ("address", "My zip code is nine oh two one oh."),
    ("address", "Deliver it to the back door on Pine Lane."),
    ("short", "Yes."),
    ("short", "No."),
    ("short", "Yes, please."),
    ("short", "No, thank you."),
    ("short", "Yeah, that's right."),
    ("short", "That's wrong."),
    ("request", "Please cancel my appointment on Friday morning."),
    ("request", "What are your opening hours on Saturday?"),
    ("request", "I want to change my delivery address."),
    ("request", "Can you tell me the balance on my account?"),
    ("request", "I'd like to book a room for two nights."),
    ("request", "My internet has been down since yesterday."),
    ("request", "Is there a pharmacy open near the station?"),
)
# What a campaign for these calls could list as its vocabulary (the variant "vocabulary").
VOCABULARY = (
    "Sarah Johnson, Michael, Doctor Patel, Emily Rodriguez, Thomas Wright, Maple Street, "
    "Oak Avenue, Elm Road, Springfield, Pine Lane."
)

# --- scoring ----------------------------------------------------------------------------------

_UNITS = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen".split()
    )
}
_TENS = {
    w: 10 * i
    for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), 2)
}
_SPELLING = {"dr": "doctor", "mr": "mister", "mrs": "missus", "ok": "okay", "st": "street"}


def _tokens(text: str) -> list[str]:
    text = text.lower().replace("$", " $ ")
    text = re.sub(r"(?<=\d)[,.:\-](?=\d)", "", text)  # 1,250  7:30  555-0123
    text = re.sub(r"(?<=[a-z])-(?=[a-z])", " ", text)  # forty-five
    words = re.findall(r"[a-z0-9']+|\$", text)
    out = [_SPELLING.get(w.replace("'", ""), w.replace("'", "")) for w in words]
    # "$340" is "340 dollars"
    result: list[str] = []
    for i, w in enumerate(out):
        if w == "$":
            continue
        result.append(w)
        if i > 0 and out[i - 1] == "$" and w.isdigit():
            result.append("dollars")
    return result


def _is_number_word(words: list[str], i: int) -> bool:
    w = words[i]
    if w in _UNITS or w in _TENS or w in ("hundred", "thousand"):
        return True
    neighbours = [words[j] for j in (i - 1, i + 1) if 0 <= j < len(words)]
    if w == "oh":  # "nine oh two": a zero between digits
        return any(n in _UNITS or n.isdigit() for n in neighbours)
    if w == "and":  # "three hundred and forty"
        return i > 0 and words[i - 1] in ("hundred", "thousand") and i + 1 < len(words)
    return False


def _numbers(words: list[str]) -> list[str]:
    """Number words -> digit groups, as a reader would write them ("seven thirty" -> 7 30)."""
    out: list[str] = []
    i = 0
    while i < len(words):
        if not _is_number_word(words, i) or words[i] in ("and", "hundred", "thousand"):
            out.append(words[i])
            i += 1
            continue
        groups: list[int] = []
        total, current, last = 0, 0, ""
        while i < len(words) and _is_number_word(words, i):
            w = words[i]
            value = 0 if w == "oh" else _UNITS.get(w, _TENS.get(w, -1))
            if w == "and":
                pass
            elif w == "hundred":
                current = max(current, 1) * 100
                last = "hundred"
            elif w == "thousand":
                total += max(current, 1) * 1000
                current, last = 0, "thousand"
            elif value < 10 and last == "tens":
                current += value
                last = "unit"
            elif last in ("", "hundred", "thousand"):
                current += value
                last = "tens" if w in _TENS else "unit"
            else:  # a new number starts ("five five", "seven thirty")
                groups.append(total + current)
                total, current = 0, value
                last = "tens" if w in _TENS else "unit"
            i += 1
        groups.append(total + current)
        out.extend(str(g) for g in groups)
    return out


def normalize(text: str) -> list[str]:
    words = _numbers(_tokens(text))
    joined: list[str] = []
    for w in words:  # digit runs are one number: "555 218 4491", "9 0 2 1 0"
        if w.isdigit() and joined and joined[-1].isdigit():
            joined[-1] += w
        else:
            joined.append(w)
    return joined


def edit_counts(reference: list[str], hypothesis: list[str]) -> tuple[int, int]:
    """(edit distance, matched reference words) of a word alignment."""
    rows, cols = len(reference) + 1, len(hypothesis) + 1
    cost = [[0] * cols for _ in range(rows)]
    hits = [[0] * cols for _ in range(rows)]
    for i in range(rows):
        cost[i][0] = i
    for j in range(cols):
        cost[0][j] = j
    for i in range(1, rows):
        for j in range(1, cols):
            same = reference[i - 1] == hypothesis[j - 1]
            options = [
                (cost[i - 1][j - 1] + (0 if same else 1), -(hits[i - 1][j - 1] + same)),
                (cost[i - 1][j] + 1, -hits[i - 1][j]),
                (cost[i][j - 1] + 1, -hits[i][j - 1]),
            ]
            best = min(options)
            cost[i][j], hits[i][j] = best[0], -best[1]
    return cost[-1][-1], hits[-1][-1]


def is_looping(hypothesis: str, reference: str) -> bool:
    words, ref = normalize(hypothesis), normalize(reference)
    if len(words) > len(ref) + 3:
        return True
    for word in set(words):  # "Please, ... Please, ... Please, ...": the start said again
        if len(word) >= 3 and words.count(word) >= 3 and ref.count(word) < words.count(word):
            return True
    for n in range(2, len(words) // 2 + 1):
        grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
        ref_grams = [tuple(ref[i : i + n]) for i in range(len(ref) - n + 1)]
        for gram in set(grams):
            if grams.count(gram) >= 2 and ref_grams.count(gram) < 2:
                return True
    return False


# --- audio ------------------------------------------------------------------------------------


def _silence(seconds: float, rate: int) -> np.ndarray:
    return np.zeros(int(seconds * rate), dtype=np.int16)


def with_high_band_noise(pcm: np.ndarray, dbfs: float) -> np.ndarray:
    """Band-limited audio with white noise above 4 kHz at `dbfs` (RMS), as wideband speech has
    some energy there and upsampled telephone audio none (a candidate front end)."""
    rng = np.random.default_rng(19)
    spectrum = np.fft.rfft(rng.standard_normal(len(pcm)))
    spectrum[: len(spectrum) // 2] = 0  # keep 4-8 kHz of the 16 kHz signal
    noise = np.fft.irfft(spectrum, len(pcm))
    noise *= 32768 * 10 ** (dbfs / 20) / (np.sqrt(np.mean(noise**2)) or 1.0)
    return np.clip(pcm + noise, -32768, 32767).astype(np.int16)


def turn_audio(
    text: str, speed: float, rate: int, quality: str = "HQ", noise_dbfs: float | None = None
) -> np.ndarray:
    """The turn's audio as the server hears it, at 16 kHz (see the module docstring)."""
    pcm = np.concatenate(
        [_silence(PREROLL_S, rate), speak(text, speed, rate), _silence(TAIL_S, rate)]
    )
    if rate == 16000:
        return pcm
    g711 = mulaw_encode(pcm)
    if quality == "HQ":  # exactly the server's inbound path
        heard = InboundAudio(Format(pb.MULAW, 8000), 16000).push(g711)
    else:
        heard = StreamResampler(8000, 16000, quality).process(decode(g711, pb.MULAW), last=True)
    return heard if noise_dbfs is None else with_high_band_noise(heard, noise_dbfs)


# --- runs -------------------------------------------------------------------------------------


@dataclass
class Score:
    errors: int = 0
    hits: int = 0
    words: int = 0
    ratios: list[float] = field(default_factory=list)  # decode s per audio s, per utterance
    misheard: list[tuple[str, str]] = field(default_factory=list)
    max_tokens_per_s: float = 0.0  # of a final decode that did not loop

    def add(self, reference: str, hypothesis: str, seconds: float, took: float) -> None:
        ref, hyp = normalize(reference), normalize(hypothesis)
        errors, hits = edit_counts(ref, hyp)
        self.errors += errors
        self.hits += hits
        self.words += len(ref)
        self.ratios.append(took / seconds)
        if errors:
            self.misheard.append((reference, hypothesis))

    @property
    def wer(self) -> float:
        return self.errors / self.words

    @property
    def recall(self) -> float:
        return self.hits / self.words


@dataclass
class Interims:
    decodes: int = 0
    raw_looping: int = 0
    sent: int = 0
    sent_looping: int = 0
    dropped: int = 0
    ratios: list[float] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)  # raw looping interims
    sent_examples: list[str] = field(default_factory=list)  # looping interims the guard let by


def run_condition(
    stt: WhisperSTT,
    rate: int,
    utterances: Sequence[tuple[str, float]],
    interims: bool,
    beam_size: int | None = None,
    quality: str = "HQ",
    vocabulary: str = "",
    noise_dbfs: float | None = None,
) -> tuple[Score, Interims]:
    score, interim = Score(), Interims()
    for text, speed in utterances:
        pcm = turn_audio(text, speed, rate, quality, noise_dbfs)
        seconds = len(pcm) / 16000
        started = time.perf_counter()
        final = stt.decode(pcm, True, "en", beam_size=beam_size, vocabulary=vocabulary)
        score.add(text, final.text, seconds, time.perf_counter() - started)
        if not final.looping:
            score.max_tokens_per_s = max(score.max_tokens_per_s, final.tokens / seconds)
        if not interims:
            continue
        end = PREROLL_S + INTERIM_STEP_S
        while end * 16000 < len(pcm):
            prefix = pcm[: int(end * 16000)]
            started = time.perf_counter()
            hypothesis = stt.decode(prefix, False, "en")
            interim.ratios.append((time.perf_counter() - started) / end)
            interim.decodes += 1
            raw_loop = is_looping(hypothesis.text, text)
            interim.raw_looping += raw_loop
            if raw_loop and len(interim.examples) < 6:
                interim.examples.append(hypothesis.text)
            if hypothesis.looping:
                interim.dropped += 1
            elif hypothesis.text:
                interim.sent += 1
                interim.sent_looping += raw_loop
                if raw_loop:
                    interim.sent_examples.append(hypothesis.text)
            end += INTERIM_STEP_S
    return score, interim


def _utterances(speeds: Sequence[float]) -> list[tuple[str, float]]:
    return [(text, speed) for _, text in SENTENCES for speed in speeds]


def report(results: dict[str, object], command: str) -> str:
    main = results["main"]
    assert isinstance(main, dict)
    lines = [
        SECTION,
        "",
        f"Command: `{command}`  ",
        f"Measured {results['when']} on {results['machine']} (shared with other work: decode "
        "times are for comparison, as ratios), Whisper base int8, one decode thread. "
        f"{len(SENTENCES)} sentences of our own x {len(SPEEDS)} Piper speeds "
        f"({', '.join(str(s) for s in SPEEDS)}) = {len(SENTENCES) * len(SPEEDS)} utterances "
        "per row. Method: the docstring of bench/recognition.py.",
        "",
        "| model | audio | WER | word recall | final decode s per audio s (median) | interims | looping raw | looping sent | dropped by the guard | interim decode s per audio s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, row in main.items():
        lines.append(
            f"| base | {key} | {row['wer']:.3f} | {row['recall']:.3f} | {row['final_ratio']:.3f} | "
            f"{row['interims']} | {row['raw_looping']} | {row['sent_looping']} | {row['dropped']} | "
            f"{row['interim_ratio']:.3f} |"
        )
    w16, w8 = main["16k"]["wer"], main["8k G.711"]["wer"]
    lines += [
        "",
        f"8 kHz G.711 WER / 16 kHz WER = {w8 / w16:.2f}" if w16 else "16 kHz WER is 0",
        "",
        "8 kHz G.711 variants (finals only; the default is beam 2, soxr HQ, no vocabulary):",
        "",
        "| variant | WER | word recall | final decode s per audio s (median) |",
        "|---|---|---|---|",
    ]
    variants = results["variants"]
    assert isinstance(variants, dict)
    for key, row in variants.items():
        lines.append(
            f"| {key} | {row['wer']:.3f} | {row['recall']:.3f} | {row['final_ratio']:.3f} |"
        )
    examples = results.get("loop_examples") or []
    if examples:
        lines += ["", "Raw looping interims (dropped by the guard), for example:", ""]
        lines += [f"- {json.dumps(e)}" for e in examples]
    let_by = results.get("sent_looping_examples") or []
    if let_by:
        lines += ["", "Looping interims the guard let by:", ""]
        lines += [f"- {json.dumps(e)}" for e in let_by]
    misheard = results.get("misheard_8k") or []
    if misheard:
        lines += ["", "Misheard at 8 kHz G.711 (reference -> final), the first ten:", ""]
        lines += [f"- {json.dumps(r)} -> {json.dumps(h)}" for r, h in misheard[:10]]
    return "\n".join(lines) + "\n"


def _row(score: Score, interim: Interims | None = None) -> dict[str, float | int]:
    row: dict[str, float | int] = {
        "wer": score.wer,
        "recall": score.recall,
        "final_ratio": statistics.median(score.ratios),
        "max_tokens_per_s": score.max_tokens_per_s,
    }
    if interim is not None:
        row.update(
            interims=interim.decodes,
            raw_looping=interim.raw_looping,
            sent_looping=interim.sent_looping,
            dropped=interim.dropped,
            interim_ratio=statistics.median(interim.ratios) if interim.ratios else 0.0,
        )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--write", action="store_true", help="replace the section in BENCHMARKS.md")
    parser.add_argument("--json", type=Path, help="dump every figure and transcript here")
    parser.add_argument("--no-variants", action="store_true", help="skip the 8 kHz variants")
    args = parser.parse_args()

    stt = WhisperSTT(workers=1)
    asyncio.run(stt.load())
    utterances = _utterances(SPEEDS)
    main_rows: dict[str, dict[str, float | int]] = {}
    examples: list[str] = []
    sent_examples: list[str] = []
    misheard: list[tuple[str, str]] = []
    for label, rate in (("16k", 16000), ("8k G.711", 8000)):
        score, interim = run_condition(stt, rate, utterances, interims=True)
        main_rows[label] = _row(score, interim)
        examples += interim.examples
        sent_examples += interim.sent_examples
        if rate == 8000:
            misheard = score.misheard
        print(label, main_rows[label], flush=True)
    variants: dict[str, dict[str, float | int]] = {}
    if not args.no_variants:
        runs: dict[str, Callable[[], tuple[Score, Interims]]] = {
            "greedy (beam 1)": lambda: run_condition(stt, 8000, utterances, False, beam_size=1),
            "beam 5": lambda: run_condition(stt, 8000, utterances, False, beam_size=5),
            "soxr VHQ resampling": lambda: run_condition(
                stt, 8000, utterances, False, quality="VHQ"
            ),
            "soxr LQ resampling": lambda: run_condition(stt, 8000, utterances, False, quality="LQ"),
            "noise above 4 kHz at -60 dBFS": lambda: run_condition(
                stt, 8000, utterances, False, noise_dbfs=-60
            ),
            "noise above 4 kHz at -45 dBFS": lambda: run_condition(
                stt, 8000, utterances, False, noise_dbfs=-45
            ),
            "vocabulary (the sentences' names)": lambda: run_condition(
                stt, 8000, utterances, False, vocabulary=VOCABULARY
            ),
        }
        for label, run in runs.items():
            variants[label] = _row(run()[0])
            print(label, variants[label], flush=True)
    results: dict[str, object] = {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores",
        "main": main_rows,
        "variants": variants,
        "loop_examples": examples[:6],
        "sent_looping_examples": sent_examples,
        "misheard_8k": misheard,
    }
    command = ".venv/bin/python bench/recognition.py --write"
    text = report(results, command)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if args.write:
        write_section(text)


if __name__ == "__main__":
    main()
