"""Which sessions run on this instance: admitting a new one (or saying why not) and draining.

The servicer admits and registers each Converse stream here; `main.py` drains through it on
SIGTERM. One object, so the count the limit checks and the set a drain ends are the same.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import grpc

from server.load import LoopLagMonitor
from server.metrics import SESSIONS_ACTIVE
from server.session import Session
from server.status import StatusError


class Admission:
    def __init__(self, max_sessions: int, ready: asyncio.Event, loop_lag: LoopLagMonitor) -> None:
        self.max_sessions = max_sessions
        self.loop_lag = loop_lag
        self.draining = False
        self.sessions: set[Session] = set()
        self.no_sessions = asyncio.Event()  # set while no session runs: what a drain waits for
        self.no_sessions.set()
        self._ready = ready
        self._active = 0  # streams admitted, with or without a session yet

    def admit(self) -> None:
        """Count one more stream (until `release`), or raise StatusError saying why not."""
        if self.draining:
            raise StatusError(
                grpc.StatusCode.UNAVAILABLE,
                "this instance is shutting down; reconnect (a load balancer sends you to another)",
            )
        if not self._ready.is_set():
            raise StatusError(
                grpc.StatusCode.UNAVAILABLE,
                "models are still loading; retry when the health service reports SERVING",
            )
        if self._active >= self.max_sessions:
            raise StatusError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this instance already runs {self._active} sessions (MAX_SESSIONS="
                f"{self.max_sessions}); retry on another instance or later",
            )
        if self.loop_lag.overloaded():
            raise StatusError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this instance is overloaded: its event loop runs {self.loop_lag.lag_ms:.0f} ms "
                f"late (MAX_LOOP_LAG_MS={self.loop_lag.limit_ms:g}); retry on another instance",
            )
        self._active += 1
        SESSIONS_ACTIVE.inc()

    def release(self) -> None:
        """The stream `admit` counted has ended."""
        self._active -= 1
        SESSIONS_ACTIVE.dec()

    @contextlib.contextmanager
    def running(self, session: Session) -> Iterator[None]:
        """`session` runs for the `with` block: a drain meanwhile tells it and waits for it."""
        self.sessions.add(session)
        self.no_sessions.clear()
        try:
            yield
        finally:
            self.sessions.discard(session)
            if not self.sessions:
                self.no_sessions.set()

    async def drain(self, seconds: float) -> None:
        """Take no new streams, let each running session finish its current turn, end the rest
        after `seconds` with UNAVAILABLE (clients reconnect to another instance)."""
        self.draining = True
        for session in list(self.sessions):
            session.drain()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.no_sessions.wait(), seconds)
        for session in list(self.sessions):
            session.fail(
                StatusError(
                    grpc.StatusCode.UNAVAILABLE,
                    f"server shut down before the turn ended (DRAIN_SECONDS={seconds:g}); reconnect",
                )
            )
