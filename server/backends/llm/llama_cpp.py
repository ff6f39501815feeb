"""Local LLM: Qwen2.5-Coder-0.5B-Instruct (GGUF, Q4_K_M) through llama-cpp-python.

One model instance serves every session through one inference thread (its single-worker
executor serializes generation and cache warming). llama.cpp reuses the
longest common token prefix of consecutive prompts, so after each turn we evaluate the next
prompt's known prefix (system prompt + history + the user-turn header), and while the user
speaks, the whole prompt of a reply to the words heard so far: the reply then only pays for the
words the interim transcript missed (one token when it heard them all).

Tools go through the model's own chat template (Qwen2.5's `<tools>` section, calls as
`{"name": ..., "arguments": ...}` objects) and the reply is constrained by a llama.cpp grammar:
plain words, or words then calls whose name is one of the tools offered and whose arguments
follow that tool's JSON schema. So a call always parses; whether it is the right call is the
model's (bench/tool_choice.py measures it).

A prompt always fits the context window (`fit`: oldest turns out first, the system prompt kept),
and a reply given up (barge-in, a replacing typed turn) stops within one batch of prompt
evaluation or one token: a long prompt cannot hold the worker for a cancelled turn.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

from server import assets
from server.backends.llm.base import LLM, ChatMessage, ToolCall, fit
from server.inference import CPU, iterate_in_thread
from server.tools.spec import ToolSpec

MODEL_ID = "qwen2.5-coder-0.5b-instruct"  # as the GGUF metadata names it
_MARK = "\x00USER-TURN\x00"
# Tokens of the chat template around each message, and around the whole prompt.
MESSAGE_OVERHEAD = 8
PROMPT_OVERHEAD = 16
EVAL_BATCH = 256  # prompt tokens evaluated between two looks at a cancellation
SHORT_BATCH = 8  # prompt tokens that take about as long as a token (see CpuPriority.step)
TOOL_TEMPERATURE = 0.2  # steadier tool choices (bench/tool_choice.py)
MAX_GRAMMARS = 32  # tool sets whose parsed grammar is kept
# Added to the system prompt when tools are offered: a 0.5B model otherwise calls a tool for
# every question.
TOOL_HINT = (
    "\n\nCall a tool only when the caller's words need it (to end the call, transfer it, or "
    "look something up that a tool is for). Otherwise answer in plain words, without a tool."
)


class LlamaCppLLM(LLM):
    name: ClassVar[str] = "llama-cpp"
    display_name: ClassVar[str] = "llama.cpp (on this server)"

    def __init__(self, threads: int = 2, max_tokens: int = 96, context: int = 4096) -> None:
        self._threads = threads
        self._max_tokens = max_tokens
        self._context = context
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")
        self._llm: Any = None
        self._running_threads = threads
        self._set_threads: Any = None  # llama.cpp's llama_set_n_threads, once loaded
        self._jobs = 0  # generations and warm-ups queued or running on the model's one thread
        self._formatter: Any = None
        self._grammars: dict[str, Any] = {}  # by the tools' JSON: parsing one takes a while

    def models(self) -> list[str]:
        return [MODEL_ID]

    async def load(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._load_blocking)

    def _load_blocking(self) -> None:
        from llama_cpp import Llama, llama_set_n_threads
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        path = assets.llm_model_path(progress=False)
        self._set_threads = llama_set_n_threads
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

    def _prompt(
        self, messages: list[ChatMessage], tools: Sequence[ToolSpec] = ()
    ) -> tuple[str, list[str]]:
        chat = [_template_message(m) for m in messages]
        if tools and chat and chat[0]["role"] == "system":
            chat[0]["content"] += TOOL_HINT
        formatted = self._formatter(messages=chat, tools=[_template_tool(t) for t in tools] or None)
        return formatted.prompt, list(formatted.stop or [])

    def _grammar(self, tools: Sequence[ToolSpec]) -> Any:
        key = json.dumps([[t.name, t.parameters] for t in tools], sort_keys=True)
        if key not in self._grammars:
            from llama_cpp.llama_grammar import LlamaGrammar

            if len(self._grammars) >= MAX_GRAMMARS:
                self._grammars.clear()

            self._grammars[key] = LlamaGrammar.from_string(tool_grammar(tools), verbose=False)
        return self._grammars[key]

    def _count(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode(), add_bos=False, special=False))

    def _fitted(
        self, messages: list[ChatMessage], tools: Sequence[ToolSpec] = ()
    ) -> tuple[list[int], list[str]]:
        """The prompt's tokens (and stop strings) for `messages` cut to the context window with
        room for the reply. In the worker thread: tokenizing a long history takes a while."""
        room = self._context - self._max_tokens
        budget = room - PROMPT_OVERHEAD
        while True:
            fitted = fit(messages, budget, self._count, MESSAGE_OVERHEAD)
            prompt, stop = self._prompt(fitted, tools)
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
            batch = tokens[start : start + EVAL_BATCH]
            with CPU.step(short=len(batch) <= SHORT_BATCH):
                if cancelled.is_set():  # also while the step waited for its turn
                    return False
                self._fit_threads()
                self._llm.eval(batch)
        return True

    def _fit_threads(self) -> None:
        """The threads interim decodes leave free (see CpuPriority)."""
        threads = CPU.background_threads(self._threads)
        if threads != self._running_threads:
            self._set_threads(self._llm.ctx, threads, threads)
            self._running_threads = threads

    async def stream(
        self, messages: list[ChatMessage], model: str, tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[str | ToolCall]:
        cancelled = threading.Event()
        if messages and messages[-1].role == "tool":
            tools = ()  # a 0.5B model calls the same tool again after its result: answer now

        def generate() -> Iterator[str]:
            tokens, stop = self._fitted(messages, tools)
            # All but the last token now, so a cancellation is seen between batches;
            # create_completion then finds them cached and evaluates one token.
            if not self._evaluate(tokens[:-1], cancelled):
                return
            # Leaving this generator early closes llama.cpp's: generation stops there.
            chunks = iter(
                self._llm.create_completion(
                    tokens,
                    max_tokens=self._max_tokens,
                    stream=True,
                    stop=stop,
                    temperature=TOOL_TEMPERATURE if tools else 0.4,
                    top_p=0.9,
                    repeat_penalty=1.1,
                    grammar=self._grammar(tools) if tools else None,
                )
            )
            while True:
                with CPU.step(short=True):  # evaluates one token, then samples the next
                    self._fit_threads()
                    chunk = next(chunks, None)
                if chunk is None:
                    return
                yield chunk["choices"][0]["text"]

        # Words go out as they come; from the first "{" on, the grammar says it is the calls.
        calls = ""
        self._jobs += 1
        try:
            async for text in iterate_in_thread(self._executor, generate, cancelled):
                if tools and (calls or "{" in text):
                    words, brace, rest = text.partition("{") if not calls else ("", "", text)
                    calls += brace + rest
                    text = words
                if text:
                    yield text
        finally:
            self._jobs -= 1
        for call in parse_calls(calls):
            yield ToolCall(
                f"call_{uuid.uuid4().hex[:12]}", call["name"], json.dumps(call["arguments"])
            )

    async def warm(
        self,
        messages: list[ChatMessage],
        model: str,
        tools: Sequence[ToolSpec] = (),
        heard: str = "",
    ) -> None:
        if heard and self._jobs:
            # A warm-up with the caller's words is a bet for one session; while the one model
            # is busy (other calls, their answers) it would only queue and evict their cache.
            return
        cancelled = threading.Event()

        def evaluate() -> None:
            if cancelled.is_set():
                return
            if heard:
                # The whole prompt of a reply to `heard`, as `stream` will evaluate it: when the
                # turn ends on these words, the reply reads one token before it writes (under
                # the final decode's load, the turn's end and the reply's header took 100-200
                # ms). When the caller goes on, the next prompt shares all up to their words.
                tokens, _ = self._fitted([*messages, ChatMessage("user", heard)], tools)
                self._evaluate(tokens[:-1], cancelled)
                return
            # No words yet: the prompt up to the user turn, cut as that reply's will be.
            budget = self._context - self._max_tokens - PROMPT_OVERHEAD
            fitted = fit([*messages, ChatMessage("user", _MARK)], budget, self._count)
            prompt, _ = self._prompt(fitted, tools)
            prefix = prompt.split(_MARK)[0]
            tokens = self._llm.tokenize(prefix.encode(), add_bos=False, special=True)
            self._evaluate(tokens, cancelled)

        self._jobs += 1
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, evaluate)
        finally:
            self._jobs -= 1
            cancelled.set()  # a warm-up cancelled meanwhile stops at its next batch


def _template_message(message: ChatMessage) -> dict[str, Any]:
    """A message as the chat template reads it (OpenAI's shape; arguments as objects)."""
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "type": "function",
                "function": {"name": c.name, "arguments": _object(c.arguments)},
            }
            for c in message.tool_calls
        ]
    return out


def _object(text: str) -> Any:
    try:
        return json.loads(text or "{}")
    except ValueError:
        return {}


def _template_tool(tool: ToolSpec) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.parameters,
        },
    }


def tool_grammar(tools: Sequence[ToolSpec]) -> str:
    """GBNF for a reply: words (no "{"), or optional words then one or more calls, each
    `{"name": "<a tool>", "arguments": <that tool's schema>}`. Qwen's <tool_call> tags are
    special tokens the grammar cannot see, so the calls are told apart by their "{"."""
    from llama_cpp.llama_grammar import SchemaConverter

    converter = SchemaConverter(  # type: ignore[no-untyped-call]
        prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False
    )
    alternatives = []
    for i, tool in enumerate(tools):
        schema = converter.resolve_refs(tool.parameters, f"tool-{tool.name}")
        rule = converter.visit(schema, f"arguments{i}")  # type: ignore[no-untyped-call]
        alternatives.append(f'"{{\\"name\\": \\"{tool.name}\\", \\"arguments\\": " {rule} "}}"')
    return "\n".join(
        [
            converter.format_grammar(),  # type: ignore[no-untyped-call]
            "root ::= say | say? call (ws call)*",
            "say ::= [^{<]+",
            "ws ::= [ \\t\\n]*",
            f"call ::= {' | '.join(alternatives)}",
        ]
    )


def parse_calls(text: str) -> list[dict[str, Any]]:
    """The calls of a grammar-constrained reply: JSON objects one after the other."""
    decoder = json.JSONDecoder()
    calls, at = [], 0
    while (start := text.find("{", at)) >= 0:
        try:
            call, at = decoder.raw_decode(text, start)
        except ValueError:
            break  # cut short by max_tokens: not a call
        if isinstance(call, dict) and isinstance(call.get("name"), str):
            calls.append({"name": call["name"], "arguments": call.get("arguments") or {}})
    return calls
