"""A local stand-in for Microsoft's endpoint web service (https://endpoints.office.com).

A real HTTP server on 127.0.0.1, port 0, in a thread. It speaks the documented
protocol (shared/docs/microsoft-facts.md, section 3):

    GET /version                       -> [{"instance": ..., "latest": ...}, ...]
    GET /version/{instance}            -> {"instance": ..., "latest": ...}
    GET /endpoints/{instance}          -> the JSON array of endpoint sets
    every route requires ?clientrequestid=<GUID> (400 without it); instance names
    are case-insensitive; an unknown instance is 400.

It records every request (path, query, headers) and can be told to misbehave:
``endpoints_status = 429`` (or any status), ``endpoints_body = b"..."`` (a
corrupt answer), ``version_body`` likewise, ``stall`` (accept, never answer).

    with WebServiceDouble() as ws:
        ws.publish("Worldwide", "2026090100", data_bytes)
        ... base_url=ws.url ...
        assert ws.paths() == ["/version/Worldwide"]
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import parse_qs, urlsplit

INSTANCES = ("Worldwide", "USGovDoD", "USGovGCCHigh", "China")


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    query: dict[str, str]  # keys lower-cased, as the service treats them
    headers: dict[str, str]  # names lower-cased

    @property
    def guid(self) -> str | None:
        return self.query.get("clientrequestid")


class WebServiceDouble:
    def __init__(self) -> None:
        self.latest: dict[str, str] = {}
        self.data: dict[str, bytes] = {}
        self.requests: list[Recorded] = []
        self.endpoints_status = 200
        self.version_status = 200
        self.endpoints_body: bytes | None = None
        self.version_body: bytes | None = None
        self.stall = False
        self._release = threading.Event()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def publish(self, instance: str, version: str, data: bytes) -> None:
        self.latest[instance] = version
        self.data[instance] = data

    def paths(self) -> list[str]:
        with self._lock:
            return [r.path for r in self.requests]

    def __enter__(self) -> WebServiceDouble:
        self._thread.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # --- the protocol ------------------------------------------------------------

    def _answer(self, path: str, query: dict[str, str]) -> tuple[int, bytes]:
        parts = [p for p in path.split("/") if p]
        guid = query.get("clientrequestid", "")
        try:
            uuid.UUID(guid)
        except ValueError:
            return 400, b'{"error": "ClientRequestId is required and must be a GUID"}'
        if not parts or parts[0] not in ("version", "endpoints") or len(parts) > 2:
            return 404, b'{"error": "not found"}'
        instance = None
        if len(parts) == 2:
            instance = next((i for i in INSTANCES if i.lower() == parts[1].lower()), None)
            if instance is None:
                return 400, b'{"error": "unknown instance"}'
        if parts[0] == "version":
            if self.version_status != 200:
                return self.version_status, b'{"error": "as configured"}'
            if self.version_body is not None:
                return 200, self.version_body
            if instance is None:
                doc: object = [{"instance": i, "latest": self.latest[i]} for i in INSTANCES
                               if i in self.latest]
            else:
                doc = {"instance": instance, "latest": self.latest.get(instance, "0000000000")}
            return 200, json.dumps(doc, indent=2).encode()
        if instance is None:
            return 400, b'{"error": "instance is required"}'
        if self.endpoints_status != 200:
            return self.endpoints_status, b'{"error": "as configured"}'
        if self.endpoints_body is not None:
            return 200, self.endpoints_body
        return 200, self.data.get(instance, b"[]")

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                split = urlsplit(self.path)
                query = {k.lower(): v[0] for k, v in parse_qs(split.query).items()}
                with double._lock:
                    double.requests.append(Recorded(
                        "GET", split.path, query, {k.lower(): v for k, v in self.headers.items()}))
                if double.stall:
                    double._release.wait(30)
                    return
                status, body = double._answer(split.path, query)
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                if split.path.startswith("/version"):
                    self.send_header("Cache-Control", "public, max-age=3600")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler
