"""OpenID Connect with Microsoft Entra ID, for the dashboard's "Sign in with Microsoft": the
authorization code flow with PKCE (S256) for a confidential client of one tenant.

- :class:`Provider` reads the issuer's discovery document (``/.well-known/openid-configuration``,
  kept ``DISCOVERY_FOR_S``; after a failure, not asked again for ``RETRY_AFTER_S``) and its keys
  (JWKS, kept until a token names a key it does not hold: then read again once, which follows
  Entra's key rotation), redeems a code at the token endpoint with the
  PKCE verifier and the client secret, and validates the id token.
- The id token must be RS256 (nothing else, so neither ``none`` nor an HMAC keyed with a public key),
  signed by a key of the JWKS, issued by the discovered issuer (which must be the configured tenant's),
  for our client id, in its validity period (``SKEW`` either side) and carry the nonce of this sign-in.
- :func:`identity` maps the token's app roles (``roles``) and groups (``groups``) to a netcheck
  role through ``oidc_roles``; no role, no sign-in.

Every failure raises :class:`SignInError`: a sentence for the person signing in and a detail for
the log, neither carrying the client secret (:func:`netcheck.collector.client_secret.scrub`),
a code or a token. No Starlette here: the pages are ``web.entra``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import jwt
from jwt.algorithms import RSAAlgorithm

from netcheck.agent.transport import ssl_context
from netcheck.collector import client_secret
from netcheck.collector.settings import Settings

SECRET_ENV = "NETCHECK_OIDC_CLIENT_SECRET"
ALGORITHM = "RS256"
SCOPE = "openid profile"
#: clock difference tolerated between the identity provider and the collector
SKEW_S = 120
DISCOVERY_FOR_S = 24 * 3600.0
#: after discovery failed, seconds during which sign-ins fail at once without asking again
RETRY_AFTER_S = 15.0
#: the largest answer read from the identity provider (discovery, keys, tokens are a few KB)
MAX_ANSWER = 512 * 1024
TIMEOUT = httpx.Timeout(10.0, connect=5.0)
_GUID_LEN = 36


class SignInError(Exception):
    """A sign-in that cannot go on: ``message`` is shown to the person, ``detail`` is logged."""

    def __init__(self, message: str, detail: str, status: int = 400) -> None:
        super().__init__(detail)
        self.message = message
        self.detail = detail
        self.status = status


class UnknownKey(SignInError):
    pass


@dataclass(frozen=True)
class Discovery:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    end_session_endpoint: str | None


@dataclass(frozen=True)
class Identity:
    subject: str  # "entra:<tenant id>:<object id>"
    name: str
    role: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def pkce_pair() -> tuple[str, str]:
    """A PKCE verifier (43 characters of 32 random bytes) and its S256 challenge."""
    verifier = secrets.token_urlsafe(32)
    return verifier, _b64(hashlib.sha256(verifier.encode("ascii")).digest())


def authorize_url(found: Discovery, client_id: str, redirect_uri: str, state: str, nonce: str,
                  challenge: str) -> str:
    query = urlencode({"client_id": client_id, "response_type": "code", "redirect_uri": redirect_uri,
                       "response_mode": "query", "scope": SCOPE, "state": state, "nonce": nonce,
                       "code_challenge": challenge, "code_challenge_method": "S256"})
    sep = "&" if "?" in found.authorization_endpoint else "?"
    return f"{found.authorization_endpoint}{sep}{query}"


def parse_discovery(doc: Any, settings: Settings) -> Discovery:
    """The endpoints of the configured tenant's discovery document; anything else is refused."""
    if not isinstance(doc, dict):
        raise ValueError("the discovery document is not a JSON object")
    found: dict[str, str | None] = {}
    for name in ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri", "end_session_endpoint"):
        value = doc.get(name)
        if value is None and name == "end_session_endpoint":
            found[name] = None
            continue
        if not isinstance(value, str) or not value.startswith("https://"):
            raise ValueError(f"the discovery document's {name} is missing or not an https:// URL")
        found[name] = value
    issuer = str(found["issuer"])
    base = settings.oidc_issuer_base
    tenant = settings.oidc_tenant or ""
    if "{tenantid}" in issuer:
        raise ValueError(f"the issuer {issuer} is multi-tenant: set oidc_tenant to your tenant's id")
    if len(tenant) == _GUID_LEN and issuer != base:
        raise ValueError(f"the issuer {issuer} is not the configured tenant's ({base})")
    if _origin(issuer) != _origin(base):
        raise ValueError(f"the issuer {issuer} is not at the configured authority ({base})")
    return Discovery(issuer, str(found["authorization_endpoint"]), str(found["token_endpoint"]),
                     str(found["jwks_uri"]), found["end_session_endpoint"])


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc.lower()


def parse_keys(doc: Any) -> dict[str, Any]:
    """The RSA signing keys of a JWKS, by key id (other keys are ignored)."""
    keys = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(keys, list):
        raise ValueError("the key set (JWKS) has no keys list")
    found: dict[str, Any] = {}
    for key in keys:
        if not isinstance(key, dict) or key.get("kty") != "RSA" or key.get("use", "sig") != "sig":
            continue
        kid = key.get("kid")
        if isinstance(kid, str) and kid:
            try:
                found[kid] = RSAAlgorithm.from_jwk(key)
            except (jwt.InvalidKeyError, ValueError, TypeError):
                continue
    return found


_REFUSED = "Microsoft Entra ID's answer could not be trusted, so you are not signed in. Try again; if it " \
           "keeps failing, tell IT (the collector's log says why)."


def validate_id_token(token: str, keys: dict[str, Any], *, issuer: str, client_id: str, nonce: str
                      ) -> dict[str, Any]:
    """The claims of an id token that passes every check; :class:`UnknownKey` when its key id is not
    in ``keys`` (the caller reads the key set again), else :class:`SignInError`."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise SignInError(_REFUSED, f"the id token is malformed: {exc}") from None
    if header.get("alg") != ALGORITHM:
        raise SignInError(_REFUSED, f"the id token is signed with {str(header.get('alg'))[:20]!r}, not {ALGORITHM}")
    kid = header.get("kid")
    if not isinstance(kid, str) or kid not in keys:
        raise UnknownKey(_REFUSED, f"the id token's key {str(kid)[:80]!r} is not in the issuer's key set")
    try:
        claims: dict[str, Any] = jwt.decode(
            token, keys[kid], algorithms=[ALGORITHM], audience=client_id, issuer=issuer, leeway=SKEW_S,
            options={"require": ["iss", "aud", "exp", "iat", "nbf", "nonce"], "verify_iat": True})
    except jwt.PyJWTError as exc:
        raise SignInError(_REFUSED, f"the id token was refused: {type(exc).__name__}: {exc}") from None
    if not hmac.compare_digest(str(claims.get("nonce", "")).encode(), nonce.encode()):
        raise SignInError(_REFUSED, "the id token's nonce is not this sign-in's (a replayed token?)")
    return claims


def identity(claims: dict[str, Any], role_map: dict[str, str]) -> Identity:
    """The user the token names, with the highest netcheck role its app roles and groups grant."""
    tid, oid = claims.get("tid"), claims.get("oid")
    if not isinstance(tid, str) or not isinstance(oid, str) or not tid or not oid:
        raise SignInError(_REFUSED, "the id token has no tid and oid claims (the profile scope)")
    if not _issued_by(claims, tid):
        raise SignInError(_REFUSED, f"the id token's tenant {tid[:40]!r} is not its issuer's")
    name = next((v for v in (claims.get("preferred_username"), claims.get("name"), oid)
                 if isinstance(v, str) and v), oid)
    held = {f"role:{r}" for r in _strings(claims.get("roles"))} | {f"group:{g}" for g in _strings(claims.get("groups"))}
    granted = {role_map[h] for h in held if h in role_map}
    role = "admin" if "admin" in granted else "read-only" if granted else None
    if role is None:
        overage = "groups" in (claims.get("_claim_names") or {})
        hint = (" (you are in too many groups for Entra ID to list them in the token: IT should grant an app "
                "role instead)") if overage else ""
        raise SignInError(f"Your Microsoft account {name} has no role in the netcheck dashboard{hint}. Ask IT to "
                          "assign you one of the app's roles (Entra ID: Enterprise applications, the netcheck "
                          "app, Users and groups).", f"{name} ({oid}) holds no role that oidc_roles maps", 403)
    return Identity(f"entra:{tid}:{oid}", name[:58], role)


def _issued_by(claims: dict[str, Any], tid: str) -> bool:
    return f"/{tid}/" in f"{claims.get('iss', '')}/"


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


class Provider:
    """The identity provider of one tenant: discovery and keys cached, token redemption, validation."""

    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        self.client_id = settings.oidc_client_id or ""
        self.role_map = settings.oidc_role_map()
        self.secret = client_secret.read(settings.oidc_client_secret_file, SECRET_ENV,
                                         "the Entra sign-in client secret file (oidc_client_secret_file)")
        self._verify = ssl_context(Path(settings.oidc_ca_bundle) if settings.oidc_ca_bundle else None)
        self._transport = transport
        self._found: tuple[float, Discovery] | None = None
        self._failed: tuple[float, SignInError] | None = None
        self._keys: dict[str, Any] = {}

    def scrub(self, text: str) -> str:
        return client_secret.scrub(text, self.secret)

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(verify=self._verify, timeout=TIMEOUT, follow_redirects=False,
                                 transport=self._transport, headers={"User-Agent": "netcheck-collector"})

    async def _json(self, request: httpx.Request, what: str) -> Any:
        unreachable = ("Microsoft Entra ID cannot be reached from the collector just now, so you cannot sign in "
                       "with it. Try again in a minute, or sign in with a local account.")
        try:
            async with self._client() as client:
                response = await client.send(request, stream=True)
                try:
                    body = b""
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > MAX_ANSWER:
                            raise SignInError(unreachable, f"{what}: the answer is larger than {MAX_ANSWER} bytes",
                                              502)
                finally:
                    await response.aclose()
        except httpx.HTTPError as exc:
            raise SignInError(unreachable, f"{what}: {type(exc).__name__}: {exc}", 502) from None
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        if response.status_code != 200:
            said = ""
            if isinstance(doc, dict):
                said = f": {str(doc.get('error', ''))[:80]}: {str(doc.get('error_description', ''))[:200]}"
                if doc.get("error") == "invalid_client":
                    said += (" (a wrong or expired client secret: make a new one in Entra ID, App registrations, "
                             "Certificates & secrets, and put it in oidc_client_secret_file)")
            raise SignInError(_REFUSED, f"{what}: HTTP {response.status_code}{said}", 502)
        if doc is None:
            raise SignInError(unreachable, f"{what}: the answer is not JSON", 502)
        return doc

    async def discovery(self) -> Discovery:
        now = time.monotonic()
        if self._found is not None and now - self._found[0] < DISCOVERY_FOR_S:
            return self._found[1]
        if self._failed is not None and now - self._failed[0] < RETRY_AFTER_S:
            raise self._failed[1]  # anyone may start a sign-in: the provider is not asked on each one
        url = f"{self.settings.oidc_issuer_base.rstrip('/')}/.well-known/openid-configuration"
        try:
            doc = await self._json(httpx.Request("GET", url), f"discovery {url}")
            try:
                found = parse_discovery(doc, self.settings)
            except ValueError as exc:
                raise SignInError(_REFUSED, f"discovery {url}: {exc}", 502) from None
        except SignInError as exc:
            self._failed = (time.monotonic(), exc)
            raise
        self._found, self._failed = (time.monotonic(), found), None
        return found

    async def _read_keys(self, found: Discovery) -> None:
        doc = await self._json(httpx.Request("GET", found.jwks_uri), f"keys {found.jwks_uri}")
        try:
            self._keys = parse_keys(doc)
        except ValueError as exc:
            raise SignInError(_REFUSED, f"keys {found.jwks_uri}: {exc}", 502) from None

    async def redeem(self, code: str, verifier: str, nonce: str) -> Identity:
        """The user behind an authorization code: redeemed, its id token validated, its role mapped."""
        found = await self.discovery()
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": self.settings.oidc_callback,
                "client_id": self.client_id, "client_secret": self.secret or "", "code_verifier": verifier,
                "scope": SCOPE}
        answer = await self._json(httpx.Request("POST", found.token_endpoint, data=form),
                                  f"token {found.token_endpoint}")
        token = answer.get("id_token") if isinstance(answer, dict) else None
        if not isinstance(token, str):
            raise SignInError(_REFUSED, f"token {found.token_endpoint}: the answer has no id_token", 502)
        if not self._keys:
            await self._read_keys(found)
        check = {"issuer": found.issuer, "client_id": self.client_id, "nonce": nonce}
        try:
            claims = validate_id_token(token, self._keys, **check)
        except UnknownKey:
            await self._read_keys(found)  # Entra rolled its keys over: read them once more
            claims = validate_id_token(token, self._keys, **check)
        return identity(claims, self.role_map)

    async def sign_out_url(self, post_logout: str) -> str | None:
        """Where to send the browser to end the Microsoft session too, if the provider says."""
        try:
            found = await self.discovery()
        except SignInError:
            return None
        if found.end_session_endpoint is None:
            return None
        return f"{found.end_session_endpoint}?{urlencode({'post_logout_redirect_uri': post_logout})}"
