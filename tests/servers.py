"""Real servers on loopback for the probe tests: DNS, TLS, HTTP and a forward proxy.

Every server binds 127.0.0.1 (or ::1) on port 0, runs in daemon threads and is
a context manager; leaving the ``with`` block stops it and closes every
connection it holds. Nothing here sends a packet anywhere but loopback: the
forward proxy only connects to loopback addresses.

* :class:`DnsServer`: UDP and TCP on one port, canned zone (:data:`ZONE`):
  A/AAAA, CNAME chains, NXDOMAIN, SERVFAIL, REFUSED, a name it never answers,
  a name that needs TCP, and a "whoami" name answering with the client's address.
* :class:`Pki`: trustme CAs (public-like, inspection, untrusted) and the PEM
  bundles a ``ProbeSpec`` takes.
* :class:`StreamServer`: a threaded TCP/TLS server around a handler; handlers
  for canned HTTP answers, silence, TLS-only, and a forward proxy.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import select
import socket
import socketserver
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import trustme

V4 = "127.0.0.1"
V6 = "::1"


def ipv6_loopback() -> bool:
    """Whether ::1 is configured (a socket can bind it)."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind((V6, 0))
        return True
    except OSError:
        return False


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def closed_port(host: str = V4) -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
    return port


@contextlib.contextmanager
def full_backlog() -> Iterator[socket.socket]:
    """A listener on 127.0.0.1 that never accepts, its queue filled: further SYNs go unanswered."""
    listener = socket.socket()
    listener.bind((V4, 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    held = []
    try:
        for _ in range(4):
            s = socket.socket()
            held.append(s)
            s.setblocking(False)
            try:
                s.connect((V4, port))
            except BlockingIOError:
                pass
        yield listener
    finally:
        for s in held:
            s.close()
        listener.close()


class ServedInThread:
    """A ``socketserver`` server (``http.server`` ones included) served from a daemon thread: the
    plumbing of the test doubles built on the standard library's servers. ``start`` serves,
    ``stop`` shuts it down, closes its socket and waits for the thread."""

    def __init__(self, server: socketserver.BaseServer, name: str) -> None:
        self.server = server
        self._thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


class _Stoppable:
    """Start/stop plumbing shared by the servers."""

    def __init__(self) -> None:
        self.stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        with self._lock:
            self._threads = [x for x in self._threads if x.is_alive()]
            self._threads.append(t)
        t.start()

    def _track(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.add(conn)

    def _untrack(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.discard(conn)

    def _stop(self) -> None:
        self.stopped.set()
        self._wake_w.send(b"x")
        give_up = time.monotonic() + 10
        while time.monotonic() < give_up:
            # Shut down every open connection (again: a handler may have started
            # meanwhile) until every thread has returned.
            with self._lock:
                conns = list(self._conns)
                threads = [t for t in self._threads if t.is_alive()]
            if not threads:
                break
            for conn in conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            threads[0].join(timeout=0.05)
        self._wake_r.close()
        self._wake_w.close()


# --- DNS -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Name:
    """What the DNS server does for one name."""

    a: Sequence[str] = ()
    aaaa: Sequence[str] = ()
    cname: str | None = None
    rcode: str | None = None  # "SERVFAIL", "REFUSED": answer with that rcode
    silent: bool = False  # never answer
    whoami: bool = False  # answer with the querying client's address
    tcp_only: bool = False  # over UDP answer truncated (TC), over TCP in full
    drop_first: int = 0  # the first N UDP queries of each type go unanswered (lost packets)
    ttl: int = 300


ZONE: Mapping[str, Name] = {
    "a.test.": Name(a=("198.18.0.10", "198.18.0.11"), aaaa=("2001:db8::10",), ttl=300),
    "v4only.test.": Name(a=("198.18.0.20",), ttl=60),
    "v6only.test.": Name(aaaa=("2001:db8::20",)),
    "empty.test.": Name(),
    "www.test.": Name(cname="edge.test."),
    "edge.test.": Name(cname="a.test."),
    "servfail.test.": Name(rcode="SERVFAIL"),
    "refused.test.": Name(rcode="REFUSED"),
    "silent.test.": Name(silent=True),
    "whoami.test.": Name(whoami=True, ttl=0),
    "tcp.test.": Name(a=("198.18.0.30",), tcp_only=True),
    "lossy.test.": Name(a=("198.18.0.40",), aaaa=("2001:db8::40",), drop_first=1),
}


class DnsServer(_Stoppable):
    """A nameserver on loopback, UDP and TCP on the same port, answering from :data:`ZONE`.

    ``queries`` records (name, type, "udp"/"tcp") for every question received.
    """

    def __init__(self, host: str = V4, zone: Mapping[str, Name] = ZONE) -> None:
        super().__init__()
        self.host = host
        self.zone = zone
        self.port = 0
        self.queries: list[tuple[str, str, str]] = []
        #: (name, type, source port, query ID) of every question received over UDP.
        self.udp_senders: list[tuple[str, str, int, int]] = []

    def __enter__(self) -> DnsServer:
        fam = _family(self.host)
        for _ in range(20):  # the same free port for UDP and TCP
            udp = socket.socket(fam, socket.SOCK_DGRAM)
            udp.bind((self.host, 0))
            port = udp.getsockname()[1]
            tcp = socket.socket(fam, socket.SOCK_STREAM)
            try:
                tcp.bind((self.host, port))
            except OSError:
                udp.close()
                tcp.close()
                continue
            break
        else:  # pragma: no cover - 20 collisions in a row
            raise RuntimeError("no free port for the DNS server")
        tcp.listen(16)
        self.udp, self.tcp, self.port = udp, tcp, port
        self._spawn(self._serve)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop()
        self.udp.close()
        self.tcp.close()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            ready, _, _ = select.select([self.udp, self.tcp, self._wake_r], [], [], 1.0)
            for sock in ready:
                if sock is self.udp:
                    with contextlib.suppress(OSError):
                        data, addr = self.udp.recvfrom(65535)
                        reply = self.answer(data, addr[0], "udp", addr[1])
                        if reply is not None:
                            self.udp.sendto(reply, addr)
                elif sock is self.tcp:
                    with contextlib.suppress(OSError):
                        conn, addr = self.tcp.accept()
                        self._spawn(self._serve_tcp, conn, addr[0])

    def _serve_tcp(self, conn: socket.socket, client: str) -> None:
        self._track(conn)
        try:
            conn.settimeout(5)
            while True:
                head = _recv_exact(conn, 2)
                if head is None:
                    return
                data = _recv_exact(conn, struct.unpack("!H", head)[0])
                if data is None:
                    return
                reply = self.answer(data, client, "tcp")
                if reply is None:
                    self.stopped.wait(30)
                    return
                conn.sendall(struct.pack("!H", len(reply)) + reply)
        except OSError:
            pass
        finally:
            self._untrack(conn)
            conn.close()

    def answer(self, wire: bytes, client: str, transport: str, port: int | None = None) -> bytes | None:
        """The reply to one query, or None to stay silent."""
        try:
            query = dns.message.from_wire(wire)
        except Exception:
            return None
        question = query.question[0]
        qname = question.name.to_text().lower()
        rdtype = question.rdtype
        self.queries.append((qname, dns.rdatatype.to_text(rdtype), transport))
        if port is not None:
            self.udp_senders.append((qname, dns.rdatatype.to_text(rdtype), port, query.id))
        response = dns.message.make_response(query)
        response.flags |= dns.flags.RA
        name = qname
        for _ in range(8):  # follow CNAMEs inside the zone
            entry = self.zone.get(name)
            if entry is None:
                response.set_rcode(dns.rcode.NXDOMAIN)
                return response.to_wire()
            if entry.silent:
                return None
            if transport == "udp" and self.queries.count((qname, dns.rdatatype.to_text(rdtype), "udp")) \
                    <= entry.drop_first:
                return None
            if entry.rcode:
                response.set_rcode(dns.rcode.from_text(entry.rcode))
                return response.to_wire()
            if entry.tcp_only and transport == "udp":
                response.flags |= dns.flags.TC
                return response.to_wire()
            if entry.cname and rdtype != dns.rdatatype.CNAME:
                response.answer.append(dns.rrset.from_text(name, entry.ttl, "IN", "CNAME", entry.cname))
                name = entry.cname.lower()
                continue
            addresses: Sequence[str] = ()
            if entry.whoami:
                v6 = ipaddress.ip_address(client).version == 6
                addresses = (client,) if v6 == (rdtype == dns.rdatatype.AAAA) else ()
            elif rdtype == dns.rdatatype.A:
                addresses = entry.a
            elif rdtype == dns.rdatatype.AAAA:
                addresses = entry.aaaa
            if addresses:
                response.answer.append(dns.rrset.from_text(
                    name, entry.ttl, "IN", dns.rdatatype.to_text(rdtype), *addresses))
            return response.to_wire()
        return response.to_wire()


def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


# --- PKI -------------------------------------------------------------------------------

PUBLIC_ORG = "Public Test Roots"
INSPECTION_ORG = "Contoso Web Gateway"
UNTRUSTED_ORG = "Untrusted Test CA"


@dataclass
class Pki:
    """Test CAs and the bundles a ProbeSpec takes.

    ``public_roots``: the public-like CA only. ``system_roots``: public-like +
    inspection CA (a root "added on this machine"). The untrusted CA is in neither.
    """

    directory: Path
    public: trustme.CA = field(init=False)
    inspection_root: trustme.CA = field(init=False)
    inspection: trustme.CA = field(init=False)
    untrusted: trustme.CA = field(init=False)
    public_roots: str = field(init=False)
    system_roots: str = field(init=False)

    def __post_init__(self) -> None:
        self.public = trustme.CA(organization_name=PUBLIC_ORG)
        self.inspection_root = trustme.CA(organization_name=INSPECTION_ORG)
        # Gateways sign with an intermediate under their root, and send the chain.
        self.inspection = trustme.CA(parent_cert=self.inspection_root, organization_name=INSPECTION_ORG,
                                     organization_unit_name="Inspection Issuing CA")
        self.untrusted = trustme.CA(organization_name=UNTRUSTED_ORG)
        public = self.directory / "public-roots.pem"
        system = self.directory / "system-roots.pem"
        public.write_bytes(self.public.cert_pem.bytes())
        system.write_bytes(self.public.cert_pem.bytes() + self.inspection_root.cert_pem.bytes())
        self.public_roots, self.system_roots = str(public), str(system)

    def server_context(self, ca: trustme.CA, *names: str, expired: bool = False) -> ssl.SSLContext:
        """A server-side context presenting a certificate for ``names`` from ``ca``."""
        not_after = datetime.datetime(2001, 1, 1) if expired else None
        cert = ca.issue_cert(*names, common_name=names[0], not_after=not_after)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(ctx)
        return ctx


# --- stream servers ----------------------------------------------------------------------

Handler = Callable[["Connection"], None]


@dataclass
class Connection:
    """One accepted connection, handed to a handler."""

    sock: socket.socket
    client: str
    server: StreamServer

    def read_head(self, limit: int = 65536) -> bytes | None:
        """Bytes up to and including the blank line ending an HTTP head."""
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(4096)
            if not chunk:
                return None
            data += chunk
            if len(data) > limit:
                return None
        return data


class StreamServer(_Stoppable):
    """A threaded TCP server on loopback; TLS when given a server context."""

    def __init__(self, handler: Handler, host: str = V4, tls: ssl.SSLContext | None = None) -> None:
        super().__init__()
        self.handler = handler
        self.host = host
        self.tls = tls
        self.port = 0
        self.accepted = 0
        self.requests: list[str] = []  # request heads seen by HTTP handlers and the proxy

    def __enter__(self) -> StreamServer:
        self.listener = socket.socket(_family(self.host), socket.SOCK_STREAM)
        self.listener.bind((self.host, 0))
        self.listener.listen(256)
        self.port = self.listener.getsockname()[1]
        self._spawn(self._serve)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop()
        self.listener.close()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            ready, _, _ = select.select([self.listener, self._wake_r], [], [], 1.0)
            if self.listener in ready:
                with contextlib.suppress(OSError):
                    conn, addr = self.listener.accept()
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    self.accepted += 1
                    self._spawn(self._handle, conn, addr[0])

    def _handle(self, raw: socket.socket, client: str) -> None:
        self._track(raw)
        conn = raw
        try:
            raw.settimeout(10)
            if self.tls is not None:
                conn = self.tls.wrap_socket(raw, server_side=True)
                self._track(conn)
            self.handler(Connection(conn, client, self))
        except (OSError, ValueError):
            pass
        finally:
            self._untrack(raw)
            self._untrack(conn)
            with contextlib.suppress(OSError):
                conn.close()
            raw.close()


# --- handlers ----------------------------------------------------------------------------

def http_answer(status: int, reason: str, headers: Sequence[tuple[str, str]] = (),
                body: bytes = b"") -> Handler:
    """Answer every request with this status, these headers and this body."""
    head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    head += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    return raw_answer(head.encode("latin-1") + body)


def raw_answer(payload: bytes, *, wait_for_close: bool = True) -> Handler:
    """Read the request head, send ``payload`` as it is; then wait for the client to close, or close."""

    def handle(c: Connection) -> None:
        request = c.read_head()
        if request is None:
            return
        c.server.requests.append(request.decode("latin-1"))
        c.sock.sendall(payload)
        if wait_for_close:
            with contextlib.suppress(OSError):
                c.sock.recv(1)

    return handle


def banner(payload: bytes) -> Handler:
    """Send ``payload`` as soon as a client connects (a server that talks first, not TLS)."""

    def handle(c: Connection) -> None:
        c.sock.sendall(payload)
        with contextlib.suppress(OSError):
            c.sock.recv(1)

    return handle


def silent(c: Connection) -> None:
    """Accept, read the request, never answer (until the server stops)."""
    c.read_head()
    c.server.stopped.wait(60)


def tls_only(c: Connection) -> None:
    """The TLS handshake happened in the server; wait for the client to leave."""
    with contextlib.suppress(OSError):
        while c.sock.recv(4096):
            pass


def _loopback(host: str, hosts: Mapping[str, str]) -> str | None:
    host = hosts.get(host.lower(), host)
    try:
        return host if ipaddress.ip_address(host).is_loopback else None
    except ValueError:
        return None


def _pipe(a: socket.socket, b: socket.socket, stopped: threading.Event) -> None:
    a.settimeout(None)
    b.settimeout(None)
    socks = [a, b]
    while not stopped.is_set():
        ready, _, _ = select.select(socks, [], [], 0.5)
        for s in ready:
            data = s.recv(65536)
            if not data:
                return
            (b if s is a else a).sendall(data)


def forward_proxy(hosts: Mapping[str, str] | None = None, require_auth: bool = False) -> Handler:
    """A forward proxy: CONNECT tunnels and absolute-form GETs, to loopback only.

    ``hosts`` maps names to loopback addresses ("localhost" is built in); any
    other destination gets 403. With ``require_auth`` every request gets 407.
    """
    names = {"localhost": V4, **{k.lower(): v for k, v in (hosts or {}).items()}}

    def handle(c: Connection) -> None:
        head = c.read_head()
        if head is None:
            return
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        c.server.requests.append(head.decode("latin-1"))
        method, target, _ = (line.split(" ") + ["", ""])[:3]
        if require_auth:
            c.sock.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                           b"Proxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n"
                           b"Connection: close\r\n\r\n")
            return
        if method == "CONNECT":
            host, _, port_s = target.rpartition(":")
            request = b""
        else:
            url = target.split("://", 1)[-1]
            hostport, _, path = url.partition("/")
            host, _, port_s = hostport.rpartition(":") if ":" in hostport else (hostport, "", "80")
            rest = head.split(b"\r\n", 1)[1]
            request = f"{method} /{path} HTTP/1.1\r\n".encode("latin-1") + rest
        address = _loopback(host.strip("[]"), names)
        if address is None or not port_s.isdigit():
            c.sock.sendall(b"HTTP/1.1 403 Forbidden\r\nServer: test-proxy\r\nContent-Length: 0\r\n\r\n")
            return
        try:
            upstream = socket.create_connection((address, int(port_s)), timeout=5)
            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            c.sock.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
        with upstream:
            c.server._track(upstream)
            try:
                if method == "CONNECT":
                    c.sock.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                else:
                    upstream.sendall(request)
                _pipe(c.sock, upstream, c.server.stopped)
            finally:
                c.server._untrack(upstream)

    return handle


@contextlib.contextmanager
def serving(handler: Handler, host: str = V4, tls: ssl.SSLContext | None = None
            ) -> Iterator[StreamServer]:
    """A :class:`StreamServer` as a plain context manager."""
    with StreamServer(handler, host, tls) as server:
        yield server
