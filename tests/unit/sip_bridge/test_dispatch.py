"""The dispatcher's SIP handling, datagram in -> datagrams out, with a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sip_bridge.dispatch import Dispatcher, SipParseError, Worker, parse, via_address

CALLER = ("127.0.0.1", 5090)


def request(
    method: str = "INVITE", call_id: str = "c1", extra: str = "", branch: str = "z9hG4bK-1"
) -> bytes:
    return (
        f"{method} sip:agent@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5090;branch={branch}\r\n"
        "From: <sip:caller@127.0.0.1>;tag=a\r\n"
        "To: <sip:agent@127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: 1 {method}\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n"
    ).encode()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def dispatcher(*capacities: int) -> tuple[Dispatcher, Clock]:
    clock = Clock()
    workers = [Worker(5061 + k, c) for k, c in enumerate(capacities)]
    return Dispatcher("127.0.0.1", workers, clock), clock


def test_options_keepalive_is_answered_200() -> None:
    d, _ = dispatcher(4)
    [(reply, to)] = d.handle(request("OPTIONS"), CALLER)
    assert reply.startswith(b"SIP/2.0 200 OK") and to == CALLER
    assert b"Call-ID: c1" in reply and b"CSeq: 1 OPTIONS" in reply


def test_invite_goes_to_the_least_loaded_worker_with_our_via_on_top() -> None:
    d, _ = dispatcher(4, 4)
    d.report_load(0, 3)
    [(forwarded, to)] = d.handle(request(), CALLER)
    assert to == ("127.0.0.1", 5062)
    message = parse(forwarded)
    vias = message.all("via")
    assert vias[0].startswith("SIP/2.0/UDP 127.0.0.1:") and "rport" in vias[0]
    assert vias[1].endswith("branch=z9hG4bK-1")


def test_retransmission_cancel_and_ack_follow_the_invite() -> None:
    d, _ = dispatcher(4, 4)
    [(first, to)] = d.handle(request(), CALLER)
    d.report_load(to[1] - 5061, 1)
    [(_, to_again)] = d.handle(request(), CALLER)
    [(cancel, to_cancel)] = d.handle(request("CANCEL"), CALLER)
    assert to == to_again == to_cancel
    # the same branch for the same caller branch: the worker matches CANCEL to its INVITE
    assert parse(first).all("via")[0] == parse(cancel).all("via")[0]


def test_responses_go_back_along_the_callers_via() -> None:
    d, _ = dispatcher(4)
    [(forwarded, worker)] = d.handle(request(), CALLER)
    response = forwarded.replace(
        b"INVITE sip:agent@127.0.0.1:5060 SIP/2.0", b"SIP/2.0 180 Ringing", 1
    )
    [(back, to)] = d.handle(response, worker)
    assert to == CALLER
    assert parse(back).all("via") == ["SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK-1"]


def test_a_response_not_from_a_worker_is_dropped() -> None:
    d, _ = dispatcher(4)
    assert d.handle(b"SIP/2.0 200 OK\r\nVia: a\r\nVia: b\r\n\r\n", ("10.0.0.9", 5061)) == []


def test_all_workers_full_is_busy_here() -> None:
    d, clock = dispatcher(1, 1)
    d.handle(request(call_id="a"), CALLER)
    d.handle(request(call_id="b"), CALLER)
    [(reply, _)] = d.handle(request(call_id="c"), CALLER)
    assert reply.startswith(b"SIP/2.0 486")
    clock.now = 5.0  # pending INVITEs count until the workers report
    d.report_load(0, 0)
    [(_, to)] = d.handle(request(call_id="d"), CALLER)
    assert to == ("127.0.0.1", 5061)


def test_out_of_dialog_bye_is_481_and_stray_ack_is_ignored() -> None:
    d, _ = dispatcher(4)
    [(reply, _)] = d.handle(request("BYE", call_id="unknown"), CALLER)
    assert reply.startswith(b"SIP/2.0 481")
    assert d.handle(request("ACK", call_id="unknown"), CALLER) == []


@pytest.mark.parametrize(
    "broken",
    [
        request().replace(b"Call-ID: c1\r\n", b""),
        request().replace(b"CSeq: 1 INVITE", b"CSeq: one INVITE"),
        request().replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE"),
    ],
)
def test_malformed_request_with_a_via_gets_400(broken: bytes) -> None:
    d, _ = dispatcher(4)
    [(reply, to)] = d.handle(broken, CALLER)
    assert reply.startswith(b"SIP/2.0 400") and to == CALLER


@pytest.mark.parametrize(
    "garbage",
    [b"", b"\r\n\r\n", b"hello", b"INVITE\r\n\r\n", b"\xff\xfe\r\n\r\n", b"X" * 70000],
)
def test_garbage_is_dropped(garbage: bytes) -> None:
    d, _ = dispatcher(4)
    assert d.handle(garbage, CALLER) == []


def test_routes_expire_and_stay_bounded() -> None:
    d, clock = dispatcher(10**6)
    for k in range(100):
        d.handle(request(call_id=f"x{k}"), CALLER)
    assert len(d.routes) == 100
    clock.now = 1000.0
    d.handle(request("OPTIONS", call_id="probe"), CALLER)
    assert len(d.routes) == 0


def test_via_address_uses_received_and_rport() -> None:
    assert via_address("SIP/2.0/UDP 10.0.0.1:5070;branch=z") == ("10.0.0.1", 5070)
    assert via_address("SIP/2.0/UDP 10.0.0.1;branch=z") == ("10.0.0.1", 5060)
    assert via_address("SIP/2.0/UDP 10.0.0.1:5070;received=1.2.3.4;rport=9") == ("1.2.3.4", 9)
    with pytest.raises(SipParseError):
        via_address("SIP/2.0/UDP 10.0.0.1:x;branch=z")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_any_datagram_is_answered_or_dropped_never_an_exception(data: bytes) -> None:
    d, _ = dispatcher(4)
    for reply, _ in d.handle(data, CALLER):
        assert reply.startswith(b"SIP/2.0 ")


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 5), st.binary(max_size=12)), max_size=6)
)
def test_mutated_invites_are_answered_or_dropped(edits: list[tuple[int, int, bytes]]) -> None:
    data = bytearray(request(extra="Contact: <sip:caller@127.0.0.1:5090>\r\n"))
    for at, cut, insert in edits:
        at = min(at, len(data))
        data[at : at + cut] = insert
    d, _ = dispatcher(4)
    for reply, to in d.handle(bytes(data), CALLER):
        assert reply.startswith((b"SIP/2.0 ", b"INVITE ", b"CANCEL ")) or b" SIP/2.0\r\n" in reply
        assert isinstance(to[1], int)
