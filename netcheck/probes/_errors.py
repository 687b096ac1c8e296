"""The one table that turns exceptions into outcomes and plain-language reasons.

Probes never raise for network failures: they catch, call :func:`classify`, and
put the result in their :class:`~netcheck.models.ProbeResult`. Libraries wrap
each other's errors (dnspython keeps each server's failure, asyncio raises
``OSError`` or ``ssl.SSLError`` from inside its own), so :func:`classify` looks along the whole cause chain,
exception groups included, and the first rule of the table (most specific
first) that matches any exception in that chain decides.

    rule                                   outcome
    -------------------------------------  ---------------------------------------
    ssl.SSLCertVerificationError           TLS_UNTRUSTED (chain) / TLS_ERROR (name,
                                           expiry, other)
    dns NXDOMAIN (dnspython's, _dnswire's)  NXDOMAIN
    dns NoAnswer                           NO_ANSWER
    dns NoResolverConfiguration            NO_RESOLVER
    dns NoNameservers                      SERVFAIL / DNS_REFUSED / NETWORK_UNREACHABLE
                                           / NO_RESOLVER, from what each server said
    dns Timeout (lifetime expired)         DNS_TIMEOUT
    _dnswire.Unanswered                    DNS_TIMEOUT
    _http1.ProxyError (CONNECT refused)    HTTP_PROXY_AUTH (407) / HTTP_PROXY_BLOCKED
                                           / HTTP_NO_RESPONSE (5xx)
    _http1.ProtocolError                   HTTP_NO_RESPONSE
    socket.gaierror                        NXDOMAIN / DNS_TIMEOUT / NO_RESOLVER
    ConnectionRefusedError                 CONNECT_REFUSED
    ConnectionResetError / Aborted / EPIPE CONNECTION_RESET
    OSError ENETUNREACH / EHOSTUNREACH     NETWORK_UNREACHABLE
    OSError ETIMEDOUT                      CONNECT_TIMEOUT
    ssl.SSLError (handshake)               TLS_ERROR
    TimeoutError                           TIMEOUT
    anything else                          ERROR

dnspython's rules are in the table only once dnspython is imported (the DNS
probe imports it only when it needs it): before, none of its exceptions exists.

``at_proxy=True`` says the failure happened while reaching a proxy: a failure to
connect then becomes PROXY_UNREACHABLE.
"""

from __future__ import annotations

import errno
import functools
import socket
import ssl
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from netcheck.models import Detail, Outcome, ProbeKind, ProbeResult, Target
from netcheck.probes._dnswire import NameNotFound, Unanswered
from netcheck.probes._http1 import ProtocolError, ProxyError

Classified = tuple[Outcome, str]

# POSIX errno values plus their Windows (WinSock) equivalents.
_UNREACHABLE = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EHOSTDOWN,
                10050, 10051, 10064, 10065}
_TIMED_OUT = {errno.ETIMEDOUT, 10060}
_REFUSED = {errno.ECONNREFUSED, 10061}
_RESET = {errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE, 10053, 10054}

# OpenSSL verification codes: the chain does not lead to a root we trust.
_CHAIN_CODES = {2, 18, 19, 20, 21, 27}
_HOSTNAME_MISMATCH = 62
_EXPIRED, _NOT_YET_VALID = 10, 9

# Outcomes that mean "could not get a connection at all": behind a proxy they
# become PROXY_UNREACHABLE.
_CONNECT_FAILURES = {Outcome.CONNECT_REFUSED, Outcome.CONNECT_TIMEOUT, Outcome.NETWORK_UNREACHABLE,
                     Outcome.CONNECTION_RESET, Outcome.NXDOMAIN, Outcome.DNS_TIMEOUT,
                     Outcome.NO_RESOLVER, Outcome.TIMEOUT}


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, its causes/contexts and the members of exception groups, outermost first."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo and len(seen) < 32:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        if isinstance(e, BaseExceptionGroup):
            todo.extend(e.exceptions)
        nxt = e.__cause__ or e.__context__
        if nxt is not None:
            todo.append(nxt)


def _errno(e: BaseException) -> int | None:
    if isinstance(e, OSError):
        code = getattr(e, "winerror", None) or e.errno
        return code if isinstance(code, int) else None
    return None


# --- DNS -------------------------------------------------------------------------

def nameserver_text(server: object) -> str:
    """``127.0.0.1`` or ``[::1]:5353`` for dnspython's ``Do53:127.0.0.1@53`` and friends."""
    text = str(server)
    kind, sep, rest = text.partition(":")
    if not sep or kind not in ("Do53", "DoH", "DoT", "DoQ"):
        return text
    address, _, port = rest.rpartition("@")
    if not address:
        return rest
    if port == "53":
        return address
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _servers(errors: list[Any]) -> str:
    names = sorted({nameserver_text(err[0]) for err in errors if err and err[0]})
    return ", ".join(names) or "the configured DNS servers"


def _no_nameservers(e: BaseException) -> Classified:
    errors: list[Any] = list(getattr(e, "kwargs", {}).get("errors") or [])
    said = [err[3] for err in errors if len(err) > 3]
    texts = [s for s in said if isinstance(s, str)]
    where = _servers(errors)
    if "SERVFAIL" in texts:
        return Outcome.SERVFAIL, f"the DNS server ({where}) could not resolve the name (SERVFAIL)"
    if "REFUSED" in texts:
        return Outcome.DNS_REFUSED, f"the DNS server ({where}) refused to answer (REFUSED)"
    if texts:
        return Outcome.SERVFAIL, f"the DNS server ({where}) answered with an error ({texts[0]})"
    oserrors = [s for s in said if isinstance(s, OSError)]
    if oserrors and len(oserrors) == len(said) and all(_errno(s) in _UNREACHABLE for s in oserrors):
        return (Outcome.NETWORK_UNREACHABLE,
                f"the DNS server ({where}) cannot be reached: the network is unreachable")
    if oserrors and all(isinstance(s, ConnectionRefusedError) or _errno(s) in _REFUSED
                        for s in oserrors):
        return Outcome.NO_RESOLVER, f"no DNS server is listening at {where}"
    detail = f" ({said[0]})" if said else ""
    return Outcome.NO_RESOLVER, f"no DNS server could answer ({where}){detail}"


def _dns_timeout(e: BaseException) -> Classified:
    errors: list[Any] = list(getattr(e, "kwargs", {}).get("errors") or [])
    return Outcome.DNS_TIMEOUT, f"the DNS server ({_servers(errors)}) did not answer in time"


# --- TLS -------------------------------------------------------------------------

def _cert_verify(e: BaseException) -> Classified:
    assert isinstance(e, ssl.SSLCertVerificationError)
    code = getattr(e, "verify_code", None)
    message = getattr(e, "verify_message", None) or str(e)
    if code == _HOSTNAME_MISMATCH:
        return Outcome.TLS_ERROR, f"the certificate does not match the server name ({message})"
    if code == _EXPIRED:
        return Outcome.TLS_ERROR, "the server's certificate has expired"
    if code == _NOT_YET_VALID:
        return Outcome.TLS_ERROR, "the server's certificate is not valid yet (check the clock)"
    if code in _CHAIN_CODES:
        return Outcome.TLS_UNTRUSTED, f"the certificate is not trusted ({message})"
    return Outcome.TLS_ERROR, f"the certificate was rejected ({message})"


_TLS_REASONS = {
    "WRONG_VERSION_NUMBER": "the server did not answer in TLS",
    "UNSUPPORTED_PROTOCOL": "the server offers only TLS versions this machine refuses",
    "TLSV1_ALERT_PROTOCOL_VERSION": "the server refused this machine's TLS versions",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "the server refused the TLS handshake",
    "TLSV1_UNRECOGNIZED_NAME": "the server does not know this name (SNI)",
}


def _tls_error(e: BaseException) -> Classified:
    assert isinstance(e, ssl.SSLError)
    if isinstance(e, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return Outcome.TLS_ERROR, "the connection was closed during the TLS handshake"
    reason = str(getattr(e, "reason", None) or "")
    return Outcome.TLS_ERROR, _TLS_REASONS.get(reason, f"the TLS handshake failed ({reason or e})")


# --- HTTP ------------------------------------------------------------------------

def _proxy_error(e: BaseException) -> Classified:
    text = str(e).strip()
    head = text.split(" ", 1)[0]
    status = int(head) if head.isdigit() else None
    if status == 407:
        return Outcome.HTTP_PROXY_AUTH, f"the proxy asks for credentials ({text})"
    if status is not None and status >= 500:
        return Outcome.HTTP_NO_RESPONSE, f"the proxy could not reach the server ({text})"
    if status is not None:
        return Outcome.HTTP_PROXY_BLOCKED, f"the proxy refused to open a tunnel to the server ({text})"
    return Outcome.PROXY_UNREACHABLE, f"the proxy failed ({text or type(e).__name__})"


# --- sockets -----------------------------------------------------------------------

def _gaierror(e: BaseException) -> Classified:
    code = e.errno if isinstance(e, OSError) else None
    if code in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5), 11001):
        return Outcome.NXDOMAIN, "the name could not be resolved"
    if code in (socket.EAI_AGAIN, 11002):
        return Outcome.DNS_TIMEOUT, "name resolution failed temporarily (no answer from DNS)"
    return Outcome.NO_RESOLVER, f"name resolution failed ({e})"


def _oserror(e: BaseException) -> Classified | None:
    if isinstance(e, ssl.SSLError):  # an OSError too, but its errno is OpenSSL's
        return None
    code = _errno(e)
    if isinstance(e, ConnectionRefusedError) or code in _REFUSED:
        return Outcome.CONNECT_REFUSED, "the server refused the connection (nothing listens on that port)"
    if isinstance(e, ConnectionResetError | ConnectionAbortedError | BrokenPipeError) or code in _RESET:
        return Outcome.CONNECTION_RESET, "the connection was reset"
    if code in _UNREACHABLE:
        return Outcome.NETWORK_UNREACHABLE, "the network is unreachable (no route to the address)"
    if code in _TIMED_OUT:
        return Outcome.CONNECT_TIMEOUT, "the connection attempt timed out"
    return None


def _const(outcome: Outcome, reason: str) -> Callable[[BaseException], Classified]:
    return lambda _e: (outcome, reason)


_Rule = tuple[type[BaseException] | tuple[type[BaseException], ...],
              Callable[[BaseException], Classified | None]]

_NXDOMAIN = _const(Outcome.NXDOMAIN, "the name does not exist (NXDOMAIN)")


def _invalid(e: BaseException) -> Classified:
    return Outcome.ERROR, f"invalid input ({e})"


@functools.cache
def _dnspython_rules() -> tuple[tuple[_Rule, ...], tuple[_Rule, ...]]:
    """dnspython's rules: (before the rest of the table, at its end)."""
    import dns.exception
    import dns.resolver

    return (
        (dns.resolver.NXDOMAIN, _NXDOMAIN),
        (dns.resolver.NoAnswer, _const(Outcome.NO_ANSWER, "the name exists but has no address records")),
        (dns.resolver.NoResolverConfiguration,
         _const(Outcome.NO_RESOLVER, "this machine has no DNS servers configured")),
        (dns.resolver.NoNameservers, _no_nameservers),
        (dns.exception.Timeout, _dns_timeout),
    ), (((dns.exception.SyntaxError, dns.exception.FormError), _invalid),)


_FIRST: tuple[_Rule, ...] = ((ssl.SSLCertVerificationError, _cert_verify),)
_REST: tuple[_Rule, ...] = (
    (NameNotFound, _NXDOMAIN),
    (Unanswered, _dns_timeout),
    (ProxyError, _proxy_error),
    (ProtocolError,
     _const(Outcome.HTTP_NO_RESPONSE, "the server closed the connection without a valid HTTP response")),
    (socket.gaierror, _gaierror),
    (OSError, _oserror),
    (ssl.SSLError, _tls_error),
    (TimeoutError, _const(Outcome.TIMEOUT, "no answer before the check's deadline")),
)
_LAST: tuple[_Rule, ...] = ((ValueError, _invalid),)


def rules() -> tuple[_Rule, ...]:
    """The table, most specific first."""
    if "dns.exception" not in sys.modules:
        return _FIRST + _REST + _LAST
    dns_first, dns_last = _dnspython_rules()
    return _FIRST + dns_first + _REST + dns_last + _LAST


def classify(exc: BaseException, *, at_proxy: bool = False) -> Classified:
    """The outcome and a plain-language reason for a failed network operation."""
    chain = list(_chain(exc))
    result: Classified | None = None
    for types, rule in rules():
        for e in chain:
            if isinstance(e, types):
                result = rule(e)
                if result is not None:
                    break
        if result is not None:
            break
    if result is None:
        text = str(exc) or type(exc).__name__
        result = Outcome.ERROR, f"unexpected error: {text}"
    if at_proxy and result[0] in _CONNECT_FAILURES:
        return Outcome.PROXY_UNREACHABLE, f"the proxy cannot be reached: {result[1]}"
    return result


# --- results ---------------------------------------------------------------------

def failure(kind: ProbeKind, target: Target, exc: BaseException, *, at_proxy: bool = False,
            phases: Mapping[str, float] | None = None, detail: Detail | None = None,
            family: str | None = None) -> ProbeResult:
    """A result for a probe that failed with ``exc``."""
    outcome, reason = classify(exc, at_proxy=at_proxy)
    return ProbeResult(kind, target, outcome, reason, dict(phases or {}), dict(detail or {}), family)


def too_late(kind: ProbeKind, target: Target) -> ProbeResult:
    """A result for a probe whose deadline passed before it could start."""
    return ProbeResult(kind, target, Outcome.TIMEOUT, "the check ran out of time before this probe started")


def ms(seconds: float) -> float:
    """Seconds to milliseconds, rounded to 0.01 ms."""
    return round(seconds * 1000.0, 2)
