"""A server process for the abuse suite: `python -m tests.abuse.server '{"llm": "bench", ...}'`.

Scripted backends (bench/scripted_backends.py, behind the real base classes) keep it fast, or
the real llama-cpp LLM (`"llm": "llama"`) where the case is the model's context window. It
prints `PORTS <grpc> <http>` once serving, and ends when its stdin closes (bench/server_process).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from typing import Any

from bench.scripted_backends import BenchLLM, BenchSTT, BenchTTS
from server.backends.llm.base import LLM
from server.backends.registry import Backends
from server.main import VoiceAgentServer
from server.settings import Settings

LONG_REPLY = " ".join(["This is a long answer, spoken at length."] * 30)


def _llm(options: dict[str, Any]) -> LLM:
    if options.get("llm") == "llama":
        from server.backends.llm.llama_cpp import LlamaCppLLM

        return LlamaCppLLM(context=int(options.get("context", 4096)))
    return BenchLLM(token_delay=float(options.get("token_delay", 0.005)), reply=LONG_REPLY)


async def main(options: dict[str, Any]) -> None:
    llm = _llm(options)
    await llm.load()  # Backends takes given instances as loaded
    backends = Backends(
        stt={BenchSTT.name: BenchSTT()},
        llm={llm.name: llm},
        tts={BenchTTS.name: BenchTTS(delay=0.01)},
    )
    settings = Settings(
        port=0,
        http_port=0,
        host="127.0.0.1",
        stt=BenchSTT.name,
        llm=llm.name,
        tts=BenchTTS.name,
        database_url="sqlite:///:memory:",
        token=options.get("token", ""),
        idle_timeout_seconds=int(options.get("idle_timeout", 60)),
        send_timeout_seconds=int(options.get("send_timeout", 20)),
        max_loop_lag_ms=0,
    )
    server = VoiceAgentServer(settings, backends)
    await server.start()
    await server.wait_ready()
    print(f"PORTS {server.port} {server.http_port}", flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_reader(sys.stdin.fileno(), lambda: os.read(sys.stdin.fileno(), 1024) or stop.set())
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), float(options.get("max_seconds", 600)))
    await server.stop(0)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(main(json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}))
