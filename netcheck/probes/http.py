"""HTTP probe: one GET of ``/``, judged as Microsoft's connectivity test judges it.

Any HTTP response is a success except: no response at all, 407 (a proxy wants
credentials), and 403 from something that looks like a proxy (a proxy product
in ``Server``, or a ``Via`` / ``X-Squid-Error`` / ``Proxy-Agent`` header).
Redirects are not followed and each probe uses a fresh connection (keep-alive
off), so every probe measures a real connect and TLS handshake.

Proxy: ``spec.proxy`` if set, else what the environment / OS settings say for
this URL (``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY``, ``NO_PROXY``; the
registry on Windows, System Configuration on macOS) when ``spec.trust_env``.
Going direct with ``target.address`` set, the probe connects to that address
and sends ``target.host`` as SNI and ``Host``. Certificates are verified
against the machine's store, as the laptop's apps would.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import ssl
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncGenerator, Mapping
from typing import Any, cast

import httpx

from netcheck import __version__
from netcheck.deadline import Deadline
from netcheck.models import DetailValue, Outcome, ProbeKind, ProbeResult, ProbeSpec, Target
from netcheck.probes import trust
from netcheck.probes._errors import classify, ms, too_late
from netcheck.probes.tcp import family_of

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


def redact(url: str) -> str:
    """A proxy URL without its credentials."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if parts.port is not None:
        netloc = f"{netloc}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


#: The environment variables that decide proxies (read case-insensitively by urllib).
_PROXY_ENV = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY",
              "ALL_PROXY", "NO_PROXY", "REQUEST_METHOD")


@functools.lru_cache(maxsize=8)
def _proxy_settings(env: tuple[str | None, ...]) -> tuple[Mapping[str, str], bool]:
    """(scheme -> proxy URL, whether they came from the environment), once per environment.

    Reading the whole environment (or the registry / System Configuration) for
    each of ~165 probes would cost more CPU than the rest of the probe.
    """
    del env  # the cache key
    from_env = urllib.request.getproxies_environment()
    if from_env:
        return from_env, True
    return urllib.request.getproxies(), False  # the OS's settings on Windows and macOS


def choose_proxy(spec: ProbeSpec, scheme: str, host: str) -> tuple[str | None, str | None]:
    """(proxy URL or None, where it came from: "configured" / "settings" / "environment" / None).

    ``spec.proxy_map`` holds what the laptop's proxy settings or PAC file decided for each
    planned host ("" = DIRECT); other hosts follow the environment.
    """
    if spec.proxy:
        return _normalise_proxy(spec.proxy), "configured"
    if host.lower() in spec.proxy_map:
        chosen = spec.proxy_map[host.lower()]
        return (_normalise_proxy(chosen), "settings") if chosen else (None, None)
    if not spec.trust_env:
        return None, None
    proxies, from_env = _proxy_settings(tuple(os.environ.get(name) for name in _PROXY_ENV))
    url = proxies.get(scheme) or proxies.get("all")
    if not url:
        return None, None
    if from_env:
        bypass = urllib.request.proxy_bypass_environment(host, dict(proxies))  # type: ignore[attr-defined]
    else:
        bypass = urllib.request.proxy_bypass(host)
    if bypass:
        return None, None
    return _normalise_proxy(url), "environment"


class _Trace:
    """Collects httpcore's trace events with their times."""

    def __init__(self) -> None:
        self.events: list[tuple[str, float]] = []
        self.remote: str | None = None
        self.local: str | None = None
        self.streams: list[Any] = []

    async def __call__(self, name: str, info: dict[str, Any]) -> None:
        self.events.append((name, time.perf_counter()))
        if name == "connection.connect_tcp.complete":
            stream = info.get("return_value")
            if stream is not None:
                self.streams.append(stream)
                server, client = stream.get_extra_info("server_addr"), stream.get_extra_info("client_addr")
                self.remote = str(server[0]) if server else None
                self.local = str(client[0]) if client else None

    async def close_streams(self) -> None:
        """Close every connection opened. httpcore leaks the TCP stream when a
        cancellation (our deadline) lands inside its TLS handshake."""
        for stream in self.streams:
            with contextlib.suppress(Exception):
                await stream.aclose()

    def seen(self, name: str) -> bool:
        return any(n == name for n, _ in self.events)

    def _at(self, suffix: str, last: bool) -> float | None:
        times = [t for n, t in self.events if n.endswith(suffix)]
        return (times[-1] if last else times[0]) if times else None

    def span(self, start: str, end: str, last: bool = False) -> float | None:
        a, b = self._at(start, last), self._at(end, last)
        return ms(b - a) if a is not None and b is not None and b >= a else None

    @property
    def connected(self) -> bool:
        return self.seen("connection.connect_tcp.complete")

    def tls_pending(self) -> bool:
        """A TLS handshake started and has not completed."""
        started, complete = self._at("start_tls.started", True), self._at("start_tls.complete", True)
        return started is not None and (complete is None or complete < started)

    def phases(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for phase, span in (
            ("connect", self.span("connection.connect_tcp.started", "connection.connect_tcp.complete")),
            ("tls", self.span("start_tls.started", "start_tls.complete", last=True)),
            ("processing", self.span("http11.send_request_headers.started",
                                     "http11.receive_response_headers.complete", last=True)),
        ):
            if span is not None:
                out[phase] = span
        return out


def _host_header(host: str, port: int, scheme: str) -> str:
    shown = f"[{host}]" if ":" in host else host
    default = 443 if scheme == "https" else 80
    return shown if port == default else f"{shown}:{port}"


async def probe_http(target: Target, spec: ProbeSpec, deadline: Deadline) -> ProbeResult:
    """GET ``scheme://host:port/`` once; see the module docstring for the verdict."""
    kind = ProbeKind.HTTP
    scheme = (target.scheme or ("https" if target.port == 443 else "http")).lower()
    port = target.port or (443 if scheme == "https" else 80)
    if scheme not in ("http", "https"):
        return ProbeResult(kind, target, Outcome.ERROR, f"unsupported scheme {scheme!r}")
    if deadline.expired:
        return too_late(kind, target)
    proxy, proxy_source = choose_proxy(spec, scheme, target.host)
    direct_address = target.address if proxy is None else None
    detail: dict[str, DetailValue] = {
        "status": None, "server": None, "proxy": redact(proxy) if proxy else None,
        "proxy_source": proxy_source, "via_proxy": proxy is not None}
    family = family_of(direct_address)
    trace = _Trace()
    extensions: dict[str, Any] = {"trace": trace}
    if direct_address and scheme == "https":
        extensions["sni_hostname"] = target.host
    cap = spec.step_timeout_s
    try:
        verify = trust.http_context(spec)
    except (OSError, ssl.SSLError) as exc:
        return ProbeResult(kind, target, Outcome.ERROR, f"cannot load a trust store ({exc})", {}, detail, family)
    try:
        client = httpx.AsyncClient(
            verify=verify, trust_env=False, proxy=proxy, follow_redirects=False,
            timeout=httpx.Timeout(deadline.step(cap)),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=0))
        url = httpx.URL(scheme=scheme, host=direct_address or target.host, port=port, path="/")
    except Exception as exc:  # bad proxy URL, socks without socksio
        outcome, reason = classify(exc)
        return ProbeResult(kind, target, outcome, reason, {}, detail, family)
    headers = {"Host": _host_header(target.host, port, scheme), "Connection": "close",
               "User-Agent": _USER_AGENT, "Accept": "*/*"}
    start_body: float | None = None
    end_body: float | None = None
    received = 0
    response: httpx.Response | None = None
    try:
        async with client:
            async with asyncio.timeout_at(deadline.at):
                request = client.build_request("GET", url, headers=headers, extensions=extensions)
                response = await client.send(request, stream=True)
                try:
                    start_body = time.perf_counter()
                    body = cast(AsyncGenerator[bytes, None], response.aiter_raw())
                    try:
                        async for chunk in body:
                            received += len(chunk)
                            if received >= MAX_BODY:
                                break
                    finally:
                        await body.aclose()
                    end_body = time.perf_counter()
                finally:
                    await response.aclose()
    except TimeoutError:
        await trace.close_streams()
        if response is None:
            outcome, reason = _timed_out(trace, proxy)
            return _result(target, outcome, reason, trace, detail, family, None, None)
    except httpx.TimeoutException:
        if response is None:  # what timed out depends on how far the exchange got
            outcome, reason = _timed_out(trace, proxy)
            return _result(target, outcome, reason, trace, detail, family, None, None)
    except Exception as exc:
        if response is None:
            outcome, reason = classify(exc, at_proxy=proxy is not None and not trace.connected)
            return _result(target, outcome, reason, trace, detail, family, None, None)
    # The response headers arrived: that is the answer, however the body went.
    assert response is not None
    server = response.headers.get("server")
    lower = {k.lower(): v for k, v in response.headers.items()}
    detail.update({"status": response.status_code, "server": server,
                   "http_version": response.http_version, "received_bytes": received})
    if "location" in lower:
        detail["location"] = lower["location"]
    outcome, reason = judge(response.status_code, response.reason_phrase, lower)
    if proxy is not None and outcome is Outcome.OK:
        reason += f" through the proxy {redact(proxy)}"
    return _result(target, outcome, reason, trace, detail, family, start_body, end_body)


def _timed_out(trace: _Trace, proxy: str | None) -> tuple[Outcome, str]:
    if not trace.connected:
        if proxy is not None:
            return Outcome.PROXY_UNREACHABLE, "the proxy did not accept a connection in time"
        return Outcome.CONNECT_TIMEOUT, "the connection attempt timed out"
    if trace.tls_pending():
        return Outcome.TIMEOUT, "the TLS handshake did not finish in time"
    return Outcome.HTTP_NO_RESPONSE, "the server accepted the connection but sent no response in time"


def _result(target: Target, outcome: Outcome, reason: str, trace: _Trace, detail: dict[str, DetailValue],
            family: str | None, start_body: float | None, end_body: float | None) -> ProbeResult:
    phases = trace.phases()
    if start_body is not None and end_body is not None:
        phases["transfer"] = ms(end_body - start_body)
    if not detail["via_proxy"]:
        family = family or family_of(trace.remote)
        detail["remote_address"] = trace.remote
    detail["local_address"] = trace.local
    return ProbeResult(ProbeKind.HTTP, target, outcome, reason, phases, detail, family)
