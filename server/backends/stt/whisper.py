"""Local STT: Whisper base (faster-whisper / CTranslate2, int8) with Silero VAD turn-taking and
Smart Turn v3.2 deciding when a turn is complete (server/smart_turn.py).

faster-whisper's `transcribe()` pads every input to 30 s (~0.5 s a call whatever the length);
we call the CTranslate2 model on the turn's own features plus a short zero tail instead, which
makes an interim transcript cost 65-250 ms (measured on 2 cores). Finals use beam 2, interims greedy.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import numpy as np

from server import assets
from server.backends.stt.base import STT, STTStream, TurnMode, TurnOptions
from server.inference import CPU
from server.smart_turn import SmartTurnV3
from server.turns import VadTurnStream
from server.vad import SileroVAD

_TAIL_SECONDS = 1.0  # zero padding after the speech: Whisper drops final words without it
_MAX_TOKENS = 160
# Finals: beam 2. On 2 cores, for a 3.3 s question: greedy 188 ms, beam 2 217, beam 3 240,
# beam 5 464 (medians of 8); beam 2 and beam 5 gave the same words on 20 held-out questions at
# 16 and 8 kHz. The final decode is on the path to every answer; interims stay greedy.
_FINAL_BEAM = 2


class WhisperSTT(STT):
    name: ClassVar[str] = "whisper"
    sample_rate: ClassVar[int] = 16000

    def __init__(self, workers: int = 2) -> None:
        # Decodes run one thread each, two at a time. A two-thread decode stalls whenever
        # anything else wants a core (audio arriving, the turn model): a final decode of a
        # 2.2 s question took 400-450 ms on two threads in a live stream, 280-340 ms on one.
        # Two workers keep both cores busy when many calls decode at once, and a final decode
        # never queues behind the interim decode still running when the caller falls silent.
        self._workers = workers
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="whisper")
        self._model: Any = None
        self._vad: SileroVAD | None = None
        self._turn_model: SmartTurnV3 | None = None
        self._prompts: dict[str, tuple[Any, list[int]]] = {}

    async def load(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._load_blocking)

    def _load_blocking(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from faster_whisper import WhisperModel

        model_dir = assets.whisper_model_dir(progress=False)
        self._model = WhisperModel(
            str(model_dir),
            device="cpu",
            compute_type="int8",
            cpu_threads=1,
            num_workers=self._workers,
        )
        self._vad = SileroVAD(assets.silero_vad_path())
        self._turn_model = SmartTurnV3(assets.smart_turn_path())
        self._turn_model.score([np.zeros(16000, dtype=np.int16)])  # warm-up
        self._decode(np.zeros(16000, dtype=np.int16), final=True, language="en")  # warm-up

    async def aclose(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._vad is not None:
            await asyncio.to_thread(self._vad.close)
        if self._turn_model is not None:
            await asyncio.to_thread(self._turn_model.close)

    def open_stream(self, options: TurnOptions) -> STTStream:
        if self._vad is None:
            raise RuntimeError("WhisperSTT.open_stream before load()")
        model = self._turn_model if options.mode == TurnMode.SEMANTIC else None
        return VadTurnStream(self, self._vad, options, model)

    async def transcribe(self, pcm: np.ndarray, final: bool, language: str) -> str:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._decode, pcm, final, language)

    def _prompt(self, language: str) -> tuple[Any, list[int]]:
        if language not in self._prompts:
            from faster_whisper.tokenizer import Tokenizer

            tokenizer = Tokenizer(
                self._model.hf_tokenizer, True, task="transcribe", language=language
            )
            prompt = self._model.get_prompt(tokenizer, [], without_timestamps=True)
            self._prompts[language] = (tokenizer, prompt)
        return self._prompts[language]

    def _decode(self, pcm: np.ndarray, final: bool, language: str) -> str:
        import ctranslate2

        if len(pcm) < 1600:  # under 0.1 s: nothing to say
            return ""
        tokenizer, prompt = self._prompt(language.split("-")[0] or "en")
        audio = np.concatenate(
            [pcm.astype(np.float32) / 32768.0, np.zeros(int(16000 * _TAIL_SECONDS), np.float32)]
        )
        features = self._model.feature_extractor(audio)[:, :-1]
        # A final decode is what the caller waits for: token generation steps aside meanwhile.
        urgent = CPU.urgent() if final else contextlib.nullcontext()
        with urgent:
            result = self._model.model.generate(
                ctranslate2.StorageView.from_array(np.ascontiguousarray(features[None])),
                [prompt],
                beam_size=_FINAL_BEAM if final else 1,
                max_length=_MAX_TOKENS,
                suppress_blank=True,
                suppress_tokens=[-1],
                repetition_penalty=1.1,
                no_repeat_ngram_size=3,
            )
        text: str = tokenizer.decode(result[0].sequences_ids[0]).strip()
        return text
