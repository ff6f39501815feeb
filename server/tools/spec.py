"""Declared tools, validated: what the LLM is shown and how each tool runs.

A campaign's tools are checked when it is written (CreateCampaign/UpdateCampaign) and a
session's when its stream starts, with the same rules and messages (ToolError).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from voiceagent.v1 import voice_agent_pb2 as pb

from server.limits import (
    CLIENT_TOOL_TIMEOUT_MS,
    MAX_NAME,
    MAX_TOOL_DESCRIPTION,
    MAX_TOOL_HEADER_VALUE,
    MAX_TOOL_HEADERS,
    MAX_TOOL_SCHEMA,
    MAX_TOOLS,
    MAX_TRANSFER_TARGETS,
    WEBHOOK_TIMEOUT_MS,
)
from server.tools.webhook import WebhookRefused, check_url

END_CALL = "end_call"
TRANSFER_CALL = "transfer_call"
BUILTIN_NAMES = (END_CALL, TRANSFER_CALL)
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}")
_TARGET = re.compile(r"[^\s<>\"]{1,200}")
NO_ARGUMENTS: dict[str, Any] = {"type": "object", "properties": {}}

Runner = Literal["webhook", "client", "builtin"]


def blank_header_values(tools: list[pb.Tool]) -> None:
    """Header values are write-only secrets: echo their names, never their values."""
    for tool in tools:
        for header in tool.webhook.headers:
            tool.webhook.headers[header] = ""


class ToolError(ValueError):
    """A declared tool that cannot be used; the message names the field and what to fix."""


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]  # a JSON schema of an object
    runner: Runner
    timeout: float  # seconds
    url: str = ""  # webhook
    headers: dict[str, str] = field(default_factory=dict)  # webhook; secrets: never log them
    transfer_targets: tuple[str, ...] = ()  # transfer_call


def _schema(text: str, where: str) -> dict[str, Any]:
    if not text.strip():
        return dict(NO_ARGUMENTS)
    if len(text) > MAX_TOOL_SCHEMA:
        raise ToolError(f"{where} has {len(text)} characters; the limit is {MAX_TOOL_SCHEMA}")
    try:
        schema = json.loads(text)
    except ValueError as err:
        raise ToolError(f"{where} is not valid JSON: {err}") from err
    if not isinstance(schema, dict) or schema.get("type", "object") != "object":
        raise ToolError(f'{where} must be a JSON schema of an object ({{"type": "object", ...}})')
    if not isinstance(schema.get("properties", {}), dict):
        raise ToolError(f"{where}.properties must be an object")
    return schema


def _timeout(value: int, limits: tuple[int, int, int], where: str) -> float:
    default, low, high = limits
    value = value or default
    if not low <= value <= high:
        raise ToolError(f"{where} is {value}; it must be between {low} and {high}")
    return value / 1000


def tool_spec(tool: pb.Tool, where: str) -> ToolSpec:
    """One declared tool, checked (`where` names it in messages, e.g. "campaign.tools[2]")."""
    if not _NAME.fullmatch(tool.name):
        raise ToolError(
            f"{where}.name {tool.name[:80]!r} must be 1-64 letters, digits, '_' or '-', "
            "starting with a letter"
        )
    if tool.name in BUILTIN_NAMES:
        raise ToolError(
            f"{where}.name {tool.name!r} is a built-in tool: enable it in builtin_tools instead"
        )
    if len(tool.description) > MAX_TOOL_DESCRIPTION:
        raise ToolError(
            f"{where}.description has {len(tool.description)} characters; the limit is "
            f"{MAX_TOOL_DESCRIPTION}"
        )
    parameters = _schema(tool.parameters_json, f"{where}.parameters_json")
    runner = tool.WhichOneof("runner")
    if runner == "webhook":
        webhook = tool.webhook
        try:
            check_url(webhook.url)
        except WebhookRefused as err:
            raise ToolError(f"{where}.webhook.url: {err}") from err
        if len(webhook.headers) > MAX_TOOL_HEADERS:
            raise ToolError(f"{where}.webhook.headers has more than {MAX_TOOL_HEADERS} headers")
        for name, value in webhook.headers.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ToolError(f"{where}.webhook.headers: {name[:80]!r} is not a header name")
            if len(value) > MAX_TOOL_HEADER_VALUE or any(c in value for c in "\r\n\0"):
                raise ToolError(f"{where}.webhook.headers[{name!r}] is not a valid header value")
        return ToolSpec(
            tool.name,
            tool.description,
            parameters,
            "webhook",
            _timeout(webhook.timeout_ms, WEBHOOK_TIMEOUT_MS, f"{where}.webhook.timeout_ms"),
            url=webhook.url,
            headers=dict(webhook.headers),
        )
    if runner == "client":
        timeout = _timeout(
            tool.client.timeout_ms, CLIENT_TOOL_TIMEOUT_MS, f"{where}.client.timeout_ms"
        )
        return ToolSpec(tool.name, tool.description, parameters, "client", timeout)
    raise ToolError(f"{where} needs a runner: set `webhook` or `client`")


def tool_specs(tools: list[pb.Tool], where: str) -> list[ToolSpec]:
    """Declared tools checked one by one, and together (a limit, unique names)."""
    if len(tools) > MAX_TOOLS:
        raise ToolError(f"{where} has {len(tools)} tools; the limit is {MAX_TOOLS}")
    specs: list[ToolSpec] = []
    for i, tool in enumerate(tools):
        spec = tool_spec(tool, f"{where}[{i}]")
        if any(s.name == spec.name for s in specs):
            raise ToolError(f"{where}[{i}].name {spec.name!r} is used by another tool")
        specs.append(spec)
    return specs


def check_builtins(builtins: pb.BuiltinTools, where: str) -> None:
    targets = list(builtins.transfer_targets)
    if len(targets) > MAX_TRANSFER_TARGETS:
        raise ToolError(
            f"{where}.transfer_targets has {len(targets)} targets; the limit is "
            f"{MAX_TRANSFER_TARGETS}"
        )
    for i, target in enumerate(targets):
        if not _TARGET.fullmatch(target):
            raise ToolError(
                f"{where}.transfer_targets[{i}] {target[:80]!r} must be a SIP URI or number "
                f"(1-{MAX_NAME} characters, no spaces)"
            )


def builtin_specs(builtins: pb.BuiltinTools) -> list[ToolSpec]:
    specs = []
    if builtins.end_call:
        specs.append(
            ToolSpec(
                END_CALL,
                "End the call. Use it when the caller says goodbye or has nothing more to ask. "
                "Say a short goodbye in the same answer.",
                dict(NO_ARGUMENTS),
                "builtin",
                0.0,
            )
        )
    targets = tuple(builtins.transfer_targets)
    if targets:
        specs.append(
            ToolSpec(
                TRANSFER_CALL,
                "Transfer the caller to a person or another line. Use it when the caller asks "
                "for a human or for something only they can do. Tell the caller you are "
                "transferring them in the same answer.",
                {
                    "type": "object",
                    "properties": {"target": {"type": "string", "enum": list(targets)}},
                    "required": ["target"],
                },
                "builtin",
                0.0,
                transfer_targets=targets,
            )
        )
    return specs


def session_specs(
    campaign_tools: list[pb.Tool],
    campaign_builtins: pb.BuiltinTools,
    session_tools: list[pb.Tool],
    session_builtins: pb.BuiltinTools,
) -> list[ToolSpec]:
    """A session's tools: the campaign's plus its own (its own win on a name), then built-ins."""
    own = tool_specs(session_tools, "config.tools")
    check_builtins(session_builtins, "config.builtin_tools")
    names = {s.name for s in own}
    inherited = [s for s in tool_specs(campaign_tools, "campaign.tools") if s.name not in names]
    builtins = pb.BuiltinTools(end_call=campaign_builtins.end_call or session_builtins.end_call)
    targets = list(campaign_builtins.transfer_targets)
    targets += [t for t in session_builtins.transfer_targets if t not in targets]
    builtins.transfer_targets.extend(targets[:MAX_TRANSFER_TARGETS])
    specs = [*inherited, *own, *builtin_specs(builtins)]
    if len(specs) > MAX_TOOLS + len(BUILTIN_NAMES):
        raise ToolError(f"the session has {len(specs)} tools; the limit is {MAX_TOOLS}")
    return specs
