"""Coverage-guided fuzzing (atheris) of the server's own parsers of client bytes.

    .venv/bin/python tests/fuzz/untrusted_input.py --write-seeds CORPUS_DIR
    .venv/bin/python tests/fuzz/untrusted_input.py -max_total_time=60 CORPUS_DIR

The first byte picks a target; the rest is its input. Each target may only fail with the error
its caller turns into a clear status (AudioFormatError -> INVALID_ARGUMENT, InvalidPageToken ->
INVALID_ARGUMENT, a Connect body's gzip -> invalid_argument or resource_exhausted within the
4 MiB budget, an etag -> a version the store can hold or none); anything else is a crash, and atheris stops with the input that caused it.
Run for a bounded time by tests/unit/test_fuzz_untrusted_input.py.
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from voiceagent.v1 import voice_agent_pb2 as pb

    from server.audio import AudioFormatError, InboundAudio, validate_format
    from server.campaign_store import InvalidPageToken, _decode_page_token
    from server.limits import MAX_COMPRESSION_RATIO, MIN_INFLATE_BYTES
    from server.sentences import SentenceSplitter, speakable

# Outside the instrumentation: these pull in grpc and the whole HTTP stack, slow to
# instrument, and what is fuzzed there is zlib's (C) work and one regular expression.
from connectrpc.code import Code
from connectrpc.errors import ConnectError

from server.campaigns import MAX_VERSION, version_from_etag
from server.web import BoundedGzip

GZIP_LIMIT = 1 << 20  # smaller than the server's 4 MiB, so the fuzzer reaches it


def audio(raw: bytes) -> None:
    """A client's audio format, then its audio messages cut anywhere."""
    data = atheris.FuzzedDataProvider(raw)
    fmt = pb.AudioFormat(
        encoding=data.ConsumeIntInRange(0, 5),  # type: ignore[arg-type]
        sample_rate_hertz=data.ConsumeIntInRange(-1, 96000),
    )
    try:
        checked = validate_format(fmt, "config.input_format")
    except AudioFormatError:
        return
    inbound = InboundAudio(checked, 16000)
    total_in = total_out = 0
    while data.remaining_bytes():
        chunk = data.ConsumeBytes(data.ConsumeIntInRange(0, 2000))
        total_in += len(chunk)
        pcm = inbound.push(chunk)
        assert pcm.dtype.name == "int16"
        total_out += len(pcm)
    samples_in = total_in // checked.bytes_per_sample
    # the resampler may hold back a few ms, never produce more than the rate allows
    assert total_out <= samples_in * 16000 / checked.rate + 64


def page_token(raw: bytes) -> None:
    token = raw.decode("utf-8", "replace")
    try:
        _decode_page_token(token)
    except InvalidPageToken:
        pass


def _words(text: str) -> list[str]:
    """Speakable words, list marks aside (a piece may start where a "-" was mid-line)."""
    return speakable(text).replace("-", " ").replace("•", " ").split()


def sentences(raw: bytes) -> None:
    """LLM output in arbitrary deltas: every spoken word comes out once, in order."""
    data = atheris.FuzzedDataProvider(raw)
    splitter = SentenceSplitter()
    pieces: list[str] = []
    text = ""
    while data.remaining_bytes():
        delta = data.ConsumeUnicodeNoSurrogates(data.ConsumeIntInRange(0, 40))
        text += delta
        pieces += splitter.push(delta)
    pieces += splitter.flush()
    assert all(piece == piece.strip() and speakable(piece) for piece in pieces), pieces
    assert [w for p in pieces for w in _words(p)] == _words(text), (pieces, text)


def gzip_body(raw: bytes) -> None:
    """A request body with `content-encoding: gzip`: inflated within the budget, or refused."""
    try:
        out = BoundedGzip(GZIP_LIMIT).decompress(raw)
    except ConnectError as err:
        assert err.code in (Code.INVALID_ARGUMENT, Code.RESOURCE_EXHAUSTED), err
        return
    assert len(out) <= min(GZIP_LIMIT, max(MIN_INFLATE_BYTES, len(raw) * MAX_COMPRESSION_RATIO))


def etag(raw: bytes) -> None:
    version = version_from_etag(raw.decode("utf-8", "replace"))
    assert version is None or 0 <= version <= MAX_VERSION


TARGETS = [audio, page_token, sentences, gzip_body, etag]


def one_input(raw: bytes) -> None:
    if raw:
        TARGETS[raw[0] % len(TARGETS)](raw[1:])


def seeds() -> list[bytes]:
    """Valid inputs to start from (a random byte string is rarely a base64 JSON token)."""
    from datetime import UTC, datetime

    from server.campaign_store import _encode_page_token

    token = _encode_page_token(datetime(2026, 1, 2, tzinfo=UTC), "c-123").encode()
    return [
        bytes([TARGETS.index(page_token)]) + token,
        bytes([TARGETS.index(sentences)]) + b"Sure, here it is. **Bold** - a list!\n",
        bytes([TARGETS.index(audio), 1, 0x80, 0x3E, 0, 0]) + bytes(range(256)),
        bytes([TARGETS.index(gzip_body)]) + gzip.compress(b'{"backend": "piper"}' * 50),
        bytes([TARGETS.index(etag)]) + b"12",
    ]


if __name__ == "__main__":
    if sys.argv[1:2] == ["--write-seeds"]:
        for i, seed in enumerate(seeds()):
            (Path(sys.argv[2]) / f"seed-{i}").write_bytes(seed)
        sys.exit(0)
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
