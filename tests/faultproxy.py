"""A TCP fault-injection proxy on loopback, driven by the test (a tiny toxiproxy).

    proxy = FaultProxy(("127.0.0.1", collector_port)).start()
    agent talks to proxy.url; the test changes what the proxy does at any time:

Connection faults (any protocol, TLS included), ``proxy.connection_fault``:
    PASS        forward both ways (optionally ``delay_s`` per chunk, ``rate_bps`` throttle)
    RESET       accept, then reset (RST) before forwarding anything
    BLACKHOLE   accept, read and discard, never answer (half-open collector)
    CLOSE       accept, then close cleanly without a byte
    and ``proxy.refuse()`` / ``proxy.accept()``: stop / resume listening (connection refused).

Request faults (plain HTTP/1.1 only, requests parsed one by one so keep-alive works),
``proxy.request_fault = fn(request) -> Forward() | DropResponse() | Respond(raw) | Reset() | Blackhole()``:
    DropResponse forwards the request, waits for the collector's complete answer
    (so it has committed), then resets the client connection: the lost acknowledgement.

Everything a client sent is kept in ``proxy.received`` (per connection, raw bytes),
and every parsed request in ``proxy.requests``, so tests can assert what left the agent.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum


class ConnFault(Enum):
    PASS = "pass"
    RESET = "reset"
    BLACKHOLE = "blackhole"
    CLOSE = "close"


@dataclass(frozen=True)
class Forward:
    pass


@dataclass(frozen=True)
class DropResponse:
    pass


@dataclass(frozen=True)
class Respond:
    raw: bytes


@dataclass(frozen=True)
class Reset:
    pass


@dataclass(frozen=True)
class Blackhole:
    pass


RequestFault = Forward | DropResponse | Respond | Reset | Blackhole


@dataclass
class HttpRequest:
    conn: int
    index: int
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    fault: str = "forward"
    response_status: int | None = None
    response_body: bytes = b""

    @property
    def content(self) -> bytes:
        """The body with its ``Content-Encoding: gzip`` (as the agent sends uploads) undone."""
        encoding = {k.lower(): v for k, v in self.headers.items()}.get("content-encoding", "")
        return zlib.decompress(self.body, 16 + zlib.MAX_WBITS) if encoding.lower() == "gzip" else self.body


def http_response(status: int, body: bytes | str = b"", *, content_type: str = "application/json",
                  headers: dict[str, str] | None = None, reason: str = "X") -> bytes:
    """Raw bytes of a complete HTTP/1.1 response, for ``Respond``."""
    data = body.encode() if isinstance(body, str) else body
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Type: {content_type}", f"Content-Length: {len(data)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


def _rst(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class _Reader:
    def __init__(self, sock: socket.socket, log: bytearray | None = None) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.log = log

    def _fill(self) -> bool:
        try:
            data = self.sock.recv(65536)
        except OSError:
            return False
        if not data:
            return False
        self.buf += data
        if self.log is not None:
            self.log += data
        return True

    def until(self, delim: bytes) -> bytes | None:
        while delim not in self.buf:
            if not self._fill():
                return None
        i = self.buf.index(delim) + len(delim)
        out = bytes(self.buf[:i])
        del self.buf[:i]
        return out

    def exact(self, n: int) -> bytes | None:
        while len(self.buf) < n:
            if not self._fill():
                return None
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def rest(self) -> bytes:
        while self._fill():
            pass
        out = bytes(self.buf)
        self.buf.clear()
        return out


def _headers(head: bytes) -> tuple[str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    hdrs: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            hdrs[k.strip().lower()] = v.strip()
    return lines[0], hdrs


def _read_body(reader: _Reader, hdrs: dict[str, str], *, response_to_head: bool = False,
               status: int = 200) -> bytes | None:
    if response_to_head or status in (204, 304) or 100 <= status < 200:
        return b""
    if hdrs.get("transfer-encoding", "").lower() == "chunked":
        out = bytearray()
        while True:
            line = reader.until(b"\r\n")
            if line is None:
                return None
            out += line
            size = int(line.split(b";")[0].strip() or b"0", 16)
            chunk = reader.exact(size + 2)
            if chunk is None:
                return None
            out += chunk
            if size == 0:
                return bytes(out)
    if "content-length" in hdrs:
        return reader.exact(int(hdrs["content-length"]))
    return reader.rest()


class FaultProxy:
    def __init__(self, upstream: tuple[str, int], host: str = "127.0.0.1") -> None:
        self.upstream = upstream
        self.host = host
        self.port = 0
        self.connection_fault: ConnFault | Callable[[int], ConnFault] = ConnFault.PASS
        self.request_fault: Callable[[HttpRequest], RequestFault] | None = None
        self.delay_s = 0.0
        self.rate_bps: int | None = None
        self.connections = 0
        self.received: list[bytearray] = []
        self.requests: list[HttpRequest] = []
        self.dropped_responses = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._socks: set[socket.socket] = set()
        self._accepting = threading.Event()
        self._closed = threading.Event()
        self._want_closed = False

    # -- lifecycle -------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> FaultProxy:
        self._listen()
        t = threading.Thread(target=self._accept_loop, name="faultproxy-accept", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(64)
        self.port = sock.getsockname()[1]
        self._listener = sock
        self._accepting.set()

    def refuse(self, drop_open: bool = True) -> None:
        """Stop listening: new connections are refused until accept(); open ones are closed too."""
        self._accepting.clear()
        # the accept thread closes the listener itself (closing it under a select() in another thread
        # would leave it listening a moment longer, and late connections would be reset, not refused)
        self._closed.clear()
        self._want_closed = True
        if not self._closed.wait(2):
            sock, self._listener = self._listener, None
            if sock is not None:
                sock.close()
        if drop_open:
            self.drop_all_connections()

    def accept(self) -> None:
        if self._listener is None:
            self._listen()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(2)
        sock, self._listener = self._listener, None
        if sock is not None:
            sock.close()
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        for t in self._threads:
            t.join(2)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def drop_all_connections(self) -> None:
        """Reset every open connection (the network flapped)."""
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def all_received(self) -> bytes:
        with self._lock:
            return b"".join(bytes(b) for b in self.received)

    # -- serving ---------------------------------------------------------------

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.add(sock)

    def _untrack(self, *socks: socket.socket | None) -> None:
        with self._lock:
            for s in socks:
                if s is not None:
                    self._socks.discard(s)

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            if self._want_closed:
                sock, self._listener = self._listener, None
                if sock is not None:
                    sock.close()
                self._want_closed = False
                self._closed.set()
            if not self._accepting.wait(0.05):
                continue
            sock = self._listener
            if sock is None:
                continue
            try:
                ready, _, _ = select.select([sock], [], [], 0.05)
                if not ready:
                    continue
                client, _ = sock.accept()
            except (OSError, ValueError):
                continue
            with self._lock:
                self.connections += 1
                n = self.connections
                log = bytearray()
                self.received.append(log)
            self._track(client)
            t = threading.Thread(target=self._handle, args=(client, n, log), daemon=True)
            t.start()

    def _handle(self, client: socket.socket, n: int, log: bytearray) -> None:
        fault = self.connection_fault(n) if callable(self.connection_fault) else self.connection_fault
        try:
            if fault is ConnFault.RESET:
                _rst(client)
            elif fault is ConnFault.CLOSE:
                client.close()
            elif fault is ConnFault.BLACKHOLE:
                self._blackhole(client, log)
            elif self.request_fault is not None:
                self._serve_http(client, n, log)
            else:
                self._pipe(client, log)
        except OSError:
            pass
        finally:
            self._untrack(client)
            try:
                client.close()
            except OSError:
                pass

    def _blackhole(self, client: socket.socket, log: bytearray) -> None:
        client.settimeout(0.1)
        while not self._stop.is_set():
            try:
                data = client.recv(65536)
            except TimeoutError:
                continue
            if not data:
                return
            log += data

    def _connect_upstream(self) -> socket.socket:
        up = socket.create_connection(self.upstream, timeout=10)
        up.settimeout(None)
        self._track(up)
        return up

    def _pipe(self, client: socket.socket, log: bytearray) -> None:
        try:
            up = self._connect_upstream()
        except OSError:
            _rst(client)
            return
        done = threading.Event()

        def copy(src: socket.socket, dst: socket.socket, record: bytearray | None) -> None:
            try:
                while True:
                    data = src.recv(65536 if self.rate_bps is None else max(1, self.rate_bps // 10))
                    if not data:
                        break
                    if record is not None:
                        record += data
                    if self.delay_s:
                        time.sleep(self.delay_s)
                    if self.rate_bps is not None:
                        time.sleep(len(data) / self.rate_bps)
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                done.set()
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        t = threading.Thread(target=copy, args=(up, client, None), daemon=True)
        t.start()
        copy(client, up, log)
        t.join(5)
        self._untrack(up)
        up.close()

    def _serve_http(self, client: socket.socket, n: int, log: bytearray) -> None:
        reader = _Reader(client, log)
        up: socket.socket | None = None
        up_reader: _Reader | None = None
        index = 0
        try:
            while not self._stop.is_set():
                head = reader.until(b"\r\n\r\n")
                if head is None:
                    return
                start, hdrs = _headers(head)
                body = _read_body(reader, hdrs) if "content-length" in hdrs or \
                    hdrs.get("transfer-encoding") else b""
                if body is None:
                    return
                method, path = (start.split(" ") + ["", ""])[:2]
                index += 1
                req = HttpRequest(n, index, method, path, hdrs, body)
                with self._lock:
                    self.requests.append(req)
                assert self.request_fault is not None
                fault = self.request_fault(req)
                req.fault = type(fault).__name__.lower()
                if isinstance(fault, Respond):
                    client.sendall(fault.raw)
                    req.response_status = int(fault.raw.split(b" ", 2)[1])
                    if b"connection: close" in fault.raw.lower():
                        return
                    continue
                if isinstance(fault, Reset):
                    _rst(client)
                    return
                if isinstance(fault, Blackhole):
                    self._blackhole(client, log)
                    return
                if up is None:
                    try:
                        up = self._connect_upstream()
                    except OSError:
                        _rst(client)
                        return
                    up_reader = _Reader(up)
                assert up_reader is not None
                up.sendall(head + body)
                rhead = up_reader.until(b"\r\n\r\n")
                if rhead is None:
                    return
                rstart, rhdrs = _headers(rhead)
                status = int(rstart.split(" ")[1])
                rbody = _read_body(up_reader, rhdrs, response_to_head=method == "HEAD", status=status)
                if rbody is None:
                    return
                req.response_status = status
                req.response_body = rbody
                if isinstance(fault, DropResponse):
                    with self._lock:
                        self.dropped_responses += 1
                    _rst(client)
                    return
                client.sendall(rhead + rbody)
                if rhdrs.get("connection", "").lower() == "close" or \
                        hdrs.get("connection", "").lower() == "close":
                    return
        finally:
            if up is not None:
                self._untrack(up)
                up.close()
