"""TOOL_WEBHOOK_ALLOW: which URLs and addresses a webhook tool may reach."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from server.tools.webhook import (
    WebhookFailed,
    WebhookRefused,
    _usable,
    allow_list,
    call_webhook,
    check_url,
)


def test_empty_allow_list_allows_nothing() -> None:
    with pytest.raises(WebhookRefused, match="empty: no webhook is allowed"):
        check_url("https://api.example.com/x", allow_list(""))


@pytest.mark.parametrize(
    ("allow", "url", "ok"),
    [
        ("api.example.com", "https://api.example.com/orders", True),
        ("api.example.com", "https://API.example.com/orders", True),
        ("api.example.com", "https://api.example.com.evil.net/", False),
        ("*.example.com", "https://hooks.example.com/a", True),
        ("*.example.com", "https://example.com.evil.net/a", False),
        ("https://api.example.com/tools/", "https://api.example.com/tools/lookup", True),
        ("https://api.example.com/tools/", "https://api.example.com/admin", False),
        ("https://api.example.com/tools/", "http://api.example.com/tools/x", False),
        ("api.example.com", "https://user:pw@api.example.com/", False),
        ("api.example.com", "file:///etc/passwd", False),
    ],
)
def test_urls_must_match_an_entry(allow: str, url: str, ok: bool) -> None:
    if ok:
        check_url(url, allow_list(allow))
    else:
        with pytest.raises(WebhookRefused):
            check_url(url, allow_list(allow))


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.5",
        "172.16.3.4",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",  # CGNAT
        "0.0.0.0",
        "::1",
        "fe80::1",
        "fd00::1",
        "::ffff:127.0.0.1",  # loopback dressed as IPv6
    ],
)
def test_non_public_addresses_need_an_entry_naming_them(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert not _usable(ip, allow_list("*.example.com, localhost"))
    assert _usable(ip, allow_list(f"http://[{address}]:8080/" if ":" in address else address))


def test_public_addresses_are_usable() -> None:
    assert _usable(ipaddress.ip_address("93.184.216.34"), allow_list("example.com"))


async def test_a_refused_connection_is_tried_twice_then_an_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(WebhookFailed, match="cannot connect"):
            await call_webhook(f"http://127.0.0.1:{port}/x", {}, {}, 5.0, allow_list("127.0.0.1"))
