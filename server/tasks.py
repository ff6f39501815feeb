"""Owning asyncio tasks: one way to cancel them, one set that keeps, prunes and reports them.

Not `with suppress(CancelledError): await task` anywhere: that would also swallow a
cancellation of the *caller* (a hangup closing the session meanwhile), leaving it running.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

OnFailure = Callable[[asyncio.Task[Any], BaseException], None]


async def cancel_and_wait(*tasks: asyncio.Future[Any] | None) -> None:
    """Cancel each task (None and finished ones are fine) and wait until all have stopped.

    Their own outcomes are not raised here: whoever owns them reports those (`TaskSet`).
    """
    running = [task for task in tasks if task is not None]
    for task in running:
        task.cancel()
    if running:
        await asyncio.wait(running)


async def run_to_completion(work: Coroutine[Any, Any, T]) -> T:
    """`work`'s result, waited for to its end even when the caller is cancelled meanwhile; the
    caller's cancellation is raised afterwards.

    For clean-up that must finish: grpc cancels a Converse handler again while a hung-up
    session winds down, and its record, log line and span were then lost (tests/integration/
    test_tracing_sip.py lost the session span 3 runs in 4 on a fast machine).
    """
    task = asyncio.ensure_future(work)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                break  # `work` itself was cancelled: its result below says so
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return task.result()


class TaskSet:
    """The tasks one owner started: each is kept until it ends, then dropped; a failure (not a
    cancellation) goes to `on_failure`; `cancel_all` stops whatever still runs."""

    def __init__(self, on_failure: OnFailure, name_prefix: str = "") -> None:
        self._on_failure = on_failure
        self._name_prefix = name_prefix
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        task = asyncio.create_task(coro, name=self._name_prefix + name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def __len__(self) -> int:
        return len(self._tasks)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._on_failure(task, exc)

    async def cancel_all(self) -> None:
        """Cancel every task but the caller's own (an owner may close itself from one)."""
        current = asyncio.current_task()
        await cancel_and_wait(*(task for task in self._tasks if task is not current))
