"""A12 TLS faults: the agent never sends a token or a report over a connection it does not trust.

Loopback TLS servers (trustme certificates) record every byte they decrypt; a
plain listener stands where a redirect points. For each fault the test checks
that no request reached any server, that the report is still spooled, and that
the reason reads "TLS", not "offline". The good paths run against the real
collector serving TLS itself (`netcheck serve --tls-cert/--tls-key`).
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme

from netcheck.agent.transport import CollectorClient, Timeouts
from netcheck.agent.uploader import Uploader
from netcheck.deadline import Deadline
from tests.agent.conftest import Real, Rig
from tests.agent.helpers import fake_report
from tests.collector.conftest import sql

TIMEOUTS = Timeouts(connect_s=3, read_s=3, write_s=3, total_s=6)


@dataclass
class Listener:
    """A TCP (optionally TLS) server that records what it receives and may answer one canned response."""

    ctx: ssl.SSLContext | None = None
    answer: bytes = b""
    received: bytearray = field(default_factory=bytearray)
    handshakes_failed: int = 0

    def __post_init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._stop = False
        self._conns: list[threading.Thread] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            t = threading.Thread(target=self._one, args=(conn,), daemon=True)
            self._conns.append(t)
            t.start()

    def _one(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        try:
            if self.ctx is not None:
                try:
                    conn = self.ctx.wrap_socket(conn, server_side=True)
                except (ssl.SSLError, OSError):
                    self.handshakes_failed += 1
                    return
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
                self.received += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            while len(body) < length:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                body += chunk
                self.received += chunk
            if self.answer:
                conn.sendall(self.answer)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self._stop = True
        self.thread.join(2)
        for t in self._conns:
            t.join(5)
        self.sock.close()


@pytest.fixture
def listeners() -> Iterator[Callable[..., Listener]]:
    made: list[Listener] = []

    def make(ctx: ssl.SSLContext | None = None, answer: bytes = b"") -> Listener:
        made.append(Listener(ctx, answer))
        return made[-1]

    yield make
    for listener in made:
        listener.close()


def server_ctx(cert_pem: bytes, key_pem: bytes, tmp: Path, *, old_tls_only: bool = False) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    (tmp / "c.pem").write_bytes(cert_pem)
    (tmp / "k.pem").write_bytes(key_pem)
    if old_tls_only:
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        with warnings.catch_warnings():  # that is the point: a server stuck on TLS 1.0/1.1
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.load_cert_chain(tmp / "c.pem", tmp / "k.pem")
    return ctx


@pytest.fixture
def pki(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """Two CAs; the 'system store' (SSL_CERT_FILE) trusts ca1 only."""
    ca1, ca2 = trustme.CA(), trustme.CA()
    store = tmp_path / "system-store.pem"
    store.write_bytes(ca1.cert_pem.bytes())
    monkeypatch.setenv("SSL_CERT_FILE", str(store))
    (tmp_path / "ca1.pem").write_bytes(ca1.cert_pem.bytes())
    return {"ca1": ca1, "ca2": ca2, "ca1_file": tmp_path / "ca1.pem", "store": store}


def _leaf(ca: trustme.CA, *names: str, not_before: dt.datetime | None = None,
          not_after: dt.datetime | None = None) -> tuple[bytes, bytes]:
    leaf = ca.issue_cert(*names, not_before=not_before, not_after=not_after)
    return b"".join(p.bytes() for p in leaf.cert_chain_pems), leaf.private_key_pem.bytes()


def _upload(rig: Rig, url: str, ca_bundle: Path | None = None) -> tuple[Uploader, CollectorClient]:
    client = CollectorClient(url, token=rig.store.load_token(), ca_bundle=ca_bundle, timeouts=TIMEOUTS)
    return Uploader(rig.spool, client), client


@pytest.mark.parametrize("fault", ["expired", "wrong host", "self-signed", "unknown CA", "TLS 1.0/1.1 only"])
def test_a12_untrusted_server_gets_nothing_and_the_report_stays(
        fault: str, pki: dict[str, object], tmp_path: Path, listeners: Callable[..., Listener],
        real: Callable[..., Real], rigs: Callable[..., Rig]) -> None:
    ca1, ca2 = pki["ca1"], pki["ca2"]
    assert isinstance(ca1, trustme.CA) and isinstance(ca2, trustme.CA)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    if fault == "expired":
        cert, key = _leaf(ca1, "127.0.0.1", not_before=past - dt.timedelta(days=30), not_after=past)
    elif fault == "wrong host":
        cert, key = _leaf(ca1, "collector.example.org")
    elif fault == "self-signed":
        cert, key = ca2.cert_pem.bytes(), ca2.private_key_pem.bytes()
    elif fault == "unknown CA":
        cert, key = _leaf(ca2, "127.0.0.1")
    else:
        cert, key = _leaf(ca1, "127.0.0.1")
    server = listeners(server_ctx(cert, key, tmp_path, old_tls_only=fault.startswith("TLS 1.0")))
    collector = real()
    rig = rigs(collector.url, collector.secret)
    token = rig.store.load_token()
    rig.spool.append(fake_report())

    uploader, client = _upload(rig, f"https://127.0.0.1:{server.port}")
    with client:
        got = uploader.drain(Deadline.after(10))
    print(f"\nA12 {fault}: {got.failure.reason if got.failure else None}")
    assert got.failure is not None and got.failure.tls and got.failure.reason.startswith("TLS")
    assert got.remaining == 1 and got.quarantined == 0
    server.close()  # wait for its connection threads' view of the handshake
    assert server.received == b"" and token.encode() not in server.received


def test_a12_redirect_to_plain_http_is_refused_and_nothing_is_sent_there(
        pki: dict[str, object], tmp_path: Path, listeners: Callable[..., Listener],
        real: Callable[..., Real], rigs: Callable[..., Rig]) -> None:
    ca1 = pki["ca1"]
    assert isinstance(ca1, trustme.CA)
    plain = listeners()
    elsewhere = listeners(server_ctx(*_leaf(ca1, "127.0.0.1"), tmp_path))
    cert, key = _leaf(ca1, "127.0.0.1")
    collector = real()
    rig = rigs(collector.url, collector.secret)
    rig.spool.append(fake_report())
    for target, sink, tls in ((f"http://127.0.0.1:{plain.port}/api/v1/reports", plain, True),
                              (f"https://127.0.0.1:{elsewhere.port}/api/v1/reports", elsewhere, False)):
        answer = (f"HTTP/1.1 301 Moved\r\nLocation: {target}\r\nContent-Length: 0\r\n"
                  "Connection: close\r\n\r\n").encode()
        redirector = listeners(server_ctx(cert, key, tmp_path), answer)
        uploader, client = _upload(rig, f"https://127.0.0.1:{redirector.port}")
        with client:
            got = uploader.drain(Deadline.after(10))
        assert got.failure is not None and got.failure.status == 301 and got.failure.tls is tls
        if tls:
            assert got.failure.reason.startswith("TLS") and "plain http" in got.failure.reason
        assert got.remaining == 1
        assert sink.received == b""  # neither the token nor the report followed the redirect
    assert plain.received == b""


def test_a12_pinned_ca_rejects_a_certificate_from_another_trusted_ca(
        pki: dict[str, object], tmp_path: Path, listeners: Callable[..., Listener],
        real: Callable[..., Real], rigs: Callable[..., Rig]) -> None:
    ca1, ca2, store = pki["ca1"], pki["ca2"], pki["store"]
    assert isinstance(ca1, trustme.CA) and isinstance(ca2, trustme.CA) and isinstance(store, Path)
    store.write_bytes(ca1.cert_pem.bytes() + ca2.cert_pem.bytes())  # the system trusts both "public" CAs
    ack = b'HTTP/1.1 503 X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n'
    server = listeners(server_ctx(*_leaf(ca2, "127.0.0.1"), tmp_path), ack)
    collector = real()
    rig = rigs(collector.url, collector.secret)
    rig.spool.append(fake_report())
    uploader, client = _upload(rig, f"https://127.0.0.1:{server.port}", ca_bundle=pki["ca1_file"])  # type: ignore[arg-type]
    with client:
        pinned = uploader.drain(Deadline.after(10))
    assert pinned.failure is not None and pinned.failure.tls and server.received == b""
    # the same server is accepted through the system store: the pin is what refused it
    uploader, client = _upload(rig, f"https://127.0.0.1:{server.port}")
    with client:
        system = uploader.drain(Deadline.after(10))
    assert system.failure is not None and system.failure.status == 503 and server.received != b""


def test_a12_real_collector_over_tls_with_a_pinned_ca(pki: dict[str, object], tmp_path: Path,
                                                      real: Callable[..., Real]) -> None:
    ca1 = pki["ca1"]
    assert isinstance(ca1, trustme.CA)
    cert, key = _leaf(ca1, "127.0.0.1")
    (tmp_path / "srv.pem").write_bytes(cert)
    (tmp_path / "srv.key").write_bytes(key)
    collector = real(args=("--tls-cert", str(tmp_path / "srv.pem"), "--tls-key", str(tmp_path / "srv.key")))
    assert collector.url.startswith("https://")
    from netcheck.agent.config import AgentStore
    from netcheck.agent.enrollment import enroll
    store = AgentStore(tmp_path / "cfg")
    enroll(store, collector.url, collector.secret, tags={}, ca_bundle=pki["ca1_file"])  # type: ignore[arg-type]
    assert store.load_config().ca_bundle == pki["ca1_file"]
    from netcheck.agent.spool import Spool
    from netcheck.agent.upload import open_uploader
    spool = Spool(tmp_path / "sp")
    rid = spool.append(fake_report()).report_id
    client, uploader = open_uploader(store, spool)
    with client:
        got = uploader.drain(Deadline.after(10))
    assert got.stored == 1
    assert [r.report_id for r in sql(collector.database_url, "SELECT report_id FROM reports")] == [rid]
