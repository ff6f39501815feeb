"""Local LLM: Qwen2.5-Coder-0.5B-Instruct (GGUF, Q4_K_M) through llama-cpp-python.

One model instance serves every session through one inference thread (its single-worker
executor serializes generation and cache warming). llama.cpp reuses the
longest common token prefix of consecutive prompts, so after each turn we evaluate the next
prompt's known prefix (system prompt + history + the user-turn header) while the user is still
speaking: the reply then only pays for the user's new words (~30 ms to the first token instead
of ~350 ms).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

from server import assets
from server.backends.llm.base import LLM, ChatMessage
from server.inference import CPU, iterate_in_thread

MODEL_ID = "qwen2.5-0.5b-instruct"
_MARK = "\x00USER-TURN\x00"


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

    async def stream(self, messages: list[ChatMessage], model: str) -> AsyncIterator[str]:
        prompt, stop = self._prompt(messages)

        def generate() -> Iterator[str]:
            # Leaving this generator early closes llama.cpp's: generation stops there.
            for chunk in self._llm.create_completion(
                prompt,
                max_tokens=self._max_tokens,
                stream=True,
                stop=stop,
                temperature=0.4,
                top_p=0.9,
                repeat_penalty=1.1,
            ):
                yield chunk["choices"][0]["text"]
                CPU.yield_to_urgent()

        async for text in iterate_in_thread(self._executor, generate):
            if text:
                yield text

    async def warm(self, messages: list[ChatMessage], model: str) -> None:
        prompt, _ = self._prompt([*messages, ChatMessage("user", _MARK)])
        prefix = prompt.split(_MARK)[0]

        def evaluate() -> None:
            tokens = self._llm.tokenize(prefix.encode(), add_bos=False, special=True)
            cached = self._llm.input_ids[: self._llm.n_tokens].tolist()
            common = 0
            for a, b in zip(cached, tokens, strict=False):
                if a != b:
                    break
                common += 1
            if common == len(tokens):
                return
            self._llm.n_tokens = common
            self._llm.eval(tokens[common:])

        await asyncio.get_running_loop().run_in_executor(self._executor, evaluate)
