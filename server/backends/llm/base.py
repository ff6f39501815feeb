"""What every LLM backend gives the pipeline: streamed text for a chat history, and the tool
calls the model makes when it is offered tools."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from server.backends.base import Backend
from server.tools.spec import ToolSpec

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True)
class ToolCall:
    """The model asks for a tool: `arguments` is the JSON text it wrote (validated later)."""

    id: str
    name: str
    arguments: str


@dataclass
class ChatMessage:
    role: Role
    content: str
    # An assistant message that called tools; a tool message answers one of them by id.
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""


class LLM(Backend, ABC):
    """A chat model backend, loaded once and shared by every session."""

    @abstractmethod
    def models(self) -> list[str]:
        """Model ids this backend serves; the first is its default."""

    @abstractmethod
    def stream(
        self, messages: list[ChatMessage], model: str, tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[str | ToolCall]:
        """Text deltas of the reply, then the tools it calls (only ones in `tools`, each whole,
        after the text). Closing the iterator early must stop generation promptly."""

    async def warm(
        self,
        messages: list[ChatMessage],
        model: str,
        tools: Sequence[ToolSpec] = (),
        heard: str = "",
    ) -> None:
        """Prepare for a reply to `messages` + a user turn not yet known (prefix caching), whose
        words so far may be `heard` (an interim transcript): the reply then has only the end of
        the turn left to read."""


def fit(
    messages: list[ChatMessage], budget: int, size: Callable[[str], int], overhead: int = 8
) -> list[ChatMessage]:
    """`messages` (the system prompt first) cut to `budget`, in the units of `size` (tokens, or
    characters where a backend cannot count tokens), `overhead` more a message for the chat
    template: the system prompt stays and the newest turn too, shortened if they must be; the
    oldest turns go first. A prompt past the model's context window would fail the turn."""
    system, turns = messages[0], messages[1:]

    def cost(message: ChatMessage) -> int:
        return size(message.content) + overhead

    if not turns:
        return [_shorten(system, budget, size, overhead)]
    newest = turns[-1]
    # The system prompt keeps at least half the budget when both cannot fit.
    system = _shorten(system, max(budget - cost(newest), budget // 2), size, overhead)
    left = budget - cost(system)
    newest = _shorten(newest, left, size, overhead)
    left -= cost(newest)
    kept = [newest]
    for message in reversed(turns[:-1]):
        left -= cost(message)
        if left < 0:
            break
        kept.append(message)
    return [system, *reversed(kept)]


def _shorten(
    message: ChatMessage, budget: int, size: Callable[[str], int], overhead: int
) -> ChatMessage:
    """`message` with its text cut to fit `budget` (the start kept): a binary search on length."""
    if size(message.content) + overhead <= budget:
        return message
    low, high = 0, len(message.content)  # low fits, high does not
    while high - low > 1:
        middle = (low + high) // 2
        if size(message.content[:middle]) + overhead <= budget:
            low = middle
        else:
            high = middle
    return replace(message, content=message.content[:low])
