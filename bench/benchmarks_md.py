"""BENCHMARKS.md: each benchmark owns one `## ` section, replaced when it is re-run with --write."""

from __future__ import annotations

import re
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


def write_section(text: str, path: Path = BENCHMARKS) -> None:
    """Replace the section whose heading is `text`'s first line; keep every other one."""
    heading = text.splitlines()[0]
    current = path.read_text() if path.exists() else "# Benchmarks\n\n"
    sections = re.split(r"(?m)^(?=## )", current)
    kept = [s for s in sections if not s.startswith(heading)]
    path.write_text("".join(kept).rstrip() + "\n\n" + text)
