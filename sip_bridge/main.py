"""`voice-agent-sip`: answer SIP calls and talk to the voice agent server over Converse."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from voiceagent.client import VoiceAgentClient

from sip_bridge.bridge import Bridge, BridgeSettings
from sip_bridge.routing import RouteError, load_routes
from sip_bridge.sip import SipSettings, SipStack

log = logging.getLogger("sip_bridge")


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
    p.add_argument("--register", default="", metavar="sip:USER@HOST", help="also REGISTER there")
    p.add_argument(
        "--password-env",
        default="SIP_PASSWORD",
        metavar="VAR",
        help="environment variable holding the --register password (default SIP_PASSWORD)",
    )
    p.add_argument("--max-calls", type=int, default=100, help="then 486 Busy Here (default 100)")
    p.add_argument(
        "--rtp-timeout", type=float, default=30.0, help="end a call after this long without RTP"
    )
    p.add_argument(
        "--answer-timeout",
        type=float,
        default=5.0,
        help="seconds to wait for the server before answering 503",
    )
    p.add_argument("--narrowband", action="store_true", help="G.711 only (no G.722)")
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--pjsip-log-level", type=int, default=1, help="PJSIP's own log (0-6)")
    return p.parse_args(argv)


async def run(args: argparse.Namespace) -> None:
    try:
        routes = load_routes(args.route, args.routes)
    except (RouteError, OSError) as err:
        sys.exit(f"voice-agent-sip: {err}")
    password = os.environ.get(args.password_env, "") if args.register else ""
    if args.register and not password:
        sys.exit(f"voice-agent-sip: --register needs the password in ${args.password_env}")
    token = os.environ.get("VOICE_AGENT_TOKEN") or None
    client = VoiceAgentClient(args.server, token=token, tls=args.tls, ca_file=args.ca_file)
    settings = BridgeSettings(
        routes=routes, max_calls=args.max_calls, answer_timeout=args.answer_timeout
    )
    sip_settings = SipSettings(
        host=args.sip_host,
        port=args.sip_port,
        rtp_port=args.rtp_port,
        max_calls=args.max_calls,
        rtp_timeout=args.rtp_timeout,
        wideband=not args.narrowband,
        register=args.register,
        password=password,
        pjsip_log_level=args.pjsip_log_level,
    )
    loop = asyncio.get_running_loop()
    async with client:
        bridge = Bridge(settings, client)
        stack = SipStack(sip_settings, bridge, loop)
        bridge.stack = stack
        try:
            stack.start()
        except RuntimeError as err:
            sys.exit(f"voice-agent-sip: {err}")
        print(f"SIP bridge listening on udp {args.sip_host}:{args.sip_port}", flush=True)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("stopping: hanging up %d calls", len(bridge.sessions))
        await bridge.hang_up_all()
        await asyncio.to_thread(stack.stop)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    asyncio.run(run(args))
