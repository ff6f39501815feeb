"""The agent's actions on a phone call, with SIPp as the caller: end_call is a BYE after the
goodbye, transfer_call a blind transfer (REFER, RFC 3515) and, where the phone refuses REFER, an
apology and a BYE.

The server runs the real local speech models; its LLM is the openai backend against the local
fake endpoint, scripted to call the tool, so the test does not hang on a model's choice (the local
model's tool calling has its own test and benchmark).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from voiceagent.v1 import campaigns_pb2 as cpb
from voiceagent.v1 import campaigns_pb2_grpc as cpb_grpc
from voiceagent.v1 import voice_agent_pb2 as pb

from server.backends.llm.openai import OpenAIConfig, OpenAILLM
from server.backends.registry import Backends
from server.main import VoiceAgentServer
from server.settings import Settings
from tests.fakes.openai_chat import FakeChatCompletions
from tests.integration.conftest import pause, speak
from tests.integration.sip_peers import run_sipp, running_bridge, write_mulaw_wav

RATE = 8000
DESK = "sip:desk@127.0.0.1:5999"


@pytest.fixture
async def scripted_llm(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeChatCompletions]:
    fake = await FakeChatCompletions(api_key="llm").start()
    monkeypatch.setenv("LLM_API_KEY", "llm")
    yield fake
    await fake.stop()


@pytest.fixture
async def agent_server(
    scripted_llm: FakeChatCompletions, tmp_path: Path
) -> AsyncIterator[VoiceAgentServer]:
    llm = OpenAILLM(
        OpenAIConfig(base_url=scripted_llm.base_url, api_key="llm", models=scripted_llm.models)
    )
    server = VoiceAgentServer(
        Settings(
            port=0,
            http_port=0,
            host="127.0.0.1",
            llm="openai",
            database_url=f"sqlite://{tmp_path / 'campaigns.db'}",
        ),
        Backends(llm={"openai": llm}),
    )
    await server.start()
    await server.wait_ready()
    yield server
    await server.stop(0)


async def campaign(server: VoiceAgentServer, builtins: pb.BuiltinTools, model: str) -> str:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        api = cpb_grpc.CampaignsStub(channel)
        created = await api.CreateCampaign(
            cpb.CreateCampaignRequest(
                campaign=cpb.Campaign(name="Front desk", llm_model=model, builtin_tools=builtins)
            )
        )
        return created.id


@pytest.fixture
def question_wav(tmp_path: Path) -> Path:
    pcm = np.concatenate([pause(0.5, RATE), speak("I would like to talk to a person.", RATE)])
    return write_mulaw_wav(tmp_path / "question_ulaw.wav", np.concatenate([pcm, pause(1.0, RATE)]))


async def call_with(
    server: VoiceAgentServer, scenario: str, campaign_id: str, workdir: Path
) -> tuple[str, list[str]]:
    async with running_bridge(server.port, "--route", f"*={campaign_id}") as bridge:
        result = await asyncio.to_thread(run_sipp, scenario, bridge.sip_port, workdir, 1, 10)
        assert result.successful == 1, result.output[-3000:] + "\n".join(bridge.lines[-30:])
        await asyncio.to_thread(bridge.wait_for, "call ended", 10)
        return result.output, list(bridge.lines)


async def transferred_call(
    server: VoiceAgentServer, llm: FakeChatCompletions, scenario: str, workdir: Path
) -> list[str]:
    """A call whose agent says its line and calls transfer_call(DESK); the bridge's log."""
    llm.tool_calls = [("transfer_call", json.dumps({"target": DESK}))]
    llm.reply = "I am transferring you to the front desk now."
    campaign_id = await campaign(server, pb.BuiltinTools(transfer_targets=[DESK]), llm.models[0])
    _, lines = await call_with(server, scenario, campaign_id, workdir)
    return lines


async def test_end_call_is_a_bye_after_the_goodbye(
    agent_server: VoiceAgentServer,
    scripted_llm: FakeChatCompletions,
    tmp_path: Path,
    question_wav: Path,
) -> None:
    scripted_llm.tool_calls = [("end_call", "{}")]
    scripted_llm.reply = "Thank you for calling. Goodbye!"
    campaign_id = await campaign(
        agent_server, pb.BuiltinTools(end_call=True), scripted_llm.models[0]
    )
    _, lines = await call_with(agent_server, "agent_bye", campaign_id, tmp_path)
    assert any("the agent ended the call" in line for line in lines), lines[-20:]
    # The goodbye was asked for with no tools, and spoken before the BYE.
    assert "tools" not in scripted_llm.requests[-1]


async def test_transfer_is_a_refer_then_bye_after_the_notify(
    agent_server: VoiceAgentServer,
    scripted_llm: FakeChatCompletions,
    tmp_path: Path,
    question_wav: Path,
) -> None:
    lines = await transferred_call(agent_server, scripted_llm, "transfer_refer", tmp_path)
    assert any(f"transferred to {DESK}: 200" in line for line in lines), lines[-20:]
    offered = scripted_llm.requests[0]["tools"][0]["function"]
    assert offered["name"] == "transfer_call"
    assert offered["parameters"]["properties"]["target"]["enum"] == [DESK]


async def test_refused_transfer_tells_the_caller_and_hangs_up(
    agent_server: VoiceAgentServer,
    scripted_llm: FakeChatCompletions,
    tmp_path: Path,
    question_wav: Path,
) -> None:
    lines = await transferred_call(agent_server, scripted_llm, "transfer_refused", tmp_path)
    refused = [line for line in lines if "transfer refused" in line]
    assert refused and "405" in refused[0], lines[-20:]
