"""`voice-agent-sip`: answer SIP calls and talk to the voice agent server over Converse."""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import signal
import socket
import sys
from pathlib import Path

from voiceagent import tracing
from voiceagent.client import VoiceAgentClient

from sip_bridge.bridge import Bridge, BridgeSettings
from sip_bridge.dispatch import Dispatcher, Worker
from sip_bridge.registration import Registration, RegistrationError, local_address, parse_target
from sip_bridge.routing import RouteError, load_routes
from sip_bridge.sip import PJSUA_MAX_CALLS, SipSettings, SipStack

log = logging.getLogger("sip_bridge")

CALLS_PER_WORKER = PJSUA_MAX_CALLS  # PJSIP answers 486 itself when its slots are full
# A small office's calls at once; a worker process (4 calls) costs ~60 MB and ~1 % of a core idle.
DEFAULT_MAX_CALLS = 16
RTP_PORTS_PER_WORKER = 200


def worker_count(max_calls: int, workers: int) -> int:
    """--workers, or as many processes as --max-calls needs at CALLS_PER_WORKER each."""
    return workers or max(1, math.ceil(max_calls / CALLS_PER_WORKER))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="voice-agent-sip",
        description="Answer SIP calls (e.g. from MicroSIP) and turn each into a voice agent "
        "conversation on the server's Converse stream.",
    )
    p.add_argument("--sip-port", type=int, default=5060, help="UDP port for SIP (default 5060)")
    p.add_argument("--sip-host", default="0.0.0.0", help="address to bind SIP and RTP to")
    p.add_argument("--rtp-port", type=int, default=4000, help="first RTP port (default 4000)")
    p.add_argument("--server", default="127.0.0.1:50051", help="the voice agent's gRPC address")
    p.add_argument("--tls", action="store_true", help="connect to the server with TLS")
    p.add_argument("--ca-file", help="PEM file of the CA that signed the server's certificate")
    p.add_argument(
        "--route",
        action="append",
        default=[],
        metavar="USER=CAMPAIGN_ID",
        help="calls to USER (sip:USER@host, or a number) use that campaign; USER * is the "
        "fallback. Repeatable. Without routes every call gets the server's defaults.",
    )
    p.add_argument("--routes", type=Path, help="a file of USER=CAMPAIGN_ID lines")
    p.add_argument(
        "--register",
        default="",
        metavar="sip:USER@HOST[:PORT]",
        help="also REGISTER as USER at that registrar (PBX or SIP provider), with digest auth; "
        "the dispatcher on --sip-port registers itself as the contact and refreshes it",
    )
    p.add_argument(
        "--password-env",
        default="SIP_PASSWORD",
        metavar="VAR",
        help="environment variable holding the --register password (default SIP_PASSWORD)",
    )
    p.add_argument(
        "--max-calls",
        type=int,
        default=DEFAULT_MAX_CALLS,
        help=f"then 486 Busy Here (default {DEFAULT_MAX_CALLS}: {DEFAULT_MAX_CALLS // CALLS_PER_WORKER} "
        "worker processes behind a dispatcher)",
    )
    p.add_argument(
        "--rtp-timeout", type=float, default=30.0, help="end a call after this long without RTP"
    )
    p.add_argument(
        "--answer-timeout",
        type=float,
        default=5.0,
        help="seconds to wait for the server before answering 503",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        help="bridge processes behind a dispatcher on --sip-port, on the ports after it; "
        f"default: enough for --max-calls at {CALLS_PER_WORKER} calls each (PJSIP's limit)",
    )
    p.add_argument("--worker-index", type=int, default=-1, help=argparse.SUPPRESS)
    p.add_argument(
        "--wideband",
        action="store_true",
        help="also take G.722 (16 kHz); the media clock then runs at 16 kHz and every G.711 "
        "call is resampled twice (more CPU per call)",
    )
    p.add_argument(
        "--tick-ms",
        type=int,
        choices=(20, 40),
        default=40,
        help="media clock period: RTP stays 20 ms packets; 40 halves the CPU per call "
        "(packets then leave in pairs every 40 ms)",
    )
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--pjsip-log-level", type=int, default=1, help="PJSIP's own log (0-6)")
    return p.parse_args(argv)


async def run(args: argparse.Namespace) -> None:
    try:
        routes = load_routes(args.route, args.routes)
    except (RouteError, OSError) as err:
        sys.exit(f"voice-agent-sip: {err}")
    token = os.environ.get("VOICE_AGENT_TOKEN") or None
    client = VoiceAgentClient(args.server, token=token, tls=args.tls, ca_file=args.ca_file)
    workers = worker_count(args.max_calls, args.workers)
    index = max(0, args.worker_index)
    max_calls = args.max_calls  # a worker is started with its share
    if max_calls > CALLS_PER_WORKER:
        sys.exit(
            f"voice-agent-sip: {max_calls} calls per process is more than PJSIP's "
            f"{CALLS_PER_WORKER} (PJSUA_MAX_CALLS of the pjsua2-python wheel): use more --workers"
        )
    settings = BridgeSettings(
        routes=routes,
        max_calls=max_calls,
        answer_timeout=args.answer_timeout,
        tick_ms=args.tick_ms,
    )
    sip_settings = SipSettings(
        host=args.sip_host,
        port=args.sip_port,
        rtp_port=args.rtp_port + index * RTP_PORTS_PER_WORKER,
        max_calls=max_calls,
        rtp_timeout=args.rtp_timeout,
        wideband=args.wideband,
        tick_ms=args.tick_ms,
        pjsip_log_level=args.pjsip_log_level,
    )
    loop = asyncio.get_running_loop()
    async with client:
        bridge = Bridge(settings, client)
        stack = SipStack(sip_settings, bridge, loop)
        bridge.stack = stack
        if args.worker_index >= 0:  # tell the dispatcher how busy this worker is
            bridge.on_load = lambda calls: print(f"load {calls}", flush=True)
        try:
            stack.start()
        except RuntimeError as err:
            sys.exit(f"voice-agent-sip: {err}")
        if args.worker_index >= 0:  # behind the dispatcher (several, or one with --register)
            print(f"worker {index + 1} of {workers} ready", flush=True)
        else:
            print(f"SIP bridge listening on udp {args.sip_host}:{args.sip_port}", flush=True)
        pump = asyncio.create_task(bridge.pump(), name="audio pump")
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("stopping: hanging up %d calls", len(bridge.sessions))
        await bridge.hang_up_all()
        pump.cancel()
        await asyncio.to_thread(stack.stop)


async def registration_for(args: argparse.Namespace, dispatcher: Dispatcher) -> Registration:
    """The --register address-of-record, its password, and where the registrar is."""
    try:
        target = parse_target(args.register)
    except RegistrationError as err:
        sys.exit(f"voice-agent-sip: {err}")
    password = os.environ.get(args.password_env, "")
    if not password:
        sys.exit(f"voice-agent-sip: --register needs the password in ${args.password_env}")
    loop = asyncio.get_running_loop()
    try:
        found = await loop.getaddrinfo(target.host, target.port, family=socket.AF_INET)
    except OSError as err:
        sys.exit(f"voice-agent-sip: cannot resolve the registrar {target.host!r}: {err}")
    registrar = (str(found[0][4][0]), target.port)
    host = args.sip_host if args.sip_host not in ("", "0.0.0.0") else local_address(registrar)
    return Registration(target, password, (host, args.sip_port), registrar, dispatcher.send)


async def supervise(args: argparse.Namespace, argv: list[str], workers: int) -> int:
    """The dispatcher on --sip-port, and `workers` bridge processes on the ports after it.

    Each worker is a whole bridge (its own PJSIP, its own gRPC channel). It reports its call
    count on stdout (`load N`) and the dispatcher sends new calls to the least loaded one. If a
    worker dies, the others are stopped too: a supervisor (systemd, Kubernetes) restarts all.
    With --register the dispatcher also registers (once the workers are ready) and removes the
    registration before the workers stop.
    """
    loop = asyncio.get_running_loop()
    ports = [args.sip_port + 1 + k for k in range(workers)]
    per_worker = math.ceil(args.max_calls / workers)
    dispatcher = Dispatcher(args.sip_host, [Worker(port, per_worker) for port in ports])
    registration = await registration_for(args, dispatcher) if args.register else None
    transport, _ = await loop.create_datagram_endpoint(
        lambda: dispatcher, local_addr=(args.sip_host, args.sip_port)
    )
    dispatcher.registration = registration
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sip_bridge",
            *argv,
            *("--sip-port", str(port), "--max-calls", str(per_worker)),
            *("--workers", str(workers), "--worker-index", str(k)),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        for k, port in enumerate(ports)
    ]
    ready = asyncio.Semaphore(0)
    stopping = asyncio.Event()

    async def relay(k: int, child: asyncio.subprocess.Process) -> None:
        assert child.stdout is not None
        async for raw in child.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            if line.startswith("load "):
                dispatcher.report_load(k, int(line.split()[1]))
                continue
            print(line, flush=True)
            if line == f"worker {k + 1} of {workers} ready":
                ready.release()
        stopping.set()  # one worker gone: stop them all

    relays = [asyncio.create_task(relay(k, c)) for k, c in enumerate(children)]
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await asyncio.wait_for(asyncio.gather(*(ready.acquire() for _ in children)), 60)
        print(
            f"SIP bridge listening on udp {args.sip_host}:{args.sip_port} ({workers} workers)",
            flush=True,
        )
        if registration is not None:
            registration.start()
    except TimeoutError:
        log.error("workers did not start")
        stopping.set()
    await stopping.wait()
    if registration is not None:
        await registration.stop()
    for child in children:
        if child.returncode is None:
            child.terminate()
    codes = [await child.wait() for child in children]
    await asyncio.gather(*relays, return_exceptions=True)
    transport.close()
    return max(codes, key=abs)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    # PJSIP's media clock thread needs the GIL twice per call every 20 ms; with Python's default
    # 5 ms switch interval each of those waits can take 5 ms behind the asyncio thread.
    sys.setswitchinterval(0.0005)
    workers = worker_count(args.max_calls, args.workers)
    if (workers > 1 or args.register) and args.worker_index < 0:  # the dispatcher registers
        sys.exit(asyncio.run(supervise(args, argv, workers)))
    if tracing.configure("voice-agent-sip"):
        log.info("tracing: spans exported over OTLP/gRPC")
    asyncio.run(run(args))
    tracing.shutdown()  # flush the last calls' spans before the hard exit below
    # PJSIP is destroyed by now (SipStack.stop); skip the interpreter's teardown, which would
    # still finalize SWIG proxies of pjsua2 objects and can crash after a clean shutdown.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
