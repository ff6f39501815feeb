"""Voice-to-voice latency of the offline stack: N spoken questions through a real server at real time.

    .venv/bin/python bench/voice_to_voice.py --questions 20 --write

Each question (spoken by the packaged Piper voice) is streamed in 20 ms frames at real time into its own Converse
session, followed by silence as an open microphone would send. The server's TurnMetrics give the
per-turn figures; the client measures interim-transcript lag as the time from sending the last
audio an interim transcript covers (Transcript.audio_window_end_ms) to receiving it.
Prints p50/p95 per metric and a per-stage breakdown; --write records them in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from benchmarks_md import write_section  # bench/ is sys.path[0] when run as a script

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from voiceagent.client import VoiceAgentClient, linear16  # noqa: E402
from voiceagent.v1 import voice_agent_pb2 as pb  # noqa: E402

from server.main import VoiceAgentServer  # noqa: E402
from server.settings import Settings  # noqa: E402
from tests.integration.conftest import pause, speak  # noqa: E402

QUESTIONS = [
    "What is the capital of France?",
    "How far away is the moon?",
    "Can you recommend a good book to read?",
    "What time does the sun set in winter?",
    "How do I make a cup of tea?",
    "What is the tallest mountain in the world?",
    "Tell me something interesting about dolphins.",
    "Why is the sky blue?",
    "What should I cook for dinner tonight?",
    "How many legs does a spider have?",
]
METRICS = ("stt_final_ms", "llm_first_token_ms", "tts_first_audio_ms", "voice_to_voice_ms")
FRAME = 320  # 20 ms at 16 kHz


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def ask(
    target: str, audio: np.ndarray
) -> tuple[pb.TurnMetrics | None, list[float], str, str]:
    """One session, one question; returns its metrics, interim lags (ms), transcript and reply."""
    sent_at: list[float] = []  # send time of frame k
    lags: list[float] = []
    metrics: pb.TurnMetrics | None = None
    transcript, reply = "", ""
    async with VoiceAgentClient(target) as client:
        async with client.converse(pb.SessionConfig(input_format=linear16(16000))) as call:

            async def send() -> None:
                start = time.monotonic()
                frames = np.concatenate([audio, pause(8.0)])
                for k, offset in enumerate(range(0, len(frames), FRAME)):
                    await asyncio.sleep(max(0.0, start + k * 0.02 - time.monotonic()))
                    sent_at.append(time.monotonic())
                    await call.send_audio(frames[offset : offset + FRAME].tobytes())

            sender = asyncio.create_task(send())
            try:
                async for response in call:
                    kind = response.WhichOneof("response")
                    if kind == "transcript":
                        t = response.transcript
                        if t.event == pb.UPDATE and t.text:
                            last_frame = max(0, t.audio_window_end_ms // 20 - 1)
                            if last_frame < len(sent_at):
                                lags.append((time.monotonic() - sent_at[last_frame]) * 1000)
                        if t.is_final:
                            transcript = t.text
                    elif kind == "agent_text" and response.agent_text.final:
                        reply = response.agent_text.text
                    elif kind == "metrics":
                        metrics = response.metrics
                        break
            finally:
                sender.cancel()
                await call.hangup()
    return metrics, lags, transcript, reply


async def run(n: int, warmup: int) -> dict[str, list[float]]:
    server = VoiceAgentServer(Settings(port=0, http_port=0, host="127.0.0.1"))
    await server.start()
    await server.wait_ready()
    target = f"127.0.0.1:{server.port}"
    clips = [np.concatenate([pause(0.4), speak(q)]) for q in QUESTIONS]
    results: dict[str, list[float]] = {m: [] for m in METRICS} | {"interim_lag_ms": []}
    try:
        for i in range(warmup + n):
            metrics, lags, heard, reply = await ask(target, clips[i % len(clips)])
            tag = "warm-up" if i < warmup else f"{i - warmup + 1}/{n}"
            if metrics is None:
                print(f"[{tag}] no answer (heard {heard!r})", flush=True)
                continue
            print(
                f"[{tag}] v2v {metrics.voice_to_voice_ms:6.0f} ms | stt {metrics.stt_final_ms:4.0f} "
                f"llm {metrics.llm_first_token_ms:4.0f} tts {metrics.tts_first_audio_ms:4.0f} | "
                f"{heard!r} -> {reply[:60]!r}",
                flush=True,
            )
            if i >= warmup:
                for m in METRICS:
                    results[m].append(getattr(metrics, m))
                results["interim_lag_ms"].extend(lags)
    finally:
        await server.stop(0)
    return results


def report(results: dict[str, list[float]], command: str, n: int) -> str:
    rows = []
    for name, values in results.items():
        rows.append(
            f"| {name} | {percentile(values, 50):.0f} | {percentile(values, 95):.0f} | {len(values)} |"
        )
    v2v = results["voice_to_voice_ms"]
    stages = {
        "end of speech -> final transcript (the turn model and the beam-2 final decode)": results[
            "stt_final_ms"
        ],
        "final transcript -> first LLM token": [
            a - b
            for a, b in zip(results["llm_first_token_ms"], results["stt_final_ms"], strict=True)
        ],
        "first LLM token -> first TTS audio (first clause + synthesis)": [
            a - b
            for a, b in zip(
                results["tts_first_audio_ms"], results["llm_first_token_ms"], strict=True
            )
        ],
        "first TTS audio -> first audio sent (held until END_OF_TURN)": [
            a - b for a, b in zip(v2v, results["tts_first_audio_ms"], strict=True)
        ],
    }
    stage_rows = [f"| {k} | {statistics.median(v):.0f} |" for k, v in stages.items() if v]
    cpu = platform.processor() or platform.machine()
    try:
        model = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
        cpu = model.group(1) if model else cpu
    except OSError:
        pass
    return "\n".join(
        [
            "## Voice-to-voice latency, offline stack",
            "",
            f"Command: `{command}`  ",
            f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores ({cpu}), "
            f"{n} questions, one session each, streamed at real time.",
            "All figures in ms from the end of user speech (server clock), except the interim lag",
            "(client clock: last audio frame a transcript covers sent -> transcript received).",
            "",
            "| metric | p50 | p95 | samples |",
            "|---|---|---|---|",
            *rows,
            "",
            "Median per stage:",
            "",
            "| stage | ms |",
            "|---|---|",
            *stage_rows,
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--questions", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--write", action="store_true", help="record the results in BENCHMARKS.md")
    args = parser.parse_args()
    results = asyncio.run(run(args.questions, args.warmup))
    command = ".venv/bin/python bench/voice_to_voice.py " + " ".join(sys.argv[1:])
    text = report(results, command.strip(), args.questions)
    print(text)
    if args.write:
        write_section(text)


if __name__ == "__main__":
    main()
