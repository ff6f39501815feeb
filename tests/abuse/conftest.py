"""Real server processes for the abuse suite, and what it measures of them: RSS from /proc,
event-loop lag as the latency of a concurrent /healthz, sessions from /metrics."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "abuse-token"
MB = 1 << 20
RSS_GROWTH_LIMIT = 150 * MB
LAG_LIMIT_S = 0.2


@dataclass
class ServerProcess:
    proc: subprocess.Popen[bytes]
    grpc_port: int
    http_port: int
    log: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def rss(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def sessions(self) -> float:
        """voice_agent_sessions_active, from /metrics."""
        _, _, body = http(self, "/metrics")
        match = re.search(rb"^voice_agent_sessions_active (\S+)$", body, re.MULTILINE)
        assert match, "no sessions gauge in /metrics"
        return float(match.group(1))

    def wait_sessions(self, count: float, within: float) -> float:
        deadline = time.monotonic() + within
        while (now := self.sessions()) != count and time.monotonic() < deadline:
            time.sleep(0.1)
        return now

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start(tmp: Path, **options: Any) -> ServerProcess:
    log = tmp / "server.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.abuse.server", json.dumps(options)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log.open("wb"),
        cwd=ROOT,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    match = re.match(r"PORTS (\d+) (\d+)", line)
    if not match:
        proc.kill()
        raise AssertionError(f"the server did not start: {line!r}\n{log.read_text()[-3000:]}")
    return ServerProcess(proc, int(match.group(1)), int(match.group(2)), log)


def stop(server: ServerProcess) -> None:
    assert server.proc.stdin is not None
    server.proc.stdin.close()
    try:
        server.proc.wait(20)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Scripted backends, a token, short send and idle timeouts."""
    running = start(tmp_path_factory.mktemp("abuse"), token=TOKEN, send_timeout=3, idle_timeout=30)
    yield running
    stop(running)


def http(
    server: ServerProcess,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(server.base_url + path, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers.items()), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers.items()), err.read()


@dataclass
class Probe:
    """/healthz every 50 ms from a thread while in use: the slowest answer is the event loop's
    worst stall (plus a loopback round trip)."""

    server: ServerProcess
    worst: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Probe:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            started = time.monotonic()
            status, _, _ = http(self.server, "/healthz", timeout=30)
            assert status == 200
            self.worst = max(self.worst, time.monotonic() - started)


@dataclass
class Growth:
    """RSS growth of the server process over a block: the most seen (sampled every 20 ms)."""

    server: ServerProcess
    before: int = 0
    peak: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def grown(self) -> int:
        return self.peak - self.before

    def __enter__(self) -> Growth:
        self.before = self.peak = self.server.rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        self.peak = max(self.peak, self.server.rss())

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.server.rss())
