"""The web page in a real browser against the real offline server: Debian's Chromium driven by
Playwright, its microphone a wav (Chromium's fake capture device).

What a first-time user sees is asserted through what is on screen: the call's state, its own
section with the conversation and latency, messages in plain words where they look. Waits are
for states, never sleeps: whisper, the LLM and Piper share two busy cores with Chromium.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from server.audio import resample
from server.main import VoiceAgentServer
from server.settings import Settings
from tests.integration.conftest import pause, speak, write_wav

ROOT = Path(__file__).resolve().parents[2]
WEB_DIR = ROOT / "clients" / "web"
WEB_DIST = WEB_DIR / "dist"
AXE = WEB_DIR / "node_modules" / "axe-core" / "axe.min.js"
SLOW = 120_000  # ms: whisper, the LLM and Piper share two busy cores
RATE = 48000
GREETING = (
    "Thanks for calling the city library. We are open from nine in the morning until eight in "
    "the evening on weekdays, and from ten until four on Saturdays. You can renew books online, "
    "reserve a study room, or ask me about events for children and adults this month."
)
# Words of the server's and the stream's vocabulary that a person should never have to read
# outside the developer log: enum and status names, environment variables, close codes.
JARGON = re.compile(r"\b[A-Z][A-Z0-9]*_[A-Z0-9_]+\b|\bCLOSED\b|\bclose code\b|\bgRPC\b")

# Test-side instrumentation, run before the page's own script: every call state the page shows
# (a MutationObserver, so short states are not missed) and the loudest microphone level seen.
RECORDER = """
window.__states = [];
window.__loudest = 0;
document.addEventListener("DOMContentLoaded", () => {
  const state = document.getElementById("call-state");
  new MutationObserver(() => {
    const now = state.dataset.state;
    if (window.__states.at(-1) !== now) window.__states.push(now);
  }).observe(state, { attributes: true, attributeFilter: ["data-state"] });
  const meter = document.getElementById("mic-level");
  setInterval(() => { window.__loudest = Math.max(window.__loudest, meter.value); }, 30);
});
"""

# Boxes that reach past the viewport's right edge. A box counts as far as it is visible: an
# ancestor that hides its overflow (the visually hidden table headers of the phone layout) cuts
# it; one that scrolls does not (horizontal scrolling inside the page is overflow too).
OVERFLOW = """() => {
  const width = document.documentElement.clientWidth;
  const outside = [];
  for (const node of document.querySelectorAll("body *")) {
    const box = node.getBoundingClientRect();
    if (box.width === 0) continue;
    let right = box.right;
    for (let up = node.parentElement; up; up = up.parentElement) {
      const overflow = getComputedStyle(up).overflowX;
      if (overflow === "hidden" || overflow === "clip") right = Math.min(right, up.getBoundingClientRect().right);
    }
    if (right > width + 0.5) outside.push(`${node.tagName}#${node.id}.${node.className}`);
  }
  return { scrollWidth: document.documentElement.scrollWidth, width, outside };
}"""

LaunchBrowser = Callable[[Path], AbstractAsyncContextManager[Browser]]
StartServer = Callable[..., Awaitable[VoiceAgentServer]]


@pytest.fixture
def launch_browser() -> LaunchBrowser:
    """Chromium with `microphone` (a wav, played once) as its microphone."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is missing: `make test` installs it (Makefile SYSTEM_DEPS)")
    if not (WEB_DIST / "index.html").is_file():
        pytest.fail(f"{WEB_DIST} is not built: `make test` builds it (`make web`)")

    @asynccontextmanager
    async def launch(microphone: Path) -> AsyncIterator[Browser]:
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
            browser = await playwright.chromium.launch(executable_path=chromium, args=args)
            try:
                yield browser
            finally:
                await browser.close()

    return launch


@pytest.fixture
def silence(tmp_path: Path) -> Path:
    """A microphone that hears nothing (for calls with typed turns)."""
    return write_wav(tmp_path / "silence.wav", pause(60.0, RATE), RATE)


@pytest.fixture
def question(tmp_path: Path) -> Path:
    """One spoken question, then silence long enough for the answer."""
    audio = [pause(1.0, RATE), speak("What is the weather in Paris today?", RATE, varied=False)]
    return write_wav(tmp_path / "question.wav", np.concatenate([*audio, pause(30.0, RATE)]), RATE)


@pytest.fixture
async def start_server(tmp_path: Path) -> AsyncIterator[StartServer]:
    """A server of the test's own (with the real offline models), for tests that need another
    setting (a token) or stop it; stopped at the end if the test did not."""
    servers: list[VoiceAgentServer] = []

    async def start(**settings: Any) -> VoiceAgentServer:
        store = tmp_path / f"campaigns-{len(servers)}.db"
        server = VoiceAgentServer(
            Settings(
                port=0, http_port=0, host="127.0.0.1", database_url=f"sqlite://{store}", **settings
            )
        )
        servers.append(server)
        await server.start()
        await server.wait_ready()
        return server

    yield start
    for server in servers:
        await server.stop(0)


async def open_page(
    browser: Browser, server: VoiceAgentServer, width: int = 1280, height: int = 900
) -> tuple[Page, list[str]]:
    page = await browser.new_page(viewport={"width": width, "height": height})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("dialog", lambda dialog: dialog.accept())
    await page.add_init_script(RECORDER)
    # 127.0.0.1, not about:blank or a file: getUserMedia needs a secure origin.
    await page.goto(f"http://127.0.0.1:{server.http_port}/")
    await expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=30_000)
    return page, errors


async def states(page: Page) -> list[str]:
    """The call states shown so far (the idle page's own state left out)."""
    return [s for s in await page.evaluate("window.__states") if s != "idle"]


async def visible_text(page: Page) -> str:
    """What a person reads: the page without the folded developer log."""
    return str(
        await page.evaluate("""() => {
      const copy = document.body.cloneNode(true);
      copy.querySelector("#developer").remove();
      return copy.innerText;
    }""")
    )


async def assert_no_horizontal_overflow(page: Page) -> None:
    layout = await page.evaluate(OVERFLOW)
    assert layout["scrollWidth"] <= layout["width"], layout
    assert layout["outside"] == [], layout


async def assert_accessible(page: Page) -> None:
    """axe-core (the npm package in clients/web's devDependencies), injected into the page."""
    if not AXE.is_file():
        pytest.fail(f"{AXE} is missing: `make test` installs it (npm ci in clients/web)")
    if not await page.evaluate("typeof window.axe !== 'undefined'"):
        await page.add_script_tag(content=AXE.read_text())
    violations = await page.evaluate("""async () => {
      const result = await axe.run(document, { resultTypes: ["violations"] });
      return result.violations
        .filter((v) => v.impact === "serious" || v.impact === "critical")
        .map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
    }""")
    assert violations == [], violations


async def hang_up(page: Page, section: str) -> None:
    await page.click("#hangup")
    await expect(page.locator("#call-state")).to_have_attribute(
        "data-state", "ended", timeout=30_000
    )
    ending = page.locator(f"{section} li.ending")
    if await ending.text_content() != "The call ended.":  # the developer log says why
        pytest.fail(f"{await ending.text_content()}\n{await page.locator('#events').inner_text()}")


async def test_talk_to_the_agent_from_the_browser(
    offline_server: VoiceAgentServer,
    launch_browser: LaunchBrowser,
    question: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DEEPGRAM_API_KEY", raising=False)  # listed, and unavailable
    async with launch_browser(question) as browser:
        page, errors = await open_page(browser, offline_server)
        await expect(page.locator("#health")).to_have_text("Server ready")
        await expect(page.locator("#conversations-empty")).to_be_visible()
        await expect(page.locator("#call-state")).to_have_text("Not in a call")

        # AI options, in people's words: backends by display name, voices by name, unavailable
        # ones greyed out with a plain reason (the STT picker too).
        await expect(page.locator('#stt option[value="whisper"]')).to_have_text(
            "Whisper (on this server)"
        )
        flux = page.locator('#stt option[value="deepgram-flux"]')
        await expect(flux).to_have_text("Deepgram Flux (cloud) — not set up on this server")
        assert await flux.is_disabled()
        voice = page.locator('#voice option[value="en_US-joe-medium"]')
        await expect(voice).to_have_text("Joe (US English, medium)")
        assert await voice.is_enabled()
        await expect(
            page.locator('#model option[value="qwen2.5-coder-0.5b-instruct"]')
        ).to_have_count(1)
        await expect(page.locator("#developer")).to_contain_text(
            "deepgram-flux unavailable: DEEPGRAM_API_KEY not set"
        )

        # A campaign, created through the form: the feedback is by the form, and the new
        # campaign is selected for the call.
        name = f"Geography tutor {uuid.uuid4().hex[:8]}"
        await page.fill("#campaign-name", name)
        await page.fill(
            "#campaign-persona", "You are a geography tutor. Answer in one short sentence."
        )
        await page.select_option("#campaign-voice", "en_US-joe-medium")
        await page.click("#campaign-save")
        await expect(page.locator("#campaign-message")).to_have_text(
            f"Created campaign “{name}”. It is selected for your next call."
        )
        row = page.locator("#campaigns tr", has_text=name)
        await expect(row).to_contain_text("Joe (US English, medium)")
        assert await page.locator("#campaign option:checked").text_content() == name

        # The call: the fake microphone asks its question; the page shows each state in turn.
        await page.click("#start")
        call = page.locator("#call-1")
        await expect(call.locator(".setup")).to_contain_text(
            "Whisper (on this server) · qwen2.5-coder-0.5b-instruct · Joe (US English, medium)",
            timeout=30_000,
        )
        user = call.locator("li.user:not(.interim)").first
        await expect(user).to_contain_text(re.compile("weather", re.I), timeout=SLOW)
        await expect(user).to_contain_text(re.compile("Paris", re.I))
        agent = call.locator("li.agent .text").first
        await expect(agent).not_to_have_text("", timeout=SLOW)
        await expect(call.locator("tbody tr")).to_have_count(1, timeout=SLOW)
        await expect(call.locator("svg.chart rect.bar")).to_have_count(1)
        # The answer is played, then the agent listens again.
        await expect(page.locator("#call-state")).to_have_text("Listening", timeout=SLOW)
        seen = await states(page)
        assert seen[:2] == ["connecting", "listening"], seen
        spoke = seen.index("speaking")
        assert "thinking" in seen[:spoke] and "listening" in seen[spoke:], seen
        assert await page.evaluate("window.__loudest") > 0.05  # the meter moved with the question

        # Mute: the microphone sends silence, the meter rests.
        await page.click("#mute")
        await expect(page.locator("#mute")).to_have_attribute("aria-pressed", "true")
        await expect(page.locator("#mic-level")).to_have_js_property("value", 0)
        await page.click("#mute")
        await expect(page.locator("#mute")).to_have_text("Mute")

        # Switch the voice mid-call: the server applies it from the next turn.
        await page.select_option("#voice", "en_US-joe-medium")
        await page.click("#apply")
        await expect(page.locator("#call-message-text")).to_have_text(
            "The chosen model and voice answer from the next turn.", timeout=30_000
        )
        await expect(page.locator("#events")).to_contain_text("tts_voice=en_US-joe-medium")

        await hang_up(page, "#call-1")
        assert (await states(page))[-1] == "ended"
        assert not JARGON.search(await visible_text(page)), JARGON.findall(await visible_text(page))
        await assert_accessible(page)

        # The campaign can be edited and deleted from the page too.
        await row.get_by_role("button", name=f"Edit campaign {name}").click()
        renamed = name.replace("tutor", "teacher")
        await page.fill("#campaign-name", renamed)
        # Tools too, in the proto's JSON; a bad declaration is refused with the server's reason.
        await page.fill("#campaign-tools", '{"tools": [{"name": "9bad", "client": {}}]}')
        await page.click("#campaign-save")
        await expect(page.locator("#campaign-message")).to_contain_text("tools[0].name")
        await page.fill(
            "#campaign-tools",
            '{"builtinTools": {"endCall": true, "transferTargets": ["sip:desk@pbx"]}}',
        )
        await page.click("#campaign-save")
        await expect(page.locator("#campaign-message")).to_contain_text(
            f"Saved campaign “{renamed}”"
        )
        edited = page.locator("#campaigns tr", has_text=renamed)
        await edited.get_by_role("button", name=f"Edit campaign {renamed}").click()
        await expect(page.locator("#campaign-tools")).to_have_value(re.compile("sip:desk@pbx"))
        await page.click("#campaign-cancel")
        await expect(page.locator("#campaigns tr", has_text=renamed)).to_have_count(1)
        await expect(page.locator("#campaigns tr", has_text=name)).to_have_count(0)
        await page.get_by_role("button", name=f"Delete campaign {renamed}").click()
        await expect(page.locator("#campaigns tr", has_text=renamed)).to_have_count(0)
        assert errors == []


async def typed_turn(page: Page, section: str, text: str, turns: int) -> None:
    await page.fill("#say", text)
    await page.click("#say-send")
    await expect(page.locator(f"{section} li.user")).to_have_count(turns)
    await expect(page.locator(f"{section} tbody tr")).to_have_count(turns, timeout=SLOW)
    await expect(page.locator("#call-state")).to_have_text("Listening", timeout=SLOW)


async def test_two_calls_in_a_row_on_a_phone_each_have_their_own_section(
    offline_server: VoiceAgentServer, launch_browser: LaunchBrowser, silence: Path
) -> None:
    async with launch_browser(silence) as browser:
        page, errors = await open_page(browser, offline_server, width=390, height=844)
        await assert_no_horizontal_overflow(page)

        await page.click("#start")
        await expect(page.locator("#call-state")).to_have_text("Listening", timeout=30_000)
        await typed_turn(page, "#call-1", "What is the capital of France?", 1)
        await hang_up(page, "#call-1")

        await page.click("#start")
        await expect(page.locator("#call-state")).to_have_text("Listening", timeout=30_000)
        await typed_turn(page, "#call-2", "What is the capital of Italy?", 1)
        await typed_turn(page, "#call-2", "And of Spain?", 2)
        await hang_up(page, "#call-2")

        # Each call keeps its own conversation and latency; table rows and chart slots agree.
        first, second = page.locator("#call-1"), page.locator("#call-2")
        await expect(first.locator("li.user .text")).to_have_text(
            ["What is the capital of France?"]
        )
        await expect(second.locator("li.user")).to_have_count(2)
        for section, turns in ((first, 1), (second, 2)):
            await expect(section.locator("tbody tr")).to_have_count(turns)
            await expect(section.locator("svg.chart rect.bar")).to_have_count(turns)
            await expect(section.locator("svg.chart text.axis")).to_have_count(3 + turns)
            await expect(section.locator("tbody tr td:first-child")).to_have_text(
                [f"{n} (typed)" for n in range(1, turns + 1)]
            )
        # The newest call is on top, where the call controls are.
        assert await page.locator(".conversation").evaluate_all("(s) => s.map((n) => n.id)") == [
            "call-2",
            "call-1",
        ]
        await assert_no_horizontal_overflow(page)  # latency tables as cards, transcripts wrap
        await assert_accessible(page)

        await page.click("#clear")
        await expect(page.locator(".conversation")).to_have_count(0)
        await expect(page.locator("#conversations-empty")).to_be_visible()
        assert errors == []


async def test_layout_fits_from_360_px_to_wide_screens(
    offline_server: VoiceAgentServer, launch_browser: LaunchBrowser, silence: Path
) -> None:
    async with launch_browser(silence) as browser:
        for width, height in ((360, 740), (390, 844), (768, 1024), (1280, 900), (1920, 1080)):
            page, errors = await open_page(browser, offline_server, width, height)
            await assert_no_horizontal_overflow(page)
            # Every control is on screen horizontally, at full size (none cut off).
            for selector in ("#stt", "#voice", "#preview", "#start", "#campaign-save"):
                box = await page.locator(selector).bounding_box()
                assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width
            preview = await page.locator("#preview-text").bounding_box()
            assert preview is not None and preview["width"] > 150, (width, preview)
            if width < 640:  # one column on phones
                agent = await page.locator("#agent").bounding_box()
                call = await page.locator("#call").bounding_box()
                assert agent and call and call["y"] >= agent["y"] + agent["height"]
            assert errors == []
            await page.close()


async def test_accessibility_scan_has_no_serious_violations(
    offline_server: VoiceAgentServer, launch_browser: LaunchBrowser, silence: Path
) -> None:
    async with launch_browser(silence) as browser:
        for width, height in ((1280, 900), (390, 844)):
            page, errors = await open_page(browser, offline_server, width, height)
            await assert_accessible(page)
            await page.click("#developer summary")  # the developer log, unfolded
            await assert_accessible(page)
            assert errors == []
            await page.close()


async def test_voice_preview_refuses_empty_text_and_can_be_stopped(
    offline_server: VoiceAgentServer, launch_browser: LaunchBrowser, silence: Path
) -> None:
    async with launch_browser(silence) as browser:
        page, errors = await open_page(browser, offline_server)
        message = page.locator("#preview-message")
        await page.fill("#preview-text", "   ")
        await page.click("#preview")
        await expect(message).to_have_text("Type a sentence for the voice to say first.")
        await expect(page.locator("#preview")).to_have_text("Preview voice")

        await page.fill("#preview-text", "Hello there. " * 40)  # long enough to stop it
        await page.select_option("#voice", "en_US-joe-medium")
        await page.click("#preview")
        await expect(page.locator("#preview")).to_have_text("Stop preview")
        await expect(message).to_have_text("Playing Joe (US English, medium).", timeout=SLOW)
        await page.click("#preview")
        await expect(message).to_have_text("Preview stopped.")
        await expect(page.locator("#preview")).to_have_text("Preview voice")
        assert errors == []


async def test_token_prompt_opens_itself_and_unlocks_the_page(
    start_server: StartServer, launch_browser: LaunchBrowser, silence: Path
) -> None:
    server = await start_server(token="s3cret-token")
    async with launch_browser(silence) as browser:
        page, errors = await open_page(browser, server)
        prompt = page.locator("#token-prompt")
        await expect(prompt).to_be_visible()
        await expect(prompt).to_contain_text("This server needs an access token")
        await expect(page.locator("#token")).to_be_focused()
        # What cannot work without the token is disabled until it is given.
        for selector in ("#start", "#stt", "#voice", "#preview", "#campaign-save"):
            await expect(page.locator(selector)).to_be_disabled()
        assert "authorization" not in (await visible_text(page)).lower()
        await assert_accessible(page)

        await page.fill("#token", "wrong")
        await page.click("#token-form button")
        await expect(page.locator("#token-message")).to_have_text(
            "The server did not accept this token. Check it and enter it again."
        )
        await expect(page.locator("#start")).to_be_disabled()

        await page.fill("#token", "s3cret-token")
        await page.click("#token-form button")
        await expect(prompt).to_be_hidden()
        await expect(page.locator("#start")).to_be_enabled()
        await expect(page.locator('#voice option[value="en_US-joe-medium"]')).to_have_count(1)
        await page.click("#start")
        await expect(page.locator("#call-state")).to_have_text("Listening", timeout=30_000)
        await hang_up(page, "#call-1")

        # A token that stops working (changed on the server, say): the call's WebSocket is
        # refused, and the prompt opens again.
        await page.evaluate("localStorage.setItem('voice-agent-token', 'stale')")
        await page.click("#start")
        await expect(prompt).to_be_visible(timeout=30_000)
        await expect(page.locator("#call-message-text")).to_contain_text(
            "This server needs an access token"
        )
        await expect(page.locator("#start")).to_be_disabled()
        assert not JARGON.search(await visible_text(page))
        assert errors == []


async def test_server_stopped_mid_call_shows_a_plain_message(
    start_server: StartServer, launch_browser: LaunchBrowser, silence: Path
) -> None:
    server = await start_server()
    async with launch_browser(silence) as browser:
        page, errors = await open_page(browser, server)
        await page.click("#start")
        await expect(page.locator("#call-state")).to_have_text("Listening", timeout=30_000)

        await server.stop(0)
        await expect(page.locator("#call-state")).to_have_text("Call ended", timeout=30_000)
        message = page.locator("#call-message-text")
        await expect(message).to_contain_text(
            re.compile(r"The server stopped during the call|connection to the server was lost")
        )
        await expect(page.locator("#call-again")).to_be_visible()
        ending = await page.locator("#call-message-text").inner_text()
        await expect(page.locator("#call-1 li.ending")).to_have_text(ending)
        # The header and the banner say the server is gone, with a retry that checks again.
        await expect(page.locator("#health")).to_have_text("Server unreachable", timeout=30_000)
        banner = page.locator("#banner")
        await expect(banner).to_be_visible()
        await expect(banner).to_contain_text("cannot be reached")
        await page.click("#retry")
        await expect(banner).to_contain_text("cannot be reached", timeout=30_000)
        await expect(page.locator("#retry")).to_be_enabled()
        assert not JARGON.search(await visible_text(page))
        assert errors == []


async def test_barge_in_marks_the_agent_line_cut_where_it_stopped(
    offline_server: VoiceAgentServer, launch_browser: LaunchBrowser, tmp_path: Path
) -> None:
    # The caller waits until the greeting is well under way, then talks over it.
    microphone = write_wav(
        tmp_path / "interruption.wav",
        np.concatenate(
            [
                pause(4.0, RATE),
                speak("Wait, stop. Are you open on Sundays?", RATE, varied=False),
                pause(30.0, RATE),
            ]
        ),
        RATE,
    )
    async with launch_browser(microphone) as browser:
        page, errors = await open_page(browser, offline_server)
        name = f"Library {uuid.uuid4().hex[:8]}"
        await page.fill("#campaign-name", name)
        await page.fill("#campaign-greeting", GREETING)
        await page.click("#campaign-save")
        await expect(page.locator("#campaign-message")).to_contain_text(
            f"Created campaign “{name}”"
        )

        await page.click("#start")
        greeting = page.locator("#call-1 li.agent").first
        await expect(page.locator("#call-state")).to_have_text("Agent speaking", timeout=SLOW)
        await expect(greeting.locator(".cut")).to_have_text("cut off", timeout=SLOW)
        await expect(page.locator("#events")).to_contain_text("BARGE_IN turn 0")
        # The caller's question is answered after the cut greeting.
        await expect(page.locator("#call-1 li.agent")).to_have_count(2, timeout=SLOW)
        heard = await greeting.locator(".text").inner_text()
        unheard = await greeting.locator("del").text_content() or ""
        assert heard and GREETING.startswith(heard) and heard != GREETING, heard
        assert unheard.removeprefix("not heard: ").strip() == GREETING[len(heard) :].strip()
        seen = await states(page)
        assert seen.index("speaking") < seen.index("listening", seen.index("speaking")), seen
        await hang_up(page, "#call-1")
        await page.get_by_role("button", name=f"Delete campaign {name}").click()
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
    offline_server: VoiceAgentServer, launch_browser: LaunchBrowser, silence: Path
) -> None:
    async with launch_browser(silence) as browser:
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
