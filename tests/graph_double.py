"""A loopback HTTPS double of Microsoft Graph's service communications API and of the login
service's client-credentials grant, as documented (microsoft-facts.md section 6).

Real TLS (a trustme CA) on 127.0.0.1. One server plays both hosts:

- ``/{tenant}/v2.0/.well-known/openid-configuration`` and ``/{tenant}/oauth2/v2.0/token``:
  the login service (OIDC discovery, then ``grant_type=client_credentials`` with the client id
  and secret; an access token that expires in an hour);
- ``/v1.0/admin/serviceAnnouncement/healthOverviews`` and ``/issues``: Graph, answering in
  pages of ``page_size`` with ``@odata.nextLink`` (a ``$skiptoken``), with the bearer token.

Behaviour, changeable between requests:
  ``issues`` / ``services``   what Graph lists (dicts in Graph's JSON shape)
  ``secret``                  the client secret the login service accepts
  ``expired_secret``          the login service answers 401 invalid_client (AADSTS7000222)
  ``throttle``                Graph answers 429 with ``Retry-After: throttle`` seconds
  ``throttle_on_page``        ... only for that page of /issues (0-based)
  ``malformed``               "json" (not JSON), "no_value" (no value list), "bad_item" (one
                              issue without an id), "foreign_link" (nextLink to another host)
  ``revoke_tokens``           Graph answers 401 to every token issued so far
"""

from __future__ import annotations

import json
import secrets
import ssl
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import trustme

from tests.servers import ServedInThread

TENANT = "00000000-0000-0000-0000-0000000000aa"
CLIENT_ID = "11111111-2222-3333-4444-555555555555"


def issue(id_: str, service: str, title: str, *, classification: str = "incident", status: str = "serviceDegradation",
          start: str = "2026-12-06T14:02:00Z", resolved: bool = False, end: str | None = None) -> dict[str, Any]:
    """A serviceHealthIssue as Graph's JSON shows it."""
    return {"id": id_, "title": title, "impactDescription": f"Users may be affected: {title}.",
            "classification": classification, "origin": "microsoft", "status": status, "service": service,
            "feature": "E-Mail and calendar access", "featureGroup": "Access", "isResolved": resolved,
            "startDateTime": start, "endDateTime": end, "lastModifiedDateTime": start,
            "details": [{"name": "NotifyInApp", "value": "True"}],
            "posts": [{"createdDateTime": start, "postType": "regular",
                       "description": {"contentType": "html", "content": "We're investigating."}}]}


def service(id_: str, name: str, status: str = "ServiceOperational") -> dict[str, Any]:
    return {"id": id_, "service": name, "status": status}


@dataclass
class GraphDouble:
    ca: trustme.CA
    secret: str = field(default_factory=lambda: "s3cr3t-" + secrets.token_hex(12))
    page_size: int = 2
    issues: list[dict[str, Any]] = field(default_factory=list)
    services: list[dict[str, Any]] = field(default_factory=lambda: [
        service("Exchange", "Exchange Online"), service("SharePoint", "SharePoint Online"),
        service("OSDPPlatform", "Microsoft 365 suite")])
    expired_secret: bool = False
    throttle: int | None = None
    throttle_on_page: int | None = None
    malformed: str | None = None
    revoke_tokens: bool = False
    tokens: set[str] = field(default_factory=set)
    revoked: set[str] = field(default_factory=set)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path)
    token_bodies: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def graph_url(self) -> str:
        return f"{self.url}/v1.0"

    def start(self) -> GraphDouble:
        double = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                double.requests.append(("GET", self.path))
                double.handle_get(self)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode()
                double.requests.append(("POST", self.path))
                double.token_bodies.append(body)
                double.handle_token(self, body)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self.port = server.server_address[1]
        self._serving = ServedInThread(server, "graph-double")
        self._serving.start()
        return self

    def stop(self) -> None:
        self._serving.stop()

    # --- the login service ---------------------------------------------------------------------

    def handle_token(self, h: Any, body: str) -> None:
        form = urllib.parse.parse_qs(body)
        if h.path != f"/{TENANT}/oauth2/v2.0/token" or form.get("grant_type") != ["client_credentials"]:
            h._send(400, {"error": "invalid_request", "error_description": "AADSTS900144: bad request"})
            return
        if self.expired_secret or form.get("client_id") != [CLIENT_ID] or form.get("client_secret") != [self.secret]:
            h._send(401, {"error": "invalid_client",
                          "error_description": "AADSTS7000222: The provided client secret keys for app "
                                               f"'{CLIENT_ID}' are expired.\r\nTrace ID: 1"})
            return
        token = "tok-" + secrets.token_hex(16)
        with self.lock:
            self.tokens.add(token)
        h._send(200, {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token})

    # --- Graph -----------------------------------------------------------------------------------

    def handle_get(self, h: Any) -> None:
        parts = urllib.parse.urlsplit(h.path)
        if parts.path == f"/{TENANT}/v2.0/.well-known/openid-configuration":
            base = f"{self.url}/{TENANT}"
            h._send(200, {"token_endpoint": f"{base}/oauth2/v2.0/token",
                          "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                          "issuer": f"{base}/v2.0", "token_endpoint_auth_methods_supported": ["client_secret_post"]})
            return
        auth = h.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ")
        with self.lock:
            if self.revoke_tokens:
                self.revoked |= self.tokens
                self.revoke_tokens = False
            valid = token in self.tokens and token not in self.revoked
        if not valid:
            h._send(401, {"error": {"code": "InvalidAuthenticationToken", "message": "Access token has expired."}})
            return
        query = urllib.parse.parse_qs(parts.query)
        page = int(query.get("$skiptoken", ["0"])[0])
        if parts.path == "/v1.0/admin/serviceAnnouncement/healthOverviews":
            items = self.services
        elif parts.path == "/v1.0/admin/serviceAnnouncement/issues":
            items = self.issues
            if self.throttle is not None and self.throttle_on_page in (None, page):
                h._send(429, {"error": {"code": "TooManyRequests", "message": "Too many requests"}},
                        {"Retry-After": str(self.throttle)})
                return
        else:
            h._send(404, {"error": {"code": "NotFound", "message": "no such resource"}})
            return
        if self.malformed == "json":
            h._send(200, b"<html>gateway error</html>")
            return
        if self.malformed == "no_value":
            h._send(200, {"@odata.context": "x", "items": items})
            return
        chunk = items[page * self.page_size:(page + 1) * self.page_size]
        if self.malformed == "bad_item" and parts.path.endswith("/issues") and page == 0:
            chunk = [{k: v for k, v in chunk[0].items() if k != "id"}, *chunk[1:]] if chunk else [{"title": "x"}]
        doc: dict[str, Any] = {"@odata.context": f"{self.graph_url}/$metadata#admin/serviceAnnouncement",
                               "value": chunk}
        if (page + 1) * self.page_size < len(items):
            host = "https://graph.evil.example" if self.malformed == "foreign_link" else self.url
            doc["@odata.nextLink"] = f"{host}{parts.path}?$skiptoken={page + 1}"
        h._send(200, doc)
