"""How fast the installed llama.cpp build runs the offline LLM: prompt evaluation and generation.

The Makefile builds llama-cpp-python for the machine's own CPU (without AMX), the Dockerfile for
any x86-64 with AVX2; this measures what that choice costs. Run it once per installed wheel and
compare the medians (both builds on the same machine, back to back):

    .venv/bin/python bench/llama_build.py [--label native] [--write]

--write appends the run to the "llama.cpp build" section of BENCHMARKS.md, keeping the runs
already there (one per build).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks_md import BENCHMARKS, write_section  # bench/ is sys.path[0] when run as a script

from server import assets

HEADING = "## llama.cpp build: prompt evaluation and generation speed (bench/llama_build.py)"
PROMPT_TOKENS = 300  # about a system prompt and two turns of history
GENERATED = 40  # about a spoken answer
THREADS = 2


def measure(rounds: int) -> tuple[float, float, str]:
    """Median ms to evaluate the prompt, median ms per generated token, llama.cpp's CPU line."""
    import llama_cpp
    from llama_cpp import Llama

    llm = Llama(
        str(assets.llm_model_path(progress=False)),
        n_ctx=2048,
        n_threads=THREADS,
        n_threads_batch=THREADS,
        n_batch=256,
        verbose=False,
    )
    text = "You are a helpful voice assistant for a restaurant. Answer briefly and kindly. " * 20
    tokens = llm.tokenize(text.encode())[:PROMPT_TOKENS]
    prompt_ms, token_ms = [], []
    for _ in range(rounds):
        llm.reset()
        start = time.perf_counter()
        llm.eval(tokens)
        prompt_ms.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        for _ in range(GENERATED):
            llm.eval([llm.sample(temp=0.0)])
        token_ms.append((time.perf_counter() - start) * 1000 / GENERATED)
    info = llama_cpp.llama_print_system_info().decode()
    cpu = " ".join(f for f in info.split("|") if "= 1" in f and "CPU" not in f)
    return statistics.median(prompt_ms), statistics.median(token_ms), " ".join(cpu.split())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="installed build", help="the build's name in the table")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--write", action="store_true", help="add the run to BENCHMARKS.md")
    args = parser.parse_args()
    prompt_ms, token_ms, features = measure(args.rounds)
    row = (
        f"| {args.label} | {prompt_ms:.0f} | {token_ms:.1f} | {features} | "
        f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, load {os.getloadavg()[0]:.1f} |"
    )
    print(row)
    if not args.write:
        return
    current = BENCHMARKS.read_text() if BENCHMARKS.exists() else ""
    rows = []
    if HEADING in current:
        section = current.split(HEADING, 1)[1].split("\n## ", 1)[0]
        rows = [
            line for line in section.splitlines() if line.startswith("| ") and " ms" not in line
        ]
        rows = [
            r
            for r in rows
            if not r.startswith("| build ") and not r.startswith(f"| {args.label} |")
        ]
    write_section(
        f"{HEADING}\n\n"
        f"`.venv/bin/python bench/llama_build.py --label <build> --write`, once per installed wheel, "
        f"on the same machine: qwen2.5-coder-0.5b-instruct (Q4_K_M), {THREADS} threads, "
        f"{PROMPT_TOKENS} prompt tokens, {GENERATED} generated, median of {args.rounds} rounds. "
        "A plain native build (what `pip install llama-cpp-python` gives) has no row: on a CPU "
        "with AMX it segfaults in ggml_backend_amx_mul_mat on its first answer "
        "(llama.cpp#20824).\n\n"
        "| build | prompt (ms) | per token (ms) | llama.cpp's CPU features | run |\n"
        "|---|---|---|---|---|\n" + "\n".join([*rows, row]) + "\n"
    )


if __name__ == "__main__":
    main()
