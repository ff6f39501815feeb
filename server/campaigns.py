"""The Campaigns service: personas with their own prompt, greeting, model and voice.

Resource-oriented (Google API design guide): Create/Get/List/Update/Delete, FieldMask updates,
etags for optimistic concurrency. Storage is `server.campaign_store` (SQLite or PostgreSQL),
called in worker threads.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import empty_pb2, json_format
from voiceagent.v1 import campaigns_pb2 as cpb
from voiceagent.v1 import campaigns_pb2_grpc as cpb_grpc
from voiceagent.v1 import voice_agent_pb2 as pb

from server.backends.registry import Backends
from server.campaign_store import (
    CAMPAIGN_FIELDS,
    CampaignConflict,
    CampaignNotFound,
    CampaignRecord,
    CampaignStore,
    InvalidPageToken,
)
from server.limits import MAX_GREETING, MAX_LANGUAGE, MAX_NAME, MAX_SYSTEM_PROMPT
from server.options import model_id
from server.session_setup import campaign_choices
from server.status import StatusError, abort
from server.tools.spec import ToolError, blank_header_values, check_builtins, tool_specs

T = TypeVar("T")
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
_LIMITS = {
    "name": MAX_NAME,
    "persona": MAX_SYSTEM_PROMPT,
    "greeting": MAX_GREETING,
    "llm_model": MAX_NAME,
    "tts_voice": MAX_NAME,
    "language": MAX_LANGUAGE,
}
TOOL_FIELDS = ("tools", "builtin_tools")  # stored as JSON text, checked by server.tools.spec
_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
# The largest version every store can hold (PostgreSQL's INTEGER column): a larger etag was
# never returned, and must not reach the database as an out-of-range parameter.
MAX_VERSION = 2**31 - 1
_ETAG = re.compile(r"[0-9]{1,10}")


def stored_tools(record: CampaignRecord) -> tuple[list[pb.Tool], pb.BuiltinTools]:
    """A campaign's tools as stored, secrets included (for the server's own use only)."""
    tools = [json_format.ParseDict(t, pb.Tool()) for t in json.loads(record.tools or "[]")]
    builtins = json_format.Parse(record.builtin_tools or "{}", pb.BuiltinTools())
    return tools, builtins


def _tools_text(tools: list[pb.Tool]) -> str:
    return json.dumps([json_format.MessageToDict(t) for t in tools]) if tools else ""


def _builtins_text(builtins: pb.BuiltinTools) -> str:
    return json_format.MessageToJson(builtins, indent=None) if builtins.ByteSize() else ""


def _field_text(campaign: cpb.Campaign, name: str) -> str:
    """A campaign field as the store keeps it (text; the tools as JSON)."""
    if name == "tools":
        return _tools_text(list(campaign.tools))
    if name == "builtin_tools":
        return _builtins_text(campaign.builtin_tools)
    value: str = getattr(campaign, name)
    return value


def _keep_secrets(tools: list[pb.Tool], stored: list[pb.Tool]) -> None:
    """Header values are write-only: one sent empty keeps the stored value of that tool's header."""
    by_name = {t.name: t for t in stored if t.WhichOneof("runner") == "webhook"}
    for tool in tools:
        old = by_name.get(tool.name)
        if old is None or tool.WhichOneof("runner") != "webhook":
            continue
        for header, value in tool.webhook.headers.items():
            if not value and old.webhook.headers.get(header):
                tool.webhook.headers[header] = old.webhook.headers[header]


def to_proto(record: CampaignRecord) -> cpb.Campaign:
    tools, builtins = stored_tools(record)
    blank_header_values(tools)
    campaign = cpb.Campaign(
        id=record.id,
        name=record.name,
        persona=record.persona,
        greeting=record.greeting,
        llm_model=model_id(record.llm_model),
        tts_voice=record.tts_voice,
        language=record.language,
        etag=str(record.version),
        tools=tools,
        builtin_tools=builtins,
    )
    campaign.update_time.FromDatetime(record.update_time)
    return campaign


class CampaignsService(cpb_grpc.CampaignsServicer):
    def __init__(self, store: CampaignStore, backends: Backends) -> None:
        self._store = store
        self._backends = backends

    async def CreateCampaign(
        self, request: cpb.CreateCampaignRequest, context: grpc.aio.ServicerContext
    ) -> cpb.Campaign:
        fields = {f: _field_text(request.campaign, f) for f in CAMPAIGN_FIELDS}
        await self._validate(fields, context, creating=True)
        await _validate_tools(request.campaign, context)
        record = await _stored(context, self._store.create, fields)
        return to_proto(record)

    async def GetCampaign(
        self, request: cpb.GetCampaignRequest, context: grpc.aio.ServicerContext
    ) -> cpb.Campaign:
        if not request.id:
            await abort(context, StatusError(grpc.StatusCode.INVALID_ARGUMENT, "id is required"))
        try:
            return to_proto(await _stored(context, self._store.get, request.id))
        except CampaignNotFound:
            await abort(
                context,
                StatusError(grpc.StatusCode.NOT_FOUND, f"campaign {request.id!r} not found"),
            )

    async def ListCampaigns(
        self, request: cpb.ListCampaignsRequest, context: grpc.aio.ServicerContext
    ) -> cpb.ListCampaignsResponse:
        if request.page_size < 0:
            await abort(
                context,
                StatusError(grpc.StatusCode.INVALID_ARGUMENT, "page_size must not be negative"),
            )
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        try:
            records, token = await _stored(context, self._store.list, size, request.page_token)
        except InvalidPageToken:
            await abort(
                context,
                StatusError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "page_token is not one this server returned",
                ),
            )
        return cpb.ListCampaignsResponse(
            campaigns=[to_proto(r) for r in records], next_page_token=token
        )

    async def UpdateCampaign(
        self, request: cpb.UpdateCampaignRequest, context: grpc.aio.ServicerContext
    ) -> cpb.Campaign:
        campaign = request.campaign
        if not campaign.id:
            await abort(
                context, StatusError(grpc.StatusCode.INVALID_ARGUMENT, "campaign.id is required")
            )
        paths = list(request.update_mask.paths)
        for i, path in enumerate(paths):
            if path not in CAMPAIGN_FIELDS:
                await abort(
                    context,
                    StatusError(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"update_mask.paths[{i}] {path!r} is not an updatable field; fields: {', '.join(CAMPAIGN_FIELDS)}",
                    ),
                )
        if not paths:  # no mask: every field that is set
            paths = [f for f in CAMPAIGN_FIELDS if _field_text(campaign, f)]
        if "tools" in paths:
            try:
                stored = await _stored(context, self._store.get, campaign.id)
                _keep_secrets(list(campaign.tools), stored_tools(stored)[0])
            except CampaignNotFound:
                pass  # the update below says NOT_FOUND
        fields = {f: _field_text(campaign, f) for f in paths}
        await self._validate(fields, context, creating=False)
        await _validate_tools(campaign, context)
        expected = None
        if campaign.etag:
            expected = version_from_etag(campaign.etag)
            if expected is None:
                shown = campaign.etag if len(campaign.etag) <= 40 else campaign.etag[:40] + "..."
                await abort(
                    context,
                    StatusError(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"campaign.etag {shown!r} is not an etag this server returned (etags are "
                        f"decimal numbers up to {MAX_VERSION}): get the campaign again",
                    ),
                )
        try:
            record = await _stored(context, self._store.update, campaign.id, fields, expected)
        except CampaignNotFound:
            await abort(
                context,
                StatusError(grpc.StatusCode.NOT_FOUND, f"campaign {campaign.id!r} not found"),
            )
        except CampaignConflict:
            await abort(
                context,
                StatusError(
                    grpc.StatusCode.ABORTED,
                    f"campaign {campaign.id!r} changed since etag {campaign.etag}; get it again and retry",
                ),
            )
        return to_proto(record)

    async def DeleteCampaign(
        self, request: cpb.DeleteCampaignRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        if not request.id:
            await abort(context, StatusError(grpc.StatusCode.INVALID_ARGUMENT, "id is required"))
        try:
            await _stored(context, self._store.delete, request.id)
        except CampaignNotFound:
            await abort(
                context,
                StatusError(grpc.StatusCode.NOT_FOUND, f"campaign {request.id!r} not found"),
            )
        return empty_pb2.Empty()

    async def _validate(
        self, fields: dict[str, str], context: grpc.aio.ServicerContext, creating: bool
    ) -> None:
        if (creating or "name" in fields) and not fields.get("name", "").strip():
            await abort(
                context, StatusError(grpc.StatusCode.INVALID_ARGUMENT, "campaign.name is required")
            )
        for field, value in fields.items():
            if field not in TOOL_FIELDS and len(value) > _LIMITS[field]:
                await abort(
                    context,
                    StatusError(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"campaign.{field} has {len(value)} characters; the limit is {_LIMITS[field]}",
                    ),
                )
        if fields.get("language") and not _LANGUAGE.match(fields["language"]):
            await abort(
                context,
                StatusError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"campaign.language {fields['language']!r} is not a BCP-47 tag such as 'en' or 'en-US'",
                ),
            )
        try:
            fields.update(campaign_choices(fields, self._backends))
        except StatusError as err:
            await abort(context, err)


async def _validate_tools(campaign: cpb.Campaign, context: grpc.aio.ServicerContext) -> None:
    try:
        tool_specs(list(campaign.tools), "campaign.tools")
        check_builtins(campaign.builtin_tools, "campaign.builtin_tools")
    except ToolError as err:
        await abort(context, StatusError(grpc.StatusCode.INVALID_ARGUMENT, str(err)))


def version_from_etag(etag: str) -> int | None:
    """The version an etag names, or None if it is not one this server could have returned
    (not ASCII digits: "²" is a digit to str.isdigit but not to int)."""
    if not _ETAG.fullmatch(etag):
        return None
    version = int(etag)
    return version if version <= MAX_VERSION else None


async def _stored(context: grpc.aio.ServicerContext, method: Callable[..., T], *args: Any) -> T:
    """A store call in a worker thread; a database that cannot be reached is UNAVAILABLE."""
    try:
        return await asyncio.to_thread(method, *args)
    except (CampaignNotFound, CampaignConflict, InvalidPageToken, ValueError):
        raise
    except Exception as err:
        await abort(
            context,
            StatusError(
                grpc.StatusCode.UNAVAILABLE,
                f"campaign store unavailable: {type(err).__name__}: {err}",
            ),
        )
