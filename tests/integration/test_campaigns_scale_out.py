"""Two server instances sharing one PostgreSQL: campaigns are shared, concurrent edits are safe."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import psycopg
from google.protobuf.field_mask_pb2 import FieldMask
from voiceagent.v1 import campaigns_pb2 as cpb
from voiceagent.v1 import campaigns_pb2_grpc as cpb_grpc

from server.main import VoiceAgentServer
from server.settings import Settings


async def test_two_instances_share_campaigns_without_losing_updates(postgres_url: str) -> None:
    dbname = f"scale_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    url = f"{postgres_url.rsplit('/', 1)[0]}/{dbname}"
    servers = [
        VoiceAgentServer(
            Settings(port=0, http_port=0, host="127.0.0.1", preload=False, database_url=url)
        )
        for _ in range(2)
    ]
    for server in servers:
        await server.start()
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{s.port}") for s in servers]
    a, b = (cpb_grpc.CampaignsStub(c) for c in channels)
    try:
        created = await a.CreateCampaign(
            cpb.CreateCampaignRequest(campaign=cpb.Campaign(name="Shared", persona="p0"))
        )
        assert (await b.GetCampaign(cpb.GetCampaignRequest(id=created.id))).name == "Shared"

        # Writers on different fields, interleaved across instances: nobody's change is lost.
        async def edit(api: cpb_grpc.CampaignsStub, field: str, n: int) -> None:
            for i in range(n):
                campaign = cpb.Campaign(id=created.id, **{field: f"{field}-{i}"})
                await api.UpdateCampaign(
                    cpb.UpdateCampaignRequest(
                        campaign=campaign, update_mask=FieldMask(paths=[field])
                    )
                )

        await asyncio.gather(edit(a, "persona", 20), edit(b, "greeting", 20))
        final = await a.GetCampaign(cpb.GetCampaignRequest(id=created.id))
        assert (final.persona, final.greeting, final.etag) == ("persona-19", "greeting-19", "41")

        # The same etag from both instances: exactly one wins, the other is told to retry.
        requests = [
            cpb.UpdateCampaignRequest(
                campaign=cpb.Campaign(id=created.id, name=name, etag=final.etag),
                update_mask=FieldMask(paths=["name"]),
            )
            for name in ("from-a", "from-b")
        ]
        results = await asyncio.gather(
            a.UpdateCampaign(requests[0]), b.UpdateCampaign(requests[1]), return_exceptions=True
        )
        errors = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert len(errors) == 1 and errors[0].code() == grpc.StatusCode.ABORTED
    finally:
        for channel in channels:
            await channel.close()
        for server in servers:
            await server.stop(0)
