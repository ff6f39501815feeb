"""Process entry: the grpc.aio server with health, reflection and graceful drain, and beside it in
the same event loop the HTTP side (server/web.py: web page, browser RPCs, /metrics, /healthz)."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from voiceagent import tracing
from voiceagent.v1 import calls_pb2, calls_pb2_grpc, campaigns_pb2, voice_agent_pb2
from voiceagent.v1 import campaigns_pb2_grpc as cpb_grpc
from voiceagent.v1 import voice_agent_pb2_grpc as pb_grpc

from server.auth import BearerTokenInterceptor
from server.backends.llm.base import LLM
from server.backends.registry import Backends
from server.backends.tts.base import TTS
from server.call_records import recordings_dir
from server.calls import CallsService
from server.campaign_store import open_campaign_store
from server.campaigns import CampaignsService
from server.limits import MAX_MESSAGE_BYTES
from server.options import Defaults, ServerDefaults
from server.service import VoiceAgentService
from server.settings import Settings
from server.tasks import cancel_and_wait
from server.web import WEB_DIR, WebGateway

log = logging.getLogger("voice_agent")

_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # Load balancers drop idle HTTP/2 connections; pings keep long calls alive through them.
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
]
SERVICE_NAME = voice_agent_pb2.DESCRIPTOR.services_by_name["VoiceAgent"].full_name


def initial_defaults(settings: Settings, backends: Backends) -> Defaults:
    """The defaults before any UpdateConfig: each default backend's first model and voice."""
    llm = backends.instance("llm", settings.llm)
    tts = backends.instance("tts", settings.tts)
    assert isinstance(llm, LLM) and isinstance(tts, TTS)
    return Defaults(
        stt=settings.stt,
        llm_model=llm.models()[0],
        tts_voice=tts.voices()[0].id,
        system_prompt=settings.system_prompt,
    )


class VoiceAgentServer:
    """A running server: gRPC port bound at once, health NOT_SERVING until backends are loaded."""

    def __init__(self, settings: Settings, backends: Backends | None = None) -> None:
        self.settings = settings
        self.backends = backends or Backends()
        self.ready = asyncio.Event()
        interceptors = [BearerTokenInterceptor(settings.token)] if settings.token else []
        self.server = grpc.aio.server(options=_OPTIONS, interceptors=interceptors)
        self.campaigns = open_campaign_store(settings.database_url, settings.data_path)
        self.defaults = ServerDefaults(initial_defaults(settings, self.backends), self.campaigns)
        self.service = VoiceAgentService(
            settings, self.backends, self.ready, self.defaults, self.campaigns
        )
        campaigns_service = CampaignsService(self.campaigns, self.backends)
        self.calls = CallsService(
            self.campaigns, recordings_dir(settings.data_path), settings.call_retention_days
        )
        calls_pb2_grpc.add_CallsServicer_to_server(self.calls, self.server)  # type: ignore[no-untyped-call]
        cpb_grpc.add_CampaignsServicer_to_server(  # type: ignore[no-untyped-call]
            campaigns_service, self.server
        )
        self.health = health.aio.HealthServicer()
        pb_grpc.add_VoiceAgentServicer_to_server(self.service, self.server)  # type: ignore[no-untyped-call]
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (
                SERVICE_NAME,
                campaigns_pb2.DESCRIPTOR.services_by_name["Campaigns"].full_name,
                calls_pb2.DESCRIPTOR.services_by_name["Calls"].full_name,
                health.SERVICE_NAME,
                reflection.SERVICE_NAME,
            ),
            self.server,
        )
        address = f"{settings.host}:{settings.port}"
        if settings.tls_cert or settings.tls_key:
            if not (settings.tls_cert and settings.tls_key):
                raise SystemExit("TLS needs both TLS_CERT and TLS_KEY")
            credentials = grpc.ssl_server_credentials(
                [(Path(settings.tls_key).read_bytes(), Path(settings.tls_cert).read_bytes())]
            )
            self.port = self.server.add_secure_port(address, credentials)
        else:
            self.port = self.server.add_insecure_port(address)
        if self.port == 0:
            raise SystemExit(f"cannot listen on {settings.host}:{settings.port}")
        self.serving = False  # what the health service says, for /healthz
        self.web = WebGateway(
            host=settings.host,
            port=settings.http_port,
            token=settings.token,
            converse=self.service.converse,
            rpc_services=[
                (self.service, voice_agent_pb2.DESCRIPTOR.services_by_name["VoiceAgent"]),
                (campaigns_service, campaigns_pb2.DESCRIPTOR.services_by_name["Campaigns"]),
                (self.calls, calls_pb2.DESCRIPTOR.services_by_name["Calls"]),
            ],
            serving=lambda: self.serving,
            max_message_bytes=MAX_MESSAGE_BYTES,
            web_dir=Path(settings.web_dir) if settings.web_dir else WEB_DIR,
            send_timeout=settings.send_timeout_seconds,
        )
        self.http_port = self.web.port
        self._loader: asyncio.Task[None] | None = None
        self._stopped = False

    async def start(self) -> None:
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.defaults.start()
        self.calls.start()
        await self.server.start()
        self.service.loop_lag.start()
        await self.web.start()
        self._loader = asyncio.create_task(self._load(), name="load-backends")

    async def _load(self) -> None:
        started = time.monotonic()
        s = self.settings
        if s.preload:
            await asyncio.gather(
                self.backends.get_stt(s.stt),
                self.backends.get_llm(s.llm),
                self.backends.get_tts(s.tts),
            )
        self.ready.set()
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "ready in %.1f s: stt=%s llm=%s tts=%s", time.monotonic() - started, s.stt, s.llm, s.tts
        )

    async def wait_ready(self) -> None:
        assert self._loader is not None
        await self._loader

    async def _set_health(self, status: int) -> None:
        self.serving = status == health_pb2.HealthCheckResponse.SERVING
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)

    async def drain(self, seconds: float) -> None:
        """SIGTERM: take no new streams, let each running one finish its current turn, end the
        rest after `seconds` with UNAVAILABLE (clients reconnect to another instance)."""
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.service.admission.drain(seconds)
        await self.stop(grace=2)

    async def stop(self, grace: float | None = None) -> None:
        """Stop taking streams, give running ones `grace` seconds, then end them."""
        if self._stopped:
            return
        self._stopped = True
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        if self._loader is not None and not self._loader.done():
            await cancel_and_wait(self._loader)
        await (
            self.defaults.close()
        )  # ends WatchConfig streams, which would otherwise hold the drain
        await asyncio.gather(self.web.stop(grace or 0), self.server.stop(grace))
        await self.service.aclose()
        await self.calls.close()
        await self.backends.aclose()
        self.campaigns.close()


async def serve(settings: Settings) -> None:
    server = VoiceAgentServer(settings)
    await server.start()
    log.info(
        "gRPC on port %d (health NOT_SERVING until models load); web page, browser RPCs, "
        "/metrics and /healthz on http://127.0.0.1:%d",
        server.port,
        server.http_port,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loader = asyncio.ensure_future(server.wait_ready())
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait({loader, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if loader.done() and loader.exception() is not None:
        raise SystemExit(f"could not load the models: {loader.exception()}")
    await stopper
    log.info(
        "draining: %d session(s), up to %d s to finish their turn",
        len(server.service.admission.sessions),
        settings.drain_seconds,
    )
    await server.drain(settings.drain_seconds)


def run() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if tracing.configure("voice-agent"):
        log.info("tracing: spans exported over OTLP/gRPC")
    try:
        asyncio.run(serve(Settings.from_env()))
    finally:
        tracing.shutdown()
