"""C1 body size: 413 on every route, before reading a declared oversize body, while reading a
chunked one, and after a bounded decompression of a gzip bomb; memory stays bounded."""

from __future__ import annotations

import functools
import gzip
import json
import select
import socket
import threading
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.collector.conftest import Fleet, sample_report, sql, upload
from tests.collector.harness import CollectorProcess

MIB = 1024 * 1024
ROUTES = [("POST", "/api/v1/reports"), ("POST", "/api/v1/enroll"), ("GET", "/api/v1/policy"),
          ("GET", "/api/v1/sweeps/pending"), ("GET", "/healthz"), ("GET", "/readyz"),
          ("GET", "/api/v1/openapi.json"), ("POST", "/api/v1/unknown"), ("PUT", "/api/v1/reports"),
          ("POST", "/api/v2/reports")]


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname and parts.port
    return parts.hostname, parts.port


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body


def raw_request(url: str, method: str, path: str, headers: dict[str, str],
                chunks: Iterable[bytes] = ()) -> tuple[int, dict[str, str], bytes, int]:
    """Send a request by hand; stop sending body chunks as soon as the server answers.

    Returns status, headers, body and how many body bytes were sent.
    """
    with socket.create_connection(_address(url), timeout=30) as sock:
        head = f"{method} {path} HTTP/1.1\r\nHost: collector\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        sock.sendall(head.encode())
        sent = 0
        for chunk in chunks:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        status, response_headers, body = _read_response(sock)
        return status, response_headers, body, sent


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _chunked(total: int, size: int = 64 * 1024) -> Iterable[bytes]:
    piece = b"[" + b"1," * (size // 2 - 1) + b"1"  # looks like the start of a JSON array
    framed = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    for _ in range(total // len(piece)):
        yield framed


@functools.cache
def gzip_bomb() -> bytes:
    """1 GiB of zeros, gzipped to just under 1 MiB."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(MIB)
    return b"".join([*(comp.compress(zeros) for _ in range(1024)), comp.flush()])


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_declared_oversize_body_gets_413_before_any_byte_is_sent(fleet: Fleet, method: str, path: str) -> None:
    device = fleet.enroll()
    status, headers, body, _ = raw_request(fleet.collector.url, method, path, {
        "Authorization": f"Bearer {device.token}", "Content-Type": "application/json",
        "Content-Length": str(1024 * MIB)})
    assert status == 413, body
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["error"]["code"] == "body_too_large"


@pytest.mark.parametrize("path", ["/api/v1/reports", "/api/v1/enroll"])
def test_chunked_oversize_body_gets_413_while_reading(fleet: Fleet, path: str) -> None:
    device = fleet.enroll()
    status, _, body, sent = raw_request(fleet.collector.url, "POST", path, {
        "Authorization": f"Bearer {device.token}", "Content-Type": "application/json",
        "Transfer-Encoding": "chunked"}, _chunked(64 * MIB))
    assert status == 413, body
    assert json.loads(body)["error"]["code"] == "body_too_large"
    assert sent < 64 * MIB  # the server answered long before the client was done


def test_a_body_at_the_limit_is_parsed_and_one_byte_more_is_413(
        start_collector: Callable[..., CollectorProcess], fleet_factory: Callable[[CollectorProcess], Fleet]
) -> None:
    fleet = fleet_factory(start_collector(args=("--max-body", "8192")))
    device = fleet.enroll()
    body = json.dumps(upload(sample_report())).encode()
    assert len(body) < 8192
    padded = body[:-1] + b" " * (8192 - len(body)) + b"}"
    headers = {**device.auth, "Content-Type": "application/json"}
    assert fleet.client.post("/api/v1/reports", content=padded, headers=headers).status_code == 200
    too_big = fleet.client.post("/api/v1/reports", content=padded + b" ", headers=headers)
    assert too_big.status_code == 413
    # also when it only gets too big after decompression
    gz = gzip.compress(padded + b" " * 100)
    assert len(gz) < 8192
    response = fleet.client.post("/api/v1/reports", content=gz, headers={**headers, "Content-Encoding": "gzip"})
    assert response.status_code == 413


def test_a_gzip_bomb_gets_413_with_bounded_memory(fleet: Fleet) -> None:
    device = fleet.enroll()
    bomb = gzip_bomb()
    assert len(bomb) < MIB
    pid = fleet.collector.proc.pid
    before = _rss_kib(pid)
    for _ in range(3):
        response = fleet.client.post("/api/v1/reports", content=bomb, headers={
            **device.auth, "Content-Type": "application/json", "Content-Encoding": "gzip"})
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "body_too_large"
        assert "gzip body inflates to more than" in response.json()["error"]["message"]
    assert _rss_kib(pid) - before < 100 * 1024
    assert not sql(fleet.collector.database_url, "SELECT 1 FROM reports WHERE device_id = :d", d=device.device_id)


def test_bad_encodings_and_media_types_are_refused(fleet: Fleet) -> None:
    device = fleet.enroll()
    body = json.dumps(upload(sample_report())).encode()
    headers = {**device.auth, "Content-Type": "application/json"}
    br = fleet.client.post("/api/v1/reports", content=body, headers={**headers, "Content-Encoding": "br"})
    assert br.status_code == 415 and br.json()["error"]["code"] == "unsupported_encoding"
    broken = fleet.client.post("/api/v1/reports", content=gzip.compress(body)[:-20],
                               headers={**headers, "Content-Encoding": "gzip"})
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "invalid_encoding"
    text = fleet.client.post("/api/v1/reports", content=body, headers={**device.auth, "Content-Type": "text/plain"})
    assert text.status_code == 415
    latin = fleet.client.post("/api/v1/reports", content=body, headers={
        **device.auth, "Content-Type": "application/json; charset=iso-8859-1"})
    assert latin.status_code == 415


def test_a_hundred_concurrent_gigabyte_uploads_leave_memory_flat(fleet: Fleet) -> None:
    device = fleet.enroll()
    pid = fleet.collector.proc.pid
    before = _rss_kib(pid)
    statuses: list[int] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        if i % 2:
            headers = {"Content-Length": str(1024 * MIB)}
            chunks: Iterable[bytes] = (bytes(64 * 1024) for _ in range(16))
        else:
            headers = {"Transfer-Encoding": "chunked"}
            chunks = _chunked(16 * MIB)
        status, _, _, _ = raw_request(fleet.collector.url, "POST", "/api/v1/reports", {
            **device.auth, "Content-Type": "application/json", **headers}, chunks)
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [413] * 100
    assert _rss_kib(pid) - before < 100 * 1024
    assert fleet.client.get("/healthz").status_code == 200


def test_a_client_that_sends_its_whole_body_first_still_reads_the_413(fleet: Fleet) -> None:
    """Like requests or httpx: write everything, then read. A moderately oversized body is
    discarded by the server, so the answer is a 413, not a connection reset."""
    device = fleet.enroll()
    headers = {**device.auth, "Content-Type": "application/json"}
    for size in (MIB + 1, 3 * MIB, 12 * MIB):
        response = fleet.client.post("/api/v1/reports", content=b" " * size, headers=headers)
        assert response.status_code == 413, size
        assert response.json()["error"]["code"] == "body_too_large"
    # and the connection was kept: the next request on it works
    assert fleet.post(device, upload(sample_report())).status_code == 200
