"""SIPp (Debian `sip-tester`) scenarios against the bridge: the SIP edge cases a PBX would send.

Scenarios live in tests/integration/sipp/*.xml. The bridge runs as its own process, as users
run it; behind it the real offline server, or no server at all where that is the point.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest

from server.main import VoiceAgentServer
from tests.integration.conftest import pause, speak
from tests.integration.sip_peers import (
    SIPP_DIR,
    BridgeProcess,
    free_udp_port,
    require,
    run_sipp,
    running_bridge,
    write_mulaw_wav,
)

RATE = 8000


def options_ok(bridge: BridgeProcess) -> bool:
    """An OPTIONS keepalive gets 200: the bridge is up and answering. Retransmitted as a SIP
    client does over UDP (RFC 3261 timer E: 0.5, 1, 2 s), since a datagram can be dropped."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        request = (
            f"OPTIONS sip:agent@127.0.0.1:{bridge.sip_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-keepalive{port}\r\n"
            "From: <sip:probe@127.0.0.1>;tag=probe\r\n"
            f"To: <sip:agent@127.0.0.1:{bridge.sip_port}>\r\n"
            f"Call-ID: keepalive-{port}@127.0.0.1\r\n"
            "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        for wait in (0.5, 1.0, 2.0, 4.0):
            s.sendto(request, ("127.0.0.1", bridge.sip_port))
            s.settimeout(wait)
            try:
                return s.recv(4000).startswith(b"SIP/2.0 200")
            except TimeoutError:
                continue
        return False


def ended_calls(bridge: BridgeProcess) -> list[dict[str, object]]:
    return [
        json.loads(line.split("call ended ", 1)[1])
        for line in bridge.lines
        if "call ended " in line
    ]


@pytest.fixture
def question_wav(tmp_path: Path) -> Path:
    pcm = np.concatenate([pause(0.5, RATE), speak("What is the capital of France?", RATE)])
    return write_mulaw_wav(tmp_path / "question_ulaw.wav", np.concatenate([pcm, pause(1.0, RATE)]))


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never answers: a hung server."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield s.getsockname()[1]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_basic_call_with_rtp(
    offline_server: VoiceAgentServer, tmp_path: Path, question_wav: Path
) -> None:
    async with running_bridge(offline_server.port) as bridge:
        result = await asyncio.to_thread(
            run_sipp, "basic_call", bridge.sip_port, tmp_path, 1, 10, 7000
        )
        assert result.successful == 1, result.output[-3000:]
        heard = await asyncio.to_thread(bridge.wait_for, "heard:", 10)
        assert "capital" in heard[0].lower()
        await asyncio.to_thread(bridge.wait_for, "call ended", 10)
        [call] = ended_calls(bridge)
        ticks = call["seconds"] * 25  # the media clock's 40 ms frames (--tick-ms 40)
        assert call["frames_in"] > 0.9 * ticks and call["frames_out"] > 0.9 * ticks, call


async def test_cancel_before_answer(silent_server: int, tmp_path: Path) -> None:
    async with running_bridge(silent_server, "--answer-timeout", "20") as bridge:
        result = await asyncio.to_thread(run_sipp, "cancel", bridge.sip_port, tmp_path)
        assert result.successful == 1, result.output[-3000:]
        [line] = await asyncio.to_thread(bridge.wait_for, "call ended", 5)
        assert "487" in line
        assert not any("answered" in x for x in bridge.lines)
        assert options_ok(bridge)


async def test_server_unreachable_gets_503_with_retry_after(tmp_path: Path) -> None:
    async with running_bridge(closed_port()) as bridge:
        result = await asyncio.to_thread(run_sipp, "unavailable", bridge.sip_port, tmp_path)
        assert result.successful == 1, result.output[-3000:]


async def test_hung_server_gets_503_not_a_silent_hang(silent_server: int, tmp_path: Path) -> None:
    async with running_bridge(silent_server, "--answer-timeout", "1") as bridge:
        result = await asyncio.to_thread(run_sipp, "unavailable", bridge.sip_port, tmp_path)
        assert result.successful == 1, result.output[-3000:]


async def test_bye_from_the_bridge_when_rtp_stops(
    offline_server: VoiceAgentServer, tmp_path: Path
) -> None:
    async with running_bridge(offline_server.port, "--rtp-timeout", "2") as bridge:
        result = await asyncio.to_thread(run_sipp, "bridge_bye", bridge.sip_port, tmp_path)
        assert result.successful == 1, result.output[-3000:]
        assert any("no RTP" in line for line in bridge.lines)


async def test_malformed_invite_gets_400_and_bridge_stays_up(
    offline_server: VoiceAgentServer, tmp_path: Path
) -> None:
    async with running_bridge(offline_server.port) as bridge:
        result = await asyncio.to_thread(run_sipp, "malformed_invite", bridge.sip_port, tmp_path)
        assert result.successful == 1, result.output[-3000:]
        assert bridge.alive() and options_ok(bridge)


async def test_max_calls_then_busy_here(offline_server: VoiceAgentServer, tmp_path: Path) -> None:
    async with running_bridge(offline_server.port, "--max-calls", "0") as bridge:
        result = await asyncio.to_thread(run_sipp, "busy", bridge.sip_port, tmp_path)
        assert result.successful == 1, result.output[-3000:]


async def test_twenty_concurrent_calls(
    offline_server: VoiceAgentServer, tmp_path: Path, question_wav: Path
) -> None:
    async with running_bridge(offline_server.port, "--max-calls", "20") as bridge:
        result = await asyncio.to_thread(
            run_sipp, "basic_call", bridge.sip_port, tmp_path, 20, 40, 12000, 90
        )
        assert result.successful == 20 and result.failed == 0, result.output[-3000:]
        await asyncio.to_thread(bridge.wait_for, "call ended", 15, 20)
        calls = ended_calls(bridge)
        assert len(calls) == 20
        assert all(c["frames_in"] > 0.9 * c["seconds"] * 25 for c in calls), calls
        heard = [line for line in bridge.lines if "heard:" in line]
        assert len(heard) >= 15, f"the server heard {len(heard)} of 20 questions"


def start_registrar(scenario: str, workdir: Path, port: int) -> subprocess.Popen[str]:
    """SIPp as a registrar on `port`, for one REGISTER dialogue."""
    return subprocess.Popen(
        [
            require("sipp", "sip-tester"),
            *("-sf", str(SIPP_DIR / f"{scenario}.xml"), "-i", "127.0.0.1", "-p", str(port)),
            *("-m", "1", "-nostdin", "-trace_err", "-timeout", "20s"),
        ],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@contextlib.asynccontextmanager
async def registered_bridge(
    scenario: str,
    server_port: int,
    workdir: Path,
    monkeypatch: pytest.MonkeyPatch,
    password: str = "secret",
) -> AsyncIterator[tuple[subprocess.Popen[str], BridgeProcess]]:
    """SIPp as the registrar, and a bridge told to --register there (user agent)."""
    registrar_port = free_udp_port(2)
    registrar = start_registrar(scenario, workdir, registrar_port)
    monkeypatch.setenv("SIP_TEST_PASSWORD", password)
    try:
        await asyncio.sleep(0.5)
        async with running_bridge(
            server_port,
            *("--register", f"sip:agent@127.0.0.1:{registrar_port}"),
            *("--password-env", "SIP_TEST_PASSWORD"),
        ) as bridge:
            yield registrar, bridge
    finally:
        if registrar.poll() is None:
            registrar.kill()
        await asyncio.to_thread(registrar.communicate)


async def test_register_to_a_registrar(
    offline_server: VoiceAgentServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registrar that accepts by address (an IP trunk): 200 to the first REGISTER."""
    async with registered_bridge("registrar_open", offline_server.port, tmp_path, monkeypatch) as (
        registrar,
        bridge,
    ):
        output, _ = await asyncio.to_thread(registrar.communicate, timeout=30)
        assert registrar.returncode == 0, output[-3000:]
        await asyncio.to_thread(bridge.wait_for, "registration: 200", 10)


async def test_digest_register_refresh_call_and_unregister(
    offline_server: VoiceAgentServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PBX with digest auth (registrar_digest.xml): SIPp's verifyauth checks every REGISTER
    is signed with the right password (MD5, qop=auth, nc/cnonce), a stale nonce on the refresh
    is answered, the PBX's INVITE to the registered contact is answered by a worker, and
    SIGTERM removes the contact with a signed Expires: 0 (else SIPp exits non-zero)."""
    async with registered_bridge(
        "registrar_digest", offline_server.port, tmp_path, monkeypatch
    ) as (registrar, bridge):
        await asyncio.to_thread(bridge.wait_for, "registration: 200", 10)
        [line] = await asyncio.to_thread(bridge.wait_for, "call ended", 20)
        assert "200 Normal call clearing" in line, line
        assert registrar.poll() is None, "the registrar gave up before the un-REGISTER"
        code = await asyncio.to_thread(bridge.stop)  # SIGTERM: Expires: 0 before exiting
        assert code == 0, "\n".join(bridge.lines[-30:])
        output, _ = await asyncio.to_thread(registrar.communicate, timeout=30)
        assert registrar.returncode == 0, output[-3000:]
        assert any("unregistered sip:agent@127.0.0.1" in x for x in bridge.lines), bridge.lines
        assert not any("registration refused" in x for x in bridge.lines), bridge.lines


async def test_wrong_password_is_one_clear_error_and_calls_still_work(
    offline_server: VoiceAgentServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """registrar.xml (RFC 2069 style, no qop) answers 403 to a REGISTER signed with the wrong
    password: one clear error line, and the bridge keeps answering."""
    async with registered_bridge(
        "registrar", offline_server.port, tmp_path, monkeypatch, password="wrong"
    ) as (_, bridge):
        [line] = await asyncio.to_thread(bridge.wait_for, "registration refused", 10)
        assert "403" in line and "password" in line and "direct calls still work" in line, line
        assert bridge.alive() and options_ok(bridge)
        assert len([x for x in bridge.lines if "registration refused" in x]) == 1


async def test_dtmf_keys_reach_the_agent_as_text(
    offline_server: VoiceAgentServer, tmp_path: Path
) -> None:
    async with running_bridge(offline_server.port) as bridge:
        result = await asyncio.to_thread(run_sipp, "dtmf", bridge.sip_port, tmp_path, 1, 10, 3000)
        assert result.successful == 1, result.output[-3000:]
        [keys] = await asyncio.to_thread(bridge.wait_for, "keys:", 5)
        assert "1 2" in keys, keys


async def test_hold_keeps_the_call_without_rtp(
    offline_server: VoiceAgentServer, tmp_path: Path
) -> None:
    """On hold for 4 s with a 2 s RTP timeout: the call survives, is resumed, then hung up."""
    async with running_bridge(offline_server.port, "--rtp-timeout", "2") as bridge:
        result = await asyncio.to_thread(run_sipp, "hold", bridge.sip_port, tmp_path, 1, 10, 4000)
        assert result.successful == 1, result.output[-3000:]
        [line] = await asyncio.to_thread(bridge.wait_for, "call ended", 5)
        assert "200 Normal call clearing" in line, line
        assert not any("no RTP" in x for x in bridge.lines)
