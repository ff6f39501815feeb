"""Running blocking model inference in worker threads without blocking the event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import Executor
from typing import TypeVar

T = TypeVar("T")


async def iterate_in_thread(
    executor: Executor, produce: Callable[[], Iterable[T]]
) -> AsyncIterator[T]:
    """Yield the items of a blocking iterable as the worker thread produces them.

    Closing the async iterator (a barge-in cancels the consumer) stops the thread at its next
    item; we never wait for it, so cancellation costs the loop nothing.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[T] | BaseException | None] = asyncio.Queue()
    cancelled = threading.Event()

    def run() -> None:
        try:
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
            future.add_done_callback(lambda f: f.exception())
