"""Admission by event-loop lag: how late the loop runs its timers is the first sign of overload.

MAX_SESSIONS is a fixed guess; what a caller feels is whether the loop keeps up with real time.
When timers fire late, every session's audio is already late, so taking one more stream would
make all of them worse: new streams are refused (RESOURCE_EXHAUSTED, which a load balancer or
client takes as "try another instance") until the loop catches up. Running streams are never cut.
"""

from __future__ import annotations

import asyncio
import time

from server.metrics import EVENT_LOOP_LAG

TICK_SECONDS = 0.05
_SMOOTHING = 0.25  # weight of the newest tick: one late tick of a GC pause does not trip it


class LoopLagMonitor:
    def __init__(self, limit_ms: float) -> None:
        self.limit_ms = limit_ms
        self.lag_ms = 0.0  # smoothed lateness of a TICK_SECONDS sleep
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.limit_ms > 0 and self._task is None:
            self._task = asyncio.create_task(self._run(), name="loop-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def overloaded(self) -> bool:
        return self.limit_ms > 0 and self.lag_ms > self.limit_ms

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            await asyncio.sleep(TICK_SECONDS)
            late_ms = max(0.0, (time.monotonic() - started - TICK_SECONDS) * 1000)
            self.lag_ms += _SMOOTHING * (late_ms - self.lag_ms)
            EVENT_LOOP_LAG.set(self.lag_ms)
