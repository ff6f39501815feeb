"""How long an UpdateConfig on one replica takes to reach the others' WatchConfig streams.

Three server processes (scripted backends: the models play no part) share one store: a throwaway
PostgreSQL (LISTEN/NOTIFY) or one SQLite file (polled). The first takes UpdateConfig calls at
random intervals; the time counted for each is from sending the call to the moment the *last*
of the two other replicas' WatchConfig streams shows that version (or a newer one).

    .venv/bin/python bench/config_propagation.py [--updates 200] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from voiceagent.v1 import voice_agent_pb2 as pb  # noqa: E402
from voiceagent.v1 import voice_agent_pb2_grpc as pb_grpc  # noqa: E402

from bench.benchmarks_md import write_section  # noqa: E402
from bench.concurrency import stop_servers  # noqa: E402

REPLICAS = 3


def serve(database_url: str, max_seconds: float) -> None:
    """A VoiceAgentServer with instant scripted backends; prints its port."""
    from bench.scripted_backends import BenchLLM, BenchSTT, BenchTTS
    from bench.server_process import serve_for_parent
    from server.backends.registry import Backends
    from server.main import VoiceAgentServer
    from server.settings import Settings

    async def main() -> None:
        backends = Backends(
            stt={BenchSTT.name: BenchSTT()},
            llm={BenchLLM.name: BenchLLM()},
            tts={BenchTTS.name: BenchTTS()},
        )
        settings = Settings(
            port=0,
            http_port=0,
            host="127.0.0.1",
            stt=BenchSTT.name,
            llm=BenchLLM.name,
            tts=BenchTTS.name,
            database_url=database_url,
        )
        await serve_for_parent(VoiceAgentServer(settings, backends), max_seconds)

    asyncio.run(main())


def start(database_url: str) -> tuple[list[subprocess.Popen[bytes]], list[int]]:
    procs, ports = [], []
    for _ in range(REPLICAS):
        command = [sys.executable, str(Path(__file__).resolve()), "serve", database_url]
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT)
        procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        match = re.match(r"PORT (\d+)", line)
        if not match:
            stop_servers(procs)
            raise SystemExit(f"the server did not start: {line!r}")
        ports.append(int(match.group(1)))
    return procs, ports


async def measure(ports: list[int], updates: int, seed: int) -> list[float]:
    """Milliseconds from each UpdateConfig sent to its version on every other replica."""
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for port in ports]
    apis = [pb_grpc.VoiceAgentStub(c) for c in channels]
    seen: list[dict[int, float]] = [{} for _ in apis[1:]]  # version -> when first seen

    async def watch(api: pb_grpc.VoiceAgentStub, into: dict[int, float]) -> None:
        async for config in api.WatchConfig(pb.WatchConfigRequest()):
            into.setdefault(int(config.etag), time.monotonic())

    watchers = [
        asyncio.create_task(watch(api, into)) for api, into in zip(apis[1:], seen, strict=True)
    ]
    rng = random.Random(seed)
    sent: dict[int, float] = {}
    try:
        await asyncio.sleep(1)  # the watches have their first message
        for i in range(updates):
            started = time.monotonic()
            config = await apis[0].UpdateConfig(
                pb.UpdateConfigRequest(config=pb.Config(system_prompt=f"prompt {i}"))
            )
            sent[int(config.etag)] = started
            await asyncio.sleep(rng.uniform(0.05, 0.25))
        await asyncio.sleep(3)
    finally:
        for task in watchers:
            task.cancel()
        for channel in channels:
            await channel.close()
    latencies = []
    for version, started in sent.items():
        arrivals = []
        for replica in seen:
            later = [t for v, t in replica.items() if v >= version]
            if not later:
                raise SystemExit(f"version {version} never reached a replica")
            arrivals.append(min(later))
        latencies.append((max(arrivals) - started) * 1000)
    return latencies


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(store: str, updates: int) -> dict[str, float]:
    from tests.integration.postgres import throwaway_postgres

    with tempfile.TemporaryDirectory() as tmp:
        if store == "postgresql":
            context = throwaway_postgres()
            url = context.__enter__()
        else:
            context, url = None, f"sqlite:///{tmp}/shared.db"
        try:
            procs, ports = start(url)
            try:
                latencies = asyncio.run(measure(ports, updates, seed=17))
            finally:
                stop_servers(procs)
        finally:
            if context is not None:
                context.__exit__(None, None, None)
    return {
        "n": len(latencies),
        "p50": statistics.median(latencies),
        "p99": pct(latencies, 0.99),
        "max": max(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command")
    s = sub.add_parser("serve")
    s.add_argument("database_url")
    s.add_argument("--max-seconds", type=float, default=600)
    parser.add_argument("--updates", type=int, default=200)
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()
    if args.command == "serve":
        serve(args.database_url, args.max_seconds)
        return
    load = os.getloadavg()[0]
    rows = {store: run(store, args.updates) for store in ("postgresql", "sqlite")}
    load = max(load, os.getloadavg()[0])
    lines = [
        "## Shared config: UpdateConfig on one replica to WatchConfig on every other",
        "",
        f"`.venv/bin/python bench/config_propagation.py --updates {args.updates} --write`: "
        f"{REPLICAS} server processes (scripted backends) on one store; UpdateConfig on the first "
        "at random intervals (50-250 ms); for each, the time from sending it to its version on "
        "the last of the other two replicas' WatchConfig streams (goal: p99 under 1 s). "
        f"{os.cpu_count()} cores, load average up to {load:.1f} during the run.",
        "",
        "| store | updates | median ms | p99 ms | max ms |",
        "|---|---|---|---|---|",
    ]
    for store, row in rows.items():
        how = "LISTEN/NOTIFY" if store == "postgresql" else "polled every 0.2 s"
        lines.append(
            f"| {store} ({how}) | {row['n']:.0f} | {row['p50']:.1f} | {row['p99']:.1f} | {row['max']:.1f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        write_section(text)


if __name__ == "__main__":
    main()
