"""TCP connects that do not wait a second for a lost SYN, and the connections made on them.

Used by every probe that connects (TCP, TLS, HTTP, realm); see
:mod:`netcheck.probes._pace` for the timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from typing import Any

from netcheck.probes import _pace


def _new_socket(family: socket.AddressFamily) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    # No Nagle: asyncio sets TCP_NODELAY only on sockets made with proto IPPROTO_TCP, not
    # on this one (proto 0). With Nagle, the HTTP request written just after the TLS
    # Finished waited for the server's ACK of it: one more round trip on every HTTPS probe.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


async def _attempt(family: socket.AddressFamily,
                   sockaddr: tuple[str, int] | tuple[str, int, int, int]) -> tuple[socket.socket, float]:
    """One connect attempt (the retry's, in a task of its own): its socket and when it started."""
    sock, started = _new_socket(family), time.perf_counter()
    try:
        await asyncio.get_running_loop().sock_connect(sock, sockaddr)
    except BaseException:
        sock.close()  # after the loop has let go of it: the connect's own callbacks ran first
        raise
    return sock, started


async def connect_socket(family: socket.AddressFamily,
                         sockaddr: tuple[str, int] | tuple[str, int, int, int]) -> tuple[socket.socket, float]:
    """A connected non-blocking TCP socket to ``sockaddr`` (Nagle's algorithm off), and when its attempt
    started (``perf_counter``).

    When the first attempt has not connected after the check's connect retry
    timer (:meth:`~netcheck.probes._pace.Pace.connect_retry_s`, from the round
    trips measured so far), a second attempt starts, as the kernel would
    retransmit a lost SYN, but after a few round trips rather than a second;
    the first to connect wins and the other is closed. Each connect time feeds
    the check's round-trip estimate. Raises the ``OSError`` of the last attempt
    when all fail; the caller bounds the time (``asyncio.timeout``).

    The first attempt runs in the caller's task, under a plain timer: no task, no
    ``asyncio.wait`` (about 30 µs of CPU less per connect, ~650 connects a check).
    Only a retry gets a task; when it wins, the caller's wait for the first is cancelled.
    """
    pace = _pace.current()
    loop = asyncio.get_running_loop()
    caller = asyncio.current_task()
    assert caller is not None
    first, started = _new_socket(family), time.perf_counter()
    retry: asyncio.Task[tuple[socket.socket, float]] | None = None
    # "first": the caller waits for the first attempt; "retry": the retry's socket is the caller's
    # (to return, or to close if it raises); "done": the caller is gone without it
    state = "first"
    retry_won = False

    def start_retry() -> None:
        nonlocal retry
        pace.connect_lost()
        retry = loop.create_task(_attempt(family, sockaddr))
        retry.add_done_callback(retry_ended)

    def retry_ended(task: asyncio.Task[tuple[socket.socket, float]]) -> None:
        nonlocal retry_won
        if task.cancelled() or task.exception() is not None or state == "retry":
            return  # a failed retry leaves the first to go on; the caller has taken this one
        if state == "done":
            task.result()[0].close()  # connected just after the first did
            return
        retry_won = True
        caller.cancel()  # stop waiting for the first

    timer = loop.call_later(pace.connect_retry_s(), start_retry)
    keep_first = False
    try:
        try:
            await loop.sock_connect(first, sockaddr)
            keep_first, sock = True, first
        except asyncio.CancelledError:
            if not retry_won:
                raise
            state = "retry"
            if caller.uncancel() > 0:
                raise  # cancelled from outside too
            assert retry is not None
            sock, started = retry.result()
        except OSError:
            timer.cancel()
            if retry is None or (retry.done() and retry.exception() is not None):
                raise  # the last attempt's error
            state = "retry"
            sock, started = await retry
        pace.connected(time.perf_counter() - started)
        return sock, started
    except BaseException:
        if state == "retry" and retry is not None and retry.done() and not retry.cancelled() \
                and retry.exception() is None:
            retry.result()[0].close()
        raise
    finally:
        if state != "retry":
            state = "done"
        timer.cancel()
        if retry is not None and not retry.done():
            retry.cancel()  # it closes its socket as it ends
        if not keep_first:
            first.close()


#: Largest read from a socket.
READ_SIZE = 64 * 1024


class SocketConn:
    """A connected non-blocking TCP socket, read and written with the event loop's ``sock_recv`` /
    ``sock_sendall``, which every event loop has (Windows' proactor loop has no ``add_reader``)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    async def send(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def recv(self) -> bytes:
        """What arrived, b"" at the end."""
        return await asyncio.get_running_loop().sock_recv(self.sock, READ_SIZE)


class TlsConn:
    """TLS over another connection (a socket, or TLS to a proxy for a tunnel inside it), through
    memory buffers: no TLS transport, protocol or stream (asyncio's cost ~0.4 ms of CPU more per
    HTTPS request, and every probe makes a new connection). ``tls`` is the TLS session."""

    def __init__(self, lower: SocketConn | TlsConn, ctx: ssl.SSLContext, server_name: str) -> None:
        self.lower = lower
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self._in, self._out, server_hostname=server_name)

    async def _flush(self) -> None:
        if self._out.pending:
            await self.lower.send(self._out.read())

    async def handshake(self, *, flush: bool = True) -> None:
        """Raises ``ssl.SSLError`` (the server's certificate rejected, an alert, not TLS), and
        ``ConnectionResetError`` when the connection ends during the handshake, as asyncio's
        transport does. ``flush=False``: the client's last flight (TLS 1.3's Finished) waits
        for the next ``send``, and goes in the same packet as the request written next, as
        browsers send it (one send and one packet less per HTTPS request)."""
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self._flush()
                data = await self.lower.recv()
                if not data:
                    raise ConnectionResetError("the connection ended during the TLS handshake") from None
                self._in.write(data)
            except ssl.SSLError:
                if isinstance(self.lower, SocketConn):  # the alert saying why, as a TLS socket sends it
                    with contextlib.suppress(OSError):
                        self.lower.sock.send(self._out.read())
                raise
        if flush:
            await self._flush()  # the client's Finished

    async def send(self, data: bytes) -> None:
        self.tls.write(data)
        await self._flush()

    async def recv(self) -> bytes:
        """What arrived (decrypted), b"" at the end, with or without the server's close_notify."""
        while True:
            try:
                return self.tls.read(READ_SIZE)
            except ssl.SSLWantReadError:
                await self._flush()  # anything TLS itself has to say first (a key update's answer)
                data = await self.lower.recv()
                if data:
                    self._in.write(data)
                else:
                    self._in.write_eof()
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""


class NotShared(Exception):
    """The probe that makes a :class:`Shared` connection ended without making it (its deadline had
    passed, its trust store could not be read, ...): the other probe makes its own."""


class Shared:
    """One TCP connect and TLS handshake that two probes of the same address use.

    A front door's TLS probe and its HTTPS probe go to the same address with the
    same name (SNI): the TLS probe connects and shakes hands, against the public
    roots (:func:`netcheck.probes.http.probe_tls_and_https`), and the HTTPS probe
    waits for each step and sends its request on the connection. A step that
    failed fails for both, as each probe's own connection would have, except a
    certificate the public roots rejected: the HTTPS probe then verifies against
    the machine's store on a connection of its own. The owner (the pair) closes
    the socket at the end; ``close`` may come more than once.
    """

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        #: The connected socket and the connect's time (s).
        self.connected: asyncio.Future[tuple[socket.socket, float]] = loop.create_future()
        #: The TLS session on it and the handshake's time (s).
        self.secured: asyncio.Future[tuple[TlsConn, float]] = loop.create_future()
        self.sock: socket.socket | None = None

    def connect_done(self, sock: socket.socket, seconds: float) -> None:
        self.sock = sock
        if not self.connected.done():  # the waiting probe may have given up (its own timer)
            self.connected.set_result((sock, seconds))

    def handshake_done(self, tls: TlsConn, seconds: float) -> None:
        if not self.secured.done():
            self.secured.set_result((tls, seconds))

    def failed(self, exc: Exception) -> None:
        """The step under way failed with ``exc``: the waiting probe gets it as its own."""
        self._fail(self.connected if not self.connected.done() else self.secured, exc)

    def abandon(self) -> None:
        """The making probe ended: any step not reached leaves the other probe to connect by itself."""
        for step in (self.connected, self.secured):
            self._fail(step, NotShared())

    @staticmethod
    def _fail(step: asyncio.Future[Any], exc: Exception) -> None:
        if not step.done():
            step.set_exception(exc)
            step.exception()  # the waiting probe may stop at an earlier step: no "never retrieved" log

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
