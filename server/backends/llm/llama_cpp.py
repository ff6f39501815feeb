"""Local LLM: Qwen2.5-Coder-0.5B-Instruct (GGUF, Q4_K_M) through llama-cpp-python.

One model instance serves every session through one inference thread (its single-worker
executor serializes generation and cache warming). llama.cpp reuses the
longest common token prefix of consecutive prompts, so after each turn we evaluate the next
prompt's known prefix (system prompt + history + the user-turn header) while the user is still
speaking: the reply then only pays for the user's new words (~30 ms to the first token instead
of ~350 ms).

A prompt always fits the context window (`fit`: oldest turns out first, the system prompt kept),
and a reply given up (barge-in, a replacing typed turn) stops within one batch of prompt
evaluation or one token: a long prompt cannot hold the worker for a cancelled turn.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

from server import assets
from server.backends.llm.base import LLM, ChatMessage, fit
from server.inference import CPU, iterate_in_thread

MODEL_ID = "qwen2.5-coder-0.5b-instruct"  # as the GGUF metadata names it
_MARK = "\x00USER-TURN\x00"
# Tokens of the chat template around each message, and around the whole prompt.
MESSAGE_OVERHEAD = 8
PROMPT_OVERHEAD = 16
EVAL_BATCH = 256  # prompt tokens evaluated between two looks at a cancellation


class LlamaCppLLM(LLM):
    name: ClassVar[str] = "llama-cpp"

    def __init__(self, threads: int = 2, max_tokens: int = 96, context: int = 4096) -> None:
        self._threads = threads
        self._max_tokens = max_tokens
        self._context = context
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")
        self._llm: Any = None
        self._formatter: Any = None

    def models(self) -> list[str]:
        return [MODEL_ID]

    async def load(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._load_blocking)

    def _load_blocking(self) -> None:
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        path = assets.llm_model_path(progress=False)
        self._llm = Llama(
            str(path),
            n_ctx=self._context,
            n_threads=self._threads,
            n_threads_batch=self._threads,
            n_batch=256,
            verbose=False,
        )
        eos = self._llm._model.token_get_text(self._llm.token_eos())
        self._formatter = Jinja2ChatFormatter(
            self._llm.metadata["tokenizer.chat_template"], eos_token=eos, bos_token=""
        )

    async def aclose(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _prompt(self, messages: list[ChatMessage]) -> tuple[str, list[str]]:
        formatted = self._formatter(
            messages=[{"role": m.role, "content": m.content} for m in messages]
        )
        return formatted.prompt, list(formatted.stop or [])

    def _count(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode(), add_bos=False, special=False))

    def _fitted(self, messages: list[ChatMessage]) -> tuple[list[int], list[str]]:
        """The prompt's tokens (and stop strings) for `messages` cut to the context window with
        room for the reply. In the worker thread: tokenizing a long history takes a while."""
        room = self._context - self._max_tokens
        budget = room - PROMPT_OVERHEAD
        while True:
            prompt, stop = self._prompt(fit(messages, budget, self._count, MESSAGE_OVERHEAD))
            tokens: list[int] = self._llm.tokenize(prompt.encode(), special=True)
            if len(tokens) <= room or budget <= 0:
                return tokens[-room:], stop
            budget -= len(tokens) - room  # the template cost more than estimated

    def _evaluate(self, tokens: list[int], cancelled: threading.Event) -> bool:
        """Evaluate `tokens` after the prefix already cached, a batch at a time; False if given
        up meanwhile."""
        cached = self._llm.input_ids[: self._llm.n_tokens].tolist()
        common = 0
        for a, b in zip(cached, tokens, strict=False):
            if a != b:
                break
            common += 1
        self._llm.n_tokens = common
        for start in range(common, len(tokens), EVAL_BATCH):
            if cancelled.is_set():
                return False
            self._llm.eval(tokens[start : start + EVAL_BATCH])
        return True

    async def stream(self, messages: list[ChatMessage], model: str) -> AsyncIterator[str]:
        cancelled = threading.Event()

        def generate() -> Iterator[str]:
            tokens, stop = self._fitted(messages)
            # All but the last token now, so a cancellation is seen between batches;
            # create_completion then finds them cached and evaluates one token.
            if not self._evaluate(tokens[:-1], cancelled):
                return
            # Leaving this generator early closes llama.cpp's: generation stops there.
            for chunk in self._llm.create_completion(
                tokens,
                max_tokens=self._max_tokens,
                stream=True,
                stop=stop,
                temperature=0.4,
                top_p=0.9,
                repeat_penalty=1.1,
            ):
                yield chunk["choices"][0]["text"]
                CPU.yield_to_urgent()

        async for text in iterate_in_thread(self._executor, generate, cancelled):
            if text:
                yield text

    async def warm(self, messages: list[ChatMessage], model: str) -> None:
        cancelled = threading.Event()

        def evaluate() -> None:
            if cancelled.is_set():
                return
            # The prompt of the next reply up to the user's words, cut as that reply's will be.
            budget = self._context - self._max_tokens - PROMPT_OVERHEAD
            fitted = fit([*messages, ChatMessage("user", _MARK)], budget, self._count)
            prompt, _ = self._prompt(fitted)
            prefix = prompt.split(_MARK)[0]
            tokens = self._llm.tokenize(prefix.encode(), add_bos=False, special=True)
            self._evaluate(tokens, cancelled)

        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, evaluate)
        finally:
            cancelled.set()  # a warm-up cancelled meanwhile stops at its next batch
