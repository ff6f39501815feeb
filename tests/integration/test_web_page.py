"""The web page in a real browser against the real offline server: Debian's Chromium driven by
Playwright, its microphone a wav of a spoken question (Chromium's fake capture device)."""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from server.audio import resample
from server.main import VoiceAgentServer
from tests.integration.conftest import pause, speak, write_wav

ROOT = Path(__file__).resolve().parents[2]
WEB_DIST = ROOT / "clients" / "web" / "dist"
SLOW = 120_000  # ms: whisper, the LLM and Piper share two busy cores


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Browser]:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is missing: `make test` installs it (Makefile SYSTEM_DEPS)")
    if not (WEB_DIST / "index.html").is_file():
        pytest.fail(f"{WEB_DIST} is not built: `make test` builds it (`make web`)")
    # One question, then silence long enough for the answer; %noloop: play the file once.
    rate = 48000
    question = np.concatenate(
        [
            pause(1.0, rate),
            speak("What is the weather in Paris today?", rate, varied=False),
            pause(30.0, rate),
        ]
    )
    microphone = write_wav(tmp_path / "question.wav", question, rate)
    args = [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={microphone}%noloop",
        "--autoplay-policy=no-user-gesture-required",
        # This machine has no network: keep Chromium from trying to reach Google's hosts.
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ]
    if os.geteuid() == 0:
        args.append("--no-sandbox")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium, args=args)
        try:
            yield launched
        finally:
            await launched.close()


async def open_page(browser: Browser, server: VoiceAgentServer) -> tuple[Page, list[str]]:
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("dialog", lambda dialog: dialog.accept())
    # 127.0.0.1, not about:blank or a file: getUserMedia needs a secure origin.
    await page.goto(f"http://127.0.0.1:{server.http_port}/")
    await expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=30_000)
    return page, errors


async def test_talk_to_the_agent_from_the_browser(
    offline_server: VoiceAgentServer, browser: Browser
) -> None:
    page, errors = await open_page(browser, offline_server)

    # AI options: the local voice and model are listed; cloud ones are listed with their reason.
    voice_option = page.locator('#voice option[value="en_US-joe-medium"]')
    await expect(voice_option).to_have_count(1)
    assert await voice_option.is_enabled()
    unavailable = page.locator("#voice option:disabled")
    if await unavailable.count():
        await expect(unavailable.first).to_contain_text("unavailable:")
    await expect(page.locator('#model option[value="qwen2.5-coder-0.5b-instruct"]')).to_have_count(
        1
    )

    # A campaign, created through the form (the shared server's store outlives test runs).
    name = f"Geography tutor {uuid.uuid4().hex[:8]}"
    await page.fill("#campaign-name", name)
    await page.fill("#campaign-persona", "You are a geography tutor. Answer in one short sentence.")
    await page.select_option("#campaign-voice", "en_US-joe-medium")
    await page.click("#campaign-save")
    row = page.locator("#campaigns tr", has_text=name)
    await expect(row).to_have_count(1)
    await page.select_option("#campaign", label=name)

    # The call: the fake microphone asks its question.
    await page.click("#start")
    await expect(page.locator("#status")).to_contain_text("In a call", timeout=30_000)
    user = page.locator("#transcript li.user").first
    await expect(user).to_contain_text(re.compile("weather", re.I), timeout=SLOW)
    await expect(user).to_contain_text(re.compile("Paris", re.I))
    agent = page.locator("#transcript li.agent .text").first
    await expect(agent).not_to_have_text("", timeout=SLOW)
    await expect(page.locator("#received")).not_to_have_text("0", timeout=SLOW)
    await expect(page.locator("#metrics tr")).to_have_count(1, timeout=SLOW)
    await expect(page.locator("#chart rect")).to_have_count(1)

    # Switch the voice mid-call: the server applies it from the next turn.
    await page.select_option("#voice", "en_US-joe-medium")
    await page.click("#apply")
    await expect(page.locator("#events")).to_contain_text("CONFIG_APPLIED", timeout=30_000)
    await expect(page.locator("#events")).to_contain_text("tts_voice=en_US-joe-medium")

    await page.click("#hangup")
    await expect(page.locator("#events")).to_contain_text("CLOSED 1000", timeout=30_000)
    assert float(await page.locator("#received").text_content() or 0) > 500  # ms of agent audio
    assert errors == []

    # The campaign can be edited and deleted from the page too.
    await row.get_by_role("button", name=f"Edit campaign {name}").click()
    renamed = name.replace("tutor", "teacher")
    await page.fill("#campaign-name", renamed)
    await page.click("#campaign-save")
    await expect(page.locator("#campaigns tr", has_text=renamed)).to_have_count(1)
    await expect(page.locator("#campaigns tr", has_text=name)).to_have_count(0)
    await page.get_by_role("button", name=f"Delete campaign {renamed}").click()
    await expect(page.locator("#campaigns tr", has_text=renamed)).to_have_count(0)
    assert errors == []


CAPTURE = """async ([samples, rate]) => {
  // The page's capture worklet, fed a known signal in an offline (faster than real time) context.
  const context = new OfflineAudioContext(1, samples.length + rate / 2, rate);
  await context.audioWorklet.addModule(new URL("capture-worklet.js", location.href));
  const buffer = context.createBuffer(1, samples.length, rate);
  buffer.getChannelData(0).set(Float32Array.from(samples, (v) => v / 32768));
  const source = context.createBufferSource();
  source.buffer = buffer;
  const capture = new AudioWorkletNode(context, "capture");
  const frames = [];
  capture.port.onmessage = (event) => frames.push(event.data.length);
  const samplesOut = [];
  capture.port.addEventListener("message", (event) => {
    const view = new DataView(event.data.buffer);
    for (let i = 0; i < event.data.length; i += 2) samplesOut.push(view.getInt16(i, true));
  });
  source.connect(capture);
  capture.connect(context.destination);
  source.start();
  await context.startRendering();
  await new Promise((resolve) => setTimeout(resolve, 300));  // the last posted frames
  return [frames, samplesOut];
}"""


async def test_capture_worklet_makes_16_khz_linear16_frames(
    offline_server: VoiceAgentServer, browser: Browser
) -> None:
    page, errors = await open_page(browser, offline_server)
    question = speak("What is the weather in Paris today?", 16000, varied=False)
    for rate in (16000, 48000):  # the page's 16 kHz context, and a browser's own rate
        source = question if rate == 16000 else resample(question, 16000, rate)
        frames, samples = await page.evaluate(CAPTURE, [source.tolist(), rate])
        assert set(frames) == {640}  # 20 ms of 16-bit samples at 16 kHz
        captured = np.array(samples[: len(question)], dtype=np.float64)
        if rate == 16000:  # passed through: exact but for float rounding
            assert np.abs(captured - question).max() <= 1
        else:  # resampled in the worklet
            ref = question.astype(np.float64)
            similarity = np.dot(captured, ref) / np.sqrt(
                np.dot(captured, captured) * np.dot(ref, ref)
            )
            assert similarity > 0.98, similarity
    assert errors == []
