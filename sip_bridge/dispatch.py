"""A stateless SIP proxy in front of several bridge workers, for more calls than one PJSIP holds.

The pjsua2-python wheel is built with PJSUA_MAX_CALLS = 4, so one process carries 4 calls. With
--max-calls above that, worker processes (each a whole bridge) listen on the ports after the
public one, and this dispatcher owns the public port. It forwards each new INVITE (and its
CANCEL, retransmissions and ACK of a failure) to the least loaded worker, adding its own Via
(RFC 3261 §16.11: the branch is derived from the caller's, so CANCEL and ACK match), and sends
the worker's responses back along the caller's Via. It adds no Record-Route, so ACK, BYE and
re-INVITEs go straight between caller and worker, and so does RTP.

With --register it also owns the registration (registration.py): it REGISTERs the
address-of-record with its own port as Contact, and gets the registrar's responses here.

It answers on its own what needs no call: OPTIONS (200), out-of-dialog BYE/CANCEL (481), a
request it cannot parse (400 when it can still address the response), every worker full (486).
The parsing is deliberately small: start line, headers, and the few headers a proxy needs.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from sip_bridge.registration import Registration

log = logging.getLogger("sip_bridge.dispatch")

MAX_MESSAGE = 65535
COMPACT = {
    "v": "via",
    "i": "call-id",
    "f": "from",
    "t": "to",
    "m": "contact",
    "l": "content-length",
}
REQUIRED = ("via", "from", "to", "call-id", "cseq")
ROUTE_SECONDS = 64.0  # 64 * T1: how long a call's INVITE transaction can still send messages
MAX_ROUTES = 10000
CALL_SECONDS = 4 * 3600.0
PENDING_SECONDS = 2.0  # an INVITE counts against its worker until the worker reports its load


class SipParseError(ValueError):
    """A datagram that is not a SIP message we can act on."""


@dataclass
class SipMessage:
    start: str  # request line or status line
    headers: list[tuple[str, str]]  # (name as sent, value), in order
    body: bytes

    @property
    def is_request(self) -> bool:
        return not self.start.startswith("SIP/2.0 ")

    @property
    def method(self) -> str:
        return self.start.split(" ", 1)[0] if self.is_request else ""

    @property
    def status(self) -> int:
        return 0 if self.is_request else int(self.start.split(" ", 2)[1])

    def get(self, name: str) -> str:
        for key, value in self.headers:
            if _canonical(key) == name:
                return value
        return ""

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if _canonical(key) == name]

    def encode(self) -> bytes:
        head = self.start + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in self.headers)
        return head.encode() + b"\r\n" + self.body


def _canonical(name: str) -> str:
    name = name.strip().lower()
    return COMPACT.get(name, name)


def parse(datagram: bytes) -> SipMessage:
    """Parse one UDP datagram; SipParseError if it is not a well-formed SIP message."""
    if len(datagram) > MAX_MESSAGE:
        raise SipParseError("message too large")
    head, sep, body = datagram.partition(b"\r\n\r\n")
    if not sep:
        raise SipParseError("no blank line after the headers")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SipParseError("headers are not UTF-8") from err
    lines = text.split("\r\n")
    start = lines[0]
    parts = start.split(" ")
    if start.startswith("SIP/2.0 "):
        if len(parts) < 2 or not (parts[1].isdigit() and len(parts[1]) == 3):
            raise SipParseError(f"bad status line {start[:80]!r}")
    elif len(parts) != 3 or parts[2] != "SIP/2.0" or not parts[0].isalpha() or ":" not in parts[1]:
        raise SipParseError(f"bad request line {start[:80]!r}")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:  # folded continuation
            name, value = headers[-1]
            headers[-1] = (name, value + " " + line.strip())
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip() or any(c in name for c in " \t"):
            raise SipParseError(f"bad header line {line[:80]!r}")
        headers.append((name.strip(), value.strip()))
    return SipMessage(start, headers, body)


def top_via(message: SipMessage) -> str:
    """The first Via value (a header may carry several, comma separated)."""
    first = message.all("via")
    return first[0].split(",", 1)[0].strip() if first else ""


def via_param(via: str, name: str) -> str | None:
    for param in via.split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == name:
            return value.strip()
    return None


def via_address(via: str) -> tuple[str, int]:
    """Where a response to this Via goes (RFC 3261 §18.2.2 and RFC 3581 rport)."""
    sent_by = via.split(";", 1)[0].split()[-1]
    host, _, port = sent_by.rpartition(":") if sent_by.count(":") == 1 else (sent_by, "", "")
    host = via_param(via, "received") or host
    rport = via_param(via, "rport")
    number = rport if rport else (port or "5060")
    if not number.isdigit():
        raise SipParseError(f"bad Via port in {via[:80]!r}")
    return host, int(number)


def response_to(request: SipMessage, status: int, reason: str, extra: str = "") -> bytes:
    """A response built from the request's Via/From/To/Call-ID/CSeq (RFC 3261 §8.2.6)."""
    to = request.get("to")
    if status > 100 and ";tag=" not in to.replace(" ", ""):
        to += ";tag=" + hashlib.sha1(request.get("call-id").encode()).hexdigest()[:10]
    lines = [f"SIP/2.0 {status} {reason}"]
    lines += [f"Via: {v}" for v in request.all("via")]
    lines += [
        f"From: {request.get('from')}",
        f"To: {to}",
        f"Call-ID: {request.get('call-id')}",
        f"CSeq: {request.get('cseq')}",
    ]
    if extra:
        lines.append(extra)
    lines += ["Server: voice-agent-sip", "Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


@dataclass
class Worker:
    port: int
    capacity: int
    reported: int = 0  # calls the worker says it has
    pending: list[float] = field(default_factory=list)  # INVITEs sent since, by time

    def load(self, now: float) -> int:
        self.pending = [t for t in self.pending if now - t < PENDING_SECONDS]
        return self.reported + len(self.pending)


@dataclass
class _Route:
    worker: Worker
    caller: tuple[str, int]
    expires: float


class Dispatcher(asyncio.DatagramProtocol):
    """Owns the public SIP port; `workers` are bridge processes on `host`:their ports."""

    def __init__(
        self, host: str, workers: list[Worker], clock: Callable[[], float] = time.monotonic
    ):
        self.host = "127.0.0.1" if host in ("", "0.0.0.0") else host
        self.workers = workers
        self.clock = clock
        self.routes: dict[str, _Route] = {}  # Call-ID -> where its INVITE went
        self.transport: asyncio.DatagramTransport | None = None
        self.dropped = 0
        self.registration: Registration | None = None  # set when the bridge --register's

    def send(self, datagram: bytes, to: tuple[str, int]) -> None:
        if self.transport is not None:
            self.transport.sendto(datagram, to)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def report_load(self, index: int, calls: int) -> None:
        worker = self.workers[index]
        worker.reported = calls
        worker.pending.clear()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        for reply, to in self.handle(data, addr):
            self.send(reply, to)

    def handle(self, data: bytes, source: tuple[str, int]) -> list[tuple[bytes, tuple[str, int]]]:
        """What to send where for one datagram (pure, apart from the routing table)."""
        if not data.strip():
            return []  # CRLF keepalive (RFC 5626)
        try:
            message = parse(data)
        except SipParseError as err:
            self.dropped += 1
            log.debug("dropped a datagram from %s: %s", source, err)
            return []
        if not message.is_request:
            return self._response(message, source)
        missing = [h for h in REQUIRED if not message.get(h)]
        if missing or not _valid_cseq(message):
            if message.method == "ACK" or "via" in missing:
                return []
            why = f"missing {', '.join(missing)}" if missing else "bad CSeq"
            return [
                (response_to(message, 400, f"Bad Request ({why})"), _reply_address(message, source))
            ]
        return self._request(message, source)

    def _request(
        self, message: SipMessage, source: tuple[str, int]
    ) -> list[tuple[bytes, tuple[str, int]]]:
        now = self.clock()
        self._expire(now)
        call_id, method = message.get("call-id"), message.method
        caller = _reply_address(message, source)
        route = self.routes.get(call_id)
        if method == "OPTIONS" and route is None:
            allow = (
                "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE\r\nAccept: application/sdp"
            )
            return [(response_to(message, 200, "OK", allow), caller)]
        if route is None:
            if method == "ACK":
                return []
            if method != "INVITE":
                return [(response_to(message, 481, "Call/Transaction Does Not Exist"), caller)]
            worker = min(self.workers, key=lambda w: w.load(now) / w.capacity)
            if worker.load(now) >= worker.capacity:
                return [(response_to(message, 486, "Busy Here"), caller)]
            worker.pending.append(now)
            if len(self.routes) >= MAX_ROUTES:
                self.routes.pop(next(iter(self.routes)))
            route = self.routes[call_id] = _Route(worker, caller, now + ROUTE_SECONDS)
        if method == "BYE":
            route.expires = now + 32.0
        return [(self._forward(message, source), (self.host, route.worker.port))]

    def _forward(self, message: SipMessage, source: tuple[str, int]) -> bytes:
        via = top_via(message)
        index = next(i for i, (k, _) in enumerate(message.headers) if _canonical(k) == "via")
        name, value = message.headers[index]
        if via_param(via, "rport") == "":  # fill in rport and received (RFC 3581)
            value = value.replace(
                via, f"{via.replace(';rport', '', 1)};received={source[0]};rport={source[1]}", 1
            )
        elif via.split(";", 1)[0].split()[-1].split(":")[0] != source[0]:
            value = value.replace(via, f"{via};received={source[0]}", 1)
        message.headers[index] = (name, value)
        branch = via_param(via, "branch") or message.get("call-id") + message.get("cseq")
        ours = "z9hG4bK" + hashlib.sha1(branch.encode()).hexdigest()[:16]
        local = self.transport.get_extra_info("sockname") if self.transport else ("127.0.0.1", 0)
        message.headers.insert(
            index, ("Via", f"SIP/2.0/UDP {self.host}:{local[1]};branch={ours};rport")
        )
        return message.encode()

    def _response(
        self, message: SipMessage, source: tuple[str, int]
    ) -> list[tuple[bytes, tuple[str, int]]]:
        if self.registration is not None and self.registration.matches(message):
            self.registration.response_received(message)
            return []
        vias = [v.strip() for value in message.all("via") for v in value.split(",")]
        if len(vias) < 2 or source not in {(self.host, w.port) for w in self.workers}:
            return []  # not a response to something we forwarded
        rest = vias[1:]
        kept = [(k, v) for k, v in message.headers if _canonical(k) != "via"]
        first = next(i for i, (k, _) in enumerate(message.headers) if _canonical(k) == "via")
        message.headers = [*kept[:first], *(("Via", v) for v in rest), *kept[first:]]
        try:
            to = via_address(rest[0])
        except SipParseError:
            return []
        if message.status >= 200 and "INVITE" in message.get("cseq"):
            route = self.routes.get(message.get("call-id"))
            if route is not None:  # a failure: time for retransmissions and the ACK; a call:
                # until its BYE (callers that ignore Contact send it here), at most CALL_SECONDS
                ok = message.status < 300
                route.expires = self.clock() + (CALL_SECONDS if ok else 32.0)
        return [(message.encode(), to)]

    def _expire(self, now: float) -> None:
        expired = [k for k, r in self.routes.items() if r.expires < now]
        for key in expired:
            del self.routes[key]


def _valid_cseq(message: SipMessage) -> bool:
    number, _, method = message.get("cseq").partition(" ")
    return number.isdigit() and method.strip() == message.method


def _reply_address(message: SipMessage, source: tuple[str, int]) -> tuple[str, int]:
    """Responses go back to where the request came from when the Via asks (rport) or is bad."""
    via = top_via(message)
    try:
        _, port = via_address(via)
    except (SipParseError, IndexError):
        return source
    return source if via_param(via, "rport") is not None else (source[0], port)
