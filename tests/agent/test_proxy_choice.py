"""The agent reaches its collector the way the laptop's browser would: through the proxy its PAC
file (or proxy settings) chooses, and it reads those settings again when the way stops working.

Real components: a real squid on loopback, a PAC file served over HTTP on loopback and read by
netcheck's PAC evaluator, a real collector process.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from netcheck.agent.transport import CollectorClient
from netcheck.deadline import Deadline
from netcheck.proxy.decision import ProxyChoice, proxy_choice
from netcheck.proxy.settings import PAC_ENV
from tests.agent.conftest import Real, Rig
from tests.agent.helpers import fake_report
from tests.servers import Connection, StreamServer, closed_port

SQUID = shutil.which("squid") or "/usr/sbin/squid"
pytestmark = pytest.mark.skipif(not (os.path.exists(SQUID) and os.geteuid() == 0),
                                reason="needs squid and root (squid drops to its own user)")


class PacServer:
    """Serves one PAC file on loopback; its text can be changed while it runs."""

    def __init__(self) -> None:
        self.text = 'function FindProxyForURL(url, host) { return "DIRECT"; }'
        self.server = StreamServer(self._handle)

    def _handle(self, c: Connection) -> None:
        if c.read_head() is None:
            return
        body = self.text.encode()
        c.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ns-proxy-autoconfig\r\n"
                       + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)

    def send_to(self, proxy: str) -> None:
        self.text = f'function FindProxyForURL(url, host) {{ return "{proxy}"; }}'

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}/proxy.pac"


@pytest.fixture
def pac(monkeypatch: pytest.MonkeyPatch) -> Iterator[PacServer]:
    server = PacServer()
    with server.server:
        monkeypatch.setenv(PAC_ENV, server.url)
        for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
            monkeypatch.delenv(name, raising=False)
        yield server


class Squid:
    """squid on loopback, in a directory of its own that its user can reach (pytest's are root-only)."""

    def __init__(self) -> None:
        root = self.root = Path(tempfile.mkdtemp(prefix="netcheck-squid-"))
        self.port = closed_port()
        (root / "squid.conf").write_text("\n".join([
            f"http_port 127.0.0.1:{self.port}",
            f"pid_filename {root}/squid.pid",
            f"cache_log stdio:{root}/cache.log",
            f"access_log stdio:{root}/access.log squid",
            "cache_effective_user proxy", "cache deny all", "cache_mem 8 MB", f"coredump_dir {root}",
            "netdb_filename none", "logfile_rotate 0", "shutdown_lifetime 0 seconds",
            "acl here src 127.0.0.1", "http_access allow here", "http_access deny all", ""]))
        user = pwd.getpwnam("proxy")
        for path in (root, *root.iterdir()):
            os.chown(path, user.pw_uid, user.pw_gid)
        self.proc = subprocess.Popen([SQUID, "-N", "-f", str(root / "squid.conf")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = (root / "cache.log").read_text() if (root / "cache.log").exists() else ""
                self.stop()
                raise RuntimeError(f"squid exited: {log[-2000:]}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError("squid did not start listening")

    def access_log(self) -> str:
        path = self.root / "access.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def squid() -> Iterator[Squid]:
    proxy = Squid()
    yield proxy
    proxy.stop()


def _wait_for(predicate: Callable[[], bool], seconds: float = 10) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def test_the_pac_choice_is_read_like_a_browser_reads_it(pac: PacServer) -> None:
    pac.send_to("PROXY 192.0.2.10:3128; DIRECT")
    got = proxy_choice("https://collector.example/api/v1", Deadline.after(10))
    assert got == ProxyChoice("http://192.0.2.10:3128", f"the PAC file {pac.url} says PROXY 192.0.2.10:3128")
    pac.send_to("DIRECT")
    assert proxy_choice("https://collector.example/api/v1", Deadline.after(10)).proxy is None


def test_an_unreachable_pac_file_means_direct(monkeypatch: pytest.MonkeyPatch) -> None:
    dead = f"http://127.0.0.1:{closed_port()}/proxy.pac"
    monkeypatch.setenv(PAC_ENV, dead)
    got = proxy_choice("https://collector.example/api/v1", Deadline.after(10))
    assert got.proxy is None and dead in got.how and "going direct" in got.how


def test_uploads_go_through_the_proxy_the_pac_file_chooses(pac: PacServer, squid: Squid, real: Callable[..., Real],
                                                          rigs: Callable[..., Rig]) -> None:
    collector = real()
    pac.send_to(f"PROXY 127.0.0.1:{squid.port}")
    rig = rigs(collector.url, collector.secret)
    rig.spool.append(fake_report())
    got = rig.uploader.drain(Deadline.after(20))
    assert got.stored == 1 and got.remaining == 0, got.failure
    assert rig.client.proxy_choice is not None and rig.client.proxy_choice.proxy == f"http://127.0.0.1:{squid.port}"
    # squid carried the enrollment and the upload (its log is written as requests finish)
    assert _wait_for(lambda: f"POST {collector.url}/api/v1/reports" in squid.access_log()), squid.access_log()
    assert f"POST {collector.url}/api/v1/enroll" in squid.access_log()


def test_when_the_proxy_goes_away_the_agent_reads_the_pac_file_again(pac: PacServer, squid: Squid,
                                                                     real: Callable[..., Real],
                                                                     rigs: Callable[..., Rig]) -> None:
    collector = real()
    rig = rigs(collector.url, collector.secret)  # enrolled direct (the PAC says DIRECT)
    # the laptop comes to the office: the PAC file now sends everything through a proxy that is down
    dead = closed_port()
    pac.send_to(f"PROXY 127.0.0.1:{dead}")
    client = CollectorClient(collector.url, token=rig.client.token, chooser=proxy_choice)
    try:
        first = client.get_policy(Deadline.after(10))
        assert not first.ok and first.status is None
        assert client.proxy_choice is None  # forgotten after a failure with no answer at all
        pac.send_to(f"PROXY 127.0.0.1:{squid.port}")  # IT fixes the PAC file
        second = client.get_policy(Deadline.after(10))
        assert second.ok, second.reason
        assert client.proxy_choice is not None and client.proxy_choice.proxy == f"http://127.0.0.1:{squid.port}"
    finally:
        client.close()
    assert _wait_for(lambda: f"GET {collector.url}/api/v1/policy" in squid.access_log()), squid.access_log()
