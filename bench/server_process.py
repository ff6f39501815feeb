"""A benchmark's server subprocess: serve until the parent goes away, is signalled or times out.

The parent reads "PORT <n>" from our stdout, and closes our stdin when it is done (or dies): an
EOF on stdin ends the server, so no benchmark leaves servers behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from typing import Any


async def serve_for_parent(server: Any, max_seconds: float) -> None:
    """Start `server` (a VoiceAgentServer), print its port, stop it when released."""
    await server.start()
    await server.wait_ready()
    print(f"PORT {server.port}", flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def on_stdin() -> None:
        if not os.read(sys.stdin.fileno(), 1024):  # the parent is gone
            loop.remove_reader(sys.stdin.fileno())
            stop.set()

    loop.add_reader(sys.stdin.fileno(), on_stdin)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), max_seconds)
    await server.stop(0)
