"""What every backend has, whatever its kind: a name, availability, and a load/close lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import ClassVar, TypeVar

T = TypeVar("T")


class BackendUnavailable(Exception):
    """A provider failed in a way retrying did not fix (down, refused the key, broke the
    protocol). An LLM or TTS failing mid-answer stops that answer (an UNAVAILABLE Error message;
    the call goes on); the STT failing ends the session with UNAVAILABLE and this message."""


async def retry_before_first_output(
    attempt: Callable[[int], AsyncGenerator[T, None]],
    retries: int,
    backoff: Callable[[int], float],
    retryable: Callable[[Exception], bool],
) -> AsyncIterator[T]:
    """The items of `attempt(0)`; if it fails with a `retryable` error before its first item, the
    items of `attempt(1)` after `backoff(1)` seconds, and so on up to `retries` retries.

    After the first item nothing is retried (the caller already has the start of the answer):
    that error, a non-retryable one and the last attempt's propagate as they are.
    """
    number = 0
    while True:
        started = False
        try:
            async with contextlib.aclosing(attempt(number)) as items:
                async for item in items:
                    started = True
                    yield item
            return
        except Exception as err:
            if started or number >= retries or not retryable(err):
                raise
        number += 1
        await asyncio.sleep(backoff(number))


class Backend:
    """Loaded once per server and shared by every session."""

    name: ClassVar[str]
    # What people see (the web page's pickers); empty: the name.
    display_name: ClassVar[str] = ""

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """Why this backend cannot be used here (a missing API key, say), or None."""
        return None

    async def load(self) -> None:
        """Load weights or open clients; called once before first use."""

    async def aclose(self) -> None:
        """Release what `load` took."""
