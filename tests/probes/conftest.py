"""Loopback servers for the probe tests, started once per session."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pytest

from netcheck.models import Phase, ProbeResult
from netcheck.probes import trust
from netcheck.probes.dns import clear_resolver_cache
from tests import servers
from tests.servers import V4, V6, DnsServer, Pki, StreamServer

PHASES = {p.value for p in Phase}


def run(coro: Coroutine[Any, Any, ProbeResult]) -> ProbeResult:
    """Run one probe to completion and check the result's shape."""
    result = asyncio.run(coro)
    return checked(result)


def checked(result: ProbeResult) -> ProbeResult:
    """Assert the contract every result keeps: a reason, phases in ms, JSON-able detail."""
    assert isinstance(result, ProbeResult)
    assert result.reason and "\n" not in result.reason
    assert set(result.phases) <= PHASES, result.phases
    assert all(isinstance(v, float) and v >= 0 for v in result.phases.values()), result.phases
    json.dumps(dict(result.detail))
    assert result.family in (None, "ipv4", "ipv6")
    return result


def eventually(check: Callable[[], bool], within: float = 5.0) -> bool:
    """Poll ``check`` until true (server threads see connections a little later)."""
    give_up = time.monotonic() + within
    while not check():
        if time.monotonic() > give_up:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    """Trust stores and resolvers are cached per process; tests change both."""
    trust.clear_cache()
    clear_resolver_cache()
    yield
    trust.clear_cache()
    clear_resolver_cache()


@pytest.fixture(scope="session")
def ipv6() -> bool:
    return servers.ipv6_loopback()


@pytest.fixture
def need_ipv6(ipv6: bool) -> None:
    if not ipv6:
        pytest.skip("::1 is not configured on this machine (no IPv6 loopback)")


@pytest.fixture(scope="session")
def dns_server() -> Iterator[DnsServer]:
    with DnsServer(V4) as server:
        yield server


@pytest.fixture(scope="session")
def dns_server6(ipv6: bool) -> Iterator[DnsServer | None]:
    if not ipv6:
        yield None
        return
    with DnsServer(V6) as server:
        yield server


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@dataclass
class Servers:
    """Every stream server the probe tests use, by role."""

    tls_public: StreamServer
    tls_inspected: StreamServer
    tls_untrusted: StreamServer
    tls_wrong_name: StreamServer
    tls_expired: StreamServer
    not_tls: StreamServer
    silent: StreamServer
    http_200: StreamServer
    http_301: StreamServer
    http_407: StreamServer
    http_403_squid: StreamServer
    http_403_via: StreamServer
    http_403_plain: StreamServer
    https_200: StreamServer
    https_inspected: StreamServer
    https_untrusted: StreamServer
    https_wrong_name: StreamServer
    proxy: StreamServer
    proxy_407: StreamServer


NAMES = ("tls.test", "localhost", "127.0.0.1", "::1")


@pytest.fixture(scope="session")
def srv(pki: Pki) -> Iterator[Servers]:
    public = pki.server_context(pki.public, *NAMES)
    inspected = pki.server_context(pki.inspection, *NAMES)
    untrusted = pki.server_context(pki.untrusted, *NAMES)
    wrong = pki.server_context(pki.public, "other.test", "www.other.test")
    expired = pki.server_context(pki.public, *NAMES, expired=True)
    ok = servers.http_answer(200, "OK", [("Server", "test-web/1.0")], b"hello\n")
    with ExitStack() as stack:
        def start(handler: servers.Handler, tls: Any = None) -> StreamServer:
            return stack.enter_context(StreamServer(handler, V4, tls))

        yield Servers(
            tls_public=start(servers.tls_only, public),
            tls_inspected=start(servers.tls_only, inspected),
            tls_untrusted=start(servers.tls_only, untrusted),
            tls_wrong_name=start(servers.tls_only, wrong),
            tls_expired=start(servers.tls_only, expired),
            not_tls=start(servers.banner(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")),
            silent=start(servers.silent),
            http_200=start(ok),
            http_301=start(servers.http_answer(301, "Moved Permanently",
                                               [("Location", "https://web.test/"), ("Server", "test-web")])),
            http_407=start(servers.http_answer(407, "Proxy Authentication Required",
                                               [("Proxy-Authenticate", "Basic realm=\"x\"")])),
            http_403_squid=start(servers.http_answer(403, "Forbidden", [("Server", "squid/5.7"),
                                                                        ("X-Squid-Error", "ERR_ACCESS_DENIED 0")])),
            http_403_via=start(servers.http_answer(403, "Forbidden", [("Server", "gateway"),
                                                                      ("Via", "1.1 gw.corp.example")])),
            http_403_plain=start(servers.http_answer(403, "Forbidden", [("Server", "nginx")], b"forbidden")),
            https_200=start(ok, public),
            https_inspected=start(ok, inspected),
            https_untrusted=start(ok, untrusted),
            https_wrong_name=start(ok, wrong),
            proxy=start(servers.forward_proxy({"web.test": V4, "tls.test": V4})),
            proxy_407=start(servers.forward_proxy(require_auth=True)),
        )
