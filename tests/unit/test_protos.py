import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "clients" / "python"))

import gen_stubs  # noqa: E402


def test_committed_stubs_match_the_protos(tmp_path: Path) -> None:
    generated = gen_stubs.generate(tmp_path)
    assert generated, "no stubs generated"
    stale = []
    for path in generated:
        committed = ROOT / "clients" / "python" / path.relative_to(tmp_path)
        if not committed.is_file() or committed.read_bytes() != path.read_bytes():
            stale.append(str(committed.relative_to(ROOT)))
    assert not stale, f"stale or missing stubs (run `make protos`): {stale}"
