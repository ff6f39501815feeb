"""Calling a webhook tool, under the TOOL_WEBHOOK_ALLOW policy.

A tool's URL comes from whoever may write a campaign or open a session; the server making the
request sits inside someone's network. So: the URL must match an entry of TOOL_WEBHOOK_ALLOW
(hosts or URL prefixes; empty allows none); the host is resolved here and the connection goes to
the address that was checked (no second lookup a DNS rebinding could change); an address that is
not public (loopback, private, link-local, CGNAT, reserved...) is refused unless an allow-list
entry names that very address; redirects are not followed; the response body is capped. Header
values are secrets: they are sent and never logged.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from server.limits import MAX_TOOL_RESULT_BYTES

log = logging.getLogger(__name__)

ALLOW_ENV = "TOOL_WEBHOOK_ALLOW"
USER_AGENT = "voice-agent/0.1 (tool webhook)"
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class WebhookRefused(Exception):
    """The URL may not be called (policy); the message says why."""


class WebhookFailed(Exception):
    """The webhook was called (or tried) and gave no usable result."""


@dataclass(frozen=True)
class AllowEntry:
    """One TOOL_WEBHOOK_ALLOW entry: a URL prefix ("https://api.example.com/tools/"), or a
    host ("api.example.com", "*.example.com", "10.0.0.5")."""

    text: str

    @property
    def is_prefix(self) -> bool:
        return "://" in self.text

    @property
    def host(self) -> str:
        if self.is_prefix:
            return (urlsplit(self.text).hostname or "").lower()
        return self.text.lower().strip("[]")

    def matches(self, url: str, host: str) -> bool:
        if self.is_prefix:
            return url.startswith(self.text)
        if self.host.startswith("*."):
            return host.endswith(self.host[1:])
        return host == self.host

    def names(self, address: IPAddress) -> bool:
        """This entry lists `address` itself (the only way a non-public address is allowed)."""
        try:
            return ipaddress.ip_address(self.host) == address
        except ValueError:
            return False


def allow_list(text: str | None = None) -> list[AllowEntry]:
    raw = os.environ.get(ALLOW_ENV, "") if text is None else text
    return [AllowEntry(e.strip()) for e in raw.split(",") if e.strip()]


def check_url(url: str, allowed: list[AllowEntry] | None = None) -> list[AllowEntry]:
    """The allow-list entries `url` matches; WebhookRefused if none (or the URL is unusable)."""
    allowed = allow_list() if allowed is None else allowed
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookRefused(f"{url[:200]!r} is not an http(s) URL")
    if parts.username or parts.password:
        raise WebhookRefused("credentials in the URL are not accepted: use headers")
    matching = [e for e in allowed if e.matches(url, parts.hostname.lower())]
    if not matching:
        raise WebhookRefused(
            f"{parts.scheme}://{parts.netloc} is not allowed by {ALLOW_ENV} "
            f"({'empty: no webhook is allowed' if not allowed else 'no entry matches'})"
        )
    return matching


async def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as err:
        raise WebhookFailed(f"cannot resolve {host}: {err}") from err
    addresses: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def _usable(address: IPAddress, entries: list[AllowEntry]) -> bool:
    if any(e.names(address) for e in entries):
        return True
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # judged as the IPv4 address it reaches
    return address.is_global


async def call_webhook(
    url: str,
    headers: dict[str, str],
    payload: dict[str, Any],
    limit: float,
    allowed: list[AllowEntry] | None = None,
) -> str:
    """POST `payload` as JSON to `url`; the response body as JSON text (a body that is not JSON
    becomes a JSON string). Raises WebhookRefused (policy) or WebhookFailed, within `limit` seconds.
    A connection error is retried once; a request that reached the server is never resent."""
    entries = check_url(url, allowed)
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        async with asyncio.timeout(limit):
            addresses = await _resolve(host, port)
            usable = [a for a in addresses if _usable(a, entries)]
            if not usable:
                shown = ", ".join(str(a) for a in addresses) or "no address"
                raise WebhookRefused(
                    f"{host} resolves to {shown}: not a public address, and {ALLOW_ENV} does not "
                    "list it"
                )
            for attempt in (1, 2):
                try:
                    return await _post(parts, usable[0], headers, payload)
                except (httpx.ConnectError, httpx.ConnectTimeout) as err:
                    if attempt == 2:
                        raise WebhookFailed(f"cannot connect to {host}: {err}") from err
                    log.info("webhook %s: connect failed (%s), retrying once", host, err)
    except TimeoutError as err:
        raise WebhookFailed(f"no answer within {limit:g} s") from err
    raise AssertionError("unreachable")


async def _post(
    parts: Any, address: IPAddress, headers: dict[str, str], payload: dict[str, Any]
) -> str:
    """One request to the checked `address`, with the URL's host in Host and TLS's SNI."""
    host = parts.hostname
    literal = f"[{address}]" if address.version == 6 else str(address)
    netloc = f"{literal}:{parts.port}" if parts.port else literal
    target = parts._replace(netloc=netloc).geturl()
    sent_headers = {
        **headers,
        "Host": parts.netloc.rpartition("@")[2],
        "User-Agent": USER_AGENT,
        "Content-Type": "application/json",
    }
    async with (
        httpx.AsyncClient(follow_redirects=False, trust_env=False) as client,
        client.stream(
            "POST",
            target,
            content=json.dumps(payload).encode(),
            headers=sent_headers,
            extensions={"sni_hostname": host},
        ) as response,
    ):
        if 300 <= response.status_code < 400:
            raise WebhookFailed(
                f"the webhook answered a redirect (HTTP {response.status_code}); redirects "
                "are not followed"
            )
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > MAX_TOOL_RESULT_BYTES:
                raise WebhookFailed(
                    f"the webhook's response is larger than {MAX_TOOL_RESULT_BYTES} bytes"
                )
        text = body.decode("utf-8", errors="replace")
        if response.status_code >= 400:
            raise WebhookFailed(f"the webhook answered HTTP {response.status_code}: {text[:200]}")
        try:
            json.loads(text)
            return text
        except ValueError:
            return json.dumps(text)
