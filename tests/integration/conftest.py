"""A real server with the offline models, shared by the integration tests, and spoken audio."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from server.main import VoiceAgentServer
from server.settings import Settings

RATE = 16000


def speak(text: str, rate: int = RATE) -> np.ndarray:
    """`text` spoken by espeak-ng, as int16 mono at `rate`, without leading or trailing silence."""
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        pytest.fail("espeak-ng and sox are needed (`make test` installs them)")
    with tempfile.TemporaryDirectory() as tmp:
        raw, out = Path(tmp) / "raw.wav", Path(tmp) / "out.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "-w", str(raw), text], check=True)
        subprocess.run(
            ["sox", str(raw), "-r", str(rate), "-c", "1", "-b", "16", str(out)], check=True
        )
        with wave.open(str(out)) as wav:
            pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.int16)
    # espeak-ng pads ~350 ms of silence at the end: trim it so the pauses a test adds are exact.
    voiced = np.nonzero(np.abs(pcm.astype(np.int32)) > 200)[0]
    return pcm[voiced[0] : voiced[-1] + 1] if len(voiced) else pcm


def pause(seconds: float, rate: int = RATE) -> np.ndarray:
    return np.zeros(int(seconds * rate), dtype=np.int16)


def write_wav(path: Path, pcm: np.ndarray, rate: int = RATE) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm.astype("<i2").tobytes())
    return path


@pytest.fixture(scope="session")
async def offline_server() -> AsyncIterator[VoiceAgentServer]:
    server = VoiceAgentServer(Settings(port=0, host="127.0.0.1"))
    await server.start()
    await server.wait_ready()
    yield server
    await server.stop(0)
