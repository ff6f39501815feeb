"""What tracing costs a server: the concurrency benchmark's load, tracing off and on.

    .venv/bin/python bench/tracing_overhead.py [--streams 20] [--seconds 20] [--rounds 3] [--write]

One server process (bench/concurrency.py's, scripted backends) at a time takes `--streams`
real-time streams of talk (speech, the answer, its playback) for `--seconds`: once without
OTEL_EXPORTER_OTLP_ENDPOINT (tracing off: the API's no-op spans), once with it pointing at an
OTLP/gRPC receiver on loopback (tests/fakes/otlp_collector.py: every span really exported),
alternating for `--rounds`. Reported: the server's CPU per stream and the frame-handling delay
p99 (bench/concurrency.py explains it), medians over the rounds, and on/off ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.benchmarks_md import write_section  # noqa: E402
from bench.concurrency import ProcStat, run_step, start_servers, stop_servers  # noqa: E402
from tests.fakes.otlp_collector import FakeOtlpCollector  # noqa: E402


def start_collector() -> FakeOtlpCollector:
    """The receiver on its own event loop thread, for the whole run."""
    ready = threading.Event()
    holder: dict[str, FakeOtlpCollector] = {}

    def serve() -> None:
        async def main() -> None:
            collector = FakeOtlpCollector()
            await collector.start()
            holder["collector"] = collector
            ready.set()
            await asyncio.Event().wait()

        asyncio.run(main())

    threading.Thread(target=serve, daemon=True).start()
    ready.wait(30)
    return holder["collector"]


def one_run(traced: bool, endpoint: str, args: argparse.Namespace) -> dict[str, Any]:
    os.environ.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    if traced:
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
    procs, port = start_servers(1, args.streams + 10, args.seconds + 120)
    try:
        step = run_step(
            ProcStat([procs[0].pid]), f"127.0.0.1:{port}", args.streams, args.seconds, 2, 10
        )
    finally:
        stop_servers(procs)
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()
    collector = start_collector()
    load = os.getloadavg()[0]
    runs: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    for _ in range(args.rounds):
        for traced in (False, True):
            runs[traced].append(one_run(traced, collector.endpoint, args))
            row = runs[traced][-1]
            print(
                f"tracing {'on ' if traced else 'off'}: cpu {row['server_cpu']:.3f}, "
                f"p99 {row['p99_ms']:.1f} ms, answers {row['answers']}/{row['turns']}",
                flush=True,
            )
    spans = len(collector.spans)
    load = max(load, os.getloadavg()[0])

    def median(traced: bool, key: str) -> float:
        return statistics.median(r[key] for r in runs[traced])

    cpu_off, cpu_on = median(False, "server_cpu"), median(True, "server_cpu")
    lag_off, lag_on = median(False, "p99_ms"), median(True, "p99_ms")
    per_stream_off, per_stream_on = cpu_off / args.streams * 100, cpu_on / args.streams * 100
    lines = [
        "## Tracing overhead (concurrency load, scripted backends)",
        "",
        f"`.venv/bin/python bench/tracing_overhead.py --streams {args.streams} --seconds "
        f"{args.seconds:g} --rounds {args.rounds} --write`: one server process, {args.streams} "
        "real-time streams of talk (bench/concurrency.py's load), tracing off (no "
        "OTEL_EXPORTER_OTLP_ENDPOINT) and on (every span exported over OTLP/gRPC to a receiver on "
        f"loopback; {spans} spans received), alternating; medians of {args.rounds} rounds; "
        f"{os.cpu_count()} cores, load average up to {load:.1f}.",
        "",
        "| tracing | server CPU (cores) | CPU per stream (% of a core) | frame delay p99 ms |",
        "|---|---|---|---|",
        f"| off | {cpu_off:.3f} | {per_stream_off:.2f} | {lag_off:.1f} |",
        f"| on | {cpu_on:.3f} | {per_stream_on:.2f} | {lag_on:.1f} |",
        f"| on / off | {cpu_on / cpu_off:.3f} | +{per_stream_on - per_stream_off:.3f} points | "
        f"{lag_on / lag_off:.2f} |",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section(text)


if __name__ == "__main__":
    main()
