"""The probes' HTTP/1.1 exchange: bodies, odd answers, proxies over TLS and with credentials."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import socket
import zlib
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from netcheck.deadline import Deadline
from netcheck.models import Outcome, ProbeResult, ProbeSpec, Target
from netcheck.probes import _pace
from netcheck.probes._errors import classify
from netcheck.probes._http1 import ProtocolError, Proxy, _interleave, decoded, open_socket
from netcheck.probes.http import MAX_BODY, probe_http
from tests import servers
from tests.probes.conftest import Servers, checked, run
from tests.servers import V4, Pki, StreamServer

T = TypeVar("T")


def get(port: int, spec: ProbeSpec | None = None, *, host: str = "web.test", scheme: str = "http",
        address: str | None = V4, seconds: float = 10.0) -> ProbeResult:
    return run(probe_http(Target(host, port=port, scheme=scheme, address=address), spec or ProbeSpec(),
                          Deadline.after(seconds)))


def raw_answer(payload: bytes) -> servers.Handler:
    """Read the request head, send ``payload`` as it is, close."""
    return servers.raw_answer(payload, wait_for_close=False)


@contextlib.contextmanager
def serving(handler: servers.Handler) -> Iterator[StreamServer]:
    with StreamServer(handler, V4) as server:
        yield server


def test_chunked_body_is_counted_without_its_framing() -> None:
    body = b"".join(b"%x\r\n%s\r\n" % (n, b"y" * n) for n in (1000, 2000, 3)) + b"0\r\n\r\n"
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + body
    with serving(raw_answer(answer)) as server:
        r = get(server.port)
    assert r.outcome is Outcome.OK and r.detail["received_bytes"] == 3003
    assert "transfer" in r.phases


def test_a_large_body_is_read_only_up_to_the_limit() -> None:
    big = 4 * MAX_BODY
    with serving(servers.http_answer(200, "OK", [], b"z" * big)) as server:
        r = get(server.port)
    assert r.outcome is Outcome.OK and r.detail["status"] == 200
    received = r.detail["received_bytes"]
    assert isinstance(received, int) and MAX_BODY <= received < big


def test_an_informational_answer_is_skipped() -> None:
    answer = (b"HTTP/1.1 100 Continue\r\n\r\n"
              b"HTTP/1.1 204 No Content\r\nServer: after-continue\r\nConnection: close\r\n\r\n")
    with serving(raw_answer(answer)) as server:
        r = get(server.port)
    assert r.outcome is Outcome.OK and r.detail["status"] == 204 and r.detail["server"] == "after-continue"


def test_repeated_headers_are_joined() -> None:
    answer = (b"HTTP/1.1 403 Forbidden\r\nServer: edge\r\nVia: 1.1 a\r\nVia: 1.1 b\r\n"
              b"Content-Length: 0\r\nConnection: close\r\n\r\n")
    with serving(raw_answer(answer)) as server:
        r = get(server.port)
    assert r.outcome is Outcome.HTTP_PROXY_BLOCKED and "via: 1.1 a, 1.1 b" in r.reason


@pytest.mark.parametrize("payload", [b"", b"SSH-2.0-OpenSSH_9.2\r\n", b"HTTP/1.1 200 OK\r\nContent-Len"])
def test_no_valid_answer_is_no_response(payload: bytes) -> None:
    with serving(raw_answer(payload)) as server:
        r = get(server.port)
    assert r.outcome is Outcome.HTTP_NO_RESPONSE and r.detail["status"] is None
    assert "connect" in r.phases and "processing" not in r.phases


def test_the_request_on_the_wire() -> None:
    with serving(servers.http_answer(200, "OK")) as server:
        get(server.port)
    head = server.requests[-1]
    assert head.startswith("GET / HTTP/1.1\r\n")
    for line in (f"Host: web.test:{server.port}", "Accept: */*", "Accept-Encoding: gzip, deflate",
                 "Connection: close", "User-Agent: netcheck/"):
        assert line.lower() in head.lower(), line


def test_https_through_an_https_proxy(srv: Servers, pki: Pki) -> None:
    """TLS to the proxy, CONNECT inside it, then the server's TLS inside the tunnel."""
    proxy_tls = pki.server_context(pki.public, "proxy.test", "127.0.0.1")
    with StreamServer(servers.forward_proxy({"tls.test": V4}), V4, proxy_tls) as proxy:
        spec = ProbeSpec(proxy=f"https://{V4}:{proxy.port}", system_roots=pki.system_roots)
        r = get(srv.https_200.port, spec, host="tls.test", scheme="https")
    assert r.outcome is Outcome.OK and r.detail["status"] == 200 and r.detail["via_proxy"] is True
    assert proxy.requests[-1].startswith(f"CONNECT tls.test:{srv.https_200.port} HTTP/1.1")
    assert {"connect", "tls", "processing"} <= set(r.phases)


def test_proxy_credentials_go_in_proxy_authorization(srv: Servers, pki: Pki) -> None:
    spec = ProbeSpec(proxy=f"http://alice:s3%40cret@{V4}:{srv.proxy.port}", system_roots=pki.system_roots)
    expected = "Proxy-Authorization: Basic " + base64.b64encode(b"alice:s3@cret").decode()
    assert get(srv.http_200.port, spec).outcome is Outcome.OK
    assert expected in srv.proxy.requests[-1]
    assert get(srv.https_200.port, spec, host="tls.test", scheme="https").outcome is Outcome.OK
    assert srv.proxy.requests[-1].startswith("CONNECT ") and expected in srv.proxy.requests[-1]


@pytest.mark.parametrize(("url", "reason"), [("socks5://127.0.0.1:1080", "unsupported proxy scheme"),
                                             ("http://:3128", "no host"), ("http://proxy.test:99999", "(?i)port")])
def test_unusable_proxy_urls(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        Proxy.parse(url)
    r = get(80, ProbeSpec(proxy=url))
    assert r.outcome is Outcome.ERROR and r.detail["via_proxy"] is True


def test_proxy_parse() -> None:
    assert Proxy.parse("http://proxy.test") == Proxy("http", "proxy.test", 80)
    assert Proxy.parse("HTTPS://[2001:db8::1]") == Proxy("https", "2001:db8::1", 443)
    assert Proxy.parse("http://u@p.test:8080").authorization == "Basic " + base64.b64encode(b"u:").decode()


def test_decoded() -> None:
    text = b'{"NameSpaceType": "Managed"}' * 50
    assert decoded(text, None) == text and decoded(text, "identity") == text
    assert decoded(gzip.compress(text), "gzip") == text
    assert decoded(zlib.compress(text), "deflate") == text
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    assert decoded(raw.compress(text) + raw.flush(), "deflate") == text
    assert decoded(gzip.compress(zlib.compress(text)), "deflate, gzip") == text
    assert decoded(gzip.compress(text)[:40], "gzip") == text[:len(decoded(gzip.compress(text)[:40], "gzip"))]
    with pytest.raises(ProtocolError):
        decoded(text, "br")
    with pytest.raises(ProtocolError):
        decoded(b"not gzip at all", "gzip")


def test_a_compression_bomb_stops_at_the_limit() -> None:
    bomb = gzip.compress(bytes(50 * 1024 * 1024))  # 50 MiB of zeros in ~50 KB
    assert len(bomb) < 64 * 1024  # it fits in what the realm probe reads
    with pytest.raises(ProtocolError, match="grows past"):
        decoded(bomb, "gzip")
    with pytest.raises(ProtocolError, match="grows past"):
        decoded(zlib.compress(bytes(2 * 1024 * 1024)), "deflate")
    assert decoded(gzip.compress(bytes(1000)), "gzip", limit=1000) == bytes(1000)


async def _with_addresses(addresses: list[str], coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` with the OS resolver answering ``addresses`` for any name (connects stay real)."""
    loop = asyncio.get_running_loop()

    async def getaddrinfo(host: object, port: int, **_: object) -> list[Any]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses]

    loop.getaddrinfo = getaddrinfo  # type: ignore[method-assign,assignment]
    return await coro


def test_a_name_falls_back_across_its_addresses(srv: Servers) -> None:
    """127.0.0.2 refuses (nothing listens there), 127.0.0.1 answers: the one listening wins."""
    target = Target("web.test", port=srv.http_200.port, scheme="http")
    r = checked(asyncio.run(_with_addresses(["127.0.0.2", V4],
                                            probe_http(target, ProbeSpec(), Deadline.after(10)))))
    assert r.outcome is Outcome.OK and r.detail["remote_address"] == V4


def test_every_attempt_failing_keeps_each_reason() -> None:
    port = servers.closed_port()
    with pytest.raises(OSError) as failed:
        asyncio.run(_with_addresses(["127.0.0.2", "127.0.0.3"], open_socket("web.test", port)))
    assert "Errno" not in str(failed.value) and classify(failed.value)[0] is Outcome.CONNECT_REFUSED
    r = checked(asyncio.run(_with_addresses(["127.0.0.2", "127.0.0.3"], probe_http(
        Target("web.test", port=80), ProbeSpec(proxy=f"http://proxy.test:{port}"), Deadline.after(10)))))
    assert r.outcome is Outcome.PROXY_UNREACHABLE


def test_interleave() -> None:
    assert _interleave(["::1", "::2", "10.0.0.1", "10.0.0.2", "10.0.0.3"]) == \
        ["::1", "10.0.0.1", "::2", "10.0.0.2", "10.0.0.3"]
    assert _interleave(["10.0.0.1", "::1"]) == ["10.0.0.1", "::1"]
    assert _interleave([]) == []


def test_requests_go_out_at_once(srv: Servers) -> None:
    """Nagle's algorithm is off: a request written just after the TLS Finished does not wait a
    round trip for the server to acknowledge it (asyncio turns it off only for sockets made with
    proto IPPROTO_TCP)."""

    async def nodelay() -> int:
        sock = await open_socket(V4, srv.http_200.port)
        try:
            return int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        finally:
            sock.close()

    assert asyncio.run(nodelay()) != 0


def test_a_checks_requests_through_one_proxy_share_one_lookup_of_its_name(srv: Servers) -> None:
    """A hundred requests through a proxy named ``proxy.test`` (here a real loopback server): one lookup of
    the name for the check (its pace), every connect real; a lookup that failed is asked again, not kept."""
    asked: list[object] = []
    failing = [True]

    async def go() -> list[socket.socket]:
        loop = asyncio.get_running_loop()

        async def getaddrinfo(host: object, port: int, **_: object) -> list[Any]:
            asked.append(host)
            await asyncio.sleep(0.01)
            if failing[0]:
                failing[0] = False
                raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (V4, port))]

        loop.getaddrinfo = getaddrinfo  # type: ignore[method-assign,assignment]
        with _pace.use(_pace.Pace()):
            with pytest.raises(OSError):  # the first lookup fails: every request waiting on it sees it
                await asyncio.gather(*(open_socket("proxy.test", srv.http_200.port) for _ in range(3)))
            assert asked == ["proxy.test"]
            return list(await asyncio.gather(*(open_socket("proxy.test", srv.http_200.port) for _ in range(100))))

    socks = asyncio.run(go())
    try:
        assert len(socks) == 100 and asked == ["proxy.test", "proxy.test"]  # asked again once, then shared
        assert all(s.getpeername()[1] == srv.http_200.port for s in socks)
    finally:
        for s in socks:
            s.close()
