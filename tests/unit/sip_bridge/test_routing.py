from pathlib import Path

import pytest

from sip_bridge.routing import (
    G722,
    PCMA,
    PCMU,
    Route,
    RouteError,
    load_routes,
    offered_codec,
    refer_to,
    request_uri,
    route_call,
    uri_user,
)


def test_routes_from_arguments_and_file(tmp_path: Path) -> None:
    routes_file = tmp_path / "routes"
    routes_file.write_text("# user=campaign\nsales = c-sales\n\n+4930123=c-berlin  # a DID\n")
    routes = load_routes(["agent=c-agent", "*=c-default"], routes_file)
    assert routes == {
        "agent": "c-agent",
        "*": "c-default",
        "sales": "c-sales",
        "+4930123": "c-berlin",
    }


@pytest.mark.parametrize("bad", ["agent", "=c1", "agent=", "a gent=c1", "agent=c 1"])
def test_bad_route_says_what_it_should_look_like(bad: str) -> None:
    with pytest.raises(RouteError, match="user=campaign_id"):
        load_routes([bad])


def test_bad_routes_file_line_names_the_line(tmp_path: Path) -> None:
    routes_file = tmp_path / "routes"
    routes_file.write_text("ok=c1\nbroken\n")
    with pytest.raises(RouteError, match=r"routes:2"):
        load_routes([], routes_file)


def test_route_call_prefers_to_user_then_request_uri_then_fallback() -> None:
    routes = {"agent": "c-agent", "100": "c-100", "*": "c-any"}
    assert route_call(routes, "agent", "100") == Route(True, "c-agent")
    assert route_call(routes, "nobody", "100") == Route(True, "c-100")
    assert route_call(routes, "nobody", "") == Route(True, "c-any")


def test_no_routes_means_server_defaults_and_unknown_user_is_not_found() -> None:
    assert route_call({}, "anyone") == Route(True, "")
    assert route_call({"agent": "c1"}, "other") == Route(False)


def test_uri_user_and_request_uri() -> None:
    assert uri_user('"Agent" <sip:agent@10.0.0.1:5060>;tag=x') == "agent"
    assert uri_user("sips:+4930123@pbx.example;user=phone") == "+4930123"
    assert uri_user("<sip:10.0.0.1>") == ""
    assert request_uri("INVITE sip:agent@h:5060 SIP/2.0\r\nVia: x\r\n") == "sip:agent@h:5060"
    assert request_uri("garbage") == ""


SDP = "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 4000 RTP/AVP {}\r\n{}"


def test_offered_codec_follows_the_callers_order() -> None:
    assert offered_codec(SDP.format("8 0 101", "")) == PCMA
    assert offered_codec(SDP.format("9 0", "")) == G722
    assert offered_codec(SDP.format("9 0", ""), wideband=False) == PCMU
    # dynamic and unknown payload types are skipped by their rtpmap name
    dynamic = SDP.format("96 97 8", "a=rtpmap:96 opus/48000/2\r\na=rtpmap:97 G722/8000\r\n")
    assert offered_codec(dynamic) == G722


def test_offer_without_sdp_defaults_to_pcmu() -> None:
    assert offered_codec("") == PCMU


@pytest.mark.parametrize(
    ("target", "remote", "uri"),
    [
        ("sip:desk@pbx.example.com", "<sip:caller@10.0.0.2:5060>", "<sip:desk@pbx.example.com>"),
        ("tel:+15551234", "sip:caller@10.0.0.2", "<tel:+15551234>"),
        (
            "+15551234",
            '"Ann" <sip:ann@pbx.example.com:5070;transport=udp>',
            "<sip:+15551234@pbx.example.com:5070>",
        ),
        ("2001", "sip:10.0.0.2", "<sip:2001@10.0.0.2>"),
    ],
)
def test_refer_to_targets(target: str, remote: str, uri: str) -> None:
    assert refer_to(target, remote) == uri
