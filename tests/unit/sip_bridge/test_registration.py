"""Digest REGISTER (registration.py): RFC test vectors, challenge parsing, timing, and the
client transaction against a scripted registrar on the other side of `send`."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging

import pytest

from sip_bridge import registration as reg
from sip_bridge.dispatch import Dispatcher, SipMessage, Worker, parse
from sip_bridge.registration import (
    Challenge,
    Registration,
    RegistrationError,
    Target,
    authorization,
    digest_response,
    granted_expires,
    parse_challenge,
    parse_target,
    refresh_delay,
    register_request,
    retransmit_delays,
    retry_delay,
)

# RFC 7616 §3.9.1: username Mufasa, password "Circle of Life", GET /dir/index.html
RFC7616 = Challenge(
    realm="http-auth@example.org",
    nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    algorithm="MD5",
    qop=("auth", "auth-int"),
    opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS",
)
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


def test_rfc7616_md5_vector() -> None:
    response = digest_response(
        RFC7616, "Mufasa", "Circle of Life", "GET", "/dir/index.html", RFC7616_CNONCE, 1
    )
    assert response == "8ca523f5e9506fed4657c9700eebdbec"


def test_rfc7616_sha256_vector() -> None:
    challenge = dataclasses.replace(RFC7616, algorithm="SHA-256")
    response = digest_response(
        challenge, "Mufasa", "Circle of Life", "GET", "/dir/index.html", RFC7616_CNONCE, 1
    )
    assert response == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"


def test_rfc2617_vector() -> None:
    """RFC 2617 §3.5: qop=auth, nc=00000001, cnonce 0a4f113b."""
    challenge = Challenge(
        "testrealm@host.com", "dcd98b7102dd2f0e8b11d0f600bfb0c093", "MD5", ("auth", "auth-int")
    )
    response = digest_response(
        challenge, "Mufasa", "Circle Of Life", "GET", "/dir/index.html", "0a4f113b", 1
    )
    assert response == "6629fae49393a05397450978507c4ef1"


def test_no_qop_is_rfc2069_style() -> None:
    """Without qop: H(HA1:nonce:HA2), what registrar.xml (SIPp) and old PBXs ask for."""
    challenge = Challenge("testrealm@host.com", "dcd98b7102dd2f0e8b11d0f600bfb0c093")
    ha1 = hashlib.md5(b"Mufasa:testrealm@host.com:CircleOfLife").hexdigest()
    ha2 = hashlib.md5(b"GET:/dir/index.html").hexdigest()
    expected = hashlib.md5(f"{ha1}:{challenge.nonce}:{ha2}".encode()).hexdigest()
    got = digest_response(challenge, "Mufasa", "CircleOfLife", "GET", "/dir/index.html", "x", 1)
    assert got == expected


def test_sess_and_auth_int_variants() -> None:
    sess = dataclasses.replace(RFC7616, algorithm="MD5-sess")
    plain = digest_response(RFC7616, "u", "p", "REGISTER", "sip:h", "c", 1)
    assert digest_response(sess, "u", "p", "REGISTER", "sip:h", "c", 1) != plain
    h = hashlib.md5
    ha1 = h(f"{h(b'u:http-auth@example.org:p').hexdigest()}:{RFC7616.nonce}:c".encode())
    ha2 = h(b"REGISTER:sip:h").hexdigest()
    line = f"{ha1.hexdigest()}:{RFC7616.nonce}:00000001:c:auth:{ha2}"
    assert (
        digest_response(sess, "u", "p", "REGISTER", "sip:h", "c", 1) == h(line.encode()).hexdigest()
    )
    auth_int = dataclasses.replace(RFC7616, qop=("auth-int",))
    ha2_int = h(f"REGISTER:sip:h:{h(b'').hexdigest()}".encode()).hexdigest()
    ha1_plain = h(b"u:http-auth@example.org:p").hexdigest()
    line = f"{ha1_plain}:{RFC7616.nonce}:00000001:c:auth-int:{ha2_int}"
    assert digest_response(auth_int, "u", "p", "REGISTER", "sip:h", "c", 1) == (
        h(line.encode()).hexdigest()
    )


def test_parse_www_authenticate() -> None:
    value = (
        'Digest realm="pbx, main \\"office\\"", qop="auth,auth-int", algorithm=SHA-256,'
        ' nonce="abc=,def", opaque="xyz", stale=TRUE'
    )
    challenge = parse_challenge(value)
    assert challenge == Challenge(
        realm='pbx, main "office"',
        nonce="abc=,def",
        algorithm="SHA-256",
        qop=("auth", "auth-int"),
        opaque="xyz",
        stale=True,
    )
    assert parse_challenge('digest nonce="n",realm="r"') == Challenge("r", "n")


def test_parse_proxy_authenticate_answers_with_proxy_authorization() -> None:
    challenge = parse_challenge('Digest realm="r", nonce="n", qop="auth"', proxy=True)
    name, value = authorization(challenge, "agent", "pw", "REGISTER", "sip:pbx", "cn", 2)
    assert name == "Proxy-Authorization"
    assert 'username="agent"' in value and "nc=00000002" in value and 'cnonce="cn"' in value
    assert "qop=auth," in value and 'uri="sip:pbx"' in value
    expected = digest_response(challenge, "agent", "pw", "REGISTER", "sip:pbx", "cn", 2)
    assert f'response="{expected}"' in value


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ('Basic realm="r"', "not a Digest"),
        ('Digest realm="r"', "without realm or nonce"),
        ('Digest realm="r", nonce="n", algorithm=SHA-1', "unsupported digest algorithm"),
        ('Digest realm="r", nonce="n", qop="auth-conf"', "unsupported qop"),
        ('Digest realm="r" nonce="n"', "bad challenge parameter"),
    ],
)
def test_unusable_challenges_say_why(value: str, why: str) -> None:
    with pytest.raises(RegistrationError, match=why):
        parse_challenge(value)


def test_parse_target() -> None:
    assert parse_target("sip:100@pbx.example.com") == Target("100", "pbx.example.com", 5060)
    target = parse_target("agent@10.0.0.2:5080")
    assert target.aor == "sip:agent@10.0.0.2:5080"
    assert target.registrar_uri == "sip:10.0.0.2:5080"
    for bad in ("sip:pbx.example.com", "sip:a@h:99999", "sips:a@h"):
        with pytest.raises(RegistrationError):
            parse_target(bad)


def test_register_request_and_granted_expires() -> None:
    target = Target("agent", "pbx", 5060)
    message = parse(register_request(target, ("10.0.0.5", 5070), "cid", 3, "ft", "z9hG4bKx", 600))
    assert message.start == "REGISTER sip:pbx SIP/2.0"
    assert message.get("contact") == "<sip:agent@10.0.0.5:5070>"
    assert message.get("expires") == "600" and message.get("cseq") == "3 REGISTER"
    assert (
        message.get("to") == "<sip:agent@pbx>" and message.get("from") == "<sip:agent@pbx>;tag=ft"
    )
    ok = parse(
        b"SIP/2.0 200 OK\r\nContact: <sip:other@1.2.3.4>;expires=50, "
        b"<sip:agent@10.0.0.5:5070>;expires=120\r\nExpires: 300\r\n\r\n"
    )
    assert granted_expires(ok, ("10.0.0.5", 5070), 600) == 120
    header_only = parse(b"SIP/2.0 200 OK\r\nExpires: 300\r\n\r\n")
    assert granted_expires(header_only, ("10.0.0.5", 5070), 600) == 300
    assert granted_expires(parse(b"SIP/2.0 200 OK\r\n\r\n"), ("10.0.0.5", 5070), 600) == 600


def test_refresh_and_retry_schedule() -> None:
    assert refresh_delay(3600) == 1800
    assert refresh_delay(60) == 30
    assert refresh_delay(1) == reg.MIN_REFRESH  # never a busy loop, whatever is granted
    assert [retry_delay(n) for n in (1, 2, 3)] == [5.0, 10.0, 20.0]
    assert retry_delay(20) == reg.RETRY_MAX
    assert retry_delay(1, retry_after=90) == 90
    delays = retransmit_delays()
    assert delays[:5] == [0.5, 1.0, 2.0, 4.0, 4.0]  # RFC 3261 timer E, capped at T2
    assert sum(delays) <= reg.TRANSACTION_TIMEOUT


class ScriptedRegistrar:
    """The registrar's side of `send`: answers each REGISTER as told, checking the digest."""

    def __init__(self, password: str, grant: int = 2, stale_after: int = 0, qop: str = "auth"):
        self.password, self.grant, self.stale_after, self.qop = password, grant, stale_after, qop
        self.nonce = "n1"
        self.seen: list[SipMessage] = []
        self.registration: Registration | None = None

    def send(self, datagram: bytes, to: tuple[str, int]) -> None:
        assert to == ("192.0.2.1", 5060)
        message = parse(datagram)
        if self.seen and self.seen[-1].get("cseq") == message.get("cseq"):
            return  # a retransmission
        self.seen.append(message)
        asyncio.get_running_loop().call_soon(self._answer, message)

    def _answer(self, message: SipMessage) -> None:
        assert self.registration is not None
        auth = message.get("authorization")
        if self.stale_after and len(self.seen) == self.stale_after:
            self.nonce = "n2"
            return self._reply(message, 401, stale=True)
        if not auth or not self._valid(message, auth):
            return self._reply(message, 401)
        return self._reply(message, 200)

    def _valid(self, message: SipMessage, auth: str) -> bool:
        fields = dict(
            part.strip().split("=", 1) for part in auth.removeprefix("Digest ").split(",")
        )
        fields = {k: v.strip('"') for k, v in fields.items()}
        challenge = Challenge("pbx.test", fields["nonce"], fields["algorithm"], (self.qop,))
        if fields["nonce"] != self.nonce:
            return False
        expected = digest_response(
            challenge,
            "agent",
            self.password,
            "REGISTER",
            fields["uri"],
            fields["cnonce"],
            int(fields["nc"], 16),
        )
        return fields["response"] == expected and fields["uri"] == "sip:pbx.test"

    def _reply(self, message: SipMessage, status: int, stale: bool = False) -> None:
        assert self.registration is not None
        lines = [f"SIP/2.0 {status} {'OK' if status == 200 else 'Unauthorized'}"]
        lines += [f"Via: {message.get('via')}", f"Call-ID: {message.get('call-id')}"]
        lines += [f"CSeq: {message.get('cseq')}", f"From: {message.get('from')}"]
        if status == 401:
            stale_param = ", stale=true" if stale else ""
            lines.append(
                f'WWW-Authenticate: Digest realm="pbx.test", nonce="{self.nonce}", '
                f'qop="{self.qop}", algorithm=SHA-256{stale_param}'
            )
        else:
            expires = message.get("expires")
            lines.append(
                f"Contact: {message.get('contact')};expires={min(int(expires), self.grant)}"
            )
        response = parse(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.registration.response_received(response)


def registration_with(registrar: ScriptedRegistrar, password: str) -> Registration:
    registration = Registration(
        Target("agent", "pbx.test", 5060),
        password,
        ("192.0.2.9", 5070),
        ("192.0.2.1", 5060),
        registrar.send,
    )
    registrar.registration = registration
    return registration


async def wait_until(condition: object, within: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():  # type: ignore[operator]
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_registers_refreshes_answers_stale_and_unregisters() -> None:
    registrar = ScriptedRegistrar("secret", grant=2, stale_after=3)
    registration = registration_with(registrar, "secret")
    registration.start()
    await wait_until(lambda: registration.registered)
    first, signed = registrar.seen[:2]
    assert not first.get("authorization") and "algorithm=SHA-256" in signed.get("authorization")
    # granted 2 s: the refresh comes after 1 s, signed with the cached nonce; the registrar says
    # it is stale, and the bridge signs again with the new one
    await wait_until(lambda: len(registrar.seen) >= 4, within=3.0)
    refresh, resigned = registrar.seen[2:4]
    assert "nc=00000002" in refresh.get("authorization")
    assert 'nonce="n2"' in resigned.get("authorization")
    assert "nc=00000001" in resigned.get("authorization")
    assert registration.registered
    await registration.stop()
    last = registrar.seen[-1]
    assert last.get("expires") == "0" and 'nonce="n2"' in last.get("authorization")
    assert not registration.registered
    cseqs = [int(m.get("cseq").split()[0]) for m in registrar.seen]
    assert cseqs == sorted(set(cseqs))  # every new request a new CSeq, one Call-ID
    assert len({m.get("call-id") for m in registrar.seen}) == 1


async def test_wrong_password_is_one_error_line(caplog: pytest.LogCaptureFixture) -> None:
    registrar = ScriptedRegistrar("secret")
    registration = registration_with(registrar, "wrong")
    caplog.set_level(logging.ERROR, "sip_bridge.registration")
    registration.start()
    await wait_until(lambda: len(caplog.records) >= 1)
    await asyncio.sleep(0.1)
    [record] = caplog.records
    assert "401 Unauthorized" in record.message and "wrong user name or password" in record.message
    assert len(registrar.seen) == 2  # asked, signed once, refused: no loop of retries
    assert not registration.registered
    await registration.stop()
    assert len(registrar.seen) == 2  # nothing to unregister


async def test_dispatcher_hands_register_responses_to_the_registration() -> None:
    registrar = ScriptedRegistrar("secret")
    registration = registration_with(registrar, "secret")
    dispatcher = Dispatcher("127.0.0.1", [Worker(5071, 4)])
    dispatcher.registration = registration
    loop = asyncio.get_running_loop()
    current = reg._Round(600, loop.create_future(), branch="z9hG4bKabc")
    registration._round = current
    response = (
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.9:5070;branch=z9hG4bKabc\r\n"
        f"Call-ID: {registration.call_id}\r\nCSeq: 1 REGISTER\r\n\r\n"
    ).encode()
    assert dispatcher.handle(response, ("192.0.2.1", 5060)) == []
    assert current.done.done() and current.done.result().status == 200
    # an INVITE from the registrar to our contact goes to a worker like any call
    invite = (
        "INVITE sip:agent@192.0.2.9:5070 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKinv\r\n"
        "From: <sip:pbx@192.0.2.1>;tag=p\r\nTo: <sip:agent@pbx.test>\r\n"
        f"Call-ID: {registration.call_id}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    [(_, to)] = dispatcher.handle(invite, ("192.0.2.1", 5060))
    assert to == ("127.0.0.1", 5071)


async def test_unreachable_registrar_is_retried_with_backoff(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """No answer: the REGISTER is retransmitted (timer E), the round times out (timer F, here
    shortened), one error line, and the next round after the backoff registers."""
    monkeypatch.setattr(reg, "TRANSACTION_TIMEOUT", 1.6)  # sent at 0, 0.5 and 1.5 s
    monkeypatch.setattr(reg, "RETRY_FIRST", 0.2)
    registrar = ScriptedRegistrar("secret", grant=60)
    sent: list[bytes] = []
    up = False

    def send(datagram: bytes, to: tuple[str, int]) -> None:
        sent.append(datagram)
        if up:
            registrar.send(datagram, to)

    registration = registration_with(registrar, "secret")
    registration.send = send
    caplog.set_level(logging.ERROR, "sip_bridge.registration")
    registration.start()
    await wait_until(lambda: len(caplog.records) == 1, within=3.0)
    assert "no answer from sip:pbx.test" in caplog.records[0].message
    assert len(sent) == 3 and len(set(sent)) == 1  # retransmissions of one request
    up = True
    await wait_until(lambda: registration.registered, within=3.0)
    await registration.stop()
    assert parse(sent[-1]).get("expires") == "0"
