"""A loopback HTTPS double of the login host's user realm discovery.

Real TLS (a trustme CA) on 127.0.0.1, answering ``/common/userrealm/{user}`` and
``/getuserrealm.srf?login={user}&json=1`` the way the service does, including
its habit of echoing the user name back (``Login``, ``AuthURL``) so tests can
prove the probe keeps it out of the report.

``mode`` (changeable between requests):
  managed, federated    both paths answer
  srf_only              /common/userrealm is 404, getuserrealm.srf answers (federated)
  unknown               NameSpaceType Unknown (no tenant)
  404                   both paths 404
  malformed             200 with broken JSON
  slow                  never answers until the server stops
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import trustme

FED_HOST = "sts.fabrikam.example"


@dataclass
class Seen:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]


@dataclass
class _State:
    mode: str
    requests: list[Seen] = field(default_factory=list)
    sni: list[str | None] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


def _userrealm(mode: str, user: str) -> tuple[int, bytes]:
    domain = user.rpartition("@")[2]
    if mode in ("404", "srf_only"):
        return 404, b'{"error":"not_found"}'
    if mode == "malformed":
        return 200, b'{"ver":"1.0","account_type":"Managed",'
    doc: dict[str, Any] = {"ver": "1.0", "domain_name": domain, "cloud_instance_name": "microsoftonline.com",
                           "cloud_audience_urn": "urn:federation:MicrosoftOnline"}
    if mode == "federated":
        doc.update(account_type="Federated", federation_protocol="WSTrust",
                   federation_metadata_url=f"https://{FED_HOST}/adfs/services/trust/mex",
                   federation_active_auth_url=f"https://{FED_HOST}/adfs/services/trust/2005/usernamemixed")
    elif mode == "unknown":
        doc["account_type"] = "Unknown"
    else:
        doc["account_type"] = "Managed"
    return 200, json.dumps(doc).encode()


def _getuserrealm(mode: str, user: str) -> tuple[int, bytes]:
    domain = user.rpartition("@")[2]
    if mode == "404":
        return 404, b"Not Found"
    if mode == "malformed":
        return 200, b"<html>not json</html>"
    doc: dict[str, Any] = {"State": 4, "UserState": 1, "Login": user, "DomainName": domain,
                           "CloudInstanceName": "microsoftonline.com",
                           "CloudInstanceIssuerUri": "urn:federation:MicrosoftOnline"}
    if mode in ("federated", "srf_only"):
        doc.update(NameSpaceType="Federated", FederationBrandName="Fabrikam",
                   AuthURL=f"https://{FED_HOST}/adfs/ls/?username={urllib.parse.quote(user, safe='')}"
                           "&wa=wsignin1.0&wtrealm=urn%3afederation%3aMicrosoftOnline&wctx=")
    elif mode == "unknown":
        doc["NameSpaceType"] = "Unknown"
    else:
        doc["NameSpaceType"] = "Managed"
    return 200, json.dumps(doc).encode()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        state = self.server.state
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        state.requests.append(Seen(urllib.parse.unquote(url.path), query,
                                   {k.lower(): v for k, v in self.headers.items()}))
        if state.mode == "slow":
            state.release.wait(30)
            return
        if url.path.startswith("/common/userrealm/"):
            status, body = _userrealm(state.mode, urllib.parse.unquote(url.path.rsplit("/", 1)[1]))
        elif url.path == "/getuserrealm.srf":
            status, body = _getuserrealm(state.mode, query.get("login", [""])[0])
        else:
            status, body = 404, b"{}"
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True

    def __init__(self, ctx: ssl.SSLContext, state: _State) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.ctx = ctx
        self.state = state

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = self.socket.accept()
        # The handshake happens in the handler's thread, on first read.
        return self.ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that reject our certificate or hang up are part of the tests


class RealmDouble:
    """``with RealmDouble(ca, "login.example.test") as realm: ... realm.port``."""

    def __init__(self, ca: trustme.CA, host: str, mode: str = "managed") -> None:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(host).configure_cert(ctx)
        ctx.sni_callback = self._sni
        self.state = _State(mode)
        self._server = _Server(ctx, self.state)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def _sni(self, sslobj: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        self.state.sni.append(name)

    @property
    def mode(self) -> str:
        return self.state.mode

    @mode.setter
    def mode(self, value: str) -> None:
        self.state.mode = value

    @property
    def requests(self) -> list[Seen]:
        return self.state.requests

    @property
    def sni(self) -> list[str | None]:
        return self.state.sni

    def __enter__(self) -> RealmDouble:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.state.release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
