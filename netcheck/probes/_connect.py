"""TCP connects that do not wait a second for a lost SYN.

Used by every probe that connects (TCP, TLS, HTTP, realm); see
:mod:`netcheck.probes._pace` for the timer.
"""

from __future__ import annotations

import asyncio
import socket
import time

from netcheck.probes import _pace

#: A connect gets at most this many attempts to one address (the first and one retry).
_CONNECT_ATTEMPTS = 2


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
    """
    pace = _pace.current()
    loop = asyncio.get_running_loop()
    attempts: dict[asyncio.Task[None], tuple[socket.socket, float]] = {}

    def attempt() -> None:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        # No Nagle: asyncio sets TCP_NODELAY only on sockets made with proto IPPROTO_TCP, not
        # on this one (proto 0). With Nagle, the HTTP request written just after the TLS
        # Finished waited for the server's ACK of it: one more round trip on every HTTPS probe.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        attempts[loop.create_task(loop.sock_connect(sock, sockaddr))] = (sock, time.perf_counter())

    winner: socket.socket | None = None
    try:
        attempt()
        pending = set(attempts)
        error: BaseException | None = None
        while pending and winner is None:
            retry = pace.connect_retry_s() if len(attempts) < _CONNECT_ATTEMPTS else None
            done, pending = await asyncio.wait(pending, timeout=retry, return_when=asyncio.FIRST_COMPLETED)
            if not done:
                pace.connect_lost()
                attempt()
                pending = {t for t in attempts if not t.done()}
                continue
            for task in done:
                if winner is None and task.exception() is None:
                    winner, started = attempts[task]
                    pace.connected(time.perf_counter() - started)
                    return winner, started
                error = task.exception() or error
        assert error is not None
        raise error
    finally:
        losers = {task: sock for task, (sock, _) in attempts.items() if sock is not winner}
        for task in losers:
            task.cancel()
        if any(not task.done() for task in losers):
            # each connect unregisters its socket as it ends: only then may the socket go
            await asyncio.wait(losers)
        for sock in losers.values():
            sock.close()
