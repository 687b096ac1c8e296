"""TLS probe: handshake timing, the certificate, and interception detection.

Connects to ``target.address`` (port default 443) with SNI ``target.host`` and
verifies the chain against the public root set. In the normal case that one
handshake is all. When the public roots reject the chain, a second handshake
verifies against the machine's store: success there means a root added on this
machine signed it, i.e. TLS inspection ("inspected by <issuer>"); failure there
too means an untrusted certificate. When a certificate is rejected, one more
handshake without verification reads it so the reason can name its issuer.

Certificate facts come from the DER the server sent (a small reader below), so
every path, verified or not, reports them the same way.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass, field

from netcheck.deadline import Deadline
from netcheck.models import DetailValue, Outcome, ProbeKind, ProbeResult, ProbeSpec, Target
from netcheck.probes import trust
from netcheck.probes._connect import Shared, SocketConn, TlsConn, connect_socket
from netcheck.probes._errors import classify, failure, ms, too_late
from netcheck.probes.tcp import family_of, socket_address

DEFAULT_PORT = 443
_HOSTNAME_MISMATCH = 62  # OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH

# --- a minimal DER reader for the certificate fields we report ------------------------

_OID_CN = bytes.fromhex("550403")
_OID_O = bytes.fromhex("55040a")
_OID_SAN = bytes.fromhex("551d11")


def _tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of value, end of value) of the element at ``pos``."""
    if pos + 2 > len(data):
        raise ValueError("truncated DER")
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        if not 0 < n <= 4 or pos + n > len(data):
            raise ValueError("bad DER length")
        length = int.from_bytes(data[pos:pos + n], "big")
        pos += n
    if pos + length > len(data):
        raise ValueError("truncated DER")
    return tag, pos, pos + length


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    out = []
    while start < end:
        tag, vstart, vend = _tlv(data, start)
        out.append((tag, vstart, vend))
        start = vend
    return out


def _text(tag: int, raw: bytes) -> str:
    if tag == 0x1E:  # BMPString
        return raw.decode("utf-16-be", "replace")
    if tag == 0x1C:  # UniversalString
        return raw.decode("utf-32-be", "replace")
    if tag == 0x14:  # T61String
        return raw.decode("latin-1")
    return raw.decode("utf-8", "replace")


def _name(der: bytes, start: int, end: int) -> dict[bytes, str]:
    out: dict[bytes, str] = {}
    for _, rs, re_ in _children(der, start, end):  # RDN (SET)
        for _, as_, ae in _children(der, rs, re_):  # AttributeTypeAndValue (SEQUENCE)
            parts = _children(der, as_, ae)
            if len(parts) >= 2 and parts[0][0] == 0x06:
                oid = der[parts[0][1]:parts[0][2]]
                tag, vs, ve = parts[1]
                out.setdefault(oid, _text(tag, der[vs:ve]))
    return out


def _time(tag: int, raw: bytes) -> str:
    text = raw.decode("ascii")
    if tag == 0x17:  # UTCTime YYMMDDHHMMSSZ
        year = int(text[:2])
        text = f"{2000 + year if year < 50 else 1900 + year}{text[2:]}"
    return f"{text[0:4]}-{text[4:6]}-{text[6:8]}T{text[8:10]}:{text[10:12]}:{text[12:14]}Z"


def _san(der: bytes, start: int, end: int) -> list[str]:
    names = []
    _, ss, se = _tlv(der, start)  # GeneralNames (SEQUENCE)
    for tag, vs, ve in _children(der, ss, se):
        if tag == 0x82:  # dNSName
            names.append(der[vs:ve].decode("ascii", "replace"))
        elif tag == 0x87:  # iPAddress
            names.append(str(ipaddress.ip_address(der[vs:ve])))
    return names


#: Names of a certificate kept in a report. Microsoft's front doors present certificates with
#: dozens to hundreds of names; every TLS probe carrying all of them made a report several
#: times larger than everything else in it, and the verdict needs none of them.
MAX_NAMES = 8


@dataclass
class CertFacts:
    subject: str | None = None
    issuer_cn: str | None = None
    issuer_org: str | None = None
    san: list[str] = field(default_factory=list)
    not_after: str | None = None

    @property
    def issuer(self) -> str | None:
        if self.issuer_cn and self.issuer_org and self.issuer_cn != self.issuer_org:
            return f"{self.issuer_cn} ({self.issuer_org})"
        return self.issuer_cn or self.issuer_org

    def detail(self) -> dict[str, DetailValue]:
        return {"subject": self.subject, "issuer": self.issuer, "issuer_org": self.issuer_org,
                "issuer_cn": self.issuer_cn, "san": self.san[:MAX_NAMES], "san_count": len(self.san),
                "not_after": self.not_after}

    def names(self) -> str:
        """The certificate's names for a sentence: the first ``MAX_NAMES``, and how many more."""
        more = len(self.san) - MAX_NAMES
        return ", ".join(self.san[:MAX_NAMES]) + (f" and {more} more" if more > 0 else "")


def cert_facts(der: bytes) -> CertFacts:
    """Subject CN, issuer CN and O, DNS/IP names and expiry of a DER certificate."""
    _, cs, ce = _tlv(der, 0)
    _, ts, te = _tlv(der, cs)  # tbsCertificate
    fields = _children(der, ts, te)
    i = 1 if fields and fields[0][0] == 0xA0 else 0  # explicit version
    issuer = _name(der, fields[i + 2][1], fields[i + 2][2])
    validity = _children(der, fields[i + 3][1], fields[i + 3][2])
    subject = _name(der, fields[i + 4][1], fields[i + 4][2])
    facts = CertFacts(subject=subject.get(_OID_CN), issuer_cn=issuer.get(_OID_CN),
                      issuer_org=issuer.get(_OID_O))
    if len(validity) == 2:
        tag, vs, ve = validity[1]
        facts.not_after = _time(tag, der[vs:ve])
    for tag, vs, _ in fields[i + 6:]:
        if tag != 0xA3:  # extensions
            continue
        _, es, ee = _tlv(der, vs)
        for _, xs, xe in _children(der, es, ee):
            parts = _children(der, xs, xe)
            if parts and der[parts[0][1]:parts[0][2]] == _OID_SAN and parts[-1][0] == 0x04:
                facts.san = _san(der, parts[-1][1], parts[-1][2])
    return facts


# --- the handshake ---------------------------------------------------------------------

@dataclass
class _Handshake:
    stage: str = "connect"
    connect_s: float | None = None
    tls_s: float | None = None
    protocol: str | None = None
    cipher: str | None = None
    der: bytes | None = None
    local_address: str | None = None


async def _handshake(host: str, family: socket.AddressFamily,
                     sockaddr: tuple[str, int] | tuple[str, int, int, int], ctx: ssl.SSLContext,
                     deadline: Deadline, cap: float, hs: _Handshake, shared: Shared | None = None) -> None:
    """TCP connect then a TLS handshake with SNI ``host``; fills ``hs``; raises on failure.

    With ``shared``, each step's outcome is handed on as it comes, and a connection that
    shook hands stays open for the HTTPS probe (``shared``'s owner closes it)."""
    hs.stage = "connect"
    try:
        async with asyncio.timeout(deadline.step(cap)):
            sock, start = await connect_socket(family, sockaddr)
        hs.connect_s = time.perf_counter() - start
    except Exception as exc:
        if shared is not None:
            shared.failed(exc)
        raise
    handed = False
    try:
        hs.local_address = str(sock.getsockname()[0])
        if shared is not None:
            shared.connect_done(sock, hs.connect_s)
        hs.stage = "tls"
        start = time.perf_counter()
        try:
            async with asyncio.timeout(deadline.step(cap)):
                conn = TlsConn(SocketConn(sock), ctx, host)
                await conn.handshake(flush=shared is None)  # shared: the Finished goes with the request
        except Exception as exc:
            if shared is not None:
                shared.failed(exc)
            raise
        hs.tls_s = time.perf_counter() - start
        if shared is not None:
            shared.handshake_done(conn, hs.tls_s)
            handed = True
        tls = conn.tls
        hs.protocol = tls.version()
        cipher = tls.cipher()
        hs.cipher = cipher[0] if cipher else None
        hs.der = tls.getpeercert(binary_form=True)
    finally:
        if not handed:
            sock.close()


def cert_facts_of(der: bytes | None) -> CertFacts:
    """The facts of a certificate (DER) a handshake saw; empty when there was none or it cannot be read."""
    return CertFacts() if der is None else _parsed(der)



@functools.lru_cache(maxsize=32)
def _parsed(der: bytes) -> CertFacts:
    """Read once per certificate: front doors share a few certificates of hundreds of names. Never modified."""
    try:
        return cert_facts(der)
    except (ValueError, IndexError, UnicodeDecodeError):
        return CertFacts()


async def probe_tls(target: Target, spec: ProbeSpec, deadline: Deadline, shared: Shared | None = None
                    ) -> ProbeResult:
    """Handshake with SNI ``target.host``; OK, TLS_INSPECTED, TLS_UNTRUSTED or a failure.

    With ``shared``, the first connect and handshake (against the public roots) are also
    the HTTPS probe's (:func:`netcheck.probes.http.probe_tls_and_https`)."""
    kind = ProbeKind.TLS
    port = target.port or DEFAULT_PORT
    host = target.address or target.host
    family = family_of(target.address)
    if deadline.expired:
        return too_late(kind, target)
    try:
        public = trust.public_context(spec)
    except (OSError, ssl.SSLError) as exc:
        return _no_store(target, exc, family)
    hs = _Handshake()
    cap = spec.step_timeout_s
    try:
        async with asyncio.timeout_at(deadline.at):
            sock_family, sockaddr = await socket_address(host, port, deadline, cap)
            family = family_of(sockaddr[0])
            return await _verify(target, sock_family, sockaddr, public, spec, deadline, cap, hs, family, shared)
    except TimeoutError:
        if hs.stage == "tls":
            outcome, reason = Outcome.TIMEOUT, "the TLS handshake did not finish in time"
        else:
            outcome, reason = Outcome.CONNECT_TIMEOUT, "the connection attempt timed out"
        return ProbeResult(kind, target, outcome, reason, _phases(hs), {"sni": target.host}, family)
    except Exception as exc:
        return failure(kind, target, exc, phases=_phases(hs), detail={"sni": target.host}, family=family)


def _no_store(target: Target, exc: Exception, family: str | None) -> ProbeResult:
    return ProbeResult(ProbeKind.TLS, target, Outcome.ERROR, f"cannot load a trust store ({exc})", family=family)


def _phases(hs: _Handshake) -> dict[str, float]:
    phases = {}
    if hs.connect_s is not None:
        phases["connect"] = ms(hs.connect_s)
    if hs.tls_s is not None:
        phases["tls"] = ms(hs.tls_s)
    return phases


async def _verify(target: Target, sock_family: socket.AddressFamily,
                  sockaddr: tuple[str, int] | tuple[str, int, int, int], public: ssl.SSLContext,
                  spec: ProbeSpec, deadline: Deadline, cap: float, hs: _Handshake,
                  family: str | None, shared: Shared | None) -> ProbeResult:
    """The public roots first; the machine's store (loaded only then: the OS store costs ~25 ms of
    CPU to load, and the HTTP probes have their own instance) when they do not lead to the certificate."""
    kind = ProbeKind.TLS

    def result(outcome: Outcome, reason: str, facts: CertFacts, verified_by: str | None,
               source: _Handshake, **extra: DetailValue) -> ProbeResult:
        detail: dict[str, DetailValue] = {
            "sni": target.host, "protocol": source.protocol, "cipher": source.cipher,
            **facts.detail(), "verified_by": verified_by,
            "local_address": source.local_address or hs.local_address, **extra}
        return ProbeResult(kind, target, outcome, reason, _phases(source) or _phases(hs), detail, family)

    try:
        await _handshake(target.host, sock_family, sockaddr, public, deadline, cap, hs, shared)
    except ssl.SSLCertVerificationError as public_exc:
        outcome, reason = classify(public_exc)
        if outcome is not Outcome.TLS_UNTRUSTED:  # name mismatch, expired, ...: the same anywhere
            seen = await _unverified(target.host, sock_family, sockaddr, deadline, cap)
            facts = cert_facts_of(seen.der)
            return result(outcome, _named(public_exc, reason, facts, target.host), facts, None, seen)
    else:
        facts = cert_facts_of(hs.der)
        return result(Outcome.OK, f"{hs.protocol}; the certificate from {facts.issuer or 'an unknown issuer'} "
                                  "is publicly trusted",
                      facts, "public", hs)
    # The public roots do not lead to this certificate: does a root on this machine?
    try:
        system = trust.system_context(spec)
    except (OSError, ssl.SSLError) as exc:
        return _no_store(target, exc, family)
    second = _Handshake()
    try:
        await _handshake(target.host, sock_family, sockaddr, system, deadline, cap, second)
    except ssl.SSLCertVerificationError as system_exc:
        outcome, reason = classify(system_exc)
        seen = await _unverified(target.host, sock_family, sockaddr, deadline, cap)
        facts = cert_facts_of(seen.der)
        if outcome is Outcome.TLS_UNTRUSTED:
            reason = (f"the certificate from {facts.issuer or 'an unknown issuer'} is trusted neither by "
                      "the public roots nor by this machine")
        return result(outcome, _named(system_exc, reason, facts, target.host), facts, None, seen)
    facts = cert_facts_of(second.der)
    inspected_by = facts.issuer_org or facts.issuer_cn or "an unknown issuer"
    return result(Outcome.TLS_INSPECTED,
                  f"inspected by {inspected_by}: the certificate is signed by a root added on this machine, "
                  "not by a public one", facts, "system", second, inspected_by=inspected_by)


def _named(exc: ssl.SSLCertVerificationError, reason: str, facts: CertFacts, host: str) -> str:
    """A name-mismatch reason that says which names the certificate is for."""
    if getattr(exc, "verify_code", None) == _HOSTNAME_MISMATCH and facts.san:
        return f"the certificate is for {facts.names()}, not {host}"
    return reason


async def _unverified(host: str, sock_family: socket.AddressFamily,
                      sockaddr: tuple[str, int] | tuple[str, int, int, int], deadline: Deadline,
                      cap: float) -> _Handshake:
    """The certificate a server presents, without judging it (best effort)."""
    seen = _Handshake()
    try:
        await _handshake(host, sock_family, sockaddr, trust.unverified_context(), deadline, cap, seen)
    except Exception:  # the failure that matters was already classified
        pass
    return seen
