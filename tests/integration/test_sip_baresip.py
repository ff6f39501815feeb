"""A real softphone (baresip, headless) calls the bridge; the bridge talks to the real offline server.

baresip plays a spoken question as its microphone (aufile) and records what it hears (sndfile):
the caller must hear the campaign's greeting, then an answer, and the server must have heard
the question.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import grpc
import numpy as np
from voiceagent.v1 import campaigns_pb2, campaigns_pb2_grpc

from server.main import VoiceAgentServer
from tests.integration.conftest import pause, speak, write_wav
from tests.integration.sip_peers import (
    free_udp_port,
    read_wav,
    require,
    running_bridge,
    speech_like,
    speech_segments,
)

RATE = 8000
QUESTION_AT = 4.0  # seconds into the call: after the greeting, so it is not a barge-in


def baresip_config(folder: Path, sip_port: int, question: Path) -> None:
    modules = Path("/usr/lib/baresip/modules")
    (folder / "config").write_text(
        "\n".join(
            [
                "poll_method epoll",
                f"sip_listen 127.0.0.1:{sip_port}",
                f"audio_source aufile,{question}",
                "audio_alert aufile,/dev/null",
                f"snd_path {folder}/",
                f"module_path {modules}",
                "module g711.so",
                "module aufile.so",
                "module sndfile.so",
                "module_app account.so",
                "module_app menu.so",
                "",
            ]
        )
    )
    (folder / "accounts").write_text(
        f"<sip:caller@127.0.0.1:{sip_port}>;regint=0;audio_codecs=PCMU\n"
    )


def what_the_caller_heard(folder: Path) -> tuple[np.ndarray, int]:
    """sndfile's recording of the decoded audio: what baresip played to its user."""
    dumps = sorted(folder.glob("dump-*-dec.wav"))
    assert dumps, f"baresip wrote no recording: {sorted(p.name for p in folder.iterdir())}"
    return read_wav(dumps[0])


async def create_campaign(server_port: int, greeting: str) -> str:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server_port}") as channel:
        stub = campaigns_pb2_grpc.CampaignsStub(channel)  # type: ignore[no-untyped-call]
        campaign = await stub.CreateCampaign(
            campaigns_pb2.CreateCampaignRequest(
                campaign=campaigns_pb2.Campaign(name="sip test", greeting=greeting)
            )
        )
        return str(campaign.id)


async def test_baresip_hears_greeting_and_answer(
    offline_server: VoiceAgentServer, tmp_path: Path
) -> None:
    baresip = require("baresip", "baresip")
    campaign_id = await create_campaign(offline_server.port, "Hello, this is the test agent.")
    question = speak("What is the capital of France?", RATE)
    source = np.concatenate([pause(QUESTION_AT, RATE), question, pause(9.0, RATE)])
    question_end = QUESTION_AT + len(question) / RATE
    write_wav(tmp_path / "question.wav", source, RATE)
    sip_port = free_udp_port(2)
    baresip_config(tmp_path, sip_port, tmp_path / "question.wav")

    async with running_bridge(offline_server.port, "--route", f"agent={campaign_id}") as bridge:
        call = await asyncio.to_thread(
            subprocess.run,
            [
                baresip,
                "-f",
                str(tmp_path),
                "-e",
                f"/dial sip:agent@127.0.0.1:{bridge.sip_port}",
                "-t",
                "25",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "Call established" in call.stdout, call.stdout[-3000:]
        heard = await asyncio.to_thread(bridge.wait_for, "heard:", 10)
        assert "capital" in heard[0].lower(), heard
        await asyncio.to_thread(bridge.wait_for, "call ended", 10)

    pcm, rate = await asyncio.to_thread(what_the_caller_heard, tmp_path)
    segments = speech_segments(pcm, rate)
    greeting = [s for s in segments if s[0] < QUESTION_AT]
    answer = [s for s in segments if s[0] > question_end]
    assert greeting, f"no greeting heard before the question; speech at {segments}"
    assert answer, f"no answer heard after the question; speech at {segments}"
    for start, end in (greeting[0], answer[0]):
        assert end - start > 0.5, segments
        assert speech_like(pcm[int(start * rate) : int(end * rate)], rate), (start, end)
