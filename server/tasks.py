"""Owning asyncio tasks: cancelling them without losing a cancellation of the caller."""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel `task` and wait until it has stopped.

    Not `with suppress(CancelledError): await task`: that would also swallow a cancellation of
    the *caller* (a hangup closing the session meanwhile), leaving it running forever.
    """
    task.cancel()
    await asyncio.wait([task])
