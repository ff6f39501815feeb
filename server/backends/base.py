"""What every backend has, whatever its kind: a name, availability, and a load/close lifecycle."""

from __future__ import annotations

from typing import ClassVar


class BackendUnavailable(Exception):
    """A provider failed in a way retrying did not fix (down, refused the key, broke the
    protocol). An LLM or TTS failing mid-answer stops that answer (an UNAVAILABLE Error message;
    the call goes on); the STT failing ends the session with UNAVAILABLE and this message."""


class Backend:
    """Loaded once per server and shared by every session."""

    name: ClassVar[str]

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """Why this backend cannot be used here (a missing API key, say), or None."""
        return None

    async def load(self) -> None:
        """Load weights or open clients; called once before first use."""

    async def aclose(self) -> None:
        """Release what `load` took."""
