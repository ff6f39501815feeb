"""Garbage and mutated SIP datagrams at the running bridge (issue 8): it stays up, still answers
what deserves an answer, and its memory does not grow with what it is sent. Bounded in time.

Runs against both front doors: PJSIP itself (one process) and the dispatcher (workers).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.sip_peers import BridgeProcess, start_bridge
from tests.integration.test_sip_sipp import closed_port, options_ok

INVITE = (
    "INVITE sip:agent@127.0.0.1 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-fuzz{n}\r\n"
    "From: <sip:fuzz@127.0.0.1>;tag=f{n}\r\n"
    "To: <sip:agent@127.0.0.1>\r\n"
    "Call-ID: fuzz-{n}@127.0.0.1\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: <sip:fuzz@127.0.0.1:{port}>\r\n"
    "Max-Forwards: 70\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: 0\r\n\r\n"
)


def rss_kb(pid: int) -> int:
    total = 0
    children = Path(f"/proc/{pid}/task/{pid}/children")
    pids = [pid, *map(int, children.read_text().split())] if children.exists() else [pid]
    for p in pids:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


@pytest.fixture(scope="module", params=["pjsip", "dispatcher"])
def fuzzed_bridge(request: pytest.FixtureRequest) -> Iterator[BridgeProcess]:
    # No server behind it: calls that get through are refused with 503, nothing is kept.
    extra = ("--max-calls", "8") if request.param == "dispatcher" else ()
    bridge = start_bridge(closed_port(), "--log-level", "WARNING", *extra)
    yield bridge
    assert bridge.stop() == 0, "\n".join(bridge.lines[-20:])


def send_all(bridge: BridgeProcess, datagrams: list[bytes]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        for data in datagrams:
            s.sendto(data[:65000], ("127.0.0.1", bridge.sip_port))


def mutate(data: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    out = bytearray(data)
    for at, cut, insert in edits:
        at = min(at, len(out))
        out[at : at + cut] = insert
    return bytes(out)


edits = st.lists(
    st.tuples(st.integers(0, 420), st.integers(0, 8), st.binary(max_size=16)), max_size=5
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(st.one_of(st.binary(max_size=1500), edits), min_size=1, max_size=25))
def test_fuzzed_datagrams_leave_the_bridge_up(
    fuzzed_bridge: BridgeProcess, batch: list[bytes | list[tuple[int, int, bytes]]]
) -> None:
    datagrams = [
        item
        if isinstance(item, bytes)
        else mutate(INVITE.format(port=9, n=k).encode(), item)  # replies go to a dead port
        for k, item in enumerate(batch)
    ]
    send_all(fuzzed_bridge, datagrams)
    assert fuzzed_bridge.alive()
    assert options_ok(fuzzed_bridge)


async def test_memory_stays_flat_under_garbage(fuzzed_bridge: BridgeProcess) -> None:
    bridge = fuzzed_bridge

    def flood(rounds: int) -> None:
        for r in range(rounds):
            batch = [
                mutate(INVITE.format(port=9, n=f"{r}-{k}").encode(), [(k * 7 % 400, 3, b"\x00;;")])
                for k in range(200)
            ]
            send_all(bridge, batch + [bytes([k % 256]) * (k * 5) for k in range(50)])

    await asyncio.to_thread(flood, 5)  # warm up: allocator pools, PJSIP's transaction tables
    await asyncio.sleep(1)
    before = rss_kb(bridge.process.pid)
    await asyncio.to_thread(flood, 20)
    await asyncio.sleep(1)
    after = rss_kb(bridge.process.pid)
    assert bridge.alive() and options_ok(bridge)
    assert after - before < 20_000, f"RSS grew {after - before} kB over 5,000 datagrams"
