"""HTTP(S) servers of the lab world.

``role = "frontdoor"`` (in ``inet``): the Microsoft 365 front doors.  It
listens on 80 and 443 on the wildcard address; the front-door prefixes are
local routes in ``inet`` (AnyIP), so every lab address answers.  HTTPS
presents one certificate from the lab public CA naming every catalog host.
``login.microsoftonline.com`` also answers user realm discovery
(``/common/userrealm/{user}`` and ``/getuserrealm.srf``).

``role = "site"`` (in ``corp``): the corporate site's web server: the PAC
file and intranet page over HTTP, and an AD FS-like federation server over
HTTPS.

Every response carries ``X-Lab-Server`` (which server answered) and
``X-Lab-Client`` (the source address it saw), which the truth tools use to
tell a real answer from a proxy's error page and to see the egress path.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import ssl
import sys
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_HEADER = 65536
REASONS = {200: "OK", 301: "Moved Permanently", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


@dataclass
class Request:
    method: str
    target: str
    version: str
    headers: dict[str, str]
    body: bytes
    tls: bool
    client: str

    @property
    def host(self) -> str:
        return self.headers.get("host", "").rsplit(":", 1)[0].strip("[]").lower() if self.headers.get("host") else ""

    @property
    def path(self) -> str:
        return urllib.parse.urlsplit(self.target).path

    @property
    def query(self) -> dict[str, str]:
        return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.target).query))


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def _json(status: int, obj: Any) -> Response:
    return Response(status, json.dumps(obj).encode())


# ---------------------------------------------------------------------------
# front doors


def realm_v1(identity: dict[str, Any], user: str) -> dict[str, Any]:
    """``/common/userrealm/{user}?api-version=1.0`` as MSAL reads it."""
    domain = user.rsplit("@", 1)[-1].lower()
    base: dict[str, Any] = {"ver": "1.0", "domain_name": domain, "cloud_instance_name": "microsoftonline.com"}
    if domain != identity["domain"]:
        return base | {"account_type": "Unknown"}
    if identity["mode"] != "federated":
        return base | {"account_type": "Managed", "cloud_audience_urn": "urn:federation:MicrosoftOnline"}
    adfs = identity["adfs_host"]
    return base | {
        "account_type": "Federated",
        "federation_protocol": "WSTrust",
        "federation_metadata_url": f"https://{adfs}/adfs/services/trust/mex",
        "federation_active_auth_url": f"https://{adfs}/adfs/services/trust/2005/usernamemixed",
        "cloud_audience_urn": "urn:federation:MicrosoftOnline",
    }


def realm_srf(identity: dict[str, Any], login: str) -> dict[str, Any]:
    """``/getuserrealm.srf?login=...`` (the older JSON form)."""
    domain = login.rsplit("@", 1)[-1].lower()
    base: dict[str, Any] = {"State": 4, "UserState": 1, "Login": login, "DomainName": domain}
    if domain != identity["domain"]:
        return {"State": 4, "UserState": 1, "Login": login, "NameSpaceType": "Unknown"}
    base |= {
        "FederationBrandName": identity.get("brand", "Contoso"),
        "CloudInstanceName": "microsoftonline.com",
        "CloudInstanceIssuerUri": "urn:federation:MicrosoftOnline",
    }
    if identity["mode"] != "federated":
        return base | {"NameSpaceType": "Managed"}
    adfs = identity["adfs_host"]
    auth = f"https://{adfs}/adfs/ls/?username={urllib.parse.quote(login)}&wa=wsignin1.0&wtrealm=urn%3afederation%3aMicrosoftOnline&wctx="
    return base | {"NameSpaceType": "Federated", "AuthURL": auth}


def frontdoor(req: Request, config: dict[str, Any]) -> Response:
    if not req.tls:
        return Response(301, b"", "text/plain", {"Location": f"https://{req.host or 'localhost'}{req.target}"})
    identity = config.get("identity", {})
    pac = config.get("pac_file")
    if req.host == config.get("cloud_pac_host") and req.path.endswith(".pac") and pac:  # a PAC file in the cloud
        return Response(200, Path(pac).read_bytes(), "application/x-ns-proxy-autoconfig")
    if req.host in ("login.microsoftonline.com", "login.windows.net", "login.microsoft.com") and identity:
        if req.path.startswith("/common/userrealm/"):
            user = urllib.parse.unquote(req.path[len("/common/userrealm/") :])
            return _json(200, realm_v1(identity, user))
        if req.path == "/getuserrealm.srf":
            return _json(200, realm_srf(identity, req.query.get("login", "")))
    return _json(200, {"service": "lab-frontdoor", "host": req.host, "path": req.path})


# ---------------------------------------------------------------------------
# corporate site

MEX = b"""<?xml version="1.0" encoding="utf-8"?>
<wsdl:definitions xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/" name="SecurityTokenService"/>
"""


def site(req: Request, config: dict[str, Any]) -> Response:
    pac = config.get("pac_file")
    if not req.tls and req.path.endswith(".pac") and pac:
        return Response(200, Path(pac).read_bytes(), "application/x-ns-proxy-autoconfig")
    if req.tls and (req.path.startswith("/adfs/") or req.path.startswith("/FederationMetadata/")):
        if req.path.startswith("/adfs/services/trust/mex") or req.path.startswith("/FederationMetadata/"):
            return Response(200, MEX, "application/soap+xml")
        if req.path.startswith("/adfs/services/trust/2005/usernamemixed"):
            return Response(200, b"<s:Envelope/>", "application/soap+xml")
        if req.path.startswith("/adfs/ls"):
            return Response(200, b"<html><title>Sign In</title><body>AD FS</body></html>", "text/html")
    if req.path in ("/", "/index.html"):
        return Response(200, b"<html><body>Contoso intranet</body></html>", "text/html")
    return _json(404, {"error": "not found"})


ROLES = {"frontdoor": frontdoor, "site": site}


# ---------------------------------------------------------------------------
# HTTP/1.1 plumbing


async def read_request(reader: asyncio.StreamReader, tls: bool, client: str) -> Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, version = lines[0].split(" ", 2)
    except ValueError:
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    length = int(headers.get("content-length", "0") or 0)
    body = await reader.readexactly(length) if length else b""
    return Request(method, target, version, headers, body, tls, client)


def render(resp: Response, req: Request, server_name: str, keep_alive: bool) -> bytes:
    body = b"" if req.method == "HEAD" else resp.body
    headers = {
        "Content-Type": resp.content_type,
        "Content-Length": str(len(resp.body)),
        "X-Lab-Server": server_name,
        "X-Lab-Client": req.client,
        "Connection": "keep-alive" if keep_alive else "close",
    } | resp.headers
    head = f"HTTP/1.1 {resp.status} {REASONS.get(resp.status, 'OK')}\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers.items()
    )
    return head.encode("latin-1") + b"\r\n" + body


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tls: bool, config: dict[str, Any]) -> None:
    peer = writer.get_extra_info("peername")
    client = peer[0] if peer else "?"
    if client.startswith("::ffff:"):
        client = client[7:]
    handler = ROLES[config["role"]]
    try:
        while True:
            req = await read_request(reader, tls, client)
            if req is None:
                break
            keep_alive = req.version == "HTTP/1.1" and req.headers.get("connection", "").lower() != "close"
            writer.write(render(handler(req, config), req, config["name"], keep_alive))
            await writer.drain()
            if not keep_alive:
                break
    except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def serve(config: dict[str, Any], ready: Path | None) -> None:
    tls_ctx: ssl.SSLContext | None = None
    if config.get("cert"):
        tls_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls_ctx.load_cert_chain(config["cert"], config["key"])
        tls_ctx.set_alpn_protocols(["http/1.1"])
    servers = []
    for lst in config["listeners"]:
        tls = bool(lst.get("tls"))

        def make(tls: bool = tls) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
            return lambda r, w: handle(r, w, tls, config)

        servers.append(
            await asyncio.start_server(
                make(),
                lst["host"],
                lst["port"],
                ssl=tls_ctx if tls else None,
                backlog=1024,
                reuse_address=True,
                reuse_port=True,
            )
        )
    if ready:
        ready.write_text("ready\n")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for s in servers:
        s.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="lab HTTP(S) server")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--ready-file", type=Path)
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(json.loads(args.config.read_text()), args.ready_file))
    except (OSError, ssl.SSLError) as exc:
        print(f"web: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
