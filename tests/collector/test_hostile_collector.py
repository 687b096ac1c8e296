"""Hostile and careless clients and admins against a real `netcheck serve` (issue 10, items 12-16).

- 12: a 60 MB request header, 200 header lines, idle and slow-loris connections, a trickled body,
  over plain HTTP and over the collector's own TLS: refused (431) or closed, and the collector
  still answers everyone else;
- 13: strangers' bad tokens from an office's shared address never lock out the valid devices there;
- 14: `kill -9` of the master of `--workers 2`: the workers stop, and a restart binds the same port;
- 15: no redirect is built from the Host header;
- 16: the SQLite database and its directory are private, a mistyped database directory is not
  created, a bad TLS PEM and an unwritable export path are one line and exit 4, and CSV cells
  behind Unicode spaces or in full-width forms cannot start a formula.

No test measures time: a slow client is shown to be closed by the collector (it was still
sending), whatever the machine's speed.
"""

from __future__ import annotations

import os
import socket
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest
import trustme

from netcheck.collector.export import neutralise, to_csv
from tests.collector.conftest import Fleet, sample_report, upload
from tests.collector.harness import CollectorProcess, free_port

#: short deadlines so that the test waits little (the defaults are 10 s and 60 s)
FAST = {"NETCHECK_HEAD_TIMEOUT_S": "2", "NETCHECK_BODY_TIMEOUT_S": "3"}
#: how long a test waits for the collector to act before it calls the collector stuck
PATIENCE_S = 60.0


def _sqlite_only(backend: str) -> None:
    if backend != "sqlite":
        pytest.skip("does not depend on the database")


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path, ssl.SSLContext]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_pem.write_to_path(str(key_path))
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return cert_path, key_path, context


@contextmanager
def _connect(proc: CollectorProcess, context: ssl.SSLContext | None = None) -> Iterator[socket.socket]:
    parts = urlsplit(proc.url)
    assert parts.hostname and parts.port
    raw = socket.create_connection((parts.hostname, parts.port), timeout=PATIENCE_S)
    sock = context.wrap_socket(raw, server_hostname=parts.hostname) if context else raw
    try:
        yield sock
    finally:
        sock.close()


def _read_all(sock: socket.socket) -> bytes:
    """Everything the collector sends until it closes the connection."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            return data
        if not chunk:
            return data
        data += chunk


def _send_until_closed(sock: socket.socket, head: bytes, filler: bytes, total: int) -> int:
    """Send ``head`` then ``filler`` up to ``total`` bytes; returns how many were sent before the
    collector stopped reading (closed the connection)."""
    sock.sendall(head)
    sent = len(head)
    try:
        while sent < total:
            sock.sendall(filler)
            sent += len(filler)
    except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
        pass
    return sent


def _healthy(proc: CollectorProcess, context: ssl.SSLContext | None = None) -> bool:
    with proc.client(verify=context or True) as client:
        return client.get("/healthz").status_code == 200


# --- 12: slow and huge clients ----------------------------------------------------------------------

def _serve(start_collector: Callable[..., CollectorProcess], tls: tuple[Path, Path, ssl.SSLContext] | None
           ) -> tuple[CollectorProcess, ssl.SSLContext | None]:
    """A collector with short client deadlines, serving TLS itself when ``tls`` is given."""
    if tls is None:
        return start_collector(env=FAST), None
    cert, key, context = tls
    return start_collector(env=FAST, args=("--tls-cert", str(cert), "--tls-key", str(key))), context


@pytest.mark.parametrize("over_tls", [False, True], ids=["http", "tls"])
def test_hostile_huge_headers_get_431_and_the_connection_closed(
        backend: str, over_tls: bool, tls_files: tuple[Path, Path, ssl.SSLContext],
        start_collector: Callable[..., CollectorProcess]) -> None:
    _sqlite_only(backend)
    proc, ctx = _serve(start_collector, tls_files if over_tls else None)
    size = 60 * 1024 * 1024
    with _connect(proc, ctx) as sock:
        sent = _send_until_closed(sock, b"GET /healthz HTTP/1.1\r\nHost: c\r\nX-Big: ", b"a" * 65536, size)
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 431 ") and b'"code":"headers_too_large"' in answer
    if not over_tls:  # it stopped reading long before 60 MB (over TLS, what follows is decrypted and
        assert sent < size  # thrown away while the TLS session closes, for at most CLOSE_GRACE_S)
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(200))
    with _connect(proc, ctx) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: c\r\n" + many + b"\r\n")
        assert _read_all(sock).startswith(b"HTTP/1.1 431 ")
    # an ordinary request with ordinary headers is untouched
    with proc.client(verify=ctx or True) as client:
        assert client.get("/healthz", headers={"X-Ok": "v" * 4000}).status_code == 200


@pytest.mark.parametrize("over_tls", [False, True], ids=["http", "tls"])
def test_hostile_idle_and_slow_loris_connections_are_closed(
        backend: str, over_tls: bool, tls_files: tuple[Path, Path, ssl.SSLContext],
        start_collector: Callable[..., CollectorProcess]) -> None:
    _sqlite_only(backend)
    proc, ctx = _serve(start_collector, tls_files if over_tls else None)
    parts = urlsplit(proc.url)
    # 30 slow-loris clients (a header byte every 0.5 s, never finishing) and 30 idle ones
    loris = []
    for _ in range(30):
        raw = socket.create_connection((parts.hostname, parts.port), timeout=PATIENCE_S)
        sock = ctx.wrap_socket(raw, server_hostname=parts.hostname) if ctx else raw
        sock.sendall(b"POST /api/v1/reports HTTP/1.1\r\nHost: c\r\nX-Slow: ")
        loris.append(sock)
    idle = [socket.create_connection((parts.hostname, parts.port), timeout=PATIENCE_S) for _ in range(30)]
    try:
        closed_while_sending = 0
        give_up = time.monotonic() + PATIENCE_S
        open_ = list(loris)
        while open_ and time.monotonic() < give_up:
            for sock in list(open_):
                try:
                    sock.sendall(b"a")
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
                    closed_while_sending += 1
                    open_.remove(sock)
            time.sleep(0.5)
        assert not open_, "the collector kept slow-loris connections open"
        assert closed_while_sending == 30
        for sock in idle:  # never sent a byte: closed too (after the TLS handshake timeout if TLS)
            if not ctx:
                assert _read_all(sock).startswith(b"HTTP/1.1 408 ")
        assert _healthy(proc, ctx)
    finally:
        for sock in loris + idle:
            sock.close()


def test_hostile_a_trickled_body_is_cut_and_nothing_is_stored(backend: str,
                                                              start_collector: Callable[..., CollectorProcess],
                                                              fleet_factory: Callable[[CollectorProcess], Fleet]
                                                              ) -> None:
    _sqlite_only(backend)
    proc = start_collector(env=FAST)
    fleet = fleet_factory(proc)
    device = fleet.enroll()
    body = b'{"report": ' + b" " * 5000 + b"}"
    head = (b"POST /api/v1/reports HTTP/1.1\r\nHost: c\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n" % (device.token.encode(), len(body)))
    with _connect(proc) as sock:
        sock.sendall(head)
        cut = False
        for i in range(int(PATIENCE_S / 0.5)):
            try:
                sock.sendall(body[i:i + 1])
            except (BrokenPipeError, ConnectionResetError, OSError):
                cut = True
                break
            time.sleep(0.5)
            if i + 1 >= len(body):
                break
        assert cut or _read_all(sock) == b"", "the collector waited for a trickled body"
    assert fleet.count("SELECT count(*) FROM reports WHERE device_id = :d", d=device.device_id) == 0
    assert fleet.post(device, upload(sample_report())).status_code == 200


# --- 13: a shared office address ---------------------------------------------------------------------

def test_hostile_strangers_bad_tokens_never_lock_out_valid_devices_behind_the_same_address(
        start_collector: Callable[..., CollectorProcess], fleet_factory: Callable[[CollectorProcess], Fleet]) -> None:
    proc = start_collector(env={"NETCHECK_RATE_ADDRESS": "5", "NETCHECK_RATE_DEVICE": "100"},
                           args=("--trusted-proxy-header", "X-Real-IP"))
    fleet = fleet_factory(proc)
    office = {"X-Real-IP": "203.0.113.7"}
    laptops = [fleet.enroll() for _ in range(3)]
    strangers = [fleet.client.get("/api/v1/policy", headers={**office, "Authorization": f"Bearer nct_{i:043d}"})
                 .status_code for i in range(61)]
    assert strangers.count(401) == 5 and strangers.count(429) == 56
    for laptop in laptops:
        assert fleet.client.get("/api/v1/policy", headers={**office, **laptop.auth}).status_code == 200
        assert fleet.post(laptop, upload(sample_report()), headers=office).status_code == 200
    # a valid token is limited per device, not per address
    noisy = start_collector(env={"NETCHECK_RATE_ADDRESS": "5", "NETCHECK_RATE_DEVICE": "3"},
                            args=("--trusted-proxy-header", "X-Real-IP"))
    noisy_fleet = fleet_factory(noisy)
    one, other = noisy_fleet.enroll(), noisy_fleet.enroll()
    codes = [noisy_fleet.client.get("/api/v1/policy", headers={**office, **one.auth}).status_code
             for _ in range(4)]
    assert codes[-1] == 429 and codes.count(200) >= 1
    assert noisy_fleet.client.get("/api/v1/policy", headers={**office, **other.auth}).status_code == 200


# --- 14: the master killed ---------------------------------------------------------------------------

def test_hostile_kill_9_of_the_master_stops_its_workers_and_a_restart_binds_the_port(
        backend: str, start_collector: Callable[..., CollectorProcess]) -> None:
    _sqlite_only(backend)
    port = free_port()
    first = start_collector(args=("--workers", "2", "--port", str(port)))
    master = psutil.Process(first.proc.pid)
    give_up = time.monotonic() + PATIENCE_S
    while len(_workers(master)) < 2 and time.monotonic() < give_up:
        time.sleep(0.1)
    workers = _workers(master)
    assert len(workers) == 2
    master.kill()
    first.proc.wait(timeout=PATIENCE_S)
    gone, alive = psutil.wait_procs(workers, timeout=PATIENCE_S)
    assert not alive, f"workers still serving after the master died: {[p.pid for p in alive]}"
    second = start_collector(args=("--workers", "2", "--port", str(port)), database_url=first.database_url)
    assert second.url == first.url and _healthy(second)
    assert "Traceback" not in first.log()


#: a worker whose master (its parent, this script) exits at once; the kernel's parent-death
#: signal is switched off, so that only the watchdog (the macOS and Windows path) can stop it
_ORPHAN = """
import logging, os, subprocess, sys, time
if sys.argv[1] == "parent":
    child = subprocess.Popen([sys.executable, "-c", sys.argv[2], "child", sys.argv[2]],
                             env={**os.environ, "NETCHECK_SUPERVISOR_PID": str(os.getpid())})
    print(child.pid, flush=True)
    time.sleep(1.5)  # the child is watching by now
    os._exit(0)
logging.basicConfig(level=logging.WARNING)
from netcheck.collector import supervision
supervision._set_parent_death_signal = lambda: False
assert supervision.follow_master() is not None
time.sleep(120)
"""


def test_hostile_the_watchdog_alone_stops_an_orphaned_worker(backend: str) -> None:
    _sqlite_only(backend)
    parent = subprocess.Popen([sys.executable, "-c", _ORPHAN, "parent", _ORPHAN], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    assert parent.stdout is not None and parent.stderr is not None
    child = psutil.Process(int(parent.stdout.readline()))
    parent.wait(timeout=PATIENCE_S)
    try:
        child.wait(timeout=PATIENCE_S)  # raises if it is still running
    finally:
        if child.is_running():
            child.kill()
    said = parent.stderr.read()
    parent.stdout.close()
    parent.stderr.close()
    assert f"master process {parent.pid} is gone; this worker stops" in said


def _workers(master: psutil.Process) -> list[psutil.Process]:
    """uvicorn's worker processes (the multiprocessing helpers aside)."""
    return [p for p in master.children() if "multiprocessing.resource_tracker" not in " ".join(p.cmdline())]


# --- 15: redirects -----------------------------------------------------------------------------------

def test_hostile_no_redirect_is_built_from_the_host_header(backend: str, collector: CollectorProcess) -> None:
    _sqlite_only(backend)
    with collector.client() as client:
        for path in ("/api/v1/policy/", "/healthz/", "/api/v1/sweeps/pending/"):
            got = client.get(path, headers={"Host": "evil.example"}, follow_redirects=False)
            assert got.status_code == 404 and "location" not in got.headers, (path, got.headers)
            assert got.json()["error"]["code"] == "not_found"


# --- 16: files and paths -----------------------------------------------------------------------------

def test_hostile_the_sqlite_database_and_its_directory_are_private(backend: str, tmp_path: Path) -> None:
    _sqlite_only(backend)
    old = os.umask(0o022)
    try:
        with CollectorProcess(None, workdir=tmp_path) as proc:  # the default: SQLite in the data directory
            assert _healthy(proc)
            db = Path(proc.database_url.removeprefix("sqlite:///"))
            assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700
            for path in [db, *db.parent.glob("collector.db-*")]:
                assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    finally:
        os.umask(old)


def _netcheck(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETCHECK_")}
    return subprocess.run([sys.executable, "-m", "netcheck", *args], capture_output=True, text=True, timeout=60,
                          check=False, stdin=subprocess.DEVNULL, env=env)


def test_hostile_serve_and_admin_mistakes_are_one_line_and_exit_4(backend: str, tmp_path: Path,
                                                                  collector: CollectorProcess) -> None:
    _sqlite_only(backend)
    typo = tmp_path / "typo" / "dir"
    got = _netcheck("serve", "--port", "0", "--database-url", f"sqlite:///{typo}/x.db")
    assert got.returncode == 4 and got.stderr.count("\n") == 1 and "does not exist" in got.stderr, got.stderr
    assert not typo.parent.exists()
    bad_pem = tmp_path / "bad.pem"
    bad_pem.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    got = _netcheck("serve", "--port", "0", "--database-url", collector.database_url,
                    "--tls-cert", str(bad_pem), "--tls-key", str(bad_pem))
    assert got.returncode == 4 and got.stderr.count("\n") == 1, got.stderr
    assert "cannot use --tls-cert" in got.stderr and "Traceback" not in got.stderr
    # an encrypted key: refused at once, never a password prompt that would hang a service
    from cryptography.hazmat.primitives import serialization

    ca_cert = trustme.CA().issue_cert("127.0.0.1")
    key = serialization.load_pem_private_key(ca_cert.private_key_pem.bytes(), None)
    (tmp_path / "locked.pem").write_bytes(key.private_bytes(  # type: ignore[union-attr]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")))
    ca_cert.cert_chain_pems[0].write_to_path(str(tmp_path / "chain.pem"))
    got = _netcheck("serve", "--port", "0", "--database-url", collector.database_url,
                    "--tls-cert", str(tmp_path / "chain.pem"), "--tls-key", str(tmp_path / "locked.pem"))
    assert got.returncode == 4 and got.stderr.count("\n") == 1 and "unencrypted private key" in got.stderr
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    got = _netcheck("admin", "export", "--format", "csv", "--output", str(a_file / "fleet.csv"),
                    "--database-url", collector.database_url)
    assert got.returncode == 4 and got.stderr.count("\n") == 1 and "cannot write" in got.stderr, got.stderr


FORMULAS = ["=1+1", "\u00a0=HYPERLINK(\"http://evil.example\")", "\u00a0\u00a0+1", "\u3000-1", "\u2003@SUM(A1)",
            "\ufeff=1", "\u200b=1", "\uff1d1+1", "\uff0b1", "\uff0d1", "\uff20SUM(A1)", "\ufe62x", " \t=1", "\r=1",
            "\n=1"]


def test_hostile_csv_cells_cannot_start_a_formula_behind_unicode_spaces_or_in_full_width(
        backend: str, collector: CollectorProcess, fleet_factory: Callable[[CollectorProcess], Fleet]) -> None:
    _sqlite_only(backend)
    for cell in FORMULAS:
        assert neutralise(cell) == "'" + cell, repr(cell)
    for cell in ("contoso", "a=1", "1-2", "", "\u00a0paris", "\u2212 1"):
        assert neutralise(cell) == cell
    row = {"device_id": "d", "name": "\u00a0=HYPERLINK(1)", "tags": {"site": "\uff1dx"}, "last_seen_at": None,
           "report_id": None, "measured_at": None, "verdict": None, "workloads": {}}
    assert "'\u00a0=HYPERLINK(1)" in to_csv([row]) and "'site=" not in to_csv([row])
    fleet = fleet_factory(collector)
    fleet.enroll(name="\u00a0=cmd|' /C calc'!A0")
    got = _netcheck("admin", "export", "--format", "csv", "--database-url", collector.database_url)
    assert got.returncode == 0 and "'\u00a0=cmd|" in got.stdout
