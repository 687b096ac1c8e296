"""A small OpenID Connect provider on 127.0.0.1 (real HTTPS with a trustme CA, port 0), speaking
the parts of Microsoft Entra ID's v2.0 endpoints that a confidential web app uses:

- ``/<tenant>/v2.0/.well-known/openid-configuration``: discovery;
- ``/<tenant>/oauth2/v2.0/authorize``: approves ``user`` at once (or, ``interactive``, when its page's
  "Accept" is pressed), redirecting to the ``redirect_uri`` with ``code`` and ``state`` (or
  ``error=access_denied`` when ``deny``); it insists on response_type=code, the client id, a nonce
  and an S256 code challenge;
- ``/<tenant>/oauth2/v2.0/token``: redeems a code once, for the client id and secret it was made
  for, the same redirect URI and a ``code_verifier`` whose S256 is the challenge; answers an
  RS256 id token (``iss``, ``aud``, ``tid``, ``oid``, ``preferred_username``, ``roles``,
  ``groups``, ``nonce``, ``iat``, ``nbf``, ``exp``), else Entra's JSON errors;
- ``/<tenant>/discovery/v2.0/keys``: the JWKS, which :meth:`rotate` replaces;
- ``/<tenant>/oauth2/v2.0/logout``: the end-session endpoint (redirects to post_logout_redirect_uri).

Tests make it misbehave through ``claims`` (changes to the next id tokens' claims) and ``signing``
("wrong-key", "unknown-kid", "none", "HS256"), and read ``paths`` (every request's path).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from tests.servers import ServedInThread

Answer = tuple[int, dict[str, str], Any]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass
class _Key:
    kid: str
    private: rsa.RSAPrivateKey = field(repr=False)

    @classmethod
    def new(cls) -> _Key:
        return cls(uuid.uuid4().hex[:16], rsa.generate_private_key(public_exponent=65537, key_size=2048))

    def jwk(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(self.private.public_key()))
        return {**doc, "kid": self.kid, "use": "sig", "alg": "RS256"}


@dataclass
class User:
    oid: str = field(default_factory=lambda: str(uuid.uuid4()))
    preferred_username: str = "alice@contoso.example"
    name: str = "Alice"
    roles: list[str] = field(default_factory=lambda: ["Netcheck.Admin"])
    groups: list[str] = field(default_factory=list)


class OidcProvider:
    """Use as a context manager; ``authority`` is what the collector's ``oidc_authority`` is set to."""

    def __init__(self, ca: trustme.CA, client_id: str, client_secret: str, tenant: str | None = None,
                 host: str = "127.0.0.1") -> None:
        """``host="::1"`` puts it on another site than a collector on 127.0.0.1, as Entra ID is for a browser."""
        self.ca = ca
        self.client_id = client_id
        self.client_secret = client_secret
        self.tenant = tenant or str(uuid.uuid4())
        self.keys = [_Key.new()]
        self.user = User()
        self.deny = False
        #: show a page with an "Accept" button instead of approving at once (as Entra ID shows its sign-in
        #: page): the redirect back is then a navigation the provider's page starts, as in real life
        self.interactive = False
        self.claims: dict[str, Any] = {}
        self.signing = "RS256"
        self.paths: list[str] = []
        self._codes: dict[str, dict[str, Any]] = {}
        self._pending: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                provider._handle(self, None)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                provider._handle(self, self.rfile.read(length).decode())

        server_class = type("Server", (ThreadingHTTPServer,), {"address_family": socket.getaddrinfo(host, 0)[0][0]})
        server = server_class((host, 0), Handler)
        server.daemon_threads = True
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(host).configure_cert(context)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        shown = f"[{host}]" if ":" in host else host
        self.origin = f"https://{shown}:{server.server_address[1]}"
        self._serving = ServedInThread(server, "oidc-provider")

    def __enter__(self) -> OidcProvider:
        self._serving.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._serving.stop()

    # --- what tests read and change --------------------------------------------------------------

    @property
    def authority(self) -> str:
        """The collector's ``oidc_authority`` setting (with the ``{tenant}`` placeholder)."""
        return f"{self.origin}/{{tenant}}/v2.0"

    @property
    def issuer(self) -> str:
        return f"{self.origin}/{self.tenant}/v2.0"

    def rotate(self) -> None:
        """A new signing key; the JWKS holds only it from now on."""
        self.keys = [_Key.new()]

    @contextmanager
    def misbehaving(self, *, signing: str = "RS256", **claims: Any) -> Iterator[None]:
        self.signing, self.claims = signing, claims
        try:
            yield
        finally:
            self.signing, self.claims = "RS256", {}

    def count(self, suffix: str) -> int:
        return sum(1 for p in self.paths if p.endswith(suffix))

    # --- the protocol ------------------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler, body: str | None) -> None:
        parts = urlsplit(h.path)
        self.paths.append(parts.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        base = f"/{self.tenant}"
        routes = {f"{base}/v2.0/.well-known/openid-configuration": self._discovery,
                  f"{base}/discovery/v2.0/keys": self._jwks,
                  f"{base}/oauth2/v2.0/authorize": self._authorize,
                  f"{base}/oauth2/v2.0/logout": self._logout}
        form = {k: v[0] for k, v in parse_qs(body or "").items()}
        if parts.path == f"{base}/oauth2/v2.0/token" and body is not None:
            status, headers, payload = self._token(form)
        elif parts.path == f"{base}/oauth2/v2.0/authorize" and body is not None:  # "Accept" pressed
            status, headers, payload = self._approve(self._pending.pop(form.get("ticket", ""), {}))
        elif parts.path in routes and body is None:
            status, headers, payload = routes[parts.path](query)
        else:
            status, headers, payload = 404, {}, {"error": "not_found"}
        html = isinstance(payload, str)
        data = payload.encode() if html else json.dumps(payload).encode() if payload is not None else b""
        h.send_response(status)
        for name, value in headers.items():
            h.send_header(name, value)
        h.send_header("Content-Type", "text/html; charset=utf-8" if html else "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _discovery(self, query: dict[str, str]) -> Answer:
        base = f"{self.origin}/{self.tenant}"
        return 200, {}, {"issuer": self.issuer, "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                         "token_endpoint": f"{base}/oauth2/v2.0/token", "jwks_uri": f"{base}/discovery/v2.0/keys",
                         "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
                         "response_types_supported": ["code"], "id_token_signing_alg_values_supported": ["RS256"],
                         "code_challenge_methods_supported": ["S256"]}

    def _jwks(self, query: dict[str, str]) -> Answer:
        return 200, {}, {"keys": [k.jwk() for k in self.keys]}

    def _authorize(self, q: dict[str, str]) -> Answer:
        if (q.get("client_id") != self.client_id or q.get("response_type") != "code" or not q.get("nonce")
                or q.get("code_challenge_method") != "S256" or not q.get("code_challenge") or not q.get("state")
                or "openid" not in q.get("scope", "").split() or not q.get("redirect_uri")):
            return 400, {}, {"error": "invalid_request", "asked": q}
        if self.interactive:
            ticket = secrets.token_urlsafe(16)
            self._pending[ticket] = q
            return 200, {}, (f'<!DOCTYPE html><title>Sign in</title><form method="post"><input type="hidden" '
                             f'name="ticket" value="{ticket}"><button id="approve">Accept</button></form>')
        return self._approve(q)

    def _approve(self, q: dict[str, str]) -> Answer:
        if not q:
            return 400, {}, {"error": "invalid_request"}
        if self.deny:
            answer = {"error": "access_denied", "error_description": "AADSTS50105: the user <b>is</b> not assigned",
                      "state": q["state"]}
        else:
            code = secrets.token_urlsafe(32)
            with self._lock:
                self._codes[code] = {"challenge": q["code_challenge"], "nonce": q["nonce"],
                                     "redirect_uri": q["redirect_uri"], "user": self.user}
            answer = {"code": code, "state": q["state"]}
        return 302, {"Location": f"{q['redirect_uri']}?{urlencode(answer)}"}, None

    def _logout(self, q: dict[str, str]) -> Answer:
        return 302, {"Location": q.get("post_logout_redirect_uri", "/")}, None

    def _token(self, form: dict[str, str]) -> Answer:
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            return 401, {}, {"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret"}
        with self._lock:
            grant = self._codes.pop(form.get("code", ""), None)  # single use
        if form.get("grant_type") != "authorization_code" or grant is None:
            return 400, {}, {"error": "invalid_grant", "error_description": "AADSTS54005: code already redeemed"}
        verifier = form.get("code_verifier", "")
        if _b64(hashlib.sha256(verifier.encode()).digest()) != grant["challenge"]:
            return 400, {}, {"error": "invalid_grant", "error_description": "AADSTS501481: code_verifier mismatch"}
        if form.get("redirect_uri") != grant["redirect_uri"]:
            return 400, {}, {"error": "invalid_grant", "error_description": "AADSTS50148: redirect_uri mismatch"}
        user: User = grant["user"]
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": self.client_id, "tid": self.tenant, "oid": user.oid,
                  "sub": _b64(hashlib.sha256(user.oid.encode()).digest()), "name": user.name,
                  "preferred_username": user.preferred_username, "roles": user.roles, "nonce": grant["nonce"],
                  "iat": now, "nbf": now, "exp": now + 3600, "ver": "2.0"}
        if user.groups:
            claims["groups"] = user.groups
        claims.update(self.claims)
        return 200, {}, {"token_type": "Bearer", "id_token": self._sign(claims), "expires_in": 3600,
                         "access_token": secrets.token_urlsafe(20)}

    def _sign(self, claims: dict[str, Any]) -> str:
        key = self.keys[0]
        if self.signing == "RS256":
            return jwt.encode(claims, key.private, algorithm="RS256", headers={"kid": key.kid})
        if self.signing == "wrong-key":  # the right key id, another key's signature
            return jwt.encode(claims, _Key.new().private, algorithm="RS256", headers={"kid": key.kid})
        if self.signing == "unknown-kid":
            stranger = _Key.new()
            return jwt.encode(claims, stranger.private, algorithm="RS256", headers={"kid": stranger.kid})
        head = _b64(json.dumps({"alg": self.signing, "typ": "JWT", "kid": key.kid}).encode())
        signing_input = f"{head}.{_b64(json.dumps(claims).encode())}"
        if self.signing == "none":
            return f"{signing_input}."
        # HS256 keyed with the public key: the classic confusion attack
        public = key.private.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo)
        return f"{signing_input}.{_b64(hmac.new(public, signing_input.encode(), hashlib.sha256).digest())}"
