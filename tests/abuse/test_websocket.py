"""Issue 14, case 1 on /converse: a WebSocket message past the 4 MiB limit, sent whole or as a
permessage-deflate bomb, costs the server no more than the limit."""

from __future__ import annotations

import base64
import os
import socket
import struct

from tests.abuse.conftest import (
    LAG_LIMIT_S,
    MB,
    RSS_GROWTH_LIMIT,
    TOKEN,
    Growth,
    Probe,
    ServerProcess,
)


def handshake(server: ServerProcess, extra: str = "") -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", server.http_port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            "GET /converse HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
            f"sec-websocket-key: {key}\r\nsec-websocket-version: 13\r\n"
            f"sec-websocket-protocol: voiceagent.v1, bearer.{TOKEN}\r\n{extra}\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(4096)
    return sock, response


def test_permessage_deflate_is_declined(server: ServerProcess) -> None:
    sock, response = handshake(server, "sec-websocket-extensions: permessage-deflate\r\n")
    sock.close()
    assert response.startswith(b"HTTP/1.1 101")
    assert b"sec-websocket-extensions" not in response.lower()


def test_a_message_past_4_mib_is_not_buffered(server: ServerProcess) -> None:
    """One 256 MiB frame, sent on after the server's 1009 close: hypercorn kept appending it."""
    sock, response = handshake(server)
    assert response.startswith(b"HTTP/1.1 101")
    with Growth(server) as growth, Probe(server) as probe:
        sock.sendall(bytes([0x82, 0x80 | 127]) + struct.pack(">Q", 256 * MB) + b"\0" * 4)
        try:
            for _ in range(256):
                sock.sendall(b"\0" * MB)
        except OSError:
            pass  # the server closed the connection: fine
        sock.close()
    assert growth.grown < RSS_GROWTH_LIMIT, f"RSS grew {growth.grown / MB:.0f} MB"
    assert probe.worst < LAG_LIMIT_S, f"/healthz took {probe.worst * 1000:.0f} ms"
