"""Identity: user realm discovery (is sign-in for a domain managed or federated?).

Asks the login host (from the endpoint data, passed in as ``target.host``) the
question Microsoft's own sign-in libraries ask: ``GET /common/userrealm/{user}
?api-version=1.0`` (MSAL), falling back to ``/getuserrealm.srf?login={user}&
json=1``. Neither is documented on Microsoft Learn (microsoft-facts.md section 8).

A federated answer names the sign-in host (AD FS or another IdP): the caller
treats that host as a dependency of sign-in and resolves and routes it like any
endpoint.

Privacy: the user name goes to the login host (that is the question) but never
into the result. Detail and reason carry the domain only; URLs from the answer
lose their query (``AuthURL`` echoes the user name there).
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from netcheck.deadline import Deadline
from netcheck.models import DetailValue, Outcome, ProbeKind, ProbeResult, ProbeSpec, Target
from netcheck.probes import trust
from netcheck.probes._errors import classify, too_late
from netcheck.probes._http1 import Exchange, Proxy, decoded
from netcheck.probes.http import _timed_out, choose_proxy, phases, proxy_hop, request_headers
from netcheck.probes.tcp import family_of
from netcheck.proxy.settings import redact

_MAX_BODY = 64 * 1024
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def realm_domain(user: str) -> str | None:
    """The domain of a user principal name (or a bare domain), lower case; None if it is not one.

    The CLI can call this to reject a bad ``--user`` before any probing.
    """
    user = user.strip()
    if not user or len(user) > 320 or any(c.isspace() or c in "/\\?#%\"<>" for c in user):
        return None
    local, at, domain = user.rpartition("@")
    if at and not local:
        return None
    try:
        ascii_domain = domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return None
    labels = ascii_domain.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        return None
    return ascii_domain


@dataclass(frozen=True)
class _Answer:
    status: int
    body: bytes
    phases: dict[str, float]


@dataclass(frozen=True)
class _Failure:
    outcome: Outcome
    reason: str
    phases: dict[str, float]


async def _get(target: Target, direct: str | None, proxy: Proxy | None, path: str, params: Mapping[str, str],
               context: ssl.SSLContext, deadline: Deadline, timeout: float) -> _Answer | _Failure:
    port = target.port or 443
    # Quoted as httpx quotes a path and encodes a query (the user name is checked: no % ? # / \\).
    url = urllib.parse.quote(path, safe="/:@!$&'()*+,;=") + "?" + urllib.parse.urlencode(params)
    headers = request_headers(target.host, port, "https", accept="application/json")
    if deadline.expired:
        return _Failure(Outcome.TIMEOUT, "the check ran out of time before realm discovery", {})
    ex = Exchange()
    try:
        async with asyncio.timeout_at(deadline.at):
            response = await ex.get(scheme="https", host=target.host, port=port, target=url, headers=headers,
                                    ssl_context=context, timeout=timeout, connect_to=direct, proxy=proxy,
                                    body_limit=_MAX_BODY + 1, keep_body=True)
            body = decoded(bytes(ex.body), response.headers.get("content-encoding"))
        return _Answer(response.status, body, phases(ex))
    except TimeoutError:
        outcome, reason = _timed_out(ex, proxy is not None)
    except Exception as exc:  # classified, never raised: a probe reports failures
        outcome, reason = classify(exc, at_proxy=proxy is not None and not ex.connected)
    return _Failure(outcome, reason, phases(ex))


def _field(doc: Mapping[str, Any], *names: str) -> str | None:
    lowered = {k.lower(): v for k, v in doc.items() if isinstance(k, str)}
    for name in names:
        value = lowered.get(name.lower())
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _clean_url(url: str | None) -> tuple[str | None, str | None]:
    """(URL without user info, query or fragment, its host), or (None, None) if not an http(s) URL."""
    if not url:
        return None, None
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
        port = parts.port
    except ValueError:
        return None, None
    if parts.scheme.lower() not in ("http", "https") or not host:
        return None, None
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    return urllib.parse.urlunsplit((parts.scheme.lower(), netloc, parts.path, "", "")), host.lower()


@dataclass(frozen=True)
class Realm:
    """What realm discovery said, stripped of anything user-specific."""

    account_type: str  # managed, federated, unknown
    federation_url: str | None
    federation_host: str | None
    metadata_host: str | None
    realm_domain: str | None
    cloud_instance: str | None
    protocol: str | None


def parse_realm(body: bytes) -> Realm | None:
    """Either endpoint's JSON answer; None when it is not a realm answer."""
    try:
        doc = json.loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(doc, dict):
        return None
    kind = _field(doc, "account_type", "NameSpaceType")
    if kind is None:
        return None
    account = kind.lower() if kind.lower() in ("managed", "federated") else "unknown"
    fed_url, fed_host = _clean_url(_field(doc, "federation_active_auth_url", "AuthURL"))
    _, meta_host = _clean_url(_field(doc, "federation_metadata_url"))
    if fed_host is None:
        fed_url, fed_host = None, meta_host
    domain = _field(doc, "domain_name", "DomainName")
    return Realm(account, fed_url, fed_host, meta_host, domain.lower() if domain else None,
                  _field(doc, "cloud_instance_name", "CloudInstanceName"),
                  _field(doc, "federation_protocol"))


class _Scrubber:
    """Removes the user name (and its URL encodings) from any text that could carry it."""

    def __init__(self, user: str, domain: str) -> None:
        self.secrets = sorted({s for s in (user, urllib.parse.quote(user, safe=""),
                                           urllib.parse.quote(user, safe="@"),
                                           urllib.parse.quote_plus(user)) if "@" in user and s},
                              key=len, reverse=True)
        self.domain = domain

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = re.sub(re.escape(secret), f"(user)@{self.domain}", text, flags=re.IGNORECASE)
        return text


async def probe_realm(target: Target, spec: ProbeSpec, deadline: Deadline, *, user: str) -> ProbeResult:
    """Realm discovery for ``user`` (a UPN or a bare domain) at the login host ``target.host``.

    Proxy, trust store and address pinning behave as in the HTTP probe: ``spec.proxy``,
    else the environment's proxy for this URL when ``spec.trust_env``; going direct
    with ``target.address`` set, the probe connects there and names ``target.host``
    in SNI and ``Host``.
    """
    kind = ProbeKind.REALM
    domain = realm_domain(user)
    if domain is None:
        return ProbeResult(kind, target, Outcome.ERROR,
                           "realm discovery needs a user name (name@domain) or a domain name")
    if deadline.expired:
        return too_late(kind, target)
    user = user.strip()
    scrub = _Scrubber(user, domain)
    proxy, proxy_source = choose_proxy(spec, "https", target.host, target.port)
    direct = target.address if proxy is None else None
    base: dict[str, DetailValue] = {"domain": domain, "proxy": redact(proxy) if proxy else None,
                                    "proxy_source": proxy_source, "via_proxy": proxy is not None}
    family = family_of(direct)
    try:
        context = trust.http_context(spec)
    except (OSError, ssl.SSLError) as exc:
        return ProbeResult(kind, target, Outcome.ERROR, f"could not read the trust store ({exc})",
                           {}, base, family)
    attempts = (
        ("userrealm", f"/common/userrealm/{user}", {"api-version": "1.0"}),
        ("getuserrealm", "/getuserrealm.srf", {"login": user, "json": "1"}),
    )
    first: tuple[str, _Answer | _Failure] | None = None
    via, cannot = proxy_hop(proxy, proxy_source)
    if cannot is not None:
        return ProbeResult(kind, target, cannot[0], scrub(cannot[1]), {}, base, family)
    timeout = deadline.step(spec.step_timeout_s)
    for name, path, params in attempts:
        got = await _get(target, direct, via, path, params, context, deadline, timeout)
        first = first or (name, got)
        if isinstance(got, _Failure):
            break  # the network failed: the other path would fail the same way
        realm = parse_realm(got.body) if got.status == 200 else None
        if realm is not None:
            return _found(target, base, family, name, realm, got.phases, scrub)
    assert first is not None
    name, got = first
    detail = {**base, "endpoint": name}
    if isinstance(got, _Failure):
        return ProbeResult(kind, target, got.outcome, scrub(got.reason), got.phases, detail, family)
    detail["http_status"] = got.status
    if got.status != 200:
        what = "no realm discovery" if got.status == 404 else "realm discovery did not answer"
        return ProbeResult(kind, target, Outcome.HTTP_STATUS,
                           f"{target.host} answered HTTP {got.status} for {domain}: {what}",
                           got.phases, detail, family)
    return ProbeResult(kind, target, Outcome.ERROR,
                       f"{target.host} gave an unreadable answer to realm discovery for {domain}",
                       got.phases, detail, family)


def _found(target: Target, base: dict[str, DetailValue], family: str | None, endpoint: str,
           realm: Realm, phases: dict[str, float], scrub: _Scrubber) -> ProbeResult:
    domain = base["domain"]
    detail: dict[str, DetailValue] = {
        **base,
        "account_type": realm.account_type,
        "realm_domain": realm.realm_domain,
        "federation_host": realm.federation_host,
        "federation_url": realm.federation_url,
        "federation_metadata_host": realm.metadata_host,
        "federation_protocol": realm.protocol,
        "cloud_instance_name": realm.cloud_instance,
        "endpoint": endpoint,
        "http_status": 200,
    }
    if realm.account_type == "federated":
        where = realm.federation_host or "an identity provider the answer does not name"
        reason = f"sign-in for {domain} is federated to {where}: sign-in depends on that host"
    elif realm.account_type == "managed":
        reason = f"sign-in for {domain} is managed by Microsoft Entra ID (cloud authentication)"
    else:
        reason = f"{target.host} does not know {domain} (no Microsoft 365 tenant answers for it)"
    clean = {k: scrub(v) if isinstance(v, str) else v for k, v in detail.items()}
    return ProbeResult(ProbeKind.REALM, target, Outcome.OK, scrub(reason), phases, clean, family)
