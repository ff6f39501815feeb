"""The container's entry logic, run as a script: the Dockerfile's own ENV, CMD, HEALTHCHECK and
STOPSIGNAL, read from the file, on this machine (no container engine here).

What a platform does with the image: set PORT (Cloud Run does), start CMD, poll HEALTHCHECK until
it passes, route traffic, send STOPSIGNAL and wait. Only the paths that exist inside the image
alone are mapped to their places in this checkout (the virtualenv, the model cache, the page).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.integration.test_cli import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def final_stage() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    stage: list[tuple[str, str]] = []
    for line in lines:
        if not line or line.startswith("#"):
            continue
        name, _, args = line.partition(" ")
        if name.upper() == "FROM":
            stage = []
        stage.append((name.upper(), args.strip()))
    return stage


def image_env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for name, args in stage:
        if name == "ENV":
            for key, value in re.findall(r"(\w+)=(\S+)", args):
                env[key] = value
    return env


def exec_form(args: str) -> list[str]:
    command = json.loads(args)
    assert isinstance(command, list), f"not exec form (signals would go to a shell): {args}"
    return [str(part) for part in command]


def test_cmd_healthcheck_and_stopsignal_of_the_image(tmp_path: Path) -> None:
    stage = final_stage()
    env = image_env(stage)
    cmd = exec_form(next(args for name, args in stage if name == "CMD"))
    health_args = next(args for name, args in stage if name == "HEALTHCHECK")
    health = exec_form(health_args.split(" CMD ", 1)[1])
    stop_signal = next(args for name, args in stage if name == "STOPSIGNAL")
    drain = int(env["DRAIN_SECONDS"])

    port, http_port = free_port(), free_port()
    env.update(
        PORT=str(port),  # the platform's port, not the image default
        HTTP_PORT=str(http_port),
        # where the image keeps these, here
        PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}",
        VOICE_AGENT_CACHE=os.environ.get(
            "VOICE_AGENT_CACHE", str(Path.home() / ".cache" / "voice-agent")
        ),
        VOICE_AGENT_WEB_DIR=str(ROOT / "clients" / "web" / "dist"),
        VOICE_AGENT_DATA=str(tmp_path),
        HOME=str(tmp_path),
    )
    server = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 120
        checks = []
        while time.monotonic() < deadline:
            check = subprocess.run(health, env=env, capture_output=True, text=True, timeout=30)
            checks.append(check.returncode)
            if check.returncode != 1:  # 0: healthy; anything else is not "not yet" (e.g. usage)
                break
            assert server.poll() is None, server.communicate()[0][-3000:]
            time.sleep(0.5)
        assert checks[-1] == 0, f"HEALTHCHECK never passed: {checks}"
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz", timeout=5) as r:
            assert r.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/", timeout=5) as r:
            assert b"<html" in r.read().lower()

        started = time.monotonic()
        server.send_signal(getattr(signal, stop_signal))
        out, _ = server.communicate(timeout=drain + 15)
        assert server.returncode == 0, out[-3000:]
        assert time.monotonic() - started < drain + 5
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
