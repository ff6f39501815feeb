"""What every LLM backend gives the pipeline: streamed text for a chat history."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

from server.backends.base import Backend

Role = Literal["system", "user", "assistant"]


@dataclass
class ChatMessage:
    role: Role
    content: str


class LLM(Backend, ABC):
    """A chat model backend, loaded once and shared by every session."""

    @abstractmethod
    def models(self) -> list[str]:
        """Model ids this backend serves; the first is its default."""

    @abstractmethod
    def stream(self, messages: list[ChatMessage], model: str) -> AsyncIterator[str]:
        """Text deltas of the reply. Closing the iterator early must stop generation promptly."""

    async def warm(self, messages: list[ChatMessage], model: str) -> None:
        """Prepare for a reply to `messages` + a user turn not yet known (prefix caching)."""
