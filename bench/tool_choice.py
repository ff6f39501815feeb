"""How often the local model (Qwen2.5-Coder-0.5B-Instruct, llama.cpp) picks the right tool, with
the right arguments, or rightly none: a fixed set of caller lines, each asked alone with the same
tools offered (end_call, transfer_call to two targets, a lookup_order webhook-style tool).

    .venv/bin/python bench/tool_choice.py [--repeats 3] [--write]

Every reply is grammar-constrained, so every call parses; this measures the choice. Not a test
gate: a small model's choices are a property to know, not a guarantee.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from dataclasses import dataclass

from benchmarks_md import write_section  # bench/ is sys.path[0] when run as a script
from voiceagent.v1 import voice_agent_pb2 as pb

from server.backends.llm.base import ChatMessage, ToolCall
from server.backends.llm.llama_cpp import LlamaCppLLM
from server.settings import DEFAULT_SYSTEM_PROMPT
from server.tools.spec import builtin_specs, tool_specs

LOOKUP = pb.Tool(
    name="lookup_order",
    description="Look up the status of the caller's order by its order number.",
    parameters_json=json.dumps(
        {
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"],
        }
    ),
    client=pb.ClientTool(),
)
BUILTINS = pb.BuiltinTools(end_call=True, transfer_targets=["front-desk", "billing"])


@dataclass(frozen=True)
class Case:
    said: str
    tool: str = ""  # "" : no tool
    arguments: tuple[tuple[str, str], ...] = ()


CASES = (
    Case("That's all, goodbye.", "end_call"),
    Case("Thanks, that's everything. Bye!", "end_call"),
    Case("I have no more questions. Have a nice day, goodbye.", "end_call"),
    Case("Okay, bye bye.", "end_call"),
    Case(
        "Can I talk to a real person at the front desk?",
        "transfer_call",
        (("target", "front-desk"),),
    ),
    Case("Please transfer me to billing.", "transfer_call", (("target", "billing"),)),
    Case(
        "I have a question about my invoice, put me through to billing.",
        "transfer_call",
        (("target", "billing"),),
    ),
    Case("Where is my order A17?", "lookup_order", (("order_id", "A17"),)),
    Case("What's the status of order 5521?", "lookup_order", (("order_id", "5521"),)),
    Case("Can you check order number B42 for me?", "lookup_order", (("order_id", "B42"),)),
    Case("What is the capital of France?"),
    Case("Tell me a short joke."),
    Case("How do you spell the word cat?"),
    Case("What is two plus two?"),
)


def right(case: Case, calls: list[ToolCall]) -> tuple[bool, bool]:
    """(the right tool or rightly none, and the right arguments too)."""
    if not case.tool:
        return not calls, not calls
    if len(calls) != 1 or calls[0].name != case.tool:
        return False, False
    arguments = json.loads(calls[0].arguments)
    return True, all(str(arguments.get(k, "")).lower() == v.lower() for k, v in case.arguments)


async def run(repeats: int) -> dict[str, object]:
    llm = LlamaCppLLM()
    await llm.load()
    tools = [*tool_specs([LOOKUP], "tools"), *builtin_specs(BUILTINS)]
    tool_ok, args_ok, seconds, rows = [], [], [], []
    for case in CASES:
        hits = 0
        for _ in range(repeats):
            messages = [
                ChatMessage("system", DEFAULT_SYSTEM_PROMPT),
                ChatMessage("user", case.said),
            ]
            start = time.monotonic()
            out = [x async for x in llm.stream(messages, "m", tools)]
            seconds.append(time.monotonic() - start)
            calls = [x for x in out if isinstance(x, ToolCall)]
            chose, exact = right(case, calls)
            tool_ok.append(chose)
            args_ok.append(exact)
            hits += exact
            got = ", ".join(f"{c.name}({c.arguments})" for c in calls) or "no tool"
        rows.append((case, hits, got))
    await llm.aclose()
    return {
        "tool": sum(tool_ok) / len(tool_ok),
        "exact": sum(args_ok) / len(args_ok),
        "median_s": statistics.median(seconds),
        "rows": rows,
        "asked": len(tool_ok),
        "repeats": repeats,
    }


def section(result: dict[str, object], command: str) -> str:
    rows = result["rows"]
    assert isinstance(rows, list)
    lines = [
        "## Tool choice: the local model picking tools (bench/tool_choice.py)",
        "",
        f"Command: `{command}` (llama-cpp, Qwen2.5-Coder-0.5B-Instruct Q4_K_M, temperature 0.2, "
        "grammar-constrained; tools offered: end_call, transfer_call(front-desk | billing), "
        "lookup_order(order_id); the default system prompt).",
        "",
        f"- right tool (or rightly none): **{result['tool']:.0%}** of {result['asked']} asks",
        f"- right tool and arguments: **{result['exact']:.0%}**",
        f"- median time per reply (the whole reply, a busy shared 2-core machine): "
        f"{result['median_s']:.2f} s",
        "",
        "| caller says | expected | right of " + str(result["repeats"]) + " | last reply's calls |",
        "|---|---|---|---|",
    ]
    for case, hits, got in rows:
        expected = case.tool + (
            "(" + ", ".join(f"{k}={v}" for k, v in case.arguments) + ")" if case.tool else ""
        )
        lines.append(f"| {case.said} | {expected or 'no tool'} | {hits} | {got} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()
    result = asyncio.run(run(args.repeats))
    command = f".venv/bin/python bench/tool_choice.py --repeats {args.repeats} --write"
    text = section(result, command)
    print(text)
    if args.write:
        write_section(text)


if __name__ == "__main__":
    main()
