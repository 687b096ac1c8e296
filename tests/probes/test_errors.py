"""The exception table: every rule, cause chains, exception groups, the proxy variant."""

from __future__ import annotations

import errno
import socket
import ssl

import dns.exception
import dns.message
import dns.resolver
import httpx
import pytest

from netcheck.models import Outcome
from netcheck.probes._dnswire import NameNotFound, Unanswered
from netcheck.probes._errors import classify, nameserver_text, rules
from netcheck.probes._http1 import ProtocolError, ProxyError


def chained(outer: BaseException, *causes: BaseException) -> BaseException:
    """``outer`` raised from causes[0] raised from causes[1] ... (as libraries wrap errors)."""
    current = outer
    for cause in causes:
        current.__cause__ = cause
        current = cause
    return outer


def cert_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] {message}")
    exc.verify_code = code
    exc.verify_message = message
    return exc


def no_nameservers(*said: object) -> dns.resolver.NoNameservers:
    request = dns.message.make_query("x.test.", "A")
    errors = [("Do53:127.0.0.1@5353", False, 5353, s, None) for s in said]
    return dns.resolver.NoNameservers(request=request, errors=errors)


CASES: list[tuple[str, BaseException, Outcome]] = [
    ("chain untrusted", cert_error(20, "unable to get local issuer certificate"), Outcome.TLS_UNTRUSTED),
    ("self-signed", cert_error(18, "self-signed certificate"), Outcome.TLS_UNTRUSTED),
    ("name mismatch", cert_error(62, "Hostname mismatch"), Outcome.TLS_ERROR),
    ("expired", cert_error(10, "certificate has expired"), Outcome.TLS_ERROR),
    ("not yet valid", cert_error(9, "certificate is not yet valid"), Outcome.TLS_ERROR),
    ("other verify", cert_error(26, "unsupported certificate purpose"), Outcome.TLS_ERROR),
    ("nxdomain", dns.resolver.NXDOMAIN(), Outcome.NXDOMAIN),
    ("no answer", dns.resolver.NoAnswer(), Outcome.NO_ANSWER),
    ("no config", dns.resolver.NoResolverConfiguration("no nameservers"), Outcome.NO_RESOLVER),
    ("servfail", no_nameservers("SERVFAIL"), Outcome.SERVFAIL),
    ("refused", no_nameservers("REFUSED"), Outcome.DNS_REFUSED),
    ("formerr", no_nameservers("FORMERR"), Outcome.SERVFAIL),
    ("unreachable ns", no_nameservers(OSError(errno.ENETUNREACH, "Network is unreachable")),
     Outcome.NETWORK_UNREACHABLE),
    ("closed ns", no_nameservers(ConnectionRefusedError(errno.ECONNREFUSED, "refused")), Outcome.NO_RESOLVER),
    ("broken ns", no_nameservers(EOFError()), Outcome.NO_RESOLVER),
    ("lifetime", dns.resolver.LifetimeTimeout(timeout=2.0, errors=[]), Outcome.DNS_TIMEOUT),
    ("nxdomain without dnspython", NameNotFound("a.test does not exist"), Outcome.NXDOMAIN),
    ("no answer without dnspython", Unanswered("no answer from 10.0.0.1"), Outcome.DNS_TIMEOUT),
    ("proxy 407", ProxyError("407 Proxy Authentication Required"), Outcome.HTTP_PROXY_AUTH),
    ("proxy 403", ProxyError("403 Forbidden"), Outcome.HTTP_PROXY_BLOCKED),
    ("proxy 502", ProxyError("502 Bad Gateway"), Outcome.HTTP_NO_RESPONSE),
    ("proxy other", ProxyError("tunnel failed"), Outcome.PROXY_UNREACHABLE),
    ("server hung up", ProtocolError("Server disconnected without sending a response."),
     Outcome.HTTP_NO_RESPONSE),
    ("gai noname", socket.gaierror(socket.EAI_NONAME, "Name or service not known"), Outcome.NXDOMAIN),
    ("gai again", socket.gaierror(socket.EAI_AGAIN, "Temporary failure"), Outcome.DNS_TIMEOUT),
    ("gai other", socket.gaierror(socket.EAI_FAIL, "Non-recoverable failure"), Outcome.NO_RESOLVER),
    ("refused", ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), Outcome.CONNECT_REFUSED),
    ("reset", ConnectionResetError(errno.ECONNRESET, "reset"), Outcome.CONNECTION_RESET),
    ("broken pipe", BrokenPipeError(errno.EPIPE, "pipe"), Outcome.CONNECTION_RESET),
    ("net unreachable", OSError(errno.ENETUNREACH, "Network is unreachable"), Outcome.NETWORK_UNREACHABLE),
    ("host unreachable", OSError(errno.EHOSTUNREACH, "No route to host"), Outcome.NETWORK_UNREACHABLE),
    ("other os error", OSError(errno.EINVAL, "x"), Outcome.ERROR),
    ("os timed out", OSError(errno.ETIMEDOUT, "Connection timed out"), Outcome.CONNECT_TIMEOUT),
    ("not tls", ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"), Outcome.TLS_ERROR),
    ("tls eof", ssl.SSLEOFError(8, "EOF occurred in violation of protocol"), Outcome.TLS_ERROR),
    ("timeout", TimeoutError(), Outcome.TIMEOUT),
    ("bad input", ValueError("bad address"), Outcome.ERROR),
    ("bad name", dns.exception.SyntaxError("empty label"), Outcome.ERROR),
    ("unknown", RuntimeError("boom"), Outcome.ERROR),
]


@pytest.mark.parametrize(("exc", "outcome"), [(e, o) for _, e, o in CASES], ids=[n for n, _, _ in CASES])
def test_table(exc: BaseException, outcome: Outcome) -> None:
    got, reason = classify(exc)
    assert got is outcome
    assert reason and "\n" not in reason and "Traceback" not in reason


def test_windows_errno_for_unreachable() -> None:
    exc = OSError(errno.EINVAL, "unreachable")
    exc.winerror = 10051
    assert classify(exc)[0] is Outcome.NETWORK_UNREACHABLE


def test_reasons_name_what_went_wrong() -> None:
    assert "SERVFAIL" in classify(no_nameservers("SERVFAIL"))[1]
    assert "127.0.0.1:5353" in classify(no_nameservers("SERVFAIL"))[1]
    assert "expired" in classify(cert_error(10, "certificate has expired"))[1]
    wrong = ssl.SSLError(1, "wrong version")
    wrong.reason = "WRONG_VERSION_NUMBER"  # type: ignore[misc]
    assert classify(wrong)[1] == "the server did not answer in TLS"


def test_most_specific_cause_wins_over_wrapper() -> None:
    # httpx.ConnectError <- httpcore error <- ssl verification failure
    exc = chained(httpx.ConnectError("wrapped"), RuntimeError("httpcore"),
                  cert_error(20, "unable to get local issuer certificate"))
    assert classify(exc)[0] is Outcome.TLS_UNTRUSTED
    exc = chained(httpx.ConnectError("wrapped"), OSError("All connection attempts failed"),
                  ConnectionRefusedError(errno.ECONNREFUSED, "refused"))
    assert classify(exc)[0] is Outcome.CONNECT_REFUSED


def test_exception_groups_are_searched() -> None:
    # anyio's happy eyeballs: OSError("All connection attempts failed") from a group.
    group = ExceptionGroup("attempts", [OSError(errno.ENETUNREACH, "unreachable"),
                                        OSError(errno.EHOSTUNREACH, "no route")])
    exc = chained(httpx.ConnectError("All connection attempts failed"), OSError("All failed"), group)
    assert classify(exc)[0] is Outcome.NETWORK_UNREACHABLE


def test_context_chain_is_followed() -> None:
    try:
        try:
            raise ConnectionResetError(errno.ECONNRESET, "reset")
        except ConnectionResetError:
            raise httpx.ReadError("read failed") from None
    except httpx.ReadError as exc:
        # "from None" suppresses display but keeps __context__: still a reset.
        assert classify(exc)[0] is Outcome.CONNECTION_RESET


def test_cyclic_chain_terminates() -> None:
    a, b = RuntimeError("a"), RuntimeError("b")
    a.__cause__, b.__cause__ = b, a
    assert classify(a)[0] is Outcome.ERROR


@pytest.mark.parametrize("exc", [ConnectionRefusedError(errno.ECONNREFUSED, "refused"),
                                 OSError(errno.ETIMEDOUT, "t"), TimeoutError(), OSError(errno.ENETUNREACH, "u"),
                                 socket.gaierror(socket.EAI_NONAME, "no such proxy")])
def test_connect_failure_at_proxy_is_proxy_unreachable(exc: BaseException) -> None:
    outcome, reason = classify(exc, at_proxy=True)
    assert outcome is Outcome.PROXY_UNREACHABLE
    assert reason.startswith("the proxy cannot be reached")


def test_answers_from_proxy_stay_what_they_are() -> None:
    assert classify(ProxyError("407 Proxy Authentication Required"), at_proxy=True)[0] \
        is Outcome.HTTP_PROXY_AUTH
    assert classify(cert_error(20, "x"), at_proxy=True)[0] is Outcome.TLS_UNTRUSTED


def test_every_rule_is_exercised() -> None:
    covered = set()
    for _, exc, _ in CASES:
        for i, (types, rule) in enumerate(rules()):
            if isinstance(exc, types) and rule(exc) is not None:  # the rule that decides
                covered.add(i)
                break
    assert covered == set(range(len(rules())))


@pytest.mark.parametrize(("text", "shown"), [
    ("Do53:127.0.0.1@53", "127.0.0.1"), ("Do53:127.0.0.1@5353", "127.0.0.1:5353"),
    ("Do53:::1@5353", "[::1]:5353"), ("Do53:::1@53", "::1"), ("10.0.0.1", "10.0.0.1"),
    ("https://dns.example/dns-query", "https://dns.example/dns-query")])
def test_nameserver_text(text: str, shown: str) -> None:
    assert nameserver_text(text) == shown
