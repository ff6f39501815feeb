"""The Campaigns service and campaigns in Converse, on an in-memory SQLite store."""

from __future__ import annotations

import grpc
from google.protobuf.field_mask_pb2 import FieldMask
from voiceagent.client import linear16
from voiceagent.v1 import campaigns_pb2 as cpb
from voiceagent.v1 import campaigns_pb2_grpc as cpb_grpc
from voiceagent.v1 import voice_agent_pb2 as pb

from tests.conftest import Call
from tests.unit.conftest import Scripted, StartServer
from tests.unit.test_options import code_of


def campaigns(s: Scripted) -> tuple[grpc.aio.Channel, cpb_grpc.CampaignsStub]:
    channel = grpc.aio.insecure_channel(s.target)
    return channel, cpb_grpc.CampaignsStub(channel)


async def test_campaign_crud(start_server: StartServer) -> None:
    s = await start_server()
    channel, api = campaigns(s)
    async with channel:
        created = await api.CreateCampaign(
            cpb.CreateCampaignRequest(
                campaign=cpb.Campaign(
                    name="Support",
                    persona="You are Ada.",
                    greeting="Hi, Ada here.",
                    tts_voice="bass",
                    language="en-US",
                )
            )
        )
        assert created.id and created.etag == "1" and created.update_time.seconds > 0
        assert (await api.GetCampaign(cpb.GetCampaignRequest(id=created.id))) == created

        updated = await api.UpdateCampaign(
            cpb.UpdateCampaignRequest(
                campaign=cpb.Campaign(id=created.id, greeting="Hello!", etag=created.etag),
                update_mask=FieldMask(paths=["greeting"]),
            )
        )
        assert (
            updated.greeting == "Hello!"
            and updated.persona == "You are Ada."
            and updated.etag == "2"
        )
        stale = cpb.UpdateCampaignRequest(
            campaign=cpb.Campaign(id=created.id, name="X", etag="1"),
            update_mask=FieldMask(paths=["name"]),
        )
        assert (await code_of(api.UpdateCampaign(stale)))[0] == grpc.StatusCode.ABORTED

        for i in range(4):
            await api.CreateCampaign(cpb.CreateCampaignRequest(campaign=cpb.Campaign(name=f"c{i}")))
        names, token = [], ""
        while True:
            page = await api.ListCampaigns(cpb.ListCampaignsRequest(page_size=2, page_token=token))
            names += [c.name for c in page.campaigns]
            token = page.next_page_token
            if not token:
                break
        assert names == ["Support", "c0", "c1", "c2", "c3"]

        await api.DeleteCampaign(cpb.DeleteCampaignRequest(id=created.id))
        assert (await code_of(api.GetCampaign(cpb.GetCampaignRequest(id=created.id))))[
            0
        ] == grpc.StatusCode.NOT_FOUND
        assert (await code_of(api.DeleteCampaign(cpb.DeleteCampaignRequest(id=created.id))))[
            0
        ] == grpc.StatusCode.NOT_FOUND


async def test_campaign_errors(start_server: StartServer) -> None:
    s = await start_server()
    channel, api = campaigns(s)
    async with channel:
        cases = [
            (
                api.CreateCampaign(
                    cpb.CreateCampaignRequest(campaign=cpb.Campaign(persona="no name"))
                ),
                grpc.StatusCode.INVALID_ARGUMENT,
                "campaign.name",
            ),
            (
                api.CreateCampaign(
                    cpb.CreateCampaignRequest(campaign=cpb.Campaign(name="a", tts_voice="tenor"))
                ),
                grpc.StatusCode.NOT_FOUND,
                "tenor",
            ),
            (
                api.CreateCampaign(
                    cpb.CreateCampaignRequest(campaign=cpb.Campaign(name="a", llm_model="gpt-9"))
                ),
                grpc.StatusCode.NOT_FOUND,
                "gpt-9",
            ),
            (
                api.CreateCampaign(
                    cpb.CreateCampaignRequest(
                        campaign=cpb.Campaign(name="a", language="english please")
                    )
                ),
                grpc.StatusCode.INVALID_ARGUMENT,
                "campaign.language",
            ),
            (
                api.GetCampaign(cpb.GetCampaignRequest(id="missing")),
                grpc.StatusCode.NOT_FOUND,
                "missing",
            ),
            (
                api.ListCampaigns(cpb.ListCampaignsRequest(page_token="garbage!")),
                grpc.StatusCode.INVALID_ARGUMENT,
                "page_token",
            ),
            (
                api.ListCampaigns(cpb.ListCampaignsRequest(page_size=-1)),
                grpc.StatusCode.INVALID_ARGUMENT,
                "page_size",
            ),
            (
                api.UpdateCampaign(
                    cpb.UpdateCampaignRequest(campaign=cpb.Campaign(id="missing", name="x"))
                ),
                grpc.StatusCode.NOT_FOUND,
                "missing",
            ),
            (
                api.UpdateCampaign(
                    cpb.UpdateCampaignRequest(
                        campaign=cpb.Campaign(id="x"), update_mask=FieldMask(paths=["etag"])
                    )
                ),
                grpc.StatusCode.INVALID_ARGUMENT,
                "update_mask.paths[0]",
            ),
        ]
        for call, code, needle in cases:
            got, details = await code_of(call)
            assert got == code and needle in details, (got, details)


async def test_converse_with_a_campaign(start_server: StartServer, open_call) -> None:
    s = await start_server()
    channel, api = campaigns(s)
    async with channel:
        campaign = await api.CreateCampaign(
            cpb.CreateCampaignRequest(
                campaign=cpb.Campaign(
                    name="Sales",
                    persona="You are Bob from sales.",
                    greeting="Bob here, how can I help?",
                    tts_voice="bass",
                )
            )
        )
        call: Call = await open_call(
            s.target, pb.SessionConfig(input_format=linear16(16000), campaign_id=campaign.id)
        )
        await call.wait_for(lambda c: len(c.events(pb.AGENT_TURN_DONE)) == 1)
        assert call.finals()[0].text == "Bob here, how can I help?"
        assert s.tts.voices_used == ["bass"]
        # Deleting the campaign does not disturb the session that uses it.
        await api.DeleteCampaign(cpb.DeleteCampaignRequest(id=campaign.id))
        await call.conversation.send_text("Hello")
        await call.wait_for(lambda c: len(c.of("metrics")) == 1)
        assert s.llm.calls[-1][0].content == "You are Bob from sales."
        assert [m.role for m in s.llm.calls[-1]] == ["system", "assistant", "user"]
        assert set(s.tts.voices_used) == {"bass"}

        missing: Call = await open_call(
            s.target, pb.SessionConfig(input_format=linear16(16000), campaign_id=campaign.id)
        )
        await missing.done.wait()
        assert missing.status == grpc.StatusCode.NOT_FOUND


async def test_a_campaign_naming_the_models_old_id_gets_its_own_name(
    start_server: StartServer,
) -> None:
    s = await start_server()
    channel, api = campaigns(s)
    async with channel:
        created = await api.CreateCampaign(
            cpb.CreateCampaignRequest(
                campaign=cpb.Campaign(name="Old", llm_model="qwen2.5-0.5b-instruct")
            )
        )
        assert created.llm_model == "qwen2.5-coder-0.5b-instruct"
        fetched = await api.GetCampaign(cpb.GetCampaignRequest(id=created.id))
        assert fetched.llm_model == "qwen2.5-coder-0.5b-instruct"
