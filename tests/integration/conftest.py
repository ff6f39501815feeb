"""A real server with the offline models, shared by the integration tests, and spoken audio."""

from __future__ import annotations

import functools
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from voiceagent.v1 import voice_agent_pb2 as pb

from server import assets
from server.audio import Format, InboundAudio, resample
from server.backends.stt.whisper import WhisperSTT
from server.g711 import mulaw_encode
from server.main import VoiceAgentServer
from server.settings import Settings

RATE = 16000


HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/integration is `integration` (`pytest -m "not integration"`)."""
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)


@functools.cache
def _voice() -> Any:
    from piper import PiperVoice

    return PiperVoice.load(str(assets.piper_voice_path()))


def speak(text: str, rate: int = RATE, varied: bool = True) -> np.ndarray:
    """`text` spoken by the packaged Piper voice, int16 mono at `rate`, silence trimmed.

    Piper varies its delivery at random on every call; `varied=False` turns that noise off, so
    the same text gives the same audio every time.

    Piper rather than espeak-ng: Whisper base hears espeak's robotic voice differently depending
    on where in a 32 ms window it starts ("capital of France" became "capital and friends"),
    which made tests flaky; Piper's natural voice is heard the same wherever it starts.
    """
    voice = _voice()
    from piper import SynthesisConfig

    config = None if varied else SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    pcm = np.concatenate([chunk.audio_int16_array for chunk in voice.synthesize(text, config)])
    pcm = resample(pcm, voice.config.sample_rate, rate)
    voiced = np.nonzero(np.abs(pcm.astype(np.int32)) > 200)[0]
    return pcm[voiced[0] : voiced[-1] + 1] if len(voiced) else pcm


def heard(pcm: np.ndarray, rate: int) -> np.ndarray:
    """16 kHz speech as the server hears it at `rate` (8 kHz: G.711 mu-law, upsampled)."""
    if rate == 16000:
        return pcm
    return InboundAudio(Format(pb.MULAW, 8000), 16000).push(
        mulaw_encode(resample(pcm, 16000, rate))
    )


@pytest.fixture(scope="module")
def whisper() -> Iterator[WhisperSTT]:
    """The real Whisper backend, loaded for tests that call its blocking methods directly."""
    stt = WhisperSTT()
    stt._load_blocking()
    yield stt
    stt._executor.shutdown()


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
async def offline_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[VoiceAgentServer]:
    # A throwaway campaign store: never the user's, nor what earlier runs left behind.
    store = tmp_path_factory.mktemp("campaigns") / "campaigns.db"
    server = VoiceAgentServer(
        Settings(port=0, http_port=0, host="127.0.0.1", database_url=f"sqlite://{store}")
    )
    await server.start()
    await server.wait_ready()
    yield server
    await server.stop(0)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL server for the session (the Debian `postgresql` package)."""
    from tests.integration.postgres import MISSING_MESSAGE, postgres_installed, throwaway_postgres

    if not postgres_installed():
        pytest.fail(MISSING_MESSAGE)
    with throwaway_postgres() as url:
        yield url
