"""REGISTER with digest authentication, done by the dispatcher instead of PJSIP.

The pjsua2-python wheel's PJSIP computes digests with OpenSSL and is built without it, so it
cannot answer a 401/407. The dispatcher already speaks SIP over UDP on the public port, so it
registers the address-of-record itself, with Contact = that port: INVITEs the registrar sends
there go to the workers like any other call.

The top half is pure (challenge parsing, RFC 7616/2617 digest, message building, timing); the
`Registration` class at the bottom is the client transaction and refresh loop around it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from sip_bridge.dispatch import SipMessage, via_param

log = logging.getLogger("sip_bridge.registration")

DEFAULT_EXPIRES = 600  # seconds we ask for; the registrar may grant less (or more)
MIN_REFRESH = 1.0  # never re-register more often than this, whatever the registrar grants
T1, T2 = 0.5, 4.0  # RFC 3261 §17.1.2.2 retransmission timers over UDP
TRANSACTION_TIMEOUT = 64 * T1  # timer F: no final response by then = registrar unreachable
RETRY_FIRST, RETRY_MAX = 5.0, 300.0  # backoff after a failure
UNREGISTER_WAIT = 3.0  # shutdown waits this long at most for the registrar's answer
CHALLENGES_PER_ROUND = 3  # stale nonces answered in a row before we give up on a round

HASHES = {"MD5": "md5", "SHA-256": "sha256", "SHA-512-256": "sha512_256"}  # RFC 7616 §6.1


class RegistrationError(ValueError):
    """A challenge or registrar response we cannot work with."""


@dataclass(frozen=True)
class Challenge:
    """One Digest challenge from WWW-Authenticate (401) or Proxy-Authenticate (407)."""

    realm: str
    nonce: str
    algorithm: str = "MD5"  # as sent, e.g. MD5, SHA-256, MD5-sess
    qop: tuple[str, ...] = ()  # offered: auth, auth-int (empty: RFC 2069 style)
    opaque: str | None = None
    stale: bool = False
    proxy: bool = False  # a 407: answer with Proxy-Authorization


_PARAM = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*("((?:[^"\\]|\\.)*)"|[^,\s]*)\s*(,|$)')


def parse_challenge(value: str, proxy: bool = False) -> Challenge:
    """Parse `Digest realm="...", nonce="...", ...`; RegistrationError if it is not usable."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise RegistrationError(f"not a Digest challenge: {value[:80]!r}")
    params: dict[str, str] = {}
    position = 0
    rest = rest.strip()
    while position < len(rest):
        match = _PARAM.match(rest, position)
        if match is None:
            raise RegistrationError(f"bad challenge parameter at {rest[position:][:40]!r}")
        quoted = match.group(3)
        raw = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else match.group(2)
        params[match.group(1).lower()] = raw
        position = match.end()
    if "nonce" not in params or "realm" not in params:
        raise RegistrationError(f"challenge without realm or nonce: {value[:80]!r}")
    algorithm = params.get("algorithm", "MD5")
    if algorithm.upper().removesuffix("-SESS") not in HASHES:
        raise RegistrationError(f"unsupported digest algorithm {algorithm!r}")
    qop = tuple(q.strip().lower() for q in params.get("qop", "").split(",") if q.strip())
    if qop and not {"auth", "auth-int"} & set(qop):
        raise RegistrationError(f"unsupported qop {params['qop']!r}")
    return Challenge(
        realm=params["realm"],
        nonce=params["nonce"],
        algorithm=algorithm,
        qop=qop,
        opaque=params.get("opaque"),
        stale=params.get("stale", "").lower() == "true",
        proxy=proxy,
    )


def digest_response(
    challenge: Challenge,
    username: str,
    password: str,
    method: str,
    uri: str,
    cnonce: str,
    nc: int,
    body: bytes = b"",
) -> str:
    """The `response` value of RFC 7616 §3.4.1 (RFC 2617 §3.2.2 for MD5, RFC 2069 without qop)."""
    algorithm = challenge.algorithm.upper()
    name = HASHES[algorithm.removesuffix("-SESS")]

    def h(text: str) -> str:
        return hashlib.new(name, text.encode()).hexdigest()

    ha1 = h(f"{username}:{challenge.realm}:{password}")
    if algorithm.endswith("-SESS"):
        ha1 = h(f"{ha1}:{challenge.nonce}:{cnonce}")
    qop = chosen_qop(challenge)
    if qop == "auth-int":
        ha2 = h(f"{method}:{uri}:{hashlib.new(name, body).hexdigest()}")
    else:
        ha2 = h(f"{method}:{uri}")
    if not qop:
        return h(f"{ha1}:{challenge.nonce}:{ha2}")
    return h(f"{ha1}:{challenge.nonce}:{nc:08x}:{cnonce}:{qop}:{ha2}")


def chosen_qop(challenge: Challenge) -> str:
    """auth when offered (it is what everyone implements), else auth-int, else none."""
    if "auth" in challenge.qop:
        return "auth"
    return "auth-int" if challenge.qop else ""


def authorization(
    challenge: Challenge,
    username: str,
    password: str,
    method: str,
    uri: str,
    cnonce: str,
    nc: int,
) -> tuple[str, str]:
    """(header name, value) answering `challenge` for one request."""
    response = digest_response(challenge, username, password, method, uri, cnonce, nc)
    parts = [
        f'username="{_quote(username)}"',
        f'realm="{_quote(challenge.realm)}"',
        f'nonce="{_quote(challenge.nonce)}"',
        f'uri="{_quote(uri)}"',
        f'response="{response}"',
        f"algorithm={challenge.algorithm}",
    ]
    qop = chosen_qop(challenge)
    if qop:
        parts += [f'cnonce="{cnonce}"', f"qop={qop}", f"nc={nc:08x}"]
    if challenge.opaque is not None:
        parts.append(f'opaque="{_quote(challenge.opaque)}"')
    name = "Proxy-Authorization" if challenge.proxy else "Authorization"
    return name, "Digest " + ", ".join(parts)


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


@dataclass(frozen=True)
class Target:
    """Who we register as, and where: from `--register sip:user@host[:port]`."""

    user: str
    host: str
    port: int

    @property
    def aor(self) -> str:
        """The address-of-record (To and From)."""
        return f"sip:{self.user}@{self._hostport}"

    @property
    def registrar_uri(self) -> str:
        """The Request-URI of REGISTER (RFC 3261 §10.2: the domain, no user part)."""
        return f"sip:{self._hostport}"

    @property
    def _hostport(self) -> str:
        return self.host if self.port == 5060 else f"{self.host}:{self.port}"


def parse_target(uri: str) -> Target:
    """`sip:user@host[:port]` (or without `sip:`); RegistrationError names what is wrong."""
    rest = uri.strip().removeprefix("sip:")
    if rest.startswith("sips:") or uri.strip().startswith("sips:"):
        raise RegistrationError("sips: needs TLS, and the bridge speaks SIP over UDP only")
    rest = rest.split(";", 1)[0]
    user, at, hostport = rest.rpartition("@")
    if not at or not user or not hostport:
        raise RegistrationError(f"--register wants sip:USER@HOST[:PORT], got {uri!r}")
    host, colon, port = hostport.partition(":")
    if colon and not (port.isdigit() and 0 < int(port) < 65536):
        raise RegistrationError(f"bad port in --register {uri!r}")
    return Target(user, host, int(port) if colon else 5060)


def register_request(
    target: Target,
    contact: tuple[str, int],
    call_id: str,
    cseq: int,
    from_tag: str,
    branch: str,
    expires: int,
    auth: tuple[str, str] | None = None,
) -> bytes:
    """One REGISTER datagram; `expires` 0 removes our contact (RFC 3261 §10.2.2)."""
    host, port = contact
    lines = [
        f"REGISTER {target.registrar_uri} SIP/2.0",
        f"Via: SIP/2.0/UDP {host}:{port};branch={branch};rport",
        "Max-Forwards: 70",
        f"From: <{target.aor}>;tag={from_tag}",
        f"To: <{target.aor}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        f"Contact: <sip:{target.user}@{host}:{port}>",
        f"Expires: {expires}",
        "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE",
        "User-Agent: voice-agent-sip",
    ]
    if auth is not None:
        lines.append(f"{auth[0]}: {auth[1]}")
    lines += ["Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


def granted_expires(response: SipMessage, contact: tuple[str, int], asked: int) -> int:
    """What the registrar granted our contact: its Contact's expires, else Expires, else asked."""
    ours = f"@{contact[0]}:{contact[1]}"
    for value in response.all("contact"):
        for entry in _split_commas(value):
            if ours in entry:
                match = re.search(r";\s*expires\s*=\s*(\d+)", entry, re.IGNORECASE)
                if match:
                    return int(match.group(1))
    header = response.get("expires").strip()
    return int(header) if header.isdigit() else asked


def _split_commas(value: str) -> list[str]:
    """Split a header value on commas outside quotes and <...>."""
    parts, depth, quoted, start = [], 0, False, 0
    for i, char in enumerate(value):
        if char == '"':
            quoted = not quoted
        elif not quoted and char == "<":
            depth += 1
        elif not quoted and char == ">":
            depth -= 1
        elif not quoted and depth == 0 and char == ",":
            parts.append(value[start:i])
            start = i + 1
    parts.append(value[start:])
    return [p.strip() for p in parts if p.strip()]


def refresh_delay(granted: int) -> float:
    """Re-register at half the granted time, so a lost refresh still has time to retry."""
    return max(MIN_REFRESH, granted / 2)


def retry_delay(failures: int, retry_after: int | None = None) -> float:
    """Backoff after `failures` failed rounds in a row (1, 2, ...), or the registrar's Retry-After."""
    if retry_after:
        return float(retry_after)
    return min(RETRY_MAX, RETRY_FIRST * 2.0 ** max(0, failures - 1))


def retransmit_delays() -> list[float]:
    """Timer E: T1, 2*T1, ... capped at T2, until timer F (64*T1) runs out."""
    delays, delay, total = [], T1, 0.0
    while total + delay <= TRANSACTION_TIMEOUT:
        delays.append(delay)
        total += delay
        delay = min(2 * delay, T2)
    return delays


def local_address(registrar: tuple[str, int]) -> str:
    """The address of ours the registrar can reach (the one the kernel routes it through)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(registrar)  # no packet is sent for UDP
        return str(probe.getsockname()[0])


@dataclass
class _Round:
    """One REGISTER (and its authorized retries) until a final answer."""

    expires: int
    done: asyncio.Future[SipMessage | None]
    branch: str = ""
    challenges: int = 0
    datagram: bytes = b""
    retransmit: asyncio.Task[None] | None = None


@dataclass
class Registration:
    """Keeps `target` registered to `contact`, refreshed, and removes it on `stop()`.

    `send(datagram, address)` is the dispatcher's socket; the dispatcher hands every response
    whose Call-ID is ours to `response_received`.
    """

    target: Target
    password: str
    contact: tuple[str, int]
    registrar: tuple[str, int]
    send: Callable[[bytes, tuple[str, int]], None]
    expires: int = DEFAULT_EXPIRES
    call_id: str = field(default_factory=lambda: secrets.token_hex(12) + "@voice-agent-sip")
    from_tag: str = field(default_factory=lambda: secrets.token_hex(6))
    registered: bool = False
    cseq: int = 0
    _challenge: Challenge | None = None
    _nc: int = 0
    _cnonce: str = ""
    _round: _Round | None = None
    _task: asyncio.Task[None] | None = None
    _last_error: str = ""

    def start(self) -> None:
        self._task = asyncio.create_task(self._keep_registered(), name="registration")

    def matches(self, message: SipMessage) -> bool:
        return message.get("call-id") == self.call_id and "REGISTER" in message.get("cseq")

    def response_received(self, message: SipMessage) -> None:
        current = self._round
        if current is None or current.done.done():
            return
        via = message.all("via")
        if not via or via_param(via[0].split(",")[0], "branch") != current.branch:
            return  # a late answer to an earlier attempt
        if message.status < 200:
            if current.retransmit is not None:  # provisional: timer E now fires at T2
                current.retransmit.cancel()
            return
        if message.status in (401, 407) and self._answer_challenge(current, message):
            return
        current.done.set_result(message)

    async def stop(self) -> None:
        """Remove our contact (Expires: 0), waiting at most UNREGISTER_WAIT for the registrar."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if not self.registered:
            return
        try:
            response = await asyncio.wait_for(self._transaction(0), UNREGISTER_WAIT)
        except TimeoutError:
            response = None
        if response is None:
            log.warning(
                "unregister: no answer for %s within %.0f s", self.target.aor, UNREGISTER_WAIT
            )
        elif 200 <= response.status < 300:
            log.info("unregistered %s", self.target.aor)
        else:
            log.warning("unregister: %s", _describe(response))
        self.registered = False

    async def _keep_registered(self) -> None:
        failures = 0
        while True:
            response = await self._transaction(self.expires)
            if response is not None and response.status == 423:  # Interval Too Brief
                minimum = response.get("min-expires").strip()
                if minimum.isdigit() and int(minimum) > self.expires:
                    self.expires = int(minimum)
                    continue
            if response is not None and 200 <= response.status < 300:
                granted = granted_expires(response, self.contact, self.expires)
                if not self.registered or failures:
                    log.info(
                        "registration: 200 %s as %s, contact sip:%s@%s:%d, expires %d s",
                        self.target.registrar_uri,
                        self.target.aor,
                        self.target.user,
                        *self.contact,
                        granted,
                    )
                log.debug("registered %s for %d s", self.target.aor, granted)
                self.registered, failures, self._last_error = True, 0, ""
                await asyncio.sleep(refresh_delay(granted))
                continue
            failures += 1
            self.registered = False
            delay = retry_delay(failures, _retry_after(response))
            error = self._error(response)
            if error != self._last_error:  # one clear line per kind of failure, not per retry
                log.error("%s; retrying in %g s, direct calls still work", error, delay)
                self._last_error = error
            else:
                log.debug("%s; retrying in %g s", error, delay)
            await asyncio.sleep(delay)

    async def _transaction(self, expires: int) -> SipMessage | None:
        """Send REGISTER (answering challenges on the way); the final response, None on timeout."""
        loop = asyncio.get_running_loop()
        current = _Round(expires, loop.create_future())
        self._round = current
        self._send(current, fresh=False)
        try:
            return await asyncio.wait_for(asyncio.shield(current.done), TRANSACTION_TIMEOUT)
        except TimeoutError:
            return None
        finally:
            if current.retransmit is not None:
                current.retransmit.cancel()
            self._round = None

    def _send(self, current: _Round, fresh: bool) -> None:
        """One new client transaction in the round (new branch and CSeq)."""
        self.cseq += 1
        current.branch = "z9hG4bK" + secrets.token_hex(8)
        auth = None
        if self._challenge is not None:  # reuse the last nonce with the next nc (RFC 7616 §3.4)
            if fresh:
                self._nc, self._cnonce = 0, secrets.token_hex(8)
            self._nc += 1
            auth = authorization(
                self._challenge,
                self.target.user,
                self.password,
                "REGISTER",
                self.target.registrar_uri,
                self._cnonce,
                self._nc,
            )
        current.datagram = register_request(
            self.target,
            self.contact,
            self.call_id,
            self.cseq,
            self.from_tag,
            current.branch,
            current.expires,
            auth,
        )
        if current.retransmit is not None:
            current.retransmit.cancel()
        current.retransmit = asyncio.create_task(self._retransmit(current.datagram))

    async def _retransmit(self, datagram: bytes) -> None:
        self.send(datagram, self.registrar)
        for delay in retransmit_delays():
            await asyncio.sleep(delay)
            self.send(datagram, self.registrar)

    def _answer_challenge(self, current: _Round, response: SipMessage) -> bool:
        """Retry with credentials if the challenge is new or stale; False: it is a refusal."""
        header = "proxy-authenticate" if response.status == 407 else "www-authenticate"
        challenges = []
        for value in response.all(header):
            try:
                challenges.append(parse_challenge(value, proxy=response.status == 407))
            except RegistrationError as err:
                log.debug("ignoring a challenge: %s", err)
        if not challenges:
            return False
        order = ("SHA-512-256", "SHA-256", "MD5")  # strongest first (RFC 7616 §3.7)
        challenge = min(
            challenges, key=lambda c: order.index(c.algorithm.upper().removesuffix("-SESS"))
        )
        previous = self._challenge
        sent_auth = b"uthorization: Digest" in current.datagram
        retry = (
            not sent_auth
            or challenge.stale
            or previous is None
            or (challenge.nonce != previous.nonce and current.challenges == 0)
        )
        if not retry or current.challenges >= CHALLENGES_PER_ROUND:
            return False
        current.challenges += 1
        self._challenge = challenge
        self._send(current, fresh=True)
        return True

    def _error(self, response: SipMessage | None) -> str:
        where = f"{self.target.registrar_uri} ({self.registrar[0]}:{self.registrar[1]})"
        if response is None:
            return f"registration failed: no answer from {where} within {TRANSACTION_TIMEOUT:g} s"
        if response.status in (401, 403, 407):
            realm = f" in realm {self._challenge.realm!r}" if self._challenge else ""
            return (
                f"registration refused by {where}: {_describe(response)}: wrong user name or "
                f"password for {self.target.aor}{realm}? (the password is read from "
                "--password-env)"
            )
        return f"registration refused by {where}: {_describe(response)}"


def _describe(response: SipMessage | None) -> str:
    return "no answer" if response is None else response.start.removeprefix("SIP/2.0 ")


def _retry_after(response: SipMessage | None) -> int | None:
    if response is None:
        return None
    value = response.get("retry-after").split(";")[0].split("(")[0].strip()
    return int(value) if value.isdigit() else None
