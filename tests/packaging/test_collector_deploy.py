"""The collector's deployment pieces: the nginx example runs, as written, in front of a real
collector (TLS, enrollment and an upload through it); the container definition's settings are
ones the collector accepts. (The image itself is never built here: no container registry.)"""

from __future__ import annotations

import re
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from netcheck import __version__
from netcheck.collector.settings import Settings
from tests.collector.conftest import NO_LIMITS, make_fleet, sample_report, upload
from tests.collector.harness import CollectorProcess, free_port
from tests.packaging.conftest import ROOT

pytestmark = pytest.mark.packaging

COLLECTOR = ROOT / "packaging" / "collector"
NAME = "netcheck.example.com"


@pytest.fixture
def nginx_front(tmp_path: Path) -> Iterator[tuple[str, str, CollectorProcess]]:
    """(https URL, CA bundle, collector): packaging/collector's nginx example on free loopback ports."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        pytest.fail("nginx is missing: install nginx-light (.ci/apt-packages.txt)")
    (tmp_path / "collector").mkdir()
    collector = CollectorProcess(None, env={**NO_LIMITS, "NETCHECK_TRUSTED_PROXY_HEADER": "X-Forwarded-For"},
                                 workdir=tmp_path / "collector")
    ca = trustme.CA()
    cert = ca.issue_cert(NAME)
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    https_port, http_port = free_port(), free_port()
    site = (COLLECTOR / "nginx-netcheck-collector.conf").read_text()
    # the example as an admin adapts it: addresses, certificate paths, the collector's port
    site = site.replace("server 127.0.0.1:8080;", f"server 127.0.0.1:{collector.url.rsplit(':', 1)[1]};")
    site = re.sub(r"listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;", site)
    site = re.sub(r"listen \[::\]:443 ssl http2;", "", site)
    site = site.replace("listen 80;", f"listen 127.0.0.1:{http_port};").replace("listen [::]:80;", "")
    site = site.replace("/etc/ssl/certs/netcheck.example.com.pem", str(tmp_path / "server.pem"))
    site = site.replace("/etc/ssl/private/netcheck.example.com.key", str(tmp_path / "server.pem"))
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "logs").mkdir()
    (tmp_path / "nginx.conf").write_text(f"""
user root;
worker_processes 1;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/logs/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log {tmp_path}/logs/access.log;
    client_body_temp_path {tmp_path}/body;
    proxy_temp_path {tmp_path}/proxy;
    include {tmp_path}/site.conf;
}}
""")
    check = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                           capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen([nginx, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-g", "daemon off;"],
                            stderr=subprocess.PIPE)
    try:
        url = f"https://{NAME}:{https_port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with httpx.Client(transport=_to_loopback(str(tmp_path / "ca.pem"))) as c:
                    c.get(f"{url}/healthz")
                break
            except httpx.TransportError:
                time.sleep(0.1)
        yield url, str(tmp_path / "ca.pem"), collector
        redirect = httpx.get(f"http://127.0.0.1:{http_port}/api/v1/reports", headers={"Host": NAME})
        assert redirect.status_code == 308 and redirect.headers["location"] == f"https://{NAME}/api/v1/reports"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        assert proc.stderr is not None
        proc.stderr.close()
        collector.stop()


def _to_loopback(ca: str) -> httpx.HTTPTransport:
    """Connect to 127.0.0.1 whatever the name (the certificate is for netcheck.example.com)."""
    import httpcore

    class Loopback(httpcore.SyncBackend):
        def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                        socket_options: object = None) -> httpcore.NetworkStream:
            return super().connect_tcp("127.0.0.1", port, timeout, local_address, socket_options)  # type: ignore[arg-type]

    transport = httpx.HTTPTransport(verify=ssl.create_default_context(cafile=ca))
    transport._pool._network_backend = Loopback()  # noqa: SLF001 - httpx has no public hook for this
    return transport


def test_nginx_example_in_front_of_the_collector(nginx_front: tuple[str, str, CollectorProcess]) -> None:
    url, ca, collector = nginx_front
    with httpx.Client(base_url=url, transport=_to_loopback(ca), timeout=30) as client:
        health = client.get("/healthz")
        assert health.status_code == 200 and health.json() == {"status": "ok", "version": __version__}
        assert health.http_version == "HTTP/1.1"
        fleet = make_fleet(collector)
        fleet.client.close()
        enrolled = client.post("/api/v1/enroll", json={"secret": fleet.secret, "device": {
            "hardware_id": "a" * 64, "name": None, "os": "linux", "agent_version": __version__, "tags": {}}})
        assert enrolled.status_code == 200, enrolled.text
        token = enrolled.json()["token"]
        report = sample_report()
        stored = client.post("/api/v1/reports", json=upload(report), headers={"Authorization": f"Bearer {token}"})
        assert stored.status_code == 200 and stored.json()["report_id"] == report["report_id"], stored.text
        # a body over the collector's limit gets the collector's answer, not nginx's page
        big = client.post("/api/v1/reports", content=b"x" * (1024 * 1024 + 10),
                          headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        assert big.status_code == 413 and big.headers["content-type"].startswith("application/json"), big.text


def _containerfile() -> tuple[dict[str, str], list[str], list[str]]:
    """(ENV, COPY sources, ENTRYPOINT + CMD) of the collector's Containerfile."""
    text = (COLLECTOR / "Containerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    copies: list[str] = []
    command: list[str] = []
    for line in text.splitlines():
        word, _, rest = line.strip().partition(" ")
        if word == "ENV":
            env.update(item.split("=", 1) for item in rest.split())  # type: ignore[misc]
        elif word == "COPY" and not rest.startswith("--from"):
            copies.append(rest.split()[0])
        elif word in ("ENTRYPOINT", "CMD"):
            command += re.findall(r'"([^"]+)"', rest)
    return env, copies, command


def test_containerfile_settings_are_valid() -> None:
    env, copies, command = _containerfile()
    settings = Settings.from_env({k: v for k, v in env.items() if k.startswith("NETCHECK_")})
    assert settings.host == "0.0.0.0" and settings.port == 8080
    assert settings.database_url == "sqlite:////var/lib/netcheck-collector/collector.db"
    assert env["XDG_DATA_HOME"] == "/var/lib/netcheck-collector"
    # what it copies is what packaging/build-wheel.sh makes, and it runs the venv's netcheck serve
    assert copies == ["dist/wheelhouse"] and 'out=$(realpath -m "${1:-dist}")' in \
        (ROOT / "packaging" / "build-wheel.sh").read_text()
    assert command == ["/opt/netcheck-collector/bin/netcheck", "serve"]
