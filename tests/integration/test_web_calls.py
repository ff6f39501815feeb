"""The page's Calls view in Debian's Chromium: a finished call's row, its transcript with each
turn's latency, its recording playable, and Delete. The server runs scripted backends (the view
is under test, not the models) with RECORD_CALLS on."""

from __future__ import annotations

import asyncio
from pathlib import Path

from playwright.async_api import Browser, expect
from voiceagent.client import VoiceAgentClient, linear16
from voiceagent.v1 import voice_agent_pb2 as pb

from server.backends.registry import Backends
from server.main import VoiceAgentServer
from server.settings import Settings
from tests.conftest import Call
from tests.integration.test_web_page import (  # noqa: F401 (fixtures)
    LaunchBrowser,
    launch_browser,
    open_page,
    silence,
)
from tests.unit.scripted import ScriptedLLM, ScriptedSTT, ScriptedTTS
from tests.unit.scripted import silence as quiet


async def test_the_calls_view_lists_opens_plays_and_deletes(
    launch_browser: LaunchBrowser,  # noqa: F811
    silence: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    stt, llm, tts = ScriptedSTT(), ScriptedLLM(), ScriptedTTS()
    settings = Settings(
        port=0,
        http_port=0,
        host="127.0.0.1",
        stt=stt.name,
        llm=llm.name,
        tts=tts.name,
        database_url=f"sqlite:///{tmp_path}/store.db",
        data_dir=str(tmp_path),
        record_calls=True,
    )
    server = VoiceAgentServer(
        settings, Backends(stt={stt.name: stt}, llm={llm.name: llm}, tts={tts.name: tts})
    )
    await server.start()
    await server.wait_ready()
    try:
        async with VoiceAgentClient(f"127.0.0.1:{server.port}") as client:
            async with client.converse(pb.SessionConfig(input_format=linear16(16000))) as talk:
                call = Call(talk)
                receiver = asyncio.create_task(call.receive())
                await call.wait_for(lambda c: bool(c.of("session_started")))
                await talk.send_text("What time is it")
                await call.wait_for(lambda c: len(c.of("metrics")) == 1)
                await call.send_pcm(quiet(0.3))
                await talk.hangup()
                await asyncio.wait_for(receiver, 10)
        call_id = call.of("session_started")[0].session_id
        for _ in range(100):
            if (tmp_path / "recordings" / f"{call_id}.wav").exists():
                break
            await asyncio.sleep(0.05)

        async with launch_browser(silence) as browser:
            await check_the_calls_view(browser, server, call_id, tmp_path)
    finally:
        await server.stop(0)


async def check_the_calls_view(
    browser: Browser, server: VoiceAgentServer, call_id: str, tmp_path: Path
) -> None:
    page, errors = await open_page(browser, server)
    row = page.locator(f"#calls tr[data-call='{call_id}']")
    await expect(row).to_contain_text("Caller hung up")
    await row.get_by_role("button", name="Open").click()
    await expect(page.locator("#call-transcript")).to_contain_text("What time is it")
    await expect(page.locator("#call-latency tr")).to_have_count(1)
    recording = page.locator("#call-recording")
    await expect(recording).to_be_attached()
    duration = await recording.evaluate(
        "a => new Promise(ok => a.readyState >= 1 ? ok(a.duration) : a.addEventListener('loadedmetadata', () => ok(a.duration)))"
    )
    assert duration > 0.2
    await row.get_by_role("button", name="Delete").click()
    await expect(row).to_have_count(0)
    assert not (tmp_path / "recordings" / f"{call_id}.wav").exists()
    assert not errors, errors
