"""Running blocking model inference in worker threads without blocking the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
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


def single_threaded_blas() -> None:
    """Keep numpy's OpenBLAS to one thread in this process.

    Its threads spin for tens of ms after every matrix product (the mel filterbank of each
    Whisper decode and turn-model call), on the cores token generation and the next decode
    need: a 7-token prompt evaluation right after a decode took 97-125 ms instead of 67-78
    (2 cores). Products of this size gain nothing from a second thread.
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")


class CpuPriority:
    """Who gets the cores when the caller is waiting and token generation wants them too.

    Measured on 2 cores: two single-threaded jobs side by side each run ~1.4x slower than alone
    (a final decode 78 -> 109 ms beside the turn model), and llama.cpp's threads, which wait for
    each other after every layer, slow what runs beside them much more (Piper's first piece
    80 -> 161 ms and the token 42 -> 131 ms when Piper started just after a token did). So:

    - `urgent()` (what ends a turn and makes its first audio: the final decode, the turn model,
      speech synthesis): background work starts no step meanwhile, and the urgent work first
      lets a short step already running finish (at most `short_step_wait`) rather than run
      against it.
    - `pressing()` (interim decodes, one thread each): background work goes on with the cores
      they leave free, and starts no step while none is free.
    - Background work (token generation, prompt evaluation) runs each step inside `step()`,
      which waits for its turn, and asks `background_threads()` how many threads to use. The
      wait is bounded (`at_most`): generation for one call never stalls behind a stream of other
      calls' decodes.
    """

    def __init__(self, cores: int | None = None, short_step_wait: float = 0.08) -> None:
        self._cores = cores or len(os.sched_getaffinity(0))
        self._short_step_wait = short_step_wait  # s; a token or a short batch: 30-70 ms here
        self._changed = threading.Condition()
        self._urgent = 0
        self._pressing = 0
        self._short_steps = 0  # short background steps running now

    def urgent(self) -> contextlib.AbstractContextManager[None]:
        return self._running(urgent=True)

    def pressing(self) -> contextlib.AbstractContextManager[None]:
        return self._running(urgent=False)

    @contextlib.contextmanager
    def step(self, short: bool, at_most: float = 0.5) -> Iterator[None]:
        """Around one step of background work. Entering waits (at most `at_most` s) while
        urgent work runs or pressing work takes every core. A `short` step (a token, a few
        prompt tokens) is one urgent work lets finish before it starts."""
        with self._changed:
            self._changed.wait_for(self._may_step, at_most)
            self._short_steps += short
        try:
            yield
        finally:
            with self._changed:
                self._short_steps -= short
                self._changed.notify_all()

    def background_threads(self, threads: int) -> int:
        """How many of its `threads` background work should use now: the cores pressing work
        leaves free (at least one: its step waited for one)."""
        return max(1, min(threads, self._cores - self._pressing))

    def _may_step(self) -> bool:
        return not self._urgent and self._pressing < self._cores

    @contextlib.contextmanager
    def _running(self, urgent: bool) -> Iterator[None]:
        self._change(urgent, 1)
        try:
            yield
        finally:
            self._change(urgent, -1)

    def _change(self, urgent: bool, by: int) -> None:
        with self._changed:
            if urgent:
                self._urgent += by
            else:
                self._pressing += by
            self._changed.notify_all()
            if urgent and by > 0:
                self._changed.wait_for(lambda: not self._short_steps, self._short_step_wait)


CPU = CpuPriority()
