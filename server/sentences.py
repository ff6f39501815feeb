"""Cutting the LLM's token stream into pieces TTS can speak while the LLM still writes.

The first piece of a reply is cut early (at a comma, or after three words, later if the third
cannot end a phrase: "The capital of | France") because the first audio byte is what the
caller waits for. The second is cut at a comma or after about eight words: it must be spoken
before the first piece has played (about a second), and the rest of a long first sentence took
the LLM and Piper longer than that (a 527 ms silence inside 'A good name | for a small gray cat
could be "Zephyr" or "Puff" to give it a playful ...', bench/turn_taking.py). Later pieces are
whole sentences, which sound more natural.
"""

from __future__ import annotations

import re

from server.turn_words import UNFINISHED_LAST_WORDS

_SENTENCE_END = re.compile(r"([.!?…]+[\"')\]]*)(\s+)")
_CLAUSE_END = re.compile(r"([,;:—–])(\s+)")
FIRST_CLAUSE_MIN_WORDS = 3
# The first piece ends after the first of its words 3..6 that can end a phrase ("A rainbow
# forms", not "The capital is"); Piper then renders three words instead of a sentence.
FIRST_PIECE_WORDS = range(3, 7)
# The second piece ends at a clause or after the first of its words 8..12 that can end a phrase.
SECOND_PIECE_WORDS = range(8, 13)
_MARKDOWN = re.compile(r"[*_`#>|]+|^\s*[-•]\s+", re.MULTILINE)


def speakable(text: str) -> str:
    """What TTS should read: markdown marks and surplus spaces removed."""
    return re.sub(r"\s+", " ", _MARKDOWN.sub(" ", text)).strip()


class SentenceSplitter:
    def __init__(self) -> None:
        self._buffer = ""
        self._pieces = 0

    def push(self, delta: str) -> list[str]:
        """Add LLM output; return the pieces now complete."""
        self._buffer += delta
        pieces: list[str] = []
        while True:
            cut = self._next_cut()
            if cut is None:
                break
            piece, self._buffer = self._buffer[:cut], self._buffer[cut:]
            if speakable(piece):
                pieces.append(piece.strip())
                self._pieces += 1
        return pieces

    def flush(self) -> list[str]:
        piece, self._buffer = self._buffer, ""
        return [piece.strip()] if speakable(piece) else []

    def _next_cut(self) -> int | None:
        match = _SENTENCE_END.search(self._buffer)
        if match and len(self._buffer[: match.end(1)].split()) >= 1:
            return match.end()
        if self._pieces < 2:
            clause = _CLAUSE_END.search(self._buffer)
            if clause and len(self._buffer[: clause.end(1)].split()) >= FIRST_CLAUSE_MIN_WORDS:
                return clause.end()
            words = self._buffer.split(" ")  # a word is whole once the next one has begun
            bounds = FIRST_PIECE_WORDS if self._pieces == 0 else SECOND_PIECE_WORDS
            for count in bounds:
                if len(words) <= count:
                    break
                if _can_end_phrase(words[count - 1]) or count == bounds[-1]:
                    return len(" ".join(words[:count])) + 1
        return None


def _can_end_phrase(word: str) -> bool:
    return word.strip("\"'()[]").lower() not in UNFINISHED_LAST_WORDS
