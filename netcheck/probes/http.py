"""HTTP probe: one GET of ``/``, judged as Microsoft's connectivity test judges it.

Any HTTP response is a success except: no response at all, 407 (a proxy wants
credentials), and 403 from something that looks like a proxy (a proxy product
in ``Server``, or a ``Via`` / ``X-Squid-Error`` / ``Proxy-Agent`` header).
Redirects are not followed and each probe uses a fresh connection (keep-alive
off), so every probe measures a real connect and TLS handshake; a front door's
HTTPS probe may use its TLS probe's fresh connection to the same address, when
that gives the same answer (:func:`probe_tls_and_https`).

Proxy: ``spec.proxy`` if set, else the check's decision for this URL (``spec.proxy_map``:
the PAC file or the settings, :mod:`netcheck.proxy.decision`), else, when ``spec.trust_env``,
what the environment / OS settings alone say for it (``HTTPS_PROXY``, ``HTTP_PROXY``,
``ALL_PROXY``, ``NO_PROXY``; the registry on Windows, System Configuration on macOS).
Going direct with ``target.address`` set, the probe connects to that address
and sends ``target.host`` as SNI and ``Host``. Certificates are verified
against the machine's store, as the laptop's apps would. The exchange itself is
:class:`netcheck.probes._http1.Exchange` (asyncio and h11).
"""

from __future__ import annotations

import asyncio
import functools
import os
import ssl
from collections.abc import Mapping

from netcheck import __version__
from netcheck.deadline import Deadline
from netcheck.models import DetailValue, Outcome, ProbeKind, ProbeResult, ProbeSpec, Target
from netcheck.probes import trust
from netcheck.probes._connect import NotShared, Shared
from netcheck.probes._errors import Classified, classify, ms, too_late
from netcheck.probes._http1 import ACCEPT_ENCODING, Exchange, Proxy, authority
from netcheck.probes.tcp import family_of
from netcheck.probes.tls import cert_facts_of, probe_tls
from netcheck.proxy.decision import decide, url_for
from netcheck.proxy.settings import PAC_ENV, ProxySettings, redact

#: Words in a ``Server`` header that name a proxy / secure web gateway product.
PROXY_SERVERS: tuple[str, ...] = (
    "squid", "bluecoat", "blue coat", "proxysg", "zscaler", "mcafee web gateway", "skyhigh",
    "fortigate", "fortiproxy", "websense", "forcepoint", "barracuda", "netskope", "ironport",
    "cisco wsa", "privoxy", "tinyproxy", "kerio", "cyberoam", "sophos", "untangle", "check point",
    "checkpoint", "wingate", "ccproxy", "ziproxy", "polipo",
)
#: Headers that only a proxy adds.
PROXY_HEADERS: tuple[str, ...] = ("via", "x-squid-error", "proxy-agent", "x-bluecoat-via")
#: At most this much of the body is read (the transfer phase), then the connection is dropped.
MAX_BODY = 64 * 1024

_USER_AGENT = f"netcheck/{__version__}"


def looks_like_proxy(headers: Mapping[str, str]) -> str | None:
    """What gives a proxy away in these response headers, or None."""
    server = headers.get("server", "")
    low = server.lower()
    for word in PROXY_SERVERS:
        if word in low:
            return server
    for name in PROXY_HEADERS:
        if name in headers:
            return f"{name}: {headers[name]}"
    return None


def judge(status: int, reason_phrase: str, headers: Mapping[str, str]) -> tuple[Outcome, str]:
    """Microsoft's rule for an HTTP answer (headers with lower-case names)."""
    line = f"{status} {reason_phrase}".strip()
    if status == 407:
        return Outcome.HTTP_PROXY_AUTH, f"a proxy asks for credentials ({line})"
    if status == 403:
        proxy = looks_like_proxy(headers)
        if proxy:
            return Outcome.HTTP_PROXY_BLOCKED, f"a proxy blocked the request ({line}, {proxy})"
    return Outcome.OK, f"the server answered ({line})"


def _normalise_proxy(url: str) -> str:
    return url if "://" in url else f"http://{url}"


#: The environment variables the settings are read from (the cache key of ``_settings``).
_PROXY_ENV = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY",
              "ALL_PROXY", "NO_PROXY", PAC_ENV, "XDG_CURRENT_DESKTOP", "DESKTOP_SESSION")


@functools.lru_cache(maxsize=8)
def _settings(env: tuple[str | None, ...]) -> ProxySettings:
    """The laptop's proxy settings (environment, then the OS's), read once per environment: reading
    the registry or System Configuration for each of ~165 probes would cost more than the probe."""
    del env  # the cache key
    from netcheck.platform import current

    return current().proxy_settings()


def choose_proxy(spec: ProbeSpec, scheme: str, host: str, port: int | None = None
                 ) -> tuple[str | None, str | None]:
    """(proxy URL or None, where it came from: "configured", "environment", "os", "pac" or None).

    ``spec.proxy`` wins; else ``spec.proxy_map`` holds the check's decision for this URL (the
    PAC file included); else, when ``spec.trust_env``, :func:`netcheck.proxy.decision.decide`
    from the settings alone.
    """
    if spec.proxy:
        return _normalise_proxy(spec.proxy), "configured"
    url = url_for(scheme, host, port)
    if url in spec.proxy_map:
        proxy, source = spec.proxy_map[url]
        return (proxy, source) if proxy else (None, None)
    if not spec.trust_env:
        return None, None
    decision = decide(url, _settings(tuple(os.environ.get(name) for name in _PROXY_ENV)))
    return (decision.proxy, decision.source) if decision.proxy else (None, None)


def proxy_hop(proxy: str | None, source: str | None) -> tuple[Proxy | None, Classified | None]:
    """(the proxy the probe goes through, or why it cannot). A SOCKS proxy the laptop's settings chose
    is not testable (netcheck speaks to HTTP proxies only), so it neither passes nor fails the
    endpoint; any other proxy URL this client cannot use (no host, bad port) is an error."""
    if proxy is None:
        return None, None
    try:
        return Proxy.parse(proxy), None
    except ValueError as exc:
        if source != "configured" and proxy.lower().startswith("socks"):
            return None, (Outcome.NOT_TESTABLE, f"the laptop's settings ({source}) send this through the SOCKS "
                                                f"proxy {redact(proxy)}, which netcheck cannot test through")
        return None, classify(exc)


def request_headers(host: str, port: int, scheme: str, accept: str = "*/*") -> list[tuple[str, str]]:
    """The head of the one GET the HTTP and realm probes send, on a connection closed after it."""
    return [("Host", authority(host, port, 443 if scheme == "https" else 80)), ("Accept", accept),
            ("Accept-Encoding", ACCEPT_ENCODING), ("Connection", "close"), ("User-Agent", _USER_AGENT)]


async def probe_http(target: Target, spec: ProbeSpec, deadline: Deadline, shared: Shared | None = None
                     ) -> ProbeResult:
    """GET ``scheme://host:port/`` once; see the module docstring for the verdict.

    ``shared``: the TLS probe's connection to the same address, used when the request goes
    direct over ``https`` (:func:`probe_tls_and_https`)."""
    kind = ProbeKind.HTTP
    scheme = (target.scheme or ("https" if target.port == 443 else "http")).lower()
    port = target.port or (443 if scheme == "https" else 80)
    if scheme not in ("http", "https"):
        return ProbeResult(kind, target, Outcome.ERROR, f"unsupported scheme {scheme!r}")
    if deadline.expired:
        return too_late(kind, target)
    proxy, proxy_source = choose_proxy(spec, scheme, target.host, port)
    direct_address = target.address if proxy is None else None
    detail: dict[str, DetailValue] = {
        "status": None, "server": None, "proxy": redact(proxy) if proxy else None,
        "proxy_source": proxy_source, "via_proxy": proxy is not None}
    family = family_of(direct_address)
    via, cannot = proxy_hop(proxy, proxy_source)
    # Through a plain-HTTP proxy's CONNECT tunnel, the TLS probe (which goes direct) cannot see what the
    # proxy does to TLS: the chain is checked against the public roots first, as the TLS probe does.
    inspect = scheme == "https" and via is not None and via.scheme == "http"
    try:
        verify = trust.http_context(spec)
        first = trust.public_context(spec) if inspect else verify
    except (OSError, ssl.SSLError) as exc:
        return ProbeResult(kind, target, Outcome.ERROR, f"cannot load a trust store ({exc})", {}, detail, family)
    if cannot is not None:
        return ProbeResult(kind, target, *cannot, {}, detail, family)
    headers = request_headers(target.host, port, scheme)
    if via is not None or scheme != "https":
        shared = None

    async def exchange(context: ssl.SSLContext, on: Shared | None = None) -> tuple[Exchange, Exception | None]:
        ex = Exchange()
        try:
            async with asyncio.timeout_at(deadline.at):
                await ex.get(scheme=scheme, host=target.host, port=port, target="/", headers=headers,
                             ssl_context=context, timeout=deadline.step(spec.step_timeout_s),
                             connect_to=direct_address, proxy=via, body_limit=MAX_BODY, shared=on)
        except Exception as exc:  # noqa: BLE001 - judged below, by how far the exchange got
            return ex, exc
        return ex, None

    ex, error = await exchange(first, shared)
    if shared is not None and isinstance(error, NotShared | ssl.SSLCertVerificationError):
        # No shared connection, or the public roots rejected the certificate: the machine's store judges
        # it, on a connection of this probe's own.
        shared = None
        ex, error = await exchange(first)
    if shared is not None:
        detail["shared_connection"] = True  # its connect and handshake are the TLS probe's
    if inspect and ex.response is None and isinstance(error, ssl.SSLCertVerificationError) \
            and classify(error)[0] is Outcome.TLS_UNTRUSTED:
        ex, error = await exchange(verify)  # a root added on this machine signed it: the proxy inspects TLS
        if ex.response is not None:
            facts = cert_facts_of(ex.peer_der)
            detail["tls_inspected"] = True
            detail["inspected_by"] = facts.issuer_org or facts.issuer_cn or "an unknown issuer"
    if ex.response is None and isinstance(error, TimeoutError):  # what timed out depends on how far it got
        outcome, reason = _timed_out(ex, proxy is not None)
        detail["ran_out"] = True  # no answer in time, which is not a refusal (netcheck.assess.verdict reads it)
        return _result(target, outcome, reason, ex, detail, family)
    if ex.response is None and error is not None:
        outcome, reason = classify(error, at_proxy=proxy is not None and not ex.connected)
        return _result(target, outcome, reason, ex, detail, family)
    # The response head arrived: that is the answer, however the body went.
    response = ex.response
    assert response is not None
    detail.update({"status": response.status, "server": response.headers.get("server"),
                   "http_version": response.http_version, "received_bytes": ex.received})
    if "location" in response.headers:
        detail["location"] = response.headers["location"]
    outcome, reason = judge(response.status, response.reason, response.headers)
    if proxy is not None and outcome is Outcome.OK:
        reason += f" through the proxy {redact(proxy)}"
        if detail.get("tls_inspected"):
            reason += f", which inspects TLS (certificate from {detail['inspected_by']}, a root added on this machine)"
    return _result(target, outcome, reason, ex, detail, family)


def _timed_out(ex: Exchange, via_proxy: bool) -> tuple[Outcome, str]:
    if not ex.connected:
        if via_proxy:
            return Outcome.PROXY_UNREACHABLE, "the proxy did not accept a connection in time"
        return Outcome.CONNECT_TIMEOUT, "the connection attempt timed out"
    if ex.tls_pending():
        return Outcome.TIMEOUT, "the TLS handshake did not finish in time"
    return Outcome.HTTP_NO_RESPONSE, "the server accepted the connection but sent no response in time"


def phases(ex: Exchange) -> dict[str, float]:
    """The phases an exchange got through, in ms (TLS: the last handshake, i.e. the server's)."""
    out: dict[str, float] = {}
    for phase, seconds in (("connect", ex.connect_s), ("tls", ex.tls_s), ("processing", ex.processing_s),
                           ("transfer", ex.transfer_s)):
        if seconds is not None:
            out[phase] = ms(seconds)
    return out


def _result(target: Target, outcome: Outcome, reason: str, ex: Exchange, detail: dict[str, DetailValue],
            family: str | None) -> ProbeResult:
    if not detail["via_proxy"]:
        family = family or family_of(ex.remote)
        detail["remote_address"] = ex.remote
    detail["local_address"] = ex.local
    return ProbeResult(ProbeKind.HTTP, target, outcome, reason, phases(ex), detail, family)


async def probe_tls_and_https(tls_target: Target, https_target: Target, spec: ProbeSpec, deadline: Deadline
                              ) -> tuple[ProbeResult, ProbeResult]:
    """The TLS probe of ``tls_target`` and the HTTPS probe of ``https_target`` (a front door's, to the
    same address), on one connection when that changes neither result.

    The TLS probe's first handshake verifies against the public roots and offers ALPN
    ``http/1.1``, as the HTTPS probe's does; when it succeeds, the HTTPS probe sends its
    request on that connection (one connect and one handshake less, ~1 ms of CPU and a
    socket each). That gives the HTTPS probe the answer its own handshake would have had
    only when the machine's store holds every public root
    (:func:`netcheck.probes.trust.machine_holds_public`), and only direct (a proxy chosen
    for the URL carries the HTTPS probe elsewhere); otherwise the two run apart, as before.
    The results are the two probes' own, field for field; the HTTPS probe's ``connect`` and
    ``tls`` phases are then the TLS probe's, and its detail says ``shared_connection``.
    """
    proxy, _ = choose_proxy(spec, "https", https_target.host, https_target.port or 443)
    together = proxy is None and tls_target.address == https_target.address \
        and (tls_target.port or 443) == (https_target.port or 443) and trust.machine_holds_public(spec)
    shared = Shared() if together else None
    # The HTTPS probe in a task of its own, the TLS probe in this one (a task less than gather's two)
    task = asyncio.get_running_loop().create_task(probe_http(https_target, spec, deadline, shared))
    try:
        try:
            tls = await probe_tls(tls_target, spec, deadline, shared)
        finally:
            if shared is not None:
                shared.abandon()
        return tls, await task
    finally:
        if not task.done():
            task.cancel()
        if shared is not None:
            shared.close()
