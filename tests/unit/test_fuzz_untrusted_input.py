"""Runs the atheris fuzzer of the server's parsers of client bytes for a bounded time."""

import resource
import subprocess
import sys
from pathlib import Path

FUZZER = Path(__file__).parents[1] / "fuzz" / "untrusted_input.py"
SECONDS = 10
FUZZ_MEMORY_MB = 1024


def rss_limit_mb() -> int:
    """libFuzzer reads its peak RSS with getrusage, and Linux carries a parent's peak across
    fork and exec: after the integration tests load the models into pytest, a child "starts"
    at well over a gigabyte. The fuzzer's own budget comes on top of what it inherits."""
    inherited_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024  # KiB on Linux
    return inherited_mb + FUZZ_MEMORY_MB


def test_parsers_survive_coverage_guided_fuzzing(tmp_path: Path) -> None:
    corpus, artifacts = tmp_path / "corpus", tmp_path / "artifacts"
    corpus.mkdir()
    artifacts.mkdir()
    subprocess.run([sys.executable, str(FUZZER), "--write-seeds", str(corpus)], check=True)
    run = subprocess.run(
        [
            sys.executable,
            str(FUZZER),
            f"-max_total_time={SECONDS}",
            f"-rss_limit_mb={rss_limit_mb()}",
            "-timeout=5",  # one input taking longer is a hang
            f"-artifact_prefix={artifacts}/",
            str(corpus),
        ],
        capture_output=True,
        text=True,
        timeout=SECONDS + 60,
        cwd=Path(__file__).parents[2],
    )
    crashes = list(artifacts.iterdir())
    assert run.returncode == 0 and not crashes, run.stderr[-3000:]
    assert "Done" in run.stderr  # it ran the inputs, not an early import error
