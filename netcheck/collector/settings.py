"""Collector settings: one frozen value, from defaults, the environment and the command line.

Every setting has an environment variable ``NETCHECK_<NAME>`` (upper case), so that
``netcheck serve --workers N`` can hand the same settings to every worker process and a
container can be configured without flags. Command-line options override the environment.
Rate limits are requests per minute; 0 switches a limit off.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from netcheck.errors import ConfigError
from netcheck.paths import data_dir

ENV_PREFIX = "NETCHECK_"
DEFAULT_MAX_BODY = 1024 * 1024


def default_database_url() -> str:
    """SQLite in the user's data directory: the zero-configuration default."""
    return f"sqlite:///{Path(data_dir()) / 'collector.db'}"


@dataclass(frozen=True)
class Settings:
    database_url: str = ""
    host: str = "127.0.0.1"
    port: int = 8443
    tls_cert: str | None = None
    tls_key: str | None = None
    workers: int = 1
    max_body: int = DEFAULT_MAX_BODY
    #: header a trusted reverse proxy sets to the client address (its last entry is used)
    trusted_proxy_header: str | None = None
    #: per device, on every authenticated route
    rate_device: int = 60
    #: failed authentications per client address (offices share one address, so healthy
    #: requests are not counted); past it every request from the address gets 429
    rate_address: int = 60
    #: enrollment, per client address and for the whole collector
    rate_enroll_address: int = 10
    rate_enroll_global: int = 1000
    #: accept ``Content-Encoding: gzip`` (decompressed size is bounded by max_body too)
    accept_gzip: bool = True
    #: database connections per collector process. Uploads are CPU-bound in the collector: a few
    #: connections keep the database busy, and more only add threads contending for the
    #: interpreter (with PostgreSQL on the same two cores: 3 -> ~325 reports/s, 10 -> ~255/s,
    #: bench/bench_ingest.py). Raise it when the database is far away (high round-trip time).
    db_pool_size: int = 3
    db_max_overflow: int = 0
    #: seconds a request waits for the database (connect, pool, SQLite lock) before 503
    db_timeout_s: float = 5.0
    log_level: str = "warning"
    #: seconds a client has to send a request's line and headers (from the connection, or from
    #: the first byte of the next request on a kept-alive one); then 408 and closed
    head_timeout_s: float = 10.0
    #: seconds a client has to send a request's body once its headers are in; then closed
    body_timeout_s: float = 60.0
    #: largest request head (request line and headers) and most header lines; then 431 and closed
    max_header_bytes: int = 16 * 1024
    max_headers: int = 64
    #: seconds an idle kept-alive connection stays open between two requests
    keep_alive_s: float = 30.0
    #: connections and requests each worker process handles at once; past it, 503
    max_connections: int = 1000
    #: reports are deleted this many days after they arrived (0: kept forever); a device's
    #: latest report is always kept
    retention_days: int = 90
    #: seconds between two deletions of expired reports by each collector process (randomised
    #: by +-50 % so that processes and hosts do not all start at once)
    prune_interval_s: float = 3600.0
    #: Microsoft service health (netcheck.collector.health): the Entra app registration with the
    #: ServiceHealth.Read.All application permission. Off unless tenant and client id are set. The
    #: client secret is never a setting (settings are passed to workers in the environment and
    #: printed): it is read from ``graph_client_secret_file``, else NETCHECK_GRAPH_CLIENT_SECRET.
    graph_tenant: str | None = None
    graph_client_id: str | None = None
    graph_client_secret_file: str | None = None
    #: where Graph and the login service are (a national cloud, or a loopback double in tests)
    graph_url: str = "https://graph.microsoft.com/v1.0"
    graph_authority: str = "https://login.microsoftonline.com"
    #: trust only this CA bundle (PEM) for Graph and the login service, instead of the system's
    graph_ca_bundle: str | None = None
    #: seconds between two polls of Graph by the whole collector (one process holds the lease);
    #: Microsoft updates incidents about hourly, so 5 minutes is prompt and polite
    health_interval_s: float = 300.0
    #: seconds the dashboard reuses a fleet-wide count (the overview's, a sweep's coverage) before
    #: counting again: the pages stay fast at 100,000 devices; 0 counts on every view
    ui_cache_s: float = 10.0
    #: each device's newest reports kept with their full detail; older ones are reduced to their
    #: verdict, facts and failed probes (``netcheck.collector.compact``) by the pass that runs
    #: after each pruning. A device's latest report is always complete. 1 keeps a fleet's daily
    #: reports under 5 KiB each (bench/bench_storage.py); each more adds ~0.5 KiB per report.
    full_history: int = 1
    #: Dashboard sign-in with Microsoft Entra ID (``netcheck.collector.web.oidc``): OpenID Connect,
    #: authorization code flow with PKCE, for a single-tenant app registration. Off unless tenant and
    #: client id are set. As for service health, the client secret is never a setting: it is read
    #: from ``oidc_client_secret_file``, else NETCHECK_OIDC_CLIENT_SECRET.
    oidc_tenant: str | None = None
    oidc_client_id: str | None = None
    oidc_client_secret_file: str | None = None
    #: the issuer's base URL; ``{tenant}`` is replaced by ``oidc_tenant`` (a national cloud, or a
    #: loopback provider in tests). Discovery is read from ``<authority>/.well-known/openid-configuration``.
    oidc_authority: str = "https://login.microsoftonline.com/{tenant}/v2.0"
    #: the redirect URI registered in Entra ID (default: this collector's own URL + /ui/login/entra/callback;
    #: set it when users reach the collector through a reverse proxy or another name)
    oidc_redirect_uri: str | None = None
    #: Entra app roles (the id token's ``roles``) and group object ids (``group:<id>``, the ``groups``
    #: claim) granting each netcheck role, as ``value=role`` pairs separated by commas; a user that
    #: none of them grants is refused
    oidc_roles: str = "Netcheck.Admin=admin,Netcheck.ReadOnly=read-only"
    #: trust only this CA bundle (PEM) for the login service, instead of the system's
    oidc_ca_bundle: str | None = None
    #: on sign-out, also end the Microsoft session (the provider's end_session_endpoint)
    oidc_sign_out_everywhere: bool = False

    def __post_init__(self) -> None:
        if not self.database_url:
            object.__setattr__(self, "database_url", default_database_url())
        if self.max_body < 1024:
            raise ConfigError(f"max body {self.max_body} is too small: use at least 1024 bytes")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port {self.port} is out of range 0-65535")
        if self.workers < 1:
            raise ConfigError("workers must be at least 1")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("TLS needs both --tls-cert and --tls-key")
        for name in ("rate_device", "rate_address", "rate_enroll_address", "rate_enroll_global"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be 0 (off) or a positive number of requests per minute")
        if self.retention_days < 0:
            raise ConfigError("retention_days must be 0 (keep forever) or a number of days")
        if not 0 <= self.ui_cache_s <= 3600:
            raise ConfigError("ui_cache_s must be between 0 and 3600 seconds")
        if self.prune_interval_s <= 0:
            raise ConfigError("prune_interval_s must be positive")
        if (self.graph_tenant is None) != (self.graph_client_id is None):
            raise ConfigError("service health needs both graph_tenant and graph_client_id "
                              "(NETCHECK_GRAPH_TENANT, NETCHECK_GRAPH_CLIENT_ID), or neither")
        for name in ("graph_url", "graph_authority"):
            if not str(getattr(self, name)).startswith("https://"):
                raise ConfigError(f"{name} must be an https:// URL")
        if not 1 <= self.health_interval_s <= 86400:
            raise ConfigError("health_interval_s must be between 1 and 86400 seconds")
        if self.full_history < 1:
            raise ConfigError("full_history must be at least 1 (a device's latest report is always complete)")
        if (self.oidc_tenant is None) != (self.oidc_client_id is None):
            raise ConfigError("sign-in with Entra ID needs both oidc_tenant and oidc_client_id "
                              "(NETCHECK_OIDC_TENANT, NETCHECK_OIDC_CLIENT_ID), or neither")
        if self.oidc_tenant is not None:
            check_oidc(self)
        if self.db_pool_size < 1:
            raise ConfigError("db_pool_size must be at least 1")
        if self.db_timeout_s <= 0:
            raise ConfigError("db_timeout_s must be positive")
        for name in ("head_timeout_s", "body_timeout_s", "keep_alive_s"):
            if not 0 < getattr(self, name) <= 3600:
                raise ConfigError(f"{name} must be between 0 and 3600 seconds")
        if not 1024 <= self.max_header_bytes <= 1024 * 1024:
            raise ConfigError("max_header_bytes must be between 1024 and 1048576")
        if not 8 <= self.max_headers <= 1000 or self.max_connections < 1:
            raise ConfigError("max_headers must be between 8 and 1000, max_connections at least 1")

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def service_health(self) -> bool:
        """Whether the collector polls Microsoft service health (an app registration is configured)."""
        return self.graph_client_id is not None

    @property
    def entra_sign_in(self) -> bool:
        """Whether the dashboard offers "Sign in with Microsoft" (an app registration is configured)."""
        return self.oidc_client_id is not None

    @property
    def oidc_issuer_base(self) -> str:
        return self.oidc_authority.replace("{tenant}", self.oidc_tenant or "")

    @property
    def oidc_callback(self) -> str:
        return self.oidc_redirect_uri or f"{self.url}/ui/login/entra/callback"

    def oidc_role_map(self) -> dict[str, str]:
        """``oidc_roles`` as {"role:<app role>" or "group:<object id>": netcheck role}."""
        mapping: dict[str, str] = {}
        for item in self.oidc_roles.split(","):
            if not item.strip():
                continue
            key, sep, role = (part.strip() for part in item.strip().rpartition("="))
            if not sep or not key or role not in ("admin", "read-only"):
                raise ConfigError(f"oidc_roles: {item.strip()!r} is not a pair such as Netcheck.Admin=admin, "
                                  "group:<object id>=read-only (roles: admin, read-only)")
            mapping[key if key.startswith("group:") else f"role:{key}"] = role
        return mapping

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Settings from ``NETCHECK_*`` variables, then ``overrides`` (None values are ignored)."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is None or raw == "":
                continue
            values[f.name] = _convert(f.name, f.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]

    def to_env(self) -> dict[str, str]:
        """The environment that makes ``from_env`` rebuild these settings (for worker processes)."""
        env: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            env[ENV_PREFIX + f.name.upper()] = ("1" if value else "0") if isinstance(value, bool) else str(value)
        return env


_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$")


def check_oidc(settings: Settings) -> None:
    """The Entra sign-in settings, checked at start-up (a mistake is one line, not a failed sign-in)."""
    tenant = settings.oidc_tenant or ""
    if not _TENANT.match(tenant) or tenant.lower() in ("common", "organizations", "consumers"):
        raise ConfigError(f"oidc_tenant {tenant!r} must be your tenant's id (a GUID) or one of its domains: "
                          "the dashboard accepts users of one tenant only (not common/organizations/consumers)")
    if not settings.oidc_authority.startswith("https://"):
        raise ConfigError("oidc_authority must be an https:// URL, such as "
                          "https://login.microsoftonline.com/{tenant}/v2.0")
    callback = settings.oidc_redirect_uri
    if callback is None and settings.host in ("0.0.0.0", "::", ""):
        raise ConfigError(f"the collector listens on all addresses ({settings.host or '*'}): set oidc_redirect_uri "
                          "(NETCHECK_OIDC_REDIRECT_URI) to the URL users reach it by, + /ui/login/entra/callback")
    if callback is not None and not callback.startswith(("https://", "http://localhost", "http://127.0.0.1")):
        raise ConfigError("oidc_redirect_uri must be https:// (Entra ID accepts http:// for localhost only)")
    if not settings.oidc_role_map():
        raise ConfigError("oidc_roles grants no role: nobody could sign in with Entra ID")


def _convert(name: str, annotation: object, raw: str) -> object:
    kind = str(annotation)
    try:
        if kind == "bool":
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind == "int":
            return int(raw)
        if kind == "float":
            number = float(raw)
            if not math.isfinite(number):
                raise ValueError(raw)
            return number
    except ValueError as exc:
        raise ConfigError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a valid {kind}") from exc
    return raw
