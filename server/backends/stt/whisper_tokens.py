"""Whisper's prompt and text tokens, read from the CTranslate2 model directory itself.

The directory holds `tokenizer.json` (the byte-level BPE, loaded with Hugging Face `tokenizers`)
and `config.json`, whose `lang_ids` are the ids of the model's language tokens (<|en|>, <|de|>,
...). A transcription prompt is
    [<|startofprev|> previous-text...] <|startoftranscript|> <|xx|> <|transcribe|> <|notimestamps|>
where the previous text (our `vocabulary`) steers the spelling of names and terms.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from tokenizers import Tokenizer

# Whisper's decoder holds 448 tokens; the previous text may take at most half of them.
_MAX_PREVIOUS = 448 // 2 - 1


@functools.cache
@functools.cache  # a session's language is checked against it: parse the 1 MB vocabulary once
def whisper_languages(model_dir: Path) -> dict[str, int]:
    """The model's languages: code ("en") -> its language token id (from config.json).
    Shared: do not change the dict."""
    config = json.loads((model_dir / "config.json").read_text())
    vocabulary = json.loads((model_dir / "vocabulary.json").read_text())
    return {vocabulary[i].strip("<|>"): i for i in config["lang_ids"]}


class WhisperTokenizer:
    def __init__(self, model_dir: Path) -> None:
        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._languages = whisper_languages(model_dir)
        self.end_of_text = self._special("<|endoftext|>")
        self._start = self._special("<|startoftranscript|>")
        self._transcribe = self._special("<|transcribe|>")
        self._no_timestamps = self._special("<|notimestamps|>")
        self._start_of_previous = self._special("<|startofprev|>")

    def _special(self, token: str) -> int:
        token_id = self._tokenizer.token_to_id(token)
        if token_id is None:
            raise ValueError(f"the Whisper tokenizer has no {token} token")
        return int(token_id)

    def encode(self, text: str) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def word_tokens(self, words: frozenset[str]) -> dict[int, str]:
        """The tokens that are one of `words` on their own, after a space ("Ġto", "ĠTo")."""
        found: dict[int, str] = {}
        for word in words:
            for spelling in (word, word.capitalize()):
                ids = self.encode(" " + spelling)
                if len(ids) == 1:
                    found[ids[0]] = word
        return found

    def last_word_start(self, tokens: list[int]) -> int | None:
        """Where the last word begins: past trailing punctuation, back to a token after a space."""
        i = len(tokens) - 1
        while i >= 0 and not any(c.isalnum() for c in self.decode([tokens[i]])):
            i -= 1
        while i > 0 and not self.decode([tokens[i]]).startswith(" "):
            i -= 1
        return i if i >= 0 else None

    def decode(self, tokens: list[int]) -> str:
        """The text of the text tokens (special tokens, all above <|endoftext|>, are left out)."""
        text: str = self._tokenizer.decode([t for t in tokens if t < self.end_of_text])
        return text

    def prompt(self, language: str, previous_text: str = "") -> list[int]:
        """The decoder prompt transcribing `language` (a code: "en"), no timestamps."""
        previous = self.encode(" " + previous_text.strip()) if previous_text.strip() else []
        head = [self._start_of_previous, *previous[-_MAX_PREVIOUS:]] if previous else []
        return [
            *head,
            self._start,
            self._languages[language],
            self._transcribe,
            self._no_timestamps,
        ]
