"""Item 2: the whole check -- PAC download, WPAD discovery, name lookups in the site facts -- ends at
its deadline, whatever a server does. Each against a real server that sends one byte a second."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from netcheck.deadline import Deadline
from netcheck.models import Outcome
from netcheck.proxy.pac import discover_wpad, fetch_pac
from tests.hostile.sandbox import needs_sandbox, run_sandboxed

PAC = b"function FindProxyForURL(url, host) { return 'DIRECT'; }"


@contextlib.contextmanager
def trickling(head_first: bool) -> Iterator[int]:
    """An HTTP server on loopback sending its answer one byte a second; with ``head_first`` the
    head arrives at once and only the body trickles."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(PAC)
            if head_first:
                conn.sendall(head)
            rest = PAC if head_first else head + PAC
            for i in range(len(rest)):
                if stop.wait(1.0):
                    return
                try:
                    conn.sendall(rest[i:i + 1])
                except OSError:
                    return

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        listener.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("head_first", [True, False], ids=["body-trickles", "head-trickles"])
def test_hostile_pac_download_from_a_trickling_server_ends_at_the_deadline(head_first: bool) -> None:
    with trickling(head_first) as port:
        got = fetch_pac(f"http://127.0.0.1:{port}/proxy.pac", Deadline.after(2.0))
    assert got.outcome is Outcome.TIMEOUT
    assert "deadline" in (got.error or "")


@pytest.mark.timeout(60)
def test_hostile_wpad_discovery_from_a_trickling_server_ends_at_the_deadline() -> None:
    with trickling(False) as port:
        tried = discover_wpad([f"http://127.0.0.1:{port}/wpad.dat"] * 3, Deadline.after(2.0))
    assert tried and tried[0].outcome is Outcome.TIMEOUT
    assert all(t.outcome is Outcome.TIMEOUT for t in tried)


@needs_sandbox
@pytest.mark.timeout(120)
def test_hostile_whole_check_with_a_trickling_pac_server_returns_and_says_timeout(tmp_path: Path) -> None:
    proc = run_sandboxed(["tests/hostile/child.py", "trickle-pac", "check", "--json", "--no-progress",
                          "--deadline", "4"], tmp_path)
    assert proc.returncode in (1, 2), proc.stderr
    report = json.loads(proc.stdout)
    assert report["network"]["pac_fetch"] == "timeout"
    assert "pac.timeout" in {f["code"] for f in report["findings"]}


_LOOKUP = """
import json, sys, time
sys.path.insert(0, ".")
from tests.hostile.child import silent_dns
silent_dns()
from netcheck.deadline import Deadline
from netcheck.proxy.pac import resolve_within
from netcheck.site_facts import _resolve
print(json.dumps({"site_facts": _resolve("relay.example.net", Deadline.after(2.0)),
                  "outcome": str(resolve_within("proxy.example.net", 2.0)[1])}))
"""


@needs_sandbox
@pytest.mark.timeout(120)
def test_hostile_site_fact_lookups_against_a_silent_resolver_end_at_the_deadline(tmp_path: Path) -> None:
    proc = run_sandboxed(["-c", _LOOKUP], tmp_path)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got == {"site_facts": [], "outcome": "dns_timeout"}  # it returned, and said why
