"""Agent actions through the real servicer and session: scripted LLM tool calls, a real webhook
on loopback, client tools, the built-ins, filler speech and barge-in during a tool."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from voiceagent.client import linear16
from voiceagent.v1 import campaigns_pb2 as cpb
from voiceagent.v1 import campaigns_pb2_grpc as cpb_grpc
from voiceagent.v1 import voice_agent_pb2 as pb

from server.agent_response import FILLER
from server.backends.llm.base import ToolCall
from tests.conftest import Call
from tests.fakes.webhook import FakeWebhook
from tests.unit.conftest import StartServer
from tests.unit.scripted import ScriptedToolLLM

ORDER_SCHEMA = json.dumps(
    {
        "type": "object",
        "properties": {"order_id": {"type": "string"}},
        "required": ["order_id"],
    }
)
LOOKUP = ToolCall("call_1", "lookup_order", '{"order_id": "A17"}')


def config(*tools: pb.Tool, **fields: object) -> pb.SessionConfig:
    return pb.SessionConfig(input_format=linear16(16000), tools=tools, **fields)  # type: ignore[arg-type]


def client_tool(timeout_ms: int = 2000) -> pb.Tool:
    return pb.Tool(
        name="lookup_order",
        description="Look up an order by its id.",
        parameters_json=ORDER_SCHEMA,
        client=pb.ClientTool(timeout_ms=timeout_ms),
    )


def webhook_tool(url: str, timeout_ms: int = 2000, **headers: str) -> pb.Tool:
    return pb.Tool(
        name="lookup_order",
        description="Look up an order by its id.",
        parameters_json=ORDER_SCHEMA,
        webhook=pb.WebhookTool(url=url, timeout_ms=timeout_ms, headers=headers),
    )


@pytest.fixture
async def webhook(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeWebhook]:
    hook = await FakeWebhook().start()
    # Loopback is refused unless listed by address: the test lists exactly this server.
    monkeypatch.setenv("TOOL_WEBHOOK_ALLOW", f"http://127.0.0.1:{hook.port}/")
    yield hook
    await hook.stop()


def tool_messages(llm: ScriptedToolLLM) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in llm.calls[-1] if m.role == "tool" or m.tool_calls]


async def test_client_tool_round_trip_and_history(start_server: StartServer, open_call) -> None:
    llm = ScriptedToolLLM([LOOKUP], before="Let me look.", after="Your order: {result}")
    s = await start_server(llm=llm)
    call: Call = await open_call(s.target, config(client_tool()))
    await call.conversation.send_text("Where is my order A17?")
    await call.wait_for(lambda c: len(c.of("tool_call")) == 1)
    asked = call.of("tool_call")[0]
    assert (asked.id, asked.name, json.loads(asked.arguments_json)) == (
        "call_1",
        "lookup_order",
        {"order_id": "A17"},
    )
    assert llm.offered[0] == ["lookup_order"]
    await call.conversation.send_tool_result("call_1", result_json='{"status": "shipped"}')
    await call.wait_for(lambda c: len(c.of("metrics")) == 1)
    result = call.of("tool_result")[0]
    assert (result.id, result.result_json, result.error) == ("call_1", '{"status": "shipped"}', "")
    assert call.finals()[-1].text == 'Let me look. Your order: {"status": "shipped"}'
    # The next turn sees the call and its result.
    await call.conversation.send_text("Thanks.")
    await call.wait_for(lambda c: len(llm.calls) == 3)
    history = llm.calls[2]  # the second turn's first request
    roles = [m.role for m in history]
    assert roles[1:] == ["user", "assistant", "tool", "assistant", "user"]
    assert history[2].tool_calls == (LOOKUP,) and history[2].content == "Let me look."
    assert history[3].tool_call_id == "call_1" and history[3].content == '{"status": "shipped"}'
    assert history[4].content == 'Your order: {"status": "shipped"}'


async def test_client_tool_that_does_not_answer_is_an_error_result(
    start_server: StartServer, open_call
) -> None:
    llm = ScriptedToolLLM([LOOKUP], after="Sorry: {result}")
    s = await start_server(llm=llm)
    call: Call = await open_call(s.target, config(client_tool(timeout_ms=300)))
    await call.conversation.send_text("Where is my order?")
    await call.wait_for(lambda c: len(c.of("metrics")) == 1)
    assert "did not answer within 0.3 s" in call.of("tool_result")[0].error
    assert "did not answer" in call.finals()[-1].text
    # A late answer is refused with a clear in-stream error; the call goes on.
    await call.conversation.send_tool_result("call_1", result_json="{}")
    await call.wait_for(lambda c: len(c.of("error")) == 1)
    assert "answers no tool call that is waiting" in call.of("error")[0].message
    assert call.status is None


async def test_webhook_success(start_server: StartServer, open_call, webhook: FakeWebhook) -> None:
    llm = ScriptedToolLLM([LOOKUP], after="Order: {result}")
    s = await start_server(llm=llm)
    tool = webhook_tool(webhook.url, authorization="Bearer hook-secret")
    call: Call = await open_call(s.target, config(tool))
    await call.conversation.send_text("Where is my order A17?")
    await call.wait_for(lambda c: len(c.of("metrics")) == 1)
    session_id = call.of("session_started")[0].session_id
    assert webhook.requests == [
        {
            "tool": "lookup_order",
            "arguments": {"order_id": "A17"},
            "session_id": session_id,
            "campaign_id": "",
        }
    ]
    assert webhook.headers[0]["authorization"] == "Bearer hook-secret"
    assert webhook.headers[0]["host"] == f"127.0.0.1:{webhook.port}"
    assert call.of("tool_result")[0].result_json == webhook.body
    assert call.finals()[-1].text == f"Order: {webhook.body}"
    # Write-only: the effective config echoes the header's name, never its value.
    echoed = call.of("session_started")[0].config.tools[0]
    assert dict(echoed.webhook.headers) == {"authorization": ""}


@pytest.mark.parametrize(
    ("setup", "needle"),
    [
        ({"status": 500}, "HTTP 500"),
        ({"delay": 2.0}, "no answer within 0.4 s"),
        ({"redirect_to": "http://10.0.0.1/"}, "redirects are not followed"),
        ({"body_bytes": 70_000}, "larger than 65536 bytes"),
    ],
)
async def test_webhook_failures_reach_the_llm_as_errors(
    start_server: StartServer, open_call, webhook: FakeWebhook, setup: dict, needle: str
) -> None:
    for key, value in setup.items():
        setattr(webhook, key, value)
    llm = ScriptedToolLLM([LOOKUP], after="I am sorry: {result}")
    s = await start_server(llm=llm)
    call: Call = await open_call(s.target, config(webhook_tool(webhook.url, timeout_ms=400)))
    await call.conversation.send_text("Where is my order?")
    await call.wait_for(lambda c: len(c.of("metrics")) == 1)
    error = call.of("tool_result")[0].error
    assert needle in error
    assert json.loads(tool_messages(llm)[1][1]) == {"error": error}
    assert len(webhook.requests) == 1  # sent once, never again
    assert call.status is None  # the call goes on


async def test_webhook_to_a_private_address_is_refused_without_a_request(
    start_server: StartServer, open_call, webhook: FakeWebhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "localhost" is allowed as a host, but it resolves to loopback, which only an entry naming
    # the address itself allows.
    monkeypatch.setenv("TOOL_WEBHOOK_ALLOW", "localhost")
    llm = ScriptedToolLLM([LOOKUP], after="Sorry: {result}")
    s = await start_server(llm=llm)
    url = f"http://localhost:{webhook.port}/tools"
    call: Call = await open_call(s.target, config(webhook_tool(url)))
    await call.conversation.send_text("Where is my order?")
    await call.wait_for(lambda c: len(c.of("metrics")) == 1)
    error = call.of("tool_result")[0].error
    assert "not a public address" in error and "TOOL_WEBHOOK_ALLOW" in error
    assert webhook.requests == []


@pytest.mark.parametrize(
    ("tool", "needle"),
    [
        (webhook_tool("http://10.1.2.3/hook"), "not allowed by TOOL_WEBHOOK_ALLOW"),
        (webhook_tool("ftp://127.0.0.1/x"), "not an http(s) URL"),
        (pb.Tool(name="9lives", client=pb.ClientTool()), "config.tools[0].name"),
        (pb.Tool(name="end_call", client=pb.ClientTool()), "built-in"),
        (pb.Tool(name="x", parameters_json="{nope", client=pb.ClientTool()), "not valid JSON"),
        (pb.Tool(name="x", parameters_json='{"type": "array"}', client=pb.ClientTool()), "object"),
        (pb.Tool(name="x"), "needs a runner"),
        (pb.Tool(name="x", client=pb.ClientTool(timeout_ms=999_999)), "timeout_ms"),
    ],
)
async def test_bad_tools_refuse_the_session(
    start_server: StartServer, open_call, tool: pb.Tool, needle: str
) -> None:
    s = await start_server()
    call: Call = await open_call(s.target, config(tool))
    await asyncio.wait_for(call.done.wait(), 20)
    assert call.status == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in call.details


async def test_duplicate_tool_names_refuse_the_session(
    start_server: StartServer, open_call
) -> None:
    s = await start_server()
    call: Call = await open_call(s.target, config(client_tool(), client_tool()))
    await asyncio.wait_for(call.done.wait(), 20)
    assert call.status == grpc.StatusCode.INVALID_ARGUMENT
    assert "used by another tool" in call.details


async def test_filler_once_while_tools_run_long(start_server: StartServer, open_call) -> None:
    second = ToolCall("call_2", "lookup_order", '{"order_id": "B2"}')
    llm = ScriptedToolLLM([LOOKUP, second], after="Both found.")
    s = await start_server(llm=llm)
    call: Call = await open_call(s.target, config(client_tool(timeout_ms=5000)))
    await call.conversation.send_text("Where are my orders?")
    for call_id in ("call_1", "call_2"):
        await call.wait_for(lambda c, i=call_id: any(t.id == i for t in c.of("tool_call")))
        await asyncio.sleep(1.0)  # longer than the filler's 0.7 s
        await call.conversation.send_tool_result(call_id, result_json='"found"')
    await call.wait_for(lambda c: len(c.of("metrics")) == 1)
    assert s.tts.texts.count(FILLER) == 1
    assert call.finals()[-1].text == f"{FILLER} Both found."
    # Audio of the filler went out while the tool ran, before its result.
    kinds = [r.WhichOneof("response") for r in call.responses]
    assert kinds.index("audio") < kinds.index("tool_result")
    # It is part of the history.
    await call.conversation.send_text("Thanks.")
    await call.wait_for(lambda c: len(llm.calls) == 3)
    assert llm.calls[2][-2].content == f"{FILLER} Both found."


async def test_no_filler_for_a_quick_tool(start_server: StartServer, open_call) -> None:
    llm = ScriptedToolLLM([LOOKUP], after="Found.")
    s = await start_server(llm=llm)
    call: Call = await open_call(s.target, config(client_tool()))
    await call.conversation.send_text("Where is my order?")
    await call.wait_for(lambda c: len(c.of("tool_call")) == 1)
    await call.conversation.send_tool_result("call_1", result_json='"ok"')
    await call.wait_for(lambda c: len(c.of("metrics")) == 1)
    assert FILLER not in s.tts.texts and call.finals()[-1].text == "Found."


async def test_barge_in_during_a_tool_cancels_it_and_sends_no_webhook_again(
    start_server: StartServer, open_call, webhook: FakeWebhook
) -> None:
    webhook.delay = 3.0
    llm = ScriptedToolLLM([LOOKUP], before="Checking.", after="Here: {result}", call_on="order")
    s = await start_server(llm=llm)
    call: Call = await open_call(s.target, config(webhook_tool(webhook.url, timeout_ms=10_000)))
    await call.conversation.send_text("Where is my order?")
    await call.wait_for(lambda c: len(c.of("tool_call")) == 1)
    await asyncio.sleep(1.2)  # the filler is said; a typed turn may interrupt after 1 s
    await call.conversation.send_text("Never mind, what time is it?")
    await call.wait_for(lambda c: len(c.events(pb.BARGE_IN)) == 1)
    await call.wait_for(lambda c: len(c.of("metrics")) >= 1 and len(llm.calls) >= 2)
    await call.wait_for(lambda c: any(f.turn_id == 2 for f in c.finals()))
    assert len(webhook.requests) == 1
    assert not call.of("tool_result")  # the result never came
    history = llm.calls[-1]
    tool = next(m for m in history if m.role == "tool")
    assert "interrupted" in tool.content and tool.tool_call_id == "call_1"
    assert history[-1].content == "Never mind, what time is it?"
    await asyncio.sleep(3.0)  # past the webhook's answer: nothing is sent again
    assert len(webhook.requests) == 1 and not call.of("tool_result")


async def test_end_call_after_the_goodbye(start_server: StartServer, open_call) -> None:
    llm = ScriptedToolLLM([ToolCall("c1", "end_call", "{}")], before="Goodbye, have a nice day!")
    s = await start_server(llm=llm)
    call: Call = await open_call(s.target, config(builtin_tools=pb.BuiltinTools(end_call=True)))
    await call.conversation.send_text("That's all, goodbye.")
    await asyncio.wait_for(call.done.wait(), 10)
    assert call.status == grpc.StatusCode.OK
    assert llm.offered[0] == ["end_call"] and len(llm.calls) == 1  # said its goodbye already
    kinds = [r.WhichOneof("response") for r in call.responses]
    ended = call.events(pb.CALL_ENDED)
    assert len(ended) == 1
    assert call.responses[-1].event.type == pb.CALL_ENDED
    assert kinds.count("audio") > 0 and call.finals()[-1].text == "Goodbye, have a nice day!"
    assert call.of("tool_call")[0].name == "end_call"


async def test_end_call_without_words_gets_a_goodbye_first(
    start_server: StartServer, open_call
) -> None:
    llm = ScriptedToolLLM([ToolCall("c1", "end_call", "{}")], after="Goodbye!")
    s = await start_server(llm=llm)
    call: Call = await open_call(s.target, config(builtin_tools=pb.BuiltinTools(end_call=True)))
    await call.conversation.send_text("Bye.")
    await asyncio.wait_for(call.done.wait(), 10)
    assert call.status == grpc.StatusCode.OK
    assert llm.offered == [["end_call"], []]  # the goodbye round offers no tools
    assert call.finals()[-1].text == "Goodbye!"
    assert call.responses[-1].event.type == pb.CALL_ENDED


async def test_transfer_to_a_listed_target(start_server: StartServer, open_call) -> None:
    target = "sip:desk@127.0.0.1:5070"
    llm = ScriptedToolLLM(
        [ToolCall("c1", "transfer_call", json.dumps({"target": target}))],
        before="I am transferring you now.",
    )
    s = await start_server(llm=llm)
    builtins = pb.BuiltinTools(transfer_targets=[target, "+15551234"])
    call: Call = await open_call(s.target, config(builtin_tools=builtins))
    await call.conversation.send_text("I want a human.")
    await asyncio.wait_for(call.done.wait(), 10)
    assert call.status == grpc.StatusCode.OK
    last = call.responses[-1].event
    assert (last.type, last.message) == (pb.TRANSFER, target)
    offered = s.llm.calls[0]
    assert offered  # the LLM was asked


async def test_transfer_to_an_unlisted_target_is_an_error_result(
    start_server: StartServer, open_call
) -> None:
    llm = ScriptedToolLLM(
        [ToolCall("c1", "transfer_call", '{"target": "sip:attacker@example.com"}')],
        after="Sorry, {result}",
    )
    s = await start_server(llm=llm)
    builtins = pb.BuiltinTools(transfer_targets=["sip:desk@127.0.0.1"])
    call: Call = await open_call(s.target, config(builtin_tools=builtins))
    await call.conversation.send_text("Transfer me.")
    await call.wait_for(lambda c: len(c.of("metrics")) == 1)
    assert "is not one of: sip:desk@127.0.0.1" in call.of("tool_result")[0].error
    assert not call.events(pb.TRANSFER) and call.status is None


async def test_unknown_tool_and_bad_arguments_are_error_results(
    start_server: StartServer, open_call
) -> None:
    llm = ScriptedToolLLM(
        [ToolCall("c1", "lookup_order", '{"id": 1}'), ToolCall("c2", "lookup_order", "[1")],
        after="Sorry.",
    )
    s = await start_server(llm=llm)
    call: Call = await open_call(s.target, config(client_tool()))
    await call.conversation.send_text("Where is my order?")
    await call.wait_for(lambda c: len(c.of("metrics")) == 1)
    errors = [r.error for r in call.of("tool_result")]
    assert "missing order_id" in errors[0] and "not JSON" in errors[1]


async def test_campaign_tools_with_write_only_headers(
    start_server: StartServer, open_call, webhook: FakeWebhook
) -> None:
    llm = ScriptedToolLLM([LOOKUP], after="Order: {result}")
    s = await start_server(llm=llm)
    async with grpc.aio.insecure_channel(s.target) as channel:
        api = cpb_grpc.CampaignsStub(channel)
        tool = webhook_tool(webhook.url, authorization="Bearer campaign-secret")
        created = await api.CreateCampaign(
            cpb.CreateCampaignRequest(
                campaign=cpb.Campaign(
                    name="Orders", tools=[tool], builtin_tools=pb.BuiltinTools(end_call=True)
                )
            )
        )
        for shown in (
            created,
            await api.GetCampaign(cpb.GetCampaignRequest(id=created.id)),
            (await api.ListCampaigns(cpb.ListCampaignsRequest())).campaigns[0],
        ):
            assert dict(shown.tools[0].webhook.headers) == {"authorization": ""}
            assert "campaign-secret" not in str(shown)
            assert shown.builtin_tools.end_call
        # The page sends the tool back as it got it (empty value): the secret is kept.
        edited = pb.Tool()
        edited.CopyFrom(created.tools[0])
        edited.description = "Find an order."
        updated = await api.UpdateCampaign(
            cpb.UpdateCampaignRequest(
                campaign=cpb.Campaign(id=created.id, tools=[edited]),
                update_mask=FieldMask(paths=["tools"]),
            )
        )
        assert updated.tools[0].description == "Find an order."
        bad = cpb.Campaign(id=created.id, tools=[client_tool(), client_tool()])
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await api.UpdateCampaign(
                cpb.UpdateCampaignRequest(campaign=bad, update_mask=FieldMask(paths=["tools"]))
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "campaign.tools[1].name" in (refused.value.details() or "")

    call: Call = await open_call(
        s.target, pb.SessionConfig(input_format=linear16(16000), campaign_id=created.id)
    )
    await call.conversation.send_text("Where is my order?")
    await call.wait_for(lambda c: len(c.of("metrics")) == 1)
    assert webhook.headers[0]["authorization"] == "Bearer campaign-secret"
    assert webhook.requests[0]["campaign_id"] == created.id
    assert llm.offered[0] == ["lookup_order", "end_call"]
