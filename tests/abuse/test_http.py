"""Issue 14, cases 1 and 6: what an HTTP client can make of the Connect RPCs on $HTTP_PORT.

A gzip body is refused before it is inflated when the token is wrong, inflates at most 4 MiB
(and 100x) when it is right, and a body past 4 MiB is refused from its headers; malformed
requests are `invalid_argument` (HTTP 400), never `unknown` (500). Each flood is bounded in
RSS growth of the server process and in the stall of a concurrent /healthz.
"""

from __future__ import annotations

import functools
import json
import re
import socket
import struct
import threading
import zlib

from tests.abuse.conftest import (
    LAG_LIMIT_S,
    MB,
    RSS_GROWTH_LIMIT,
    TOKEN,
    Growth,
    Probe,
    ServerProcess,
    http,
)

LIST_VOICES = "/voiceagent.v1.VoiceAgent/ListVoices"
WATCH_CONFIG = "/voiceagent.v1.VoiceAgent/WatchConfig"
AUTH = {"authorization": f"Bearer {TOKEN}"}
JSON = {"content-type": "application/json"}
BOMB_MB = 256  # of JSON whitespace, in ~260 KB of gzip


@functools.cache
def gzip_bomb() -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b" " * MB
    return b"".join([packer.compress(chunk) for _ in range(BOMB_MB)] + [packer.flush()])


def envelope(data: bytes, compressed: bool = False) -> bytes:
    return struct.pack(">BI", int(compressed), len(data)) + data


def error_of(body: bytes) -> dict[str, str]:
    error: dict[str, str] = json.loads(body)
    return error


def end_of_stream_error(body: bytes) -> dict[str, str]:
    """The error of a Connect streaming response's end-of-stream message (flag 2)."""
    while body:
        flags, length = struct.unpack(">BI", body[:5])
        if flags & 2:
            end: dict[str, dict[str, str]] = json.loads(body[5 : 5 + length])
            return end["error"]
        body = body[5 + length :]
    raise AssertionError("no end-of-stream message")


def test_an_unauthenticated_gzip_bomb_is_refused_unread(server: ServerProcess) -> None:
    bomb = gzip_bomb()
    with Growth(server) as growth, Probe(server) as probe:
        status, _, body = http(server, LIST_VOICES, bomb, {**JSON, "content-encoding": "gzip"})
    assert status == 401, body
    assert error_of(body)["code"] == "unauthenticated"
    assert "authorization" in error_of(body)["message"]
    assert growth.grown < RSS_GROWTH_LIMIT, f"RSS grew {growth.grown / MB:.0f} MB"
    assert probe.worst < LAG_LIMIT_S, f"/healthz took {probe.worst * 1000:.0f} ms"


def test_an_authenticated_gzip_bomb_stops_at_4_mib(server: ServerProcess) -> None:
    with Growth(server) as growth, Probe(server) as probe:
        status, _, body = http(
            server, LIST_VOICES, gzip_bomb(), {**JSON, **AUTH, "content-encoding": "gzip"}
        )
    assert status == 429, body
    assert error_of(body)["code"] == "resource_exhausted"
    assert "inflates to more than" in error_of(body)["message"]
    assert growth.grown < RSS_GROWTH_LIMIT, f"RSS grew {growth.grown / MB:.0f} MB"
    assert probe.worst < LAG_LIMIT_S, f"/healthz took {probe.worst * 1000:.0f} ms"


def test_a_gzip_bomb_in_a_stream_envelope_is_refused(server: ServerProcess) -> None:
    headers = {"content-type": "application/connect+json", "connect-content-encoding": "gzip"}
    for extra, code in (({}, "unauthenticated"), (AUTH, "resource_exhausted")):
        with Growth(server) as growth:
            status, _, body = http(
                server, WATCH_CONFIG, envelope(gzip_bomb(), compressed=True), {**headers, **extra}
            )
        assert status == 200, body  # streaming protocols carry the error in the stream
        assert end_of_stream_error(body)["code"] == code
        assert growth.grown < RSS_GROWTH_LIMIT, f"RSS grew {growth.grown / MB:.0f} MB"


def raw_exchange(server: ServerProcess, head: str, body: bytes = b"") -> tuple[int, bytes]:
    """An HTTP/1.1 request written by hand (its body may be chunked, or never sent); the status
    and the JSON of the response."""
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=30) as sock:
        sender = threading.Thread(
            target=_send_quietly, args=(sock, head.encode() + body), daemon=True
        )
        sender.start()
        response = b""
        while not re.search(rb"\r\n\r\n.*\}", response, re.DOTALL):
            chunk = sock.recv(65536)
            if not chunk:
                break
            response += chunk
    status = int(response.split(b" ", 2)[1])
    found = re.search(rb"\{.*\}", response.split(b"\r\n\r\n", 1)[1], re.DOTALL)
    assert found, response
    return status, found.group(0)


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:
        pass  # the server answered without reading it all: that is the point


def test_a_body_declared_past_4_mib_is_refused_from_its_headers(server: ServerProcess) -> None:
    head = (
        f"POST {LIST_VOICES} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer {TOKEN}\r\ncontent-length: {64 << 30}\r\n\r\n"
    )
    status, body = raw_exchange(server, head)  # 64 GiB announced, nothing sent
    assert status == 429
    assert error_of(body)["code"] == "resource_exhausted"


def test_a_chunked_body_past_4_mib_is_cut_off(server: ServerProcess) -> None:
    head = (
        f"POST {LIST_VOICES} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer {TOKEN}\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    chunk = b" " * MB
    body = (f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n") * 16 + b"0\r\n\r\n"
    with Growth(server) as growth:
        status, response = raw_exchange(server, head, body)
    assert status == 429
    assert error_of(response)["code"] == "resource_exhausted"
    assert growth.grown < RSS_GROWTH_LIMIT


def test_malformed_requests_are_invalid_argument(server: ServerProcess) -> None:
    cases = [
        (b"{not json", JSON),
        (b'{"backend": 5}', JSON),  # a wrong type
        (b'{"nope": 1}', JSON),  # an unknown field
        (b"\xff\xfe\xfd", JSON),  # not UTF-8
        (b"[" * 100_000, JSON),  # nested past any parser's depth
        (b"\xff\xff\xff\xff", {"content-type": "application/proto"}),  # corrupt binary
        (b"\x1f\x8b\x08\x00garbage", {**JSON, "content-encoding": "gzip"}),  # corrupt gzip
    ]
    for data, headers in cases:
        status, _, body = http(server, LIST_VOICES, data, {**headers, **AUTH})
        assert (status, error_of(body)["code"]) == (400, "invalid_argument"), (data[:20], body)
        assert (
            "ListVoicesRequest" in error_of(body)["message"] or "gzip" in error_of(body)["message"]
        )


def test_a_malformed_stream_request_is_invalid_argument(server: ServerProcess) -> None:
    headers = {"content-type": "application/connect+json", **AUTH}
    status, _, body = http(server, WATCH_CONFIG, envelope(b'{"x": [1, 2'), headers)
    assert status == 200
    assert end_of_stream_error(body)["code"] == "invalid_argument"


def test_a_good_request_still_works(server: ServerProcess) -> None:
    status, _, body = http(server, LIST_VOICES, b"{}", {**JSON, **AUTH})
    assert status == 200, body
    assert json.loads(body)["voices"]
