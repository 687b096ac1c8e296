"""A minimal collector on loopback implementing the v1 API contract, for agent unit tests.

The reliability tests (test_reliability_*.py) run against the real collector
process; this double is for fast tests of one behaviour, and for faults the real
collector does not produce (it can be told to answer the next requests with any
status, headers and body).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import uuid
import zlib
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from netcheck.render.reduced import REDUCED_CONTENT_TYPE


@dataclass
class Canned:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    #: the body as sent, its Content-Encoding (gzip) undone
    body: bytes
    status: int = 0
    #: the body's size on the wire
    wire_size: int = 0


class CollectorDouble:
    def __init__(self, secret: str = "s3cret-enroll-value") -> None:
        self.secret = secret
        self.lock = threading.Lock()
        self.tokens: dict[str, str] = {}            # token -> device id
        self.devices: dict[str, str] = {}           # hardware id -> device id
        self.enrollments: list[dict[str, Any]] = []
        self.reports: dict[tuple[str, str], str] = {}   # (device, report_id) -> sha256 of report
        self.envelopes: list[dict[str, Any]] = []   # every accepted upload body, in order
        self.canned: deque[Canned] = deque()
        self.seen: list[Seen] = []
        self.policy: dict[str, Any] = {
            "tenant": "contoso", "instance": "Worldwide", "user_domain": None,
            "schedule": {"interval_s": 3600, "jitter_s": 300}, "deadline_s": 30,
            "thresholds": {}, "site_profiles": [], "endpoints_url": None}
        self.sweeps: list[dict[str, Any]] = []
        #: False: answer gzipped bodies 415 unsupported_encoding, as a collector with NETCHECK_ACCEPT_GZIP=0
        self.accept_gzip = True
        #: False: answer reduced reports 415 unsupported_media_type, as a collector older than the reduced form
        self.accept_reduced = True
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> CollectorDouble:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def issue_token(self, device_id: str) -> str:
        token = secrets.token_urlsafe(32)
        with self.lock:
            self.tokens[token] = device_id
        return token

    def revoke_all_tokens(self) -> None:
        with self.lock:
            self.tokens.clear()

    def stored_ids(self) -> list[str]:
        with self.lock:
            return [rid for (_, rid) in self.reports]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, status: int, doc: Any = None, *, raw: bytes | None = None,
                      content_type: str = "application/json", headers: dict[str, str] | None = None) -> None:
                data = raw if raw is not None else json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)
                with double.lock:
                    double.seen[-1].status = status

            def _error(self, status: int, code: str, message: str = "") -> None:
                self._send(status, {"error": {"code": code, "message": message or code}})

            def _device(self) -> str | None:
                auth = self.headers.get("Authorization", "")
                token = auth[7:] if auth.startswith("Bearer ") else ""
                with double.lock:
                    return double.tokens.get(token)

            def _common(self) -> bytes | None:
                n = int(self.headers.get("Content-Length") or 0)
                wire = self.rfile.read(n) if n else b""
                body = wire
                if self.headers.get("Content-Encoding") == "gzip":
                    if not double.accept_gzip:
                        self._error(415, "unsupported_encoding")
                        return None
                    body = zlib.decompress(wire, 16 + zlib.MAX_WBITS)
                with double.lock:
                    double.seen.append(Seen(self.command, self.path, dict(self.headers.items()), body,
                                            wire_size=len(wire)))
                    canned = double.canned.popleft() if double.canned else None
                if self.headers.get("Content-Type") == REDUCED_CONTENT_TYPE and not double.accept_reduced:
                    self._error(415, "unsupported_media_type")
                    return None
                if canned is not None:
                    self._send(canned.status, raw=canned.body, content_type=canned.content_type,
                               headers=canned.headers)
                    return None
                return body

            def do_GET(self) -> None:
                if self._common() is None:
                    return
                device = self._device()
                if device is None:
                    return self._error(401, "unauthorized")
                if self.path == "/api/v1/policy":
                    return self._send(200, double.policy)
                if self.path == "/api/v1/sweeps/pending":
                    with double.lock:
                        pending = list(double.sweeps)
                    return self._send(200, {"sweeps": pending})
                return self._error(404, "not_found")

            def do_POST(self) -> None:
                body = self._common()
                if body is None:
                    return
                try:
                    doc = json.loads(body)
                except ValueError:
                    return self._error(400, "bad_json")
                if self.path == "/api/v1/enroll":
                    if not isinstance(doc, dict) or doc.get("secret") != double.secret:
                        return self._error(401, "bad_secret")
                    device = doc.get("device", {})
                    with double.lock:
                        double.enrollments.append(doc)
                        dev = double.devices.setdefault(device.get("hardware_id", ""), str(uuid.uuid4()))
                    return self._send(200, {"device_id": dev, "token": double.issue_token(dev)})
                if self.path != "/api/v1/reports":
                    return self._error(404, "not_found")
                device = self._device()
                if device is None:
                    return self._error(401, "unauthorized")
                report = doc.get("report") if isinstance(doc, dict) else None
                if not isinstance(report, dict) or not isinstance(report.get("report_id"), str):
                    return self._error(422, "invalid", "report")
                rid = report["report_id"]
                digest = hashlib.sha256(json.dumps(report, sort_keys=True).encode()).hexdigest()
                with double.lock:
                    old = double.reports.get((device, rid))
                    if old is None:
                        double.reports[(device, rid)] = digest
                        double.envelopes.append(doc)
                        status = "stored"
                    elif old == digest:
                        status = "duplicate"
                    else:
                        status = "conflict"
                    if status == "stored" and doc.get("sweep_id"):
                        double.sweeps = [s for s in double.sweeps if s["id"] != doc["sweep_id"]]
                if status == "conflict":
                    return self._error(422, "report_id_conflict", "report_id")
                return self._send(200, {"status": status, "report_id": rid, "device_id": device})

        return Handler
