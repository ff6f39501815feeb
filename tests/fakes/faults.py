"""Fault switches every protocol fake has: what a real provider does on a bad day."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Faults:
    """Switches a test flips to make the next connections misbehave like a real provider can."""

    refuse_connections: int = 0  # answer this many connections/requests with 503
    # After this many bytes received (Flux) or messages/tokens sent (TTS, LLM):
    drop_after: int | None = None  # cut the TCP connection, no close frame or final chunk
    error_after: int | None = None  # send the provider's error message instead
    malformed_after: int | None = None  # send a message that is not JSON
    delay: float = 0.0  # seconds before every message the server sends
    once: bool = True  # a drop/error/malformed fault fires on one connection only

    def fire(self, name: str) -> None:
        if self.once:
            setattr(self, name, None)
