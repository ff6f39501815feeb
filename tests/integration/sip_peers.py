"""The SIP bridge as a process, and the real SIP peers that call it: baresip and SIPp.

Each runs as the user would run it (Debian packages `baresip` and `sip-tester`, installed by
the Makefile's system-deps). Ports are picked per test so parallel runs do not collide.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from server.g711 import mulaw_encode

SIPP_DIR = Path(__file__).parent / "sipp"


def free_udp_port(span: int = 1) -> int:
    """A UDP port with `span` free ports from it up (baresip also binds the next port)."""
    for _ in range(200):
        base = random.randrange(20000, 60000, 2)
        sockets: list[socket.socket] = []
        try:
            for offset in range(span):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sockets.append(s)
                s.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no free UDP port range")


def require(command: str, package: str) -> str:
    path = shutil.which(command)
    if path is None:
        pytest.fail(
            f"`{command}` not found: install the Debian package {package} (make system-deps)"
        )
    return path


@dataclass
class BridgeProcess:
    """`python -m sip_bridge` with its log captured line by line."""

    sip_port: int
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, within: float = 10.0, count: int = 1) -> list[str]:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            found = [line for line in self.lines if text in line]
            if len(found) >= count:
                return found
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(
            f"bridge log has {len([x for x in self.lines if text in x])} of {count} {text!r}:\n"
            + "\n".join(self.lines[-40:])
        )

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode


def start_bridge(server_port: int, *extra: str, span: int = 8) -> BridgeProcess:
    """A bridge process; one PJSIP process (`--max-calls 4`) unless `extra` says otherwise, so a
    test that is not about the dispatcher does not start the default's four workers."""
    if "--max-calls" not in extra:
        extra = ("--max-calls", "4", *extra)
    sip_port = free_udp_port(span)  # with --max-calls > 4, workers take the ports after it
    rtp_port = free_udp_port(2)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sip_bridge",
            "--sip-host",
            "127.0.0.1",
            "--sip-port",
            str(sip_port),
            "--rtp-port",
            str(rtp_port),
            "--server",
            f"127.0.0.1:{server_port}",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    bridge = BridgeProcess(sip_port, process)
    threading.Thread(target=bridge._pump, daemon=True).start()
    bridge.wait_for("SIP bridge listening", within=10 + span)
    return bridge


@contextlib.asynccontextmanager
async def running_bridge(server_port: int, *extra: str) -> AsyncIterator[BridgeProcess]:
    """The bridge for one test: started, then stopped, and it must exit cleanly (code 0)."""
    bridge = await asyncio.to_thread(start_bridge, server_port, *extra)
    try:
        yield bridge
    finally:
        code = await asyncio.to_thread(bridge.stop)
        assert code == 0, f"bridge exit code {code}:\n" + "\n".join(bridge.lines[-30:])


def write_mulaw_wav(path: Path, pcm: np.ndarray) -> Path:
    """An 8 kHz mu-law WAV (format tag 7), what SIPp's rtp_stream plays as PCMU."""
    data = mulaw_encode(pcm)
    fmt = struct.pack("<HHIIHH", 7, 1, 8000, 8000, 1, 8)
    header = b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(data)) + b"WAVE"
    header += b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data))
    path.write_bytes(header + data)
    return path


@dataclass
class SippResult:
    returncode: int
    successful: int
    failed: int
    output: str


def run_sipp(
    scenario: str,
    bridge_port: int,
    workdir: Path,
    calls: int = 1,
    rate: float = 10.0,
    listen_ms: int = 1000,
    timeout: float = 120.0,
    extra: tuple[str, ...] = (),
    nice: int = 0,
) -> SippResult:
    """Run SIPp's `scenario` (tests/integration/sipp/NAME.xml) against the bridge from `workdir`."""
    sipp = require("sipp", "sip-tester")
    port = free_udp_port(2)
    media = free_udp_port(2)
    command = [
        *(("nice", "-n", str(nice)) if nice else ()),
        sipp,
        f"127.0.0.1:{bridge_port}",
        "-sf",
        str(SIPP_DIR / f"{scenario}.xml"),
        "-s",
        "agent",
        "-i",
        "127.0.0.1",
        "-mi",
        "127.0.0.1",
        "-p",
        str(port),
        "-mp",
        str(media),
        "-d",
        str(listen_ms),
        "-m",
        str(calls),
        "-l",
        str(calls),
        "-r",
        str(rate),
        "-nostdin",
        "-trace_err",
        "-trace_stat",
        "-timeout",
        f"{int(timeout)}s",
        *extra,
    ]
    done = subprocess.run(
        command, cwd=workdir, capture_output=True, text=True, timeout=timeout + 30
    )
    output = done.stdout + done.stderr
    for log in workdir.glob("*_errors.log"):
        output += "\n" + log.read_text(errors="replace")
    return SippResult(
        done.returncode, _count(output, "Successful call"), _count(output, "Failed call"), output
    )


def _count(output: str, label: str) -> int:
    """The cumulative column of SIPp's final statistics line `label`."""
    lines = [line for line in output.splitlines() if line.strip().startswith(label)]
    if not lines:
        return 0
    return int(lines[-1].split("|")[2].split()[0])


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as wav:
        return np.frombuffer(wav.readframes(wav.getnframes()), "<i2"), wav.getframerate()


def speech_segments(
    pcm: np.ndarray, rate: int, threshold: float = 300.0
) -> list[tuple[float, float]]:
    """(start, end) seconds of stretches whose 20 ms RMS is above `threshold` (gaps < 0.5 s merged)."""
    frame = rate // 50
    n = len(pcm) // frame
    x = pcm[: n * frame].reshape(n, frame).astype(np.float64)
    loud = np.sqrt(np.mean(x * x, axis=1)) > threshold
    segments: list[tuple[float, float]] = []
    for k in np.nonzero(loud)[0]:
        t = k * 0.02
        if segments and t - segments[-1][1] < 0.5:
            segments[-1] = (segments[-1][0], t + 0.02)
        else:
            segments.append((t, t + 0.02))
    return segments


def speech_like(pcm: np.ndarray, rate: int) -> bool:
    """Voice, not a tone or noise: energy varies syllable to syllable and sits in the voice band."""
    frame = rate // 50
    n = len(pcm) // frame
    if n < 10:
        return False
    x = pcm[: n * frame].reshape(n, frame).astype(np.float64)
    rms = np.sqrt(np.mean(x * x, axis=1))
    voiced = rms[rms > 100]
    if len(voiced) < 10 or np.std(voiced) / np.mean(voiced) < 0.2:
        return False
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64)))
    freqs = np.fft.rfftfreq(len(pcm), 1 / rate)
    band = spectrum[(freqs > 100) & (freqs < 3500)].sum()
    return bool(band / spectrum.sum() > 0.7)
