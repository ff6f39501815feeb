"""Any OpenAI-compatible chat completions endpoint (Groq, Together, Fireworks, vLLM, Ollama...),
streamed as server-sent events.

Model ids differ per provider, so they are configuration (LLM_MODELS), with Llama 3.x and Mixtral
ids as presets. A request that fails before its first token (connection refused, 429/5xx, a drop)
is retried with backoff; after the first token it is not (the caller already has the start of the
answer), and the failure stops that answer with an UNAVAILABLE Error message (the call goes on). Closing the stream early (barge-in)
closes the HTTP response, so the provider sees the client go and stops generating.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httpx

from server.backends.base import BackendUnavailable, retry_before_first_output
from server.backends.llm.base import LLM, ChatMessage, ToolCall, fit
from server.tools.spec import ToolSpec

DEFAULT_BASE_URL = "https://api.groq.com/openai/v1"
# Groq's ids, then Together's (the same models under their Hugging Face names).
PRESET_MODELS = (
    "llama-3.1-8b-instant",
    "llama-3.3-70b-versatile",
    "meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo",
    "mistralai/Mixtral-8x7B-Instruct-v0.1",
)
USER_AGENT = "voice-agent/0.1 (self-hosted voice agent server; openai-compatible LLM backend)"
RETRYABLE = {408, 409, 429, 500, 502, 503, 504}


@dataclass(frozen=True)
class OpenAIConfig:
    base_url: str
    api_key: str
    models: tuple[str, ...] = PRESET_MODELS
    max_tokens: int = 160
    temperature: float = 0.4
    # The prompt's budget in characters (we cannot count a remote model's tokens): ~6,000
    # tokens of English, within the smallest context window of the usual models (8,192).
    context_chars: int = 24_000
    retries: int = 2  # before the first token only
    backoff: float = 0.2
    timeout: httpx.Timeout = field(
        default_factory=lambda: httpx.Timeout(connect=5.0, read=15.0, write=10.0, pool=5.0)
    )


class OpenAILLM(LLM):
    name: ClassVar[str] = "openai"
    display_name: ClassVar[str] = "OpenAI-compatible API (cloud)"

    def __init__(self, config: OpenAIConfig | None = None) -> None:
        models = tuple(m.strip() for m in os.environ.get("LLM_MODELS", "").split(",") if m.strip())
        self.config = config or OpenAIConfig(
            base_url=os.environ.get("LLM_BASE_URL") or DEFAULT_BASE_URL,
            api_key=os.environ.get("LLM_API_KEY", ""),
            models=models or PRESET_MODELS,
        )
        self._client: httpx.AsyncClient | None = None

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return None if os.environ.get("LLM_API_KEY") else "LLM_API_KEY not set"

    def models(self) -> list[str]:
        return list(self.config.models)

    async def load(self) -> None:
        self._client = httpx.AsyncClient(
            base_url=self.config.base_url.rstrip("/") + "/",
            timeout=self.config.timeout,
            headers={
                "Authorization": f"Bearer {self.config.api_key}",
                "User-Agent": USER_AGENT,
            },
        )

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def stream(
        self, messages: list[ChatMessage], model: str, tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[str | ToolCall]:
        if self._client is None:
            await self.load()
        assert self._client is not None
        messages = fit(messages, self.config.context_chars, len)
        body: dict[str, Any] = {
            "model": model,
            "messages": [_message(m) for m in messages],
            "stream": True,
            "max_tokens": self.config.max_tokens,
            "temperature": self.config.temperature,
        }
        if tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                    },
                }
                for t in tools
            ]
        started = False
        try:
            async for delta in retry_before_first_output(
                lambda _attempt: self._attempt(body),
                self.config.retries,
                lambda attempt: self.config.backoff * 2 ** (attempt - 1),
                _retryable,
            ):
                started = True
                yield delta
        except _HTTPError as err:
            raise BackendUnavailable(
                f"LLM endpoint answered HTTP {err.status}: {err.message}"
            ) from err
        except (httpx.TransportError, _Truncated) as err:
            where = "mid-answer" if started else f"after {self.config.retries + 1} attempts"
            raise BackendUnavailable(
                f"LLM endpoint failed {where}: {type(err).__name__}: {err}"
            ) from err

    async def _attempt(self, body: dict[str, Any]) -> AsyncGenerator[str | ToolCall, None]:
        """One request: its text deltas as they stream, then its tool calls."""
        assert self._client is not None
        async with self._client.stream("POST", "chat/completions", json=body) as response:
            if response.status_code >= 400:
                await response.aread()
                raise _HTTPError(response.status_code, _error_message(response))
            async for delta in _deltas(response):
                yield delta


def _retryable(err: Exception) -> bool:
    """Worth another try before the first token: a refused or dropped connection, 429/5xx."""
    if isinstance(err, _HTTPError):
        return err.status in RETRYABLE
    return isinstance(err, httpx.TransportError | _Truncated)


def _message(message: ChatMessage) -> dict[str, Any]:
    """A chat message in the API's shape (tool calls and tool results included)."""
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        out["content"] = message.content or None
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in message.tool_calls
        ]
    return out


class _HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Truncated(Exception):
    """The stream ended without `data: [DONE]`."""


def _error_message(response: httpx.Response) -> str:
    try:
        error = response.json().get("error", {})
        return str(error.get("message") if isinstance(error, dict) else error)
    except ValueError:
        return response.text[:200]


async def _deltas(response: httpx.Response) -> AsyncIterator[str | ToolCall]:
    """Text deltas of a chat.completion.chunk SSE stream, until `data: [DONE]`; then the tool
    calls, whose id, name and arguments arrive in pieces under an `index`."""
    calls: dict[int, dict[str, str]] = {}
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue  # blank separators, comments (": keep-alive"), event names
        data = line[5:].strip()
        if data == "[DONE]":
            for index in sorted(calls):
                call = calls[index]
                if call["name"]:
                    yield ToolCall(call["id"] or f"call_{index}", call["name"], call["arguments"])
            return
        try:
            chunk: dict[str, Any] = json.loads(data)
        except ValueError as err:
            raise BackendUnavailable(f"LLM endpoint sent malformed JSON: {data[:80]!r}") from err
        if "error" in chunk:
            error = chunk["error"]
            message = error.get("message") if isinstance(error, dict) else error
            raise BackendUnavailable(f"LLM endpoint error mid-stream: {message}")
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if content:
                yield content
            for piece in delta.get("tool_calls") or []:
                call = calls.setdefault(
                    int(piece.get("index", len(calls))), {"id": "", "name": "", "arguments": ""}
                )
                function = piece.get("function") or {}
                call["id"] = call["id"] or str(piece.get("id") or "")
                call["name"] = call["name"] or str(function.get("name") or "")
                call["arguments"] += str(function.get("arguments") or "")
    raise _Truncated("the stream ended before data: [DONE]")
