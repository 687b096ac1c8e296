"""uvicorn's HTTP/1.1 protocol (httptools) with the limits it lacks: slow and huge clients.

uvicorn bounds neither the request head nor the time a client takes to send it: a 60 MB header
was read whole (blocking the event loop for seconds) and answered, and a connection that sends
nothing, or a byte now and then (slow-loris), stayed open for ever; its keep-alive timeout only
runs between two requests. ``GuardedHttpToolsProtocol`` adds, per connection:

- a head deadline: the request line and headers must arrive within ``head_timeout_s`` of the
  connection opening (TLS handshake done) or of the first byte of the next request; the idle
  time between requests is uvicorn's keep-alive timeout;
- a head size and count: more than ``max_header_bytes`` before the end of the headers, or more
  than ``max_headers`` header lines, is answered 431 and the connection closed, without the rest
  being read;
- a body deadline: once the headers are in, the body must be complete within ``body_timeout_s``
  (a trickled body is cut, the app sees the client disconnect and stores nothing).

The same limits hold whether ``netcheck serve`` terminates TLS itself or sits behind a reverse
proxy (the proxy's own limits then apply first). The values come from the collector's settings
(``NETCHECK_*`` variables, as every worker process reads them).
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from netcheck.collector.settings import Settings

_431 = (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
        b"connection: close\r\ncontent-length: %d\r\n\r\n%s")
_408 = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        b"connection: close\r\ncontent-length: %d\r\n\r\n%s")


#: seconds a refused or timed-out connection has to take its answer before it is cut
CLOSE_GRACE_S = 1.0


@functools.cache
def _settings() -> Settings:
    return Settings.from_env()


def _answer(template: bytes, code: str, message: str) -> bytes:
    body = b'{"error":{"code":"%s","message":"%s"}}' % (code.encode(), message.encode())
    return template % (len(body), body)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` with head and body deadlines and a bounded head (see the module)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        s = _settings()
        self._head_timeout_s = s.head_timeout_s
        self._body_timeout_s = s.body_timeout_s
        self._max_head = s.max_header_bytes
        self._max_headers = s.max_headers
        self._in_head = True
        self._head_bytes = 0
        self._header_count = 0
        self._head_size = 0
        self._refused = False
        self._timer: asyncio.TimerHandle | None = None

    # -- timers ---------------------------------------------------------------------------------

    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._expired, what)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self, what: str) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if what == "head":
            self.logger.info("closing a connection that did not send its request in %.0f s", self._head_timeout_s)
            self.transport.write(_answer(_408, "request_timeout", "the request was not sent in time"))
        else:
            self.logger.info("closing a connection that did not send its body in %.0f s", self._body_timeout_s)
        self._close()

    def _close(self) -> None:
        """Close once what was written is sent; cut the connection if that takes more than a moment (a TLS
        connection being closed still reads and decrypts whatever the client goes on sending)."""
        self.transport.close()
        self.loop.call_later(CLOSE_GRACE_S, self.transport.abort)

    # -- protocol -------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self._head_timeout_s, "head")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # the answer is on its way and the connection closing: read nothing more
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._refused or (self._in_head and self._head_bytes > self._max_head + 8192):
            self._refuse_head()  # counted exactly, or the head alone is already over the limit

    def _refuse_head(self) -> None:
        self._refused = True
        self._disarm()
        if self.transport.is_closing():
            return
        self.logger.info("refusing a request whose head is over %d bytes or %d lines", self._max_head,
                         self._max_headers)
        self.transport.write(_answer(_431, "headers_too_large", f"the request head is over {self._max_head} "
                                     f"bytes or {self._max_headers} header lines"))
        self._close()

    # -- parser callbacks -----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._in_head:  # the next request on a kept-alive connection
            self._in_head = True
            self._head_bytes = 0
            self._arm(self._head_timeout_s, "head")
        self._header_count = 0
        self._head_size = 0

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._head_size += len(name) + len(value) + 4
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._head_size > self._max_head or self._header_count > self._max_headers:
            self._refused = True  # answered once the parser returns (data_received)
            return
        self._arm(self._body_timeout_s, "body")
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()
        if not self._refused:
            super().on_message_complete()
