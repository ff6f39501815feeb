"""One session's tool calls: checks the call, runs it where the tool says, and words the outcome
for the LLM. Every failure (unknown tool, bad arguments, a refused URL, a webhook down, a client
that does not answer in time) becomes an error result the LLM can apologise for, never a dropped
call.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, Literal

from voiceagent.v1 import voice_agent_pb2 as pb

from server.backends.llm.base import ToolCall
from server.limits import MAX_TOOL_RESULT_BYTES
from server.tools.spec import END_CALL, TRANSFER_CALL, ToolSpec
from server.tools.webhook import AllowEntry, WebhookFailed, WebhookRefused, call_webhook

Action = Literal["", "end_call", "transfer"]


@dataclass
class ToolOutcome:
    call: ToolCall
    result_json: str = ""
    error: str = ""
    action: Action = ""  # what the session does once the answer has been spoken
    target: str = ""  # transfer_call's

    def for_llm(self) -> str:
        """The tool message's content: the result, or the error as a JSON object."""
        return json.dumps({"error": self.error}) if self.error else self.result_json

    def to_proto(self, turn_id: int) -> pb.ToolResult:
        return pb.ToolResult(
            id=self.call.id,
            name=self.call.name,
            result_json=self.result_json,
            error=self.error,
            turn_id=turn_id,
        )


class ToolRunner:
    def __init__(
        self,
        specs: list[ToolSpec],
        session_id: str,
        campaign_id: str,
        allowed: list[AllowEntry] | None = None,
    ) -> None:
        self.specs = {s.name: s for s in specs}
        self._session_id = session_id
        self._campaign_id = campaign_id
        self._allowed = allowed  # None: TOOL_WEBHOOK_ALLOW at each call
        self._waiting: dict[str, asyncio.Future[pb.ToolResult]] = {}
        self.webhooks_sent = 0

    @property
    def offered(self) -> list[ToolSpec]:
        return list(self.specs.values())

    async def run(self, call: ToolCall) -> ToolOutcome:
        spec = self.specs.get(call.name)
        if spec is None:
            known = ", ".join(self.specs) or "none"
            return ToolOutcome(call, error=f"there is no tool {call.name!r}; tools: {known}")
        try:
            arguments = _arguments(call.arguments, spec)
        except ValueError as err:
            return ToolOutcome(call, error=f"invalid arguments for {call.name}: {err}")
        if spec.runner == "builtin":
            return self._builtin(call, spec, arguments)
        if spec.runner == "client":
            return await self._client(call, spec)
        return await self._webhook(call, spec, arguments)

    def _builtin(self, call: ToolCall, spec: ToolSpec, arguments: dict[str, Any]) -> ToolOutcome:
        if spec.name == END_CALL:
            result = {"ok": True, "note": "the call ends once this answer has been spoken"}
            return ToolOutcome(call, result_json=json.dumps(result), action="end_call")
        assert spec.name == TRANSFER_CALL
        target = arguments.get("target")
        if target not in spec.transfer_targets:
            return ToolOutcome(
                call,
                error=f"target {target!r} is not one of: {', '.join(spec.transfer_targets)}",
            )
        result = {"ok": True, "note": f"the caller is transferred to {target} after this answer"}
        return ToolOutcome(
            call, result_json=json.dumps(result), action="transfer", target=str(target)
        )

    async def _client(self, call: ToolCall, spec: ToolSpec) -> ToolOutcome:
        """The ToolCall response has gone to the client; wait for its ToolResult request."""
        future: asyncio.Future[pb.ToolResult] = asyncio.get_running_loop().create_future()
        self._waiting[call.id] = future
        try:
            async with asyncio.timeout(spec.timeout):
                answer = await future
        except TimeoutError:
            return ToolOutcome(call, error=f"the client did not answer within {spec.timeout:g} s")
        finally:
            self._waiting.pop(call.id, None)
        if answer.error:
            return ToolOutcome(call, error=answer.error[:2000])
        return ToolOutcome(call, result_json=answer.result_json)

    def deliver(self, result: pb.ToolResult) -> str:
        """A client's ToolResult request; what is wrong with it ("" if it was taken)."""
        future = self._waiting.get(result.id)
        if future is None or future.done():
            return (
                f"tool_result {result.id[:80]!r} answers no tool call that is waiting (answered "
                "already, timed out, or cut by a barge-in)"
            )
        if not result.error:
            if len(result.result_json.encode()) > MAX_TOOL_RESULT_BYTES:
                future.set_result(pb.ToolResult(error="the client's result was too large"))
                return f"tool_result.result_json is larger than {MAX_TOOL_RESULT_BYTES} bytes"
            try:
                json.loads(result.result_json)
            except ValueError:
                future.set_result(pb.ToolResult(error="the client's result was not JSON"))
                return "tool_result.result_json is not valid JSON (send a JSON value, or error)"
        future.set_result(result)
        return ""

    async def _webhook(
        self, call: ToolCall, spec: ToolSpec, arguments: dict[str, Any]
    ) -> ToolOutcome:
        payload = {
            "tool": spec.name,
            "arguments": arguments,
            "session_id": self._session_id,
            "campaign_id": self._campaign_id,
        }
        try:
            self.webhooks_sent += 1
            result = await call_webhook(
                spec.url, spec.headers, payload, spec.timeout, self._allowed
            )
        except WebhookRefused as err:
            return ToolOutcome(call, error=f"the webhook may not be called: {err}")
        except WebhookFailed as err:
            return ToolOutcome(call, error=f"the webhook failed: {err}")
        return ToolOutcome(call, result_json=result)


def _arguments(text: str, spec: ToolSpec) -> dict[str, Any]:
    """The call's arguments as an object, with the schema's required properties present."""
    try:
        arguments = json.loads(text or "{}")
    except ValueError as err:
        raise ValueError(f"not JSON ({err})") from err
    if not isinstance(arguments, dict):
        raise ValueError("not a JSON object")
    missing = [k for k in spec.parameters.get("required", []) if k not in arguments]
    if missing:
        raise ValueError(f"missing {', '.join(map(str, missing))}")
    return arguments
