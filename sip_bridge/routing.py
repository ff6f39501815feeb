"""Which campaign answers a call, and in which audio format: pure functions of the INVITE.

A route maps the called user (`agent` in `sip:agent@host`, or a phone number) to a campaign id;
`*` is the fallback. Without any route every call gets the server's defaults.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ANY_USER = "*"


class RouteError(ValueError):
    """A route argument or routes file line that does not say `user=campaign_id`."""


def parse_route(text: str) -> tuple[str, str]:
    user, sep, campaign = text.partition("=")
    user, campaign = user.strip(), campaign.strip()
    if not sep or not user or not campaign or any(c.isspace() for c in user + campaign):
        raise RouteError(f"route {text!r} must look like user=campaign_id (e.g. agent=sales)")
    return user, campaign


def load_routes(args: list[str], path: Path | None = None) -> dict[str, str]:
    """`--route` arguments, then a routes file (one `user=campaign_id` a line, # comments)."""
    routes: dict[str, str] = {}
    lines: list[tuple[str, str]] = [(f"--route {a}", a) for a in args]
    if path is not None:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if line:
                lines.append((f"{path}:{number}", line))
    for where, line in lines:
        try:
            user, campaign = parse_route(line)
        except RouteError as err:
            raise RouteError(f"{where}: {err}") from None
        routes[user] = campaign
    return routes


@dataclass(frozen=True)
class Route:
    found: bool
    campaign_id: str = ""  # empty: the server's default persona


def route_call(routes: dict[str, str], *users: str) -> Route:
    """The first of `users` (To user, then Request-URI user) with a route, else `*`, else none.

    With routes configured and no match and no `*`, the call is not ours (404)."""
    for user in users:
        if user in routes:
            return Route(True, routes[user])
    if ANY_USER in routes:
        return Route(True, routes[ANY_USER])
    return Route(not routes)


_URI_USER = re.compile(r"<?sips?:([^@;>\s]+)@", re.IGNORECASE)


def uri_user(uri: str) -> str:
    """`agent` from `"Agent" <sip:agent@10.0.0.1:5060>;tag=x`; empty when the URI has no user."""
    match = _URI_USER.search(uri)
    return match.group(1) if match else ""


def request_uri(message: str) -> str:
    """The Request-URI of a SIP request's first line (`INVITE sip:agent@host SIP/2.0`)."""
    parts = message.split("\r\n", 1)[0].split(" ")
    return parts[1] if len(parts) == 3 else ""


@dataclass(frozen=True)
class Codec:
    name: str  # PCMU, PCMA, G722
    rate: int  # the PCM rate the call's Converse stream uses (G.722 is 16 kHz audio)


PCMU = Codec("PCMU", 8000)
PCMA = Codec("PCMA", 8000)
G722 = Codec("G722", 16000)
_STATIC_PAYLOADS = {"0": PCMU, "8": PCMA, "9": G722}
_BY_NAME = {c.name: c for c in (PCMU, PCMA, G722)}


def offered_codec(sdp: str, wideband: bool = True) -> Codec:
    """The codec PJSIP will pick answering `sdp`: the first we support in the caller's order.

    PJSIP answers in the offerer's preference order, so the first supported payload type of the
    audio m= line decides; the Converse stream is opened at its rate before the call is answered.
    Defaults to PCMU when the offer has no SDP (PJSIP then offers in the 200 OK).
    """
    rtpmap: dict[str, str] = {}
    payloads: list[str] = []
    for line in sdp.splitlines():
        line = line.strip()
        if line.startswith("m=audio ") and not payloads:
            payloads = line.split()[3:]
        elif line.startswith("a=rtpmap:"):
            pt, _, encoding = line[len("a=rtpmap:") :].partition(" ")
            rtpmap[pt] = encoding.split("/", 1)[0].upper()
    for pt in payloads:
        codec = _BY_NAME.get(rtpmap.get(pt, "")) or _STATIC_PAYLOADS.get(pt)
        if codec is not None and (wideband or codec.rate == 8000):
            return codec
    return PCMU


def refer_to(target: str, remote_uri: str) -> str:
    """The Refer-To URI of a transfer target: a SIP (or tel) URI as given; a number or user
    name at the host the caller's URI names."""
    if target.startswith(("sip:", "sips:", "tel:")):
        return f"<{target}>"
    inner = remote_uri.strip()
    if "<" in inner:
        inner = inner.split("<", 1)[1].split(">", 1)[0]
    host = inner.split("@", 1)[1] if "@" in inner else inner.split(":", 1)[-1]
    host = host.split(";", 1)[0] or "127.0.0.1"
    return f"<sip:{target}@{host}>"
