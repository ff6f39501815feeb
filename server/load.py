"""Admission by event-loop lag: how late the loop runs its timers is the first sign of overload.

MAX_SESSIONS is a fixed guess; what a caller feels is whether the loop keeps up with real time.
When timers fire late, every session's audio is already late, so taking one more stream would
make all of them worse: new streams are refused (RESOURCE_EXHAUSTED, which a load balancer or
client takes as "try another instance") until the loop catches up. Running streams are never cut.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import deque

from server.metrics import EVENT_LOOP_LAG
from server.tasks import cancel_and_wait

TICK_SECONDS = 0.05
# The median of the last 20 ticks (about a second): a single late tick (a GC pause, a loop that
# was not running at all) does not trip it; a loop that is late tick after tick does.
WINDOW_TICKS = 20


class LoopLagMonitor:
    def __init__(self, limit_ms: float) -> None:
        self.limit_ms = limit_ms
        self.lag_ms = 0.0  # median lateness of a TICK_SECONDS sleep over the last ticks
        self._recent: deque[float] = deque(maxlen=WINDOW_TICKS)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.limit_ms > 0 and self._task is None:
            self._task = asyncio.create_task(self._run(), name="loop-lag")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    def overloaded(self) -> bool:
        return self.limit_ms > 0 and self.lag_ms > self.limit_ms

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            await asyncio.sleep(TICK_SECONDS)
            late_ms = max(0.0, (time.monotonic() - started - TICK_SECONDS) * 1000)
            self._recent.append(late_ms)
            self.lag_ms = statistics.median(self._recent)
            EVENT_LOOP_LAG.set(self.lag_ms)
