"""Cutting the LLM's token stream into pieces TTS can speak while the LLM still writes.

The first piece of a reply is cut early (at a comma, or after a few words once a pause-like
boundary appears) because the first audio byte is what the caller waits for; later pieces are
whole sentences, which sound more natural.
"""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"([.!?…]+[\"')\]]*)(\s+)")
_CLAUSE_END = re.compile(r"([,;:—–])(\s+)")
FIRST_CLAUSE_MIN_WORDS = 3
FIRST_CLAUSE_MAX_WORDS = 4
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
        if self._pieces == 0:
            clause = _CLAUSE_END.search(self._buffer)
            if clause and len(self._buffer[: clause.end(1)].split()) >= FIRST_CLAUSE_MIN_WORDS:
                return clause.end()
            words = self._buffer.split(" ")
            if len(words) > FIRST_CLAUSE_MAX_WORDS:  # a long run-on first sentence
                return len(" ".join(words[:FIRST_CLAUSE_MAX_WORDS])) + 1
        return None
