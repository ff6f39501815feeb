"""Agent actions: the tools a campaign or session declares, and running them mid-call.

`spec` validates the declared tools (the proto's Tool, BuiltinTools) into ToolSpecs the LLM is
shown; `webhook` calls a webhook tool under the TOOL_WEBHOOK_ALLOW policy; `runner` runs one
session's tool calls (webhook, client round trip, the built-ins end_call and transfer_call).
"""
