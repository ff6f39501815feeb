"""Running blocking model inference in worker threads without blocking the event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import Executor
from typing import TypeVar

T = TypeVar("T")


async def iterate_in_thread(
    executor: Executor,
    produce: Callable[[], Iterable[T]],
    cancelled: threading.Event | None = None,
) -> AsyncIterator[T]:
    """Yield the items of a blocking iterable as the worker thread produces them.

    Closing the async iterator (a barge-in cancels the consumer) stops the thread at its next
    item, or before it starts if it is still queued behind other work; we never wait for it, so
    cancellation costs the loop nothing. `cancelled`, when given, is the event set then, for a
    producer that can also stop between steps of its own (a long prompt's evaluation).
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[T] | BaseException | None] = asyncio.Queue()
    cancelled = cancelled or threading.Event()

    def run() -> None:
        try:
            if cancelled.is_set():  # given up while queued for the worker
                loop.call_soon_threadsafe(queue.put_nowait, None)
                return
            for item in produce():
                if cancelled.is_set():
                    break
                loop.call_soon_threadsafe(queue.put_nowait, (item,))
            loop.call_soon_threadsafe(queue.put_nowait, None)
        except BaseException as exc:  # handed to the consumer
            if not loop.is_closed():
                loop.call_soon_threadsafe(queue.put_nowait, exc)

    future = loop.run_in_executor(executor, run)
    try:
        while (item := await queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item[0]
    finally:
        cancelled.set()
        if not future.done():
            # retrieve the outcome so an error is not reported as never retrieved
            future.add_done_callback(lambda f: f.cancelled() or f.exception())


class CpuPriority:
    """Who gets the two cores when the caller is waiting and token generation wants them too.

    Two kinds of work come before token generation:
    - `urgent()` (speech synthesis): generation pauses between tokens. The LLM writes ~10x faster
      than speech plays, so it loses nothing the caller hears, while the first audio of a reply
      stops competing with it for the cores.
    - `pressing()` (every Whisper decode, the turn model: one thread each): generation goes on
      with fewer threads (`background_threads`). Pausing it would put the whole decode in front
      of a speculative answer's first tokens; keeping both its threads beside a decode on two
      cores slows both (llama.cpp's threads wait for each other after every layer).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._urgent = 0
        self._pressing = 0
        self._idle = threading.Event()
        self._idle.set()

    def urgent(self) -> _Priority:
        return _Priority(self, urgent=True)

    def pressing(self) -> _Priority:
        return _Priority(self, urgent=False)

    def yield_to_urgent(self, at_most: float = 0.5) -> None:
        """Called by background work between steps; returns at once when nothing is urgent."""
        self._idle.wait(at_most)

    def background_threads(self, threads: int) -> int:
        """How many of its `threads` background work should use now."""
        return max(1, threads - 1) if self._pressing else threads

    def _change(self, urgent: bool, by: int) -> None:
        with self._lock:
            if urgent:
                self._urgent += by
            else:
                self._pressing += by
            if self._urgent:
                self._idle.clear()
            else:
                self._idle.set()


class _Priority:
    def __init__(self, priority: CpuPriority, urgent: bool) -> None:
        self._priority = priority
        self._urgent = urgent

    def __enter__(self) -> None:
        self._priority._change(self._urgent, 1)

    def __exit__(self, *exc: object) -> None:
        self._priority._change(self._urgent, -1)


CPU = CpuPriority()
