"""The AI-options and campaign RPCs from a script, through server reflection (no proto files)."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import pytest

from server.main import VoiceAgentServer

BUF = Path(__file__).parent / "buf" / "node_modules" / ".bin" / "buf"


async def buf_curl(
    server: VoiceAgentServer, method: str, data: dict[str, object]
) -> dict[str, Any]:
    """Run `buf curl` as a user would; async, since the server shares this event loop."""
    if not BUF.exists():
        pytest.fail(f"{BUF} is missing: `make test` installs it with npm ci")
    process = await asyncio.create_subprocess_exec(
        str(BUF),
        "curl",
        "--protocol",
        "grpc",
        "--http2-prior-knowledge",
        "--data",
        json.dumps(data),
        f"http://127.0.0.1:{server.port}/{method}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()
    return json.loads(stdout) if stdout.strip() else {}


async def test_ai_options_and_campaigns_with_buf_curl(offline_server: VoiceAgentServer) -> None:
    voices = await buf_curl(offline_server, "voiceagent.v1.VoiceAgent/ListVoices", {})
    piper = [v for v in voices["voices"] if v["backend"] == "piper"]  # type: ignore[index]
    assert piper[0]["id"] == "en_US-joe-medium" and piper[0]["available"]

    models = await buf_curl(offline_server, "voiceagent.v1.VoiceAgent/ListModels", {})
    assert any(
        m["id"] == "qwen2.5-coder-0.5b-instruct" and m["available"] for m in models["models"]
    )  # type: ignore[union-attr, index]

    preview = await buf_curl(
        offline_server,
        "voiceagent.v1.VoiceAgent/PreviewVoice",
        {
            "voice": "en_US-joe-medium",
            "text": "Hello there.",
            "outputFormat": {"encoding": "MULAW", "sampleRateHertz": 8000},
        },
    )
    audio = base64.b64decode(preview["audio"])  # type: ignore[arg-type]
    assert len(audio) > 4000  # over half a second of 8 kHz mu-law

    original = offline_server.defaults.value
    config = await buf_curl(
        offline_server,
        "voiceagent.v1.VoiceAgent/UpdateConfig",
        {"config": {"systemPrompt": "You are terse."}, "updateMask": "systemPrompt"},
    )
    assert config["systemPrompt"] == "You are terse."
    # Leave the shared server as the other tests expect.
    await offline_server.defaults.update({"system_prompt": original.system_prompt})

    created = await buf_curl(
        offline_server,
        "voiceagent.v1.Campaigns/CreateCampaign",
        {
            "campaign": {
                "name": "Front desk",
                "persona": "You are Joe, a hotel receptionist.",
                "greeting": "Welcome!",
                "ttsVoice": "en_US-joe-medium",
            }
        },
    )
    assert created["etag"] == "1"
    listed = await buf_curl(
        offline_server, "voiceagent.v1.Campaigns/ListCampaigns", {"pageSize": 10}
    )
    assert any(c["id"] == created["id"] for c in listed["campaigns"])  # type: ignore[union-attr, index]
    await buf_curl(offline_server, "voiceagent.v1.Campaigns/DeleteCampaign", {"id": created["id"]})
