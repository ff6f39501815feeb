"""What a tool call adds to a turn, on the offline stack: a typed question answered through a
webhook tool on loopback (answering at once) against the same kind of question with no tool.

    .venv/bin/python bench/tool_round_trip.py [--turns 6] [--write]

Per tool turn, from the text's arrival: the ToolCall (the model wrote the call), the ToolResult
(the webhook's round trip), and the first agent audio after it (the model's continuation and the
first clause's synthesis). Medians over the turns where the model called the tool.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks_md import write_section  # bench/ is sys.path[0] when run as a script

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from voiceagent.client import VoiceAgentClient, linear16  # noqa: E402
from voiceagent.v1 import voice_agent_pb2 as pb  # noqa: E402

from server.main import VoiceAgentServer  # noqa: E402
from server.settings import Settings  # noqa: E402
from tests.fakes.webhook import FakeWebhook  # noqa: E402

QUESTIONS = (
    "Where is my order A17?",
    "What is the status of order 5521?",
    "Can you check order B42?",
)
PLAIN = ("What is the capital of France?", "What is two plus two?", "Tell me a short joke.")


def lookup_tool(url: str) -> pb.Tool:
    schema = {
        "type": "object",
        "properties": {"order_id": {"type": "string"}},
        "required": ["order_id"],
    }
    return pb.Tool(
        name="lookup_order",
        description="Look up the status of the caller's order by its order number.",
        parameters_json=json.dumps(schema),
        webhook=pb.WebhookTool(url=url, timeout_ms=5000),
    )


async def one_turn(
    client: VoiceAgentClient, config: pb.SessionConfig, text: str
) -> dict[str, float]:
    """Times (ms from sending `text`) of the turn's ToolCall, ToolResult and first audio after
    them (or the first audio at all, without a tool)."""
    marks: dict[str, float] = {}
    async with client.converse(config) as call:
        responses = aiter(call)
        await anext(responses)  # SessionStarted
        await asyncio.sleep(1.0)  # the prompt prefix is warmed, as between turns of a call
        start = time.monotonic()
        await call.send_text(text)
        async for response in responses:
            kind = response.WhichOneof("response")
            now = (time.monotonic() - start) * 1000
            if kind in ("tool_call", "tool_result") and kind not in marks:
                marks[kind] = now
            elif (
                kind == "audio"
                and "audio" not in marks
                and ("tool_call" not in marks or "tool_result" in marks)
            ):
                marks["audio"] = now
            elif kind == "event" and response.event.type == pb.AGENT_TURN_DONE:
                break
        await call.hangup()
    return marks


async def run(turns: int) -> dict[str, object]:
    load_before = os.getloadavg()[0]
    hook = await FakeWebhook(body='{"status": "shipped", "eta": "Friday"}').start()
    os.environ["TOOL_WEBHOOK_ALLOW"] = f"http://127.0.0.1:{hook.port}/"
    with tempfile.TemporaryDirectory() as data:
        server = VoiceAgentServer(
            Settings(port=0, http_port=0, host="127.0.0.1", database_url=f"sqlite:///{data}/c.db")
        )
        await server.start()
        await server.wait_ready()
        tool_config = pb.SessionConfig(input_format=linear16(16000), tools=[lookup_tool(hook.url)])
        plain_config = pb.SessionConfig(input_format=linear16(16000))
        with_tool, without, missed = [], [], 0
        async with VoiceAgentClient(f"127.0.0.1:{server.port}") as client:
            for i in range(turns):
                marks = await one_turn(client, tool_config, QUESTIONS[i % len(QUESTIONS)])
                if "tool_result" in marks and "audio" in marks:
                    with_tool.append(marks)
                else:
                    missed += 1
                marks = await one_turn(client, plain_config, PLAIN[i % len(PLAIN)])
                without.append(marks)
        await server.stop(0)
    await hook.stop()

    def median(rows: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in rows) if rows else float("nan")

    return {
        "load": f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after",
        "turns": turns,
        "missed": missed,
        "tool_call": median(with_tool, "tool_call"),
        "webhook": statistics.median(r["tool_result"] - r["tool_call"] for r in with_tool)
        if with_tool
        else float("nan"),
        "continuation": statistics.median(r["audio"] - r["tool_result"] for r in with_tool)
        if with_tool
        else float("nan"),
        "audio_with_tool": median(with_tool, "audio"),
        "audio_without": median(without, "audio"),
    }


def section(r: dict[str, object], command: str) -> str:
    added = float(r["audio_with_tool"]) - float(r["audio_without"])  # type: ignore[arg-type]
    ratio = float(r["audio_with_tool"]) / float(r["audio_without"])  # type: ignore[arg-type]
    return "\n".join(
        [
            "## Tool round trip: what a webhook tool adds to a turn (offline stack)",
            "",
            f"Command: `{command}` (typed turns on a busy shared 2-core machine; llama-cpp "
            "Qwen2.5-Coder-0.5B-Instruct with a grammar while tools are offered, Piper; the "
            "webhook on loopback answers at once). Medians, ms from the text's arrival.",
            "",
            "| | ms |",
            "|---|---|",
            f"| ToolCall out (the model wrote the call) | {r['tool_call']:.0f} |",
            f"| webhook round trip (ToolCall to ToolResult) | {r['webhook']:.0f} |",
            f"| ToolResult to first agent audio (continuation + first clause) | {r['continuation']:.0f} |",
            f"| first agent audio, tool turn | {r['audio_with_tool']:.0f} |",
            f"| first agent audio, plain question, no tools | {r['audio_without']:.0f} |",
            f"| **added by the tool round trip** | **{added:.0f}** ({ratio:.1f}x) |",
            "",
            f"Machine load (1-min average, 2 cores): {r['load']}. "
            f"{r['turns']} tool turns asked, {r['missed']} answered without the tool (left out). "
            'A tool that takes longer than 0.7 s gets the filler ("One moment, let me check.") '
            "spoken meanwhile (0.7 s plus the filler's synthesis, ~0.1 s with Piper on an idle machine), whatever the webhook's time.",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()
    result = asyncio.run(run(args.turns))
    command = f".venv/bin/python bench/tool_round_trip.py --turns {args.turns} --write"
    text = section(result, command)
    print(text)
    if args.write:
        write_section(text)


if __name__ == "__main__":
    main()
