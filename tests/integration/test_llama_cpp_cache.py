"""The local model's prompt cache: what a reply still has to read after a warm-up."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from server.backends.llm.base import ChatMessage
from server.backends.llm.llama_cpp import MODEL_ID, LlamaCppLLM

HISTORY = [ChatMessage("system", "You are a helpful voice assistant. Answer in one sentence.")]
QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
async def llm() -> AsyncIterator[LlamaCppLLM]:
    model = LlamaCppLLM()
    await model.load()
    yield model
    await model.aclose()


async def first_read(llm: LlamaCppLLM, question: str) -> tuple[int, str]:
    """Prompt tokens the reply to `question` evaluates (those not cached), and its first words."""
    messages = [*HISTORY, ChatMessage("user", question)]
    model: Any = llm._llm
    prompt, _ = llm._fitted(messages)
    cached_at_first_eval: list[int] = []
    original = model.eval

    def counting_eval(tokens: list[int]) -> None:
        if not cached_at_first_eval:
            cached_at_first_eval.append(model.n_tokens)
        original(tokens)

    model.eval = counting_eval
    words = ""
    try:
        async for delta in llm.stream(messages, MODEL_ID):
            words += str(delta)
            if len(words.split()) >= 2:
                break
    finally:
        model.eval = original
    return len(prompt) - cached_at_first_eval[0], words


async def test_a_warm_up_with_all_the_words_leaves_one_token_to_read(llm: LlamaCppLLM) -> None:
    await llm.warm(HISTORY, MODEL_ID, heard=QUESTION)
    read, words = await first_read(llm, QUESTION)
    assert read == 1, read  # the prompt's last token, for the logits of the first word
    assert words.strip(), words


async def test_a_turn_that_went_on_reads_only_from_where_the_words_differ(
    llm: LlamaCppLLM,
) -> None:
    await llm.warm(HISTORY, MODEL_ID, heard="What is the capital")
    read, _ = await first_read(llm, QUESTION)
    # " of France?" and the reply's header: a few tokens, not the whole prompt (~40)
    assert 4 <= read <= 12, read


async def test_a_warm_up_without_words_stops_before_the_user_turn(llm: LlamaCppLLM) -> None:
    await llm.warm(HISTORY, MODEL_ID)
    read, _ = await first_read(llm, QUESTION)
    assert 8 <= read <= 16, read  # the question and the reply's header
