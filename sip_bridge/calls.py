"""One call's life as pure state (no PJSIP, no gRPC), so the rules are testable on their own.

RINGING (180 sent; the Converse stream is being opened) -> ANSWERED (200) -> ENDED, or
RINGING -> ENDED when the caller cancels, the bridge is full (486), the route is unknown (404)
or the server cannot be reached (503 with Retry-After).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

BUSY_HERE = 486
NOT_FOUND = 404
SERVICE_UNAVAILABLE = 503
RETRY_AFTER_SECONDS = 30


class CallState(enum.Enum):
    RINGING = "ringing"
    ANSWERED = "answered"
    ENDED = "ended"


class CallStateError(RuntimeError):
    """A transition the state machine does not allow (a bug, not a caller's mistake)."""


@dataclass
class CallRecord:
    call_id: int
    campaign_id: str
    rate: int
    caller: str = ""  # the From user
    called: str = ""  # the To (or request URI) user
    state: CallState = CallState.RINGING
    end_reason: str = ""

    def answer(self) -> None:
        if self.state is not CallState.RINGING:
            raise CallStateError(f"call {self.call_id}: answer while {self.state.value}")
        self.state = CallState.ANSWERED

    def end(self, reason: str) -> bool:
        """Record the end once; False if it had already ended (BYE and stream end can race)."""
        if self.state is CallState.ENDED:
            return False
        self.state, self.end_reason = CallState.ENDED, reason
        return True


@dataclass
class RtpWatch:
    """Notices a caller that stopped sending RTP (a phone that vanished sends no BYE)."""

    packets: int = -1
    idle_since: float | None = None

    def timed_out(self, packets: int, on_hold: bool, now: float, timeout: float) -> bool:
        """Feed the received RTP packet count; True once none arrived for `timeout` seconds.

        A call on hold gets no RTP on purpose, so it never times out."""
        if on_hold or packets != self.packets:
            self.packets, self.idle_since = packets, None
            return False
        if self.idle_since is None:
            self.idle_since = now
        return now - self.idle_since >= timeout


def admission(active_calls: int, max_calls: int) -> int:
    """0 to take a new call, or the SIP status that refuses it."""
    return BUSY_HERE if active_calls >= max_calls else 0


@dataclass
class DigitCollector:
    """DTMF digits become one text turn: sent on `#` or after `pause` seconds without a digit."""

    pause: float = 1.5
    digits: list[str] = field(default_factory=list)
    last: float = 0.0

    def add(self, digit: str, now: float) -> str | None:
        self.last = now
        if digit == "#":
            return self.take() or None
        self.digits.append(digit)
        return None

    def due(self, now: float) -> str | None:
        if self.digits and now - self.last >= self.pause:
            return self.take()
        return None

    def take(self) -> str:
        pressed, self.digits = " ".join(self.digits), []
        return f"(The caller pressed the keys {pressed} on the phone keypad.)" if pressed else ""
