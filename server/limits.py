"""Every per-request and per-session limit, in one place (SECURITY.md lists them).

Whatever a client sends, authenticated or not, must cost the server bounded memory and CPU and
end in a documented status; these numbers are the bounds.
"""

from __future__ import annotations

from collections.abc import Mapping

from google.protobuf.message import Message

# Any one request message, on every port (gRPC's own default receive limit): also the most a
# compressed HTTP request may inflate to.
MAX_MESSAGE_BYTES = 4 << 20
MAX_REQUEST_BYTES = MAX_MESSAGE_BYTES
# A compressed HTTP request may inflate to this many times its size (and to at least
# MIN_INFLATE_BYTES, so small requests are never refused for compressing well).
MAX_COMPRESSION_RATIO = 100
MIN_INFLATE_BYTES = 64 << 10

# Free-text fields, in characters: the same for a campaign and for a session's own config.
MAX_SYSTEM_PROMPT = 8000
MAX_GREETING = 2000
MAX_NAME = 200  # model, voice and backend names, ids
MAX_LANGUAGE = 35
MAX_TEXT_TURN = 4000

# A typed turn arriving while the agent still generates its answer to an earlier one replaces
# that answer at most once per this many seconds; sooner, it is refused (RESOURCE_EXHAUSTED).
MIN_TEXT_INTERRUPT_SECONDS = 1.0
# Audio may arrive at most this far ahead of real time; past it the session stops reading, so
# transport flow control pushes back on the client.
MAX_AUDIO_LEAD_SECONDS = 10.0
# Responses waiting for a client that does not read: past this the agent's audio pauses...
OUTPUT_BUFFER_BYTES = 1 << 20
# ...and past this (a client that sends without reading) the session ends: RESOURCE_EXHAUSTED.
MAX_OUTPUT_BUFFER_BYTES = 8 << 20

# The free-text fields of a session's first message and of a mid-call update, with their limits.
SESSION_CONFIG_LIMITS = {
    "stt": MAX_NAME,
    "llm": MAX_NAME,
    "llm_model": MAX_NAME,
    "tts": MAX_NAME,
    "tts_voice": MAX_NAME,
    "campaign_id": MAX_NAME,
    "system_prompt": MAX_SYSTEM_PROMPT,
    "greeting": MAX_GREETING,
    "language": MAX_LANGUAGE,
}
CONFIG_UPDATE_LIMITS = {
    "llm_model": MAX_NAME,
    "tts_voice": MAX_NAME,
    "system_prompt": MAX_SYSTEM_PROMPT,
}


def overlong(message: Message, limits: Mapping[str, int], prefix: str) -> str | None:
    """What to tell a client whose `message` has a string field past its limit; None if all fit."""
    for field, limit in limits.items():
        value: str = getattr(message, field)
        if len(value) > limit:
            return f"{prefix}.{field} has {len(value)} characters; the limit is {limit}"
    return None


# Tools (server/tools/): what a campaign or a session may declare, and what a tool may cost.
MAX_TOOLS = 32
MAX_TOOL_DESCRIPTION = 1000
MAX_TOOL_SCHEMA = 10_000
MAX_TOOL_HEADERS = 16
MAX_TOOL_HEADER_VALUE = 4096
MAX_TRANSFER_TARGETS = 16
MAX_TOOL_RESULT_BYTES = 64 << 10  # a webhook's response body, a client's result_json
WEBHOOK_TIMEOUT_MS = (5000, 100, 30_000)  # default, lowest, highest
CLIENT_TOOL_TIMEOUT_MS = (10_000, 100, 60_000)
MAX_TOOL_ROUNDS = 4  # tool calls then answers, per agent turn: a model calling in a loop stops
