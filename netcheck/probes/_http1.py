"""One HTTP/1.1 request on one fresh connection, with h11.

The HTTP and realm probes need little of an HTTP client: one GET per
connection (keep-alive off), no redirects, no cookies, the proxy the caller
chose (absolute-form requests through it for ``http://``, a CONNECT tunnel for
``https://``; the proxy itself may be ``http://`` or ``https://``, with Basic
credentials in its URL) and the time each step took. A general client (httpx
over httpcore and anyio) costs about 0.8 ms more CPU per request, plus its
imports; a worldwide check makes ~165 requests, so the probes use this.

The connection is the socket itself and TLS through memory buffers
(:class:`netcheck.probes._connect.TlsConn`), TLS inside TLS through an
``https://`` proxy alike: asyncio's streams and TLS transport cost about
0.4 ms of CPU more per HTTPS request.

Every step is recorded on the :class:`Exchange` as it completes, so a caller
that catches an exception or runs out of time still knows how far it got.
Failures are raised as they come: ``OSError`` and ``socket.gaierror`` (connect),
``ssl.SSLError`` (TLS), ``TimeoutError`` (a step took longer than ``timeout``),
:class:`ProxyError` (the proxy refused the tunnel), :class:`ProtocolError` (no
valid HTTP answer) and ``ValueError`` (a proxy URL this client cannot use), all
known to :func:`netcheck.probes._errors.classify`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import ipaddress
import socket
import ssl
import time
import urllib.parse
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import h11

from netcheck.probes import _pace
from netcheck.probes._connect import Shared, SocketConn, TlsConn, connect_socket

#: Largest response head accepted (as httpcore).
MAX_HEAD = 100 * 1024
_READ_SIZE = 64 * 1024
_Conn = SocketConn | TlsConn
#: What the probes accept, as httpx's default header said (no brotli/zstd decoder here).
ACCEPT_ENCODING = "gzip, deflate"


class ProxyError(Exception):
    """The proxy answered the CONNECT with something other than 2xx: ``"407 Proxy Authentication Required"``."""


class ProtocolError(Exception):
    """The server closed the connection or answered something that is not HTTP/1.x."""


@dataclass(frozen=True)
class Proxy:
    """A proxy URL taken apart: where to connect, whether over TLS, the Basic credentials header."""

    scheme: str
    host: str
    port: int
    authorization: str | None = None

    @classmethod
    def parse(cls, url: str) -> Proxy:
        """Raises ValueError for anything but an ``http://`` or ``https://`` proxy with a host."""
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise ValueError(f"unsupported proxy scheme {scheme or url!r} (only http and https proxies)")
        host, port = parts.hostname, parts.port  # .port raises ValueError for a bad one
        if not host:
            raise ValueError(f"no host in the proxy URL {url!r}")
        auth = None
        if parts.username is not None or parts.password is not None:
            pair = f"{urllib.parse.unquote(parts.username or '')}:{urllib.parse.unquote(parts.password or '')}"
            auth = "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")
        return cls(scheme, host, port or (443 if scheme == "https" else 80), auth)


@dataclass(frozen=True)
class Response:
    status: int
    reason: str
    http_version: str
    #: Lower-case names; a header sent several times is one comma-separated value.
    headers: dict[str, str]


def authority(host: str, port: int, default_port: int | None) -> str:
    """``host[:port]`` with IPv6 literals in brackets; the port left out when it is the default."""
    shown = f"[{host}]" if ":" in host else host
    return shown if port == default_port else f"{shown}:{port}"


@functools.lru_cache(maxsize=1024)
def _is_ip(host: str) -> bool:
    """Cached: a check asks of ~200 hosts and addresses, and a name's miss costs two exceptions."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _text(value: bytes) -> str:
    try:
        return value.decode("ascii")
    except UnicodeDecodeError:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value.decode("latin-1")


def _interleave(addresses: list[str]) -> list[str]:
    """Families alternating, the first family's first address first (RFC 8305 section 4)."""
    if not addresses:
        return []
    first = ":" in addresses[0]
    same = [a for a in addresses if (":" in a) == first]
    other = [a for a in addresses if (":" in a) != first]
    out: list[str] = []
    for i in range(max(len(same), len(other))):
        out.extend(group[i] for group in (same, other) if i < len(group))
    return out


async def _open(address: str, port: int) -> socket.socket:
    """A TCP connection to an IP address (see :func:`~netcheck.probes._connect.connect_socket`)."""
    v6 = ":" in address
    sockaddr = (address, port, 0, 0) if v6 else (address, port)
    sock, _ = await connect_socket(socket.AF_INET6 if v6 else socket.AF_INET, sockaddr)
    return sock


async def resolve(host: str, port: int) -> tuple[str, ...]:
    """``host``'s addresses from the OS (getaddrinfo), once per check: the check's requests through one
    proxy (a hundred and more) share one lookup of its name, as a browser's do. A lookup in flight is
    shared; an answer is kept for the check (its :class:`~netcheck.probes._pace.Pace`), a failure is not
    (the next request asks again). A burst of a hundred lookups of one name through a busy resolver lost
    some of them in the lab (the proxy "cannot be reached" for a few URLs while the rest went through it)."""
    lookups = _pace.current().lookups
    key = (host, port)
    pending = lookups.get(key)
    if pending is None:
        pending = lookups[key] = asyncio.ensure_future(_lookup(host, port))
    try:
        return await asyncio.shield(pending)
    except BaseException:
        if lookups.get(key) is pending and pending.done():
            del lookups[key]
        raise


async def _lookup(host: str, port: int) -> tuple[str, ...]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return tuple(dict.fromkeys(str(info[4][0]) for info in infos))


async def open_socket(host: str, port: int, delay: float | None = None) -> socket.socket:
    """A connected non-blocking TCP socket to ``host``: an address, or a name resolved by the OS.

    A name's addresses are tried as RFC 8305 says: families alternating, each
    attempt starting when the one before failed or ``delay`` seconds after it
    started, the first to connect winning. ``None`` means the check's connect
    retry timer, from the round trips measured so far (RFC 8305 section 5),
    read as each attempt starts. When all fail, the ``OSError`` raised
    carries every attempt's error (an exception group as its cause), so
    :func:`netcheck.probes._errors.classify` sees why (asyncio's own version
    keeps only a message when the errors differ).
    """
    if _is_ip(host):
        return await _open(host, port)
    addresses = _interleave(list(await resolve(host, port)))
    if not addresses:  # pragma: no cover - getaddrinfo raises rather than answer nothing
        raise socket.gaierror(socket.EAI_NONAME, "no address")
    errors: list[Exception] = []
    pending: set[asyncio.Task[socket.socket]] = set()
    connected: list[socket.socket] = []
    try:
        for i, address in enumerate(addresses):
            pending.add(asyncio.create_task(_open(address, port)))
            if i + 1 == len(addresses):
                wait = None
            else:
                wait = delay if delay is not None else _pace.current().connect_retry_s()
            while pending and not connected:
                done, pending = await asyncio.wait(pending, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    exc = task.exception()
                    if exc is None:
                        connected.append(task.result())
                    else:
                        errors.append(exc if isinstance(exc, Exception) else RuntimeError(repr(exc)))
                if not done or not pending:
                    break  # the delay passed, or every attempt so far failed: start the next
            if connected:
                return connected.pop(0)
        raise OSError(f"all connection attempts to {host} failed") from ExceptionGroup("connect", errors)
    finally:
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(BaseException):
                connected.append(await task)
        for sock in connected:  # connected just as another attempt won
            sock.close()


@dataclass
class Exchange:
    """How far one request got, and what each step took (seconds, ``time.perf_counter``)."""

    connect_s: float | None = None
    tls_s: float | None = None
    processing_s: float | None = None
    transfer_s: float | None = None
    connected: bool = False
    tls_started: bool = False
    tls_done: bool = False
    remote: str | None = None
    local: str | None = None
    response: Response | None = None
    received: int = 0
    body: bytearray = field(default_factory=bytearray)
    #: The certificate (DER) the server presented in the last handshake.
    peer_der: bytes | None = None

    def tls_pending(self) -> bool:
        """A TLS handshake started and has not completed."""
        return self.tls_started and not self.tls_done

    async def get(self, *, scheme: str, host: str, port: int, target: str, headers: Sequence[tuple[str, str]],
                  ssl_context: ssl.SSLContext, timeout: float, connect_to: str | None = None,
                  proxy: Proxy | None = None, body_limit: int = _READ_SIZE, keep_body: bool = False,
                  shared: Shared | None = None) -> Response:
        """GET ``target`` (path and query) from ``scheme://host:port``; reads at most ``body_limit`` body bytes.

        ``connect_to`` is the address to connect to instead of ``host`` (which still
        names the server in SNI); ``headers`` must include ``Host``. Each step (connect,
        handshake, each read) may take ``timeout`` seconds. Returns once the body is
        read; ``self.response`` is set as soon as the head arrives. ``shared`` (direct
        ``https`` only): the connect and handshake another probe makes for this one
        (:class:`~netcheck.probes._connect.Shared`); its failures are raised as this
        exchange's own, and ``NotShared`` when it made none.
        """
        hop_host, hop_port = (proxy.host, proxy.port) if proxy else (connect_to or host, port)
        sock: socket.socket | None = None
        try:
            start = time.perf_counter()
            async with asyncio.timeout(timeout):
                if shared is None:
                    sock = await open_socket(hop_host, hop_port)
                    self.connect_s = time.perf_counter() - start
                else:
                    sock, self.connect_s = await shared.connected
            self.connected = True
            self.remote, self.local = _address(sock.getpeername), _address(sock.getsockname)
            conn: _Conn = SocketConn(sock)
            request_target = target
            extra: list[tuple[str, str]] = []
            if shared is not None:
                conn = await self._shared_tls(shared, timeout)
            elif proxy is not None:
                if proxy.scheme == "https":
                    conn = await self._start_tls(conn, ssl_context, proxy.host, timeout)
                if scheme == "https":
                    await self._connect_tunnel(conn, authority(host, port, None), proxy, timeout)
                else:
                    request_target = f"http://{authority(host, port, 80)}{target}"
                    if proxy.authorization:
                        extra.append(("Proxy-Authorization", proxy.authorization))
            if scheme == "https" and shared is None:
                conn = await self._start_tls(conn, ssl_context, host, timeout)
            h = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
            start = time.perf_counter()
            await conn.send(h.send(h11.Request(method="GET", target=request_target, headers=[*headers, *extra]))
                            + h.send(h11.EndOfMessage()))
            response = await self._head(h, conn, timeout)
            self.processing_s = time.perf_counter() - start
            self.response = response
            start = time.perf_counter()
            await self._body(h, conn, timeout, body_limit, keep_body)
            self.transfer_s = time.perf_counter() - start
            return response
        finally:
            if sock is not None:
                sock.close()

    async def _start_tls(self, conn: _Conn, ctx: ssl.SSLContext, server_name: str, timeout: float) -> TlsConn:
        self.tls_started, self.tls_done = True, False
        start = time.perf_counter()
        tls = TlsConn(conn, ctx, server_name)
        async with asyncio.timeout(timeout):
            await tls.handshake(flush=False)  # the Finished goes with the request (or CONNECT) written next
        self.tls_s = time.perf_counter() - start
        self.tls_done = True
        self.peer_der = tls.tls.getpeercert(binary_form=True)
        return tls

    async def _shared_tls(self, shared: Shared, timeout: float) -> TlsConn:
        self.tls_started, self.tls_done = True, False
        async with asyncio.timeout(timeout):
            tls, self.tls_s = await shared.secured
        self.tls_done = True
        self.peer_der = tls.tls.getpeercert(binary_form=True)
        return tls

    async def _connect_tunnel(self, conn: _Conn, where: str, proxy: Proxy, timeout: float) -> None:
        h = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
        headers = [("Host", where), ("Accept", "*/*")]
        if proxy.authorization:
            headers.append(("Proxy-Authorization", proxy.authorization))
        await conn.send(h.send(h11.Request(method="CONNECT", target=where, headers=headers))
                        + h.send(h11.EndOfMessage()))
        answer = await self._head(h, conn, timeout)
        if not 200 <= answer.status < 300:
            raise ProxyError(f"{answer.status} {answer.reason}".strip())

    async def _next(self, h: h11.Connection, conn: _Conn, timeout: float) -> object:
        while True:
            try:
                event = h.next_event()
            except h11.RemoteProtocolError as exc:
                raise ProtocolError(str(exc)) from exc
            if event is not h11.NEED_DATA:
                return event
            async with asyncio.timeout(timeout):
                data = await conn.recv()
            h.receive_data(data)

    async def _head(self, h: h11.Connection, conn: _Conn, timeout: float) -> Response:
        while True:
            event = await self._next(h, conn, timeout)
            if isinstance(event, h11.Response):
                merged: dict[str, str] = {}
                for name, value in event.headers:
                    key, text = _text(name), _text(value)
                    merged[key] = f"{merged[key]}, {text}" if key in merged else text
                return Response(event.status_code, _text(event.reason), f"HTTP/{_text(event.http_version)}",
                                merged)
            if isinstance(event, h11.ConnectionClosed):
                raise ProtocolError("Server disconnected without sending a response.")
            # InformationalResponse (1xx): the real answer follows

    async def _body(self, h: h11.Connection, conn: _Conn, timeout: float, limit: int, keep: bool) -> None:
        while self.received < limit:
            event = await self._next(h, conn, timeout)
            if isinstance(event, h11.Data):
                self.received += len(event.data)
                if keep:
                    self.body += event.data
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed) or event is h11.PAUSED:
                return


def _address(read: Callable[[], object]) -> str | None:
    """The address part of ``sock.getpeername`` / ``getsockname`` (None if the socket cannot say)."""
    try:
        name = read()
    except OSError:
        return None
    return str(name[0]) if isinstance(name, tuple) and name else None


#: Most bytes a body may grow to when its Content-Encoding is undone (a gzip bomb stops here).
MAX_DECODED = 1024 * 1024


def decoded(body: bytes, content_encoding: str | None, limit: int = MAX_DECODED) -> bytes:
    """The body with its ``Content-Encoding`` (gzip, deflate) undone, as far as it arrived.

    Raises :class:`ProtocolError` for an encoding it cannot undo, or a body that would
    grow past ``limit`` bytes.
    """
    for coding in reversed([c.strip().lower() for c in (content_encoding or "").split(",") if c.strip()]):
        try:
            if coding in ("gzip", "x-gzip"):
                body = _inflate(zlib.decompressobj(zlib.MAX_WBITS | 16), body, limit, coding)
            elif coding == "deflate":
                try:
                    body = _inflate(zlib.decompressobj(), body, limit, coding)
                except zlib.error:  # raw deflate, without the zlib header (servers send both)
                    body = _inflate(zlib.decompressobj(-zlib.MAX_WBITS), body, limit, coding)
            elif coding != "identity":
                raise ProtocolError(f"unsupported content encoding {coding!r}")
        except zlib.error as exc:
            raise ProtocolError(f"the {coding} body could not be decoded ({exc})") from exc
    return body


def _inflate(inflater: zlib._Decompress, body: bytes, limit: int, coding: str) -> bytes:
    out = inflater.decompress(body, limit)
    if inflater.unconsumed_tail:
        raise ProtocolError(f"the {coding} body grows past {limit} bytes once decoded")
    return out
