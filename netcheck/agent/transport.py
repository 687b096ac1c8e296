"""Talking to the collector: one HTTP exchange, classified.

Every call returns an :class:`Exchange` that says what to do next, never raises
for a network failure:

- ``OK``: a 2xx answer whose body is JSON (an upload still has to match its ack);
- ``RETRY``: keep the data and try later: transport errors (refused, reset, DNS,
  timeouts, TLS), 408, 429, 5xx, a redirect (never followed), or a body that is
  not the collector's JSON (a captive portal's 200 with HTML);
- ``REJECT``: the collector refused this request for good (400, 409, 413, 422 and
  other 4xx): set the report aside;
- ``UNAUTHORIZED``: 401 or 403, the credential was refused (maybe only once).

Safety: TLS is verified against the system store, or only against the CA bundle
pinned at enrollment; TLS 1.2 is the minimum. Redirects are never followed, so
neither the token nor a report can be sent to another host or over plain HTTP.
Every socket operation has a timeout, clamped to the exchange's deadline, and the
response body is read with a size limit and the deadline checked between chunks.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import httpx

from netcheck import __version__
from netcheck.agent.schedule import parse_retry_after
from netcheck.deadline import Deadline
from netcheck.errors import ConfigError, NetcheckError
from netcheck.files import PEM_BUNDLE_LIMIT, read_user_text
from netcheck.proxy.decision import ProxyChoice
from netcheck.proxy.settings import redact
from netcheck.render.reduced import REDUCED_CONTENT_TYPE

log = logging.getLogger(__name__)

API = "/api/v1"
MAX_RESPONSE_BYTES = 1024 * 1024
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
AUTH_STATUSES = frozenset({401, 403})
#: 4xx that mean "wrong place", not "bad report": keep the data and retry later
KEEP_4XX = frozenset({404, 405, 407, 421})
#: gzip level of uploads: a 237 KiB report becomes 17 KiB for about 2 ms of CPU (level 9: 3x the
#: CPU for 3 % less)
GZIP_LEVEL = 6


def gzip_body(body: bytes) -> bytes:
    """``body`` as one gzip member (``Content-Encoding: gzip``), without a timestamp or name, so
    the same body always compresses to the same bytes."""
    packer = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return packer.compress(body) + packer.flush()


@dataclass(frozen=True)
class Timeouts:
    connect_s: float = 10.0
    read_s: float = 30.0
    write_s: float = 30.0
    #: one exchange never takes longer than this, whatever the server does
    total_s: float = 60.0


class Disposition(StrEnum):
    OK = "ok"
    RETRY = "retry"
    REJECT = "reject"
    UNAUTHORIZED = "unauthorized"


@dataclass(frozen=True)
class Exchange:
    disposition: Disposition
    reason: str
    status: int | None = None
    body: Any = None
    retry_after_s: float | None = None
    error_code: str | None = None
    #: the failure was TLS (certificate, handshake, downgrade): not "offline"
    tls: bool = False

    @property
    def ok(self) -> bool:
        return self.disposition is Disposition.OK


def ssl_context(ca_bundle: Path | None) -> ssl.SSLContext:
    """The system trust store, or only the pinned bundle; TLS 1.2 or later.

    The bundle is read by netcheck's one reader of user files (a FIFO or a device is refused at once)
    and handed to OpenSSL as data, so OpenSSL never opens the path itself."""
    cadata = read_user_text(ca_bundle, limit=PEM_BUNDLE_LIMIT, what="the CA bundle") if ca_bundle else None
    try:
        ctx = ssl.create_default_context(cadata=cadata)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the CA bundle {ca_bundle}: {exc}") from exc
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


def classify_error(exc: Exception) -> Exchange:
    """A transport exception as an outcome with a reason a person can act on."""
    chain = _chain(exc)
    for e in chain:
        if isinstance(e, ssl.SSLCertVerificationError):
            detail = e.verify_message or e.reason or str(e)
            return Exchange(Disposition.RETRY, f"TLS: the collector's certificate was refused ({detail})",
                            tls=True)
    for e in chain:
        if isinstance(e, ssl.SSLError):
            return Exchange(Disposition.RETRY, f"TLS: handshake with the collector failed ({e.reason or e})",
                            tls=True)
    if isinstance(exc, httpx.TimeoutException):
        kind = {httpx.ConnectTimeout: "connecting", httpx.ReadTimeout: "waiting for the answer",
                httpx.WriteTimeout: "sending", httpx.PoolTimeout: "waiting for a connection"}
        return Exchange(Disposition.RETRY, f"timed out {kind.get(type(exc), 'talking to the collector')}")
    for e in chain:
        if isinstance(e, socket.gaierror):
            return Exchange(Disposition.RETRY, "DNS: cannot resolve the collector's name")
        if isinstance(e, ConnectionRefusedError):
            return Exchange(Disposition.RETRY, "connection refused (collector down or port closed)")
        if isinstance(e, ConnectionResetError):
            return Exchange(Disposition.RETRY, "connection reset")
        if isinstance(e, TimeoutError):
            return Exchange(Disposition.RETRY, "timed out")
    if isinstance(exc, httpx.RemoteProtocolError):
        return Exchange(Disposition.RETRY, "the collector closed the connection without a complete answer")
    if isinstance(exc, httpx.ConnectError):
        return Exchange(Disposition.RETRY, f"cannot connect to the collector ({exc})")
    return Exchange(Disposition.RETRY, f"network error talking to the collector ({type(exc).__name__}: {exc})")


def _error_code(body: Any) -> tuple[str | None, str | None]:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        code = err.get("code") if isinstance(err.get("code"), str) else None
        msg = err.get("message") if isinstance(err.get("message"), str) else None
        return code, msg
    return None, None


def classify_response(status: int, headers: httpx.Headers, raw: bytes) -> Exchange:
    """An HTTP answer as an outcome. Pure: tested without a network."""
    retry_after = parse_retry_after(headers.get("retry-after"))
    body: Any = None
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    code, message = _error_code(body)
    what = f"HTTP {status}" + (f" {code}" if code else "") + (f": {message[:200]}" if message else "")
    if 200 <= status < 300:
        if not isinstance(body, dict):
            ctype = headers.get("content-type", "?").split(";")[0]
            return Exchange(Disposition.RETRY, f"HTTP {status} but the answer is not the collector's JSON "
                            f"({ctype}; a captive portal or proxy?)", status)
        return Exchange(Disposition.OK, what, status, body)
    if 300 <= status < 400:
        location = headers.get("location", "")
        downgrade = location.lower().startswith("http://")
        reason = (f"TLS: the collector redirected to plain http ({location[:200]}); refused, nothing sent there"
                  if downgrade else
                  f"HTTP {status}: the collector redirected to {location[:200] or '?'}; redirects are not followed")
        return Exchange(Disposition.RETRY, reason, status, tls=downgrade)
    if status in AUTH_STATUSES:
        return Exchange(Disposition.UNAUTHORIZED, what, status, body, retry_after, code)
    if status in RETRY_STATUSES or status >= 500 or status in KEEP_4XX:
        return Exchange(Disposition.RETRY, what, status, body, retry_after, code)
    return Exchange(Disposition.REJECT, what, status, body, retry_after, code)


#: how long a proxy choice for the collector is trusted before the settings are read again
ROUTE_TTL_S = 600.0


class CollectorClient:
    """HTTP to one collector (base URL), with the device token when there is one.

    ``chooser``: how to pick the proxy for the collector (``netcheck.proxy.decision``: the
    laptop's PAC file or proxy settings, as its browser would). Its answer is kept for
    ``ROUTE_TTL_S`` and asked again after any transport failure (the laptop may have moved
    between office and home). Without a chooser the environment's ``HTTPS_PROXY`` applies.
    """

    def __init__(self, base_url: str, *, token: str | None = None, ca_bundle: Path | None = None,
                 timeouts: Timeouts | None = None, transport: httpx.BaseTransport | None = None,
                 chooser: Callable[[str, Deadline], ProxyChoice] | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeouts = timeouts or Timeouts()
        self._host = httpx.URL(self.base_url).host
        self._verify = ssl_context(ca_bundle)
        self._transport = transport
        self._chooser = chooser
        self._choice: ProxyChoice | None = None
        self._chosen_at = 0.0
        self._client = self._make_client(None, trust_env=chooser is None)
        #: uploads go gzipped until a collector answers that it does not take gzip
        self.gzip_uploads = True
        #: reports may go in the reduced form until a collector answers that it does not take it
        self.reduced_uploads = True

    def _make_client(self, proxy: str | None, *, trust_env: bool) -> httpx.Client:
        return httpx.Client(
            verify=self._verify, follow_redirects=False, trust_env=trust_env, transport=self._transport,
            proxy=proxy, headers={"User-Agent": f"netcheck-agent/{__version__}", "Accept": "application/json"},
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1, keepalive_expiry=30.0))

    @property
    def proxy_choice(self) -> ProxyChoice | None:
        """The proxy choice in use (None before the first exchange, or without a chooser)."""
        return self._choice

    def _route(self, deadline: Deadline) -> None:
        """Ask the chooser again when its answer is stale; rebuild the client if it changed."""
        if self._chooser is None:
            return
        now = time.monotonic()
        if self._choice is not None and now - self._chosen_at < ROUTE_TTL_S:
            return
        try:
            choice = self._chooser(self.base_url + API, deadline.sooner(10.0))
        except (NetcheckError, OSError, ValueError) as exc:  # unreadable settings must not stop uploads
            choice = ProxyChoice(None, f"the proxy settings could not be read ({exc}); going direct")
        if self._choice is None or choice.proxy != self._choice.proxy:
            log.info("collector %s: %s", "via " + redact(choice.proxy) if choice.proxy else "direct",
                     choice.how)
            self._client.close()
            try:
                self._client = self._make_client(choice.proxy, trust_env=False)
            except (ValueError, ImportError, httpx.InvalidURL) as exc:  # a proxy httpx cannot use (SOCKS)
                log.warning("cannot use the proxy %s (%s); going direct", redact(choice.proxy or ""), exc)
                choice = ProxyChoice(None, f"{choice.how}, but that proxy is unusable")
                self._client = self._make_client(None, trust_env=False)
        self._choice, self._chosen_at = choice, now

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> CollectorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _timeout(self, deadline: Deadline) -> httpx.Timeout:
        t = self.timeouts
        left = max(0.001, deadline.remaining())
        return httpx.Timeout(connect=min(t.connect_s, left), read=min(t.read_s, left),
                             write=min(t.write_s, left), pool=min(t.connect_s, left))

    def request(self, method: str, path: str, *, json_body: bytes | None = None, auth: bool = True,
                deadline: Deadline | None = None, gzipped: bool = False,
                content_type: str = "application/json") -> Exchange:
        """One exchange; ``path`` is relative to the API root (``/reports``)."""
        limit = Deadline.after(self.timeouts.total_s)
        deadline = limit if deadline is None or deadline.at > limit.at else deadline
        if deadline.expired:
            return Exchange(Disposition.RETRY, "timed out (no time left for this exchange)")
        url = self.base_url + API + path
        headers = {}
        if json_body is not None:
            headers["Content-Type"] = content_type
            if gzipped:
                headers["Content-Encoding"] = "gzip"
        if auth:
            if not self.token:
                return Exchange(Disposition.UNAUTHORIZED, "no device token: enroll first")
            if httpx.URL(url).host != self._host:  # pragma: no cover - url is built from base_url
                raise ConfigError("refusing to send the device token to another host")
            headers["Authorization"] = f"Bearer {self.token}"
        self._route(deadline)
        started = time.monotonic()
        try:
            with self._client.stream(method, url, content=json_body, headers=headers,
                                     timeout=self._timeout(deadline)) as response:
                raw = bytearray()
                for chunk in response.iter_bytes():
                    raw += chunk
                    if len(raw) > MAX_RESPONSE_BYTES:
                        return Exchange(Disposition.RETRY, "the answer is too large to be the collector's",
                                        response.status_code)
                    if deadline.expired:
                        return Exchange(Disposition.RETRY, "timed out reading a slow answer",
                                        response.status_code)
                result = classify_response(response.status_code, response.headers, bytes(raw))
        except httpx.HTTPError as exc:
            result = classify_error(exc)
        except OSError as exc:  # pragma: no cover - httpx maps socket errors; belt and braces
            result = classify_error(exc)
        log.debug("%s %s -> %s (%s) in %.2f s", method, path, result.disposition.value,
                  result.reason, time.monotonic() - started)
        if result.status is None and result.disposition is Disposition.RETRY:
            self._choice = None  # no answer at all: read the proxy settings again next time
        return result

    # -- the API ---------------------------------------------------------------

    def post_report(self, body: bytes, deadline: Deadline | None = None, *, reduced: bool = False) -> Exchange:
        """Send an upload gzipped; a collector that refuses gzip (415 ``unsupported_encoding``: one
        started with ``NETCHECK_ACCEPT_GZIP=0``) gets it again as it is, and every later one too.

        ``reduced``: the body's report is in the reduced form (``netcheck.render.reduced``), sent
        as ``REDUCED_CONTENT_TYPE``; a collector that does not know it answers 415
        ``unsupported_media_type`` (the caller then sends the full report).
        """
        content_type = REDUCED_CONTENT_TYPE if reduced else "application/json"
        if self.gzip_uploads:
            result = self.request("POST", "/reports", json_body=gzip_body(body), deadline=deadline, gzipped=True,
                                  content_type=content_type)
            if result.status != 415 or result.error_code != "unsupported_encoding":
                return result
            log.info("the collector does not take gzip; sending uploads uncompressed")
            self.gzip_uploads = False
        return self.request("POST", "/reports", json_body=body, deadline=deadline, content_type=content_type)

    def get_policy(self, deadline: Deadline | None = None) -> Exchange:
        return self.request("GET", "/policy", deadline=deadline)

    def pending_sweeps(self, deadline: Deadline | None = None) -> Exchange:
        return self.request("GET", "/sweeps/pending", deadline=deadline)

    def enroll(self, body: bytes, deadline: Deadline | None = None) -> Exchange:
        return self.request("POST", "/enroll", json_body=body, auth=False, deadline=deadline)
