"""The committed TypeScript client (clients/web/src/gen) is what `buf generate` makes from protos/
today (like the Python stubs' check in test_protos.py)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "clients" / "web"
BIN = WEB / "node_modules" / ".bin"


def test_committed_typescript_client_matches_the_protos(tmp_path: Path) -> None:
    if not (BIN / "buf").exists():
        pytest.fail(f"{BIN} is missing: `make test` installs it (npm ci in clients/web)")
    # The same command as `npm run generate` (`make protos`), into a temporary folder.
    subprocess.run(
        [
            "buf",
            "generate",
            str(ROOT / "protos"),
            "--template",
            "buf.gen.yaml",
            "-o",
            str(tmp_path),
        ],
        cwd=WEB,
        env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"},
        check=True,
        capture_output=True,
        timeout=120,
    )
    fresh = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*.ts")}
    committed = {p.relative_to(WEB): p.read_bytes() for p in (WEB / "src" / "gen").rglob("*.ts")}
    assert fresh, "buf generated nothing"
    stale = sorted(
        str(path)
        for path in fresh.keys() | committed.keys()
        if fresh.get(path) != committed.get(path)
    )
    assert not stale, f"stale, missing or extra generated TypeScript (run `make protos`): {stale}"
