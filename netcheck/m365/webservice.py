"""Microsoft's endpoint web service: the update client, the cache it fills, and
the one function the rest of netcheck uses to get endpoint data.

Two entry points:

``Updater(client, base_url).update(instance, force=False) -> UpdateResult``
    Talks to the service, as Microsoft asks clients to: ``/version/{instance}``
    first, at most once an hour per instance; ``/endpoints/{instance}`` only when
    the published version is newer than the data in use; after HTTP 429 nothing
    is sent for an hour. Every request carries the machine's ClientRequestId.
    Network trouble never raises: the result says which data is in use and why.

``current_catalog(instance, endpoints_file) -> (Catalog, warning | None)``
    Never touches the network. The explicit file if given (source ``"file"``),
    else the cache if it is valid and not older than the bundled snapshot
    (source ``"cache"``), else the bundled snapshot (source ``"bundled"``).
    ``warning`` is None when all is well, or one sentence saying why the cache
    was ignored (or why a file's version is unknown); callers show it.

Loading the endpoint data is one straight path down into :mod:`netcheck.m365.catalog`, which
never calls back: ``current_catalog`` takes the file (``catalog.load_catalog(path=...)``), else
``select_data`` asks ``EndpointCache.load`` (meta file and SHA-256 checked here, the JSON parsed by
``catalog.parse_endpoint_sets``) and compares it with ``catalog.bundled_version``, falling back to
``catalog.load_catalog()`` (the bundled snapshot). Every branch ends in ``catalog.make_catalog``,
the one place a Catalog is assembled.

Files, per user (directories from :mod:`netcheck.paths`)::

    config_dir()/client-request-id                the machine's GUID (0600)
    cache_dir()/endpoints/<instance>.json         the service's answer, byte for byte
    cache_dir()/endpoints/<instance>.meta.json    {instance, version, fetched_at, sha256, url}
    cache_dir()/endpoints/<instance>.state.json   {last_check, latest, not_before}

The data file and its meta file are each written atomically; the meta file
holds the data's SHA-256, so a pair torn by a crash between the two writes is
detected and ignored, never used under the wrong version.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import socket
import ssl
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

from netcheck import __version__
from netcheck.deadline import Deadline
from netcheck.errors import CatalogError, ConfigError
from netcheck.m365.catalog import (
    Catalog,
    bundled_version,
    canonical_instance,
    load_catalog,
    make_catalog,
    parse_endpoint_sets,
)
from netcheck.paths import atomic_write, cache_dir, config_dir

DEFAULT_BASE_URL = "https://endpoints.office.com"
BASE_URL_ENV = "NETCHECK_ENDPOINTS_URL"
#: Microsoft: check /version no more than once an hour.
CHECK_INTERVAL = timedelta(hours=1)
#: Microsoft: after HTTP 429, wait an hour.
BACKOFF = timedelta(hours=1)
#: The largest answer accepted (Worldwide is about 27 kB).
MAX_ANSWER_BYTES = 16 * 1024 * 1024
#: Overall budget of one update, in seconds.
UPDATE_BUDGET = 60.0
GUID_FILE = "client-request-id"
_VERSION_RE = re.compile(r"\d{10}")


def default_cache_root() -> Path:
    return cache_dir() / "endpoints"


def resolve_base_url(flag: str | None = None) -> str:
    """The service's base URL: the flag, else $NETCHECK_ENDPOINTS_URL, else Microsoft's."""
    import httpx  # only when talking to the web service: ~0.1 s of imports

    url = (flag or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).strip()
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ConfigError(f"the endpoint web service URL {url!r} is not a valid URL ({exc})") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigError(f"the endpoint web service URL {url!r} must start with https:// "
                          "(or http://) and name a host")
    if parsed.query or parsed.fragment:
        raise ConfigError(f"the endpoint web service URL {url!r} must not carry a query or fragment")
    return url.rstrip("/")


def is_version(text: object) -> bool:
    """A web-service version: exactly ten digits, YYYYMMDDNN."""
    return isinstance(text, str) and _VERSION_RE.fullmatch(text) is not None


def is_newer(candidate: str, than: str) -> bool:
    """Whether version ``candidate`` is newer than ``than`` (anything valid beats "unknown")."""
    if not is_version(candidate):
        return False
    return not is_version(than) or int(candidate) > int(than)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    try:
        atomic_write(path, data, mode)
    except OSError as exc:
        raise ConfigError(f"cannot write {path} ({exc.strerror or exc}); check the permissions "
                          "of netcheck's cache and config directories") from exc


def _dump(doc: Any) -> bytes:
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8")


# --- the machine's ClientRequestId ---------------------------------------------

def _read_guid(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="ascii").strip()
        return str(uuid.UUID(text))
    except (OSError, ValueError):
        return None


def client_request_id(config_root: Path | None = None) -> str:
    """The machine's ClientRequestId: a uuid4 made once, kept in the config dir (0600).

    Created with a hard link from a complete temporary file, so two netchecks
    starting at once agree on one GUID (the loser reads the winner's).
    """
    path = (config_root or config_dir()) / GUID_FILE
    existing = _read_guid(path)
    if existing:
        return existing
    guid = str(uuid.uuid4())
    data = (guid + "\n").encode("ascii")
    if path.exists():  # present but unreadable or not a GUID: replace it
        _write(path, data, 0o600)
        return guid
    tmp = path.with_name(f".{GUID_FILE}.{os.getpid()}.new")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return _read_guid(path) or guid
        except OSError:  # no hard links on this file system: plain atomic replace
            os.replace(tmp, path)
        return guid
    except OSError as exc:
        raise ConfigError(f"cannot store the endpoint web service client id in {path} "
                          f"({exc.strerror or exc})") from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


# --- the cache -----------------------------------------------------------------

@dataclass(frozen=True)
class CacheMeta:
    instance: str
    version: str
    fetched_at: datetime
    sha256: str
    url: str = ""

    def to_json(self) -> dict[str, str]:
        return {"instance": self.instance, "version": self.version,
                "fetched_at": _iso(self.fetched_at), "sha256": self.sha256, "url": self.url}


@dataclass(frozen=True)
class UpdateState:
    """What the updater remembers between runs (per instance)."""

    last_check: datetime | None = None  # the last successful /version answer
    latest: str | None = None           # what it said
    not_before: datetime | None = None  # backing off after HTTP 429 until then

    def to_json(self) -> dict[str, str | None]:
        return {"last_check": _iso(self.last_check) if self.last_check else None,
                "latest": self.latest,
                "not_before": _iso(self.not_before) if self.not_before else None}


class EndpointCache:
    """The per-user cache of web-service answers, one data + meta file per instance."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or default_cache_root()

    def data_path(self, instance: str) -> Path:
        return self.root / f"{canonical_instance(instance).lower()}.json"

    def meta_path(self, instance: str) -> Path:
        return self.root / f"{canonical_instance(instance).lower()}.meta.json"

    def state_path(self, instance: str) -> Path:
        return self.root / f"{canonical_instance(instance).lower()}.state.json"

    def load(self, instance: str) -> tuple[Catalog | None, datetime | None, str | None]:
        """(catalog, fetched_at, None) for a valid cache; (None, None, why) for a bad
        one; (None, None, None) when there is none."""
        instance = canonical_instance(instance)
        data_path, meta_path = self.data_path(instance), self.meta_path(instance)
        try:
            if not data_path.exists() and not meta_path.exists():
                return None, None, None
        except OSError as exc:  # e.g. a cache directory this user may not enter
            return None, None, f"{self.root} cannot be read ({exc.strerror or exc})"
        try:
            meta = self._read_meta(instance)
            try:
                data = data_path.read_bytes()
            except OSError as exc:
                raise CatalogError(f"{data_path} cannot be read ({exc.strerror or exc})") from exc
            if hashlib.sha256(data).hexdigest() != meta.sha256:
                raise CatalogError(f"{data_path} does not match {meta_path.name} "
                                   "(an interrupted or outside change)")
            catalog = make_catalog(instance, parse_endpoint_sets(_json(data, str(data_path)), str(data_path)),
                                   meta.version, "cache")
        except CatalogError as exc:
            return None, None, str(exc)
        return catalog, meta.fetched_at, None

    def _read_meta(self, instance: str) -> CacheMeta:
        path = self.meta_path(instance)
        try:
            doc = _json(path.read_bytes(), str(path))
        except OSError as exc:
            raise CatalogError(f"{path} cannot be read ({exc.strerror or exc})") from exc
        if not isinstance(doc, dict):
            raise CatalogError(f"{path}: expected a JSON object")
        version, fetched = doc.get("version"), _parse_time(doc.get("fetched_at"))
        digest = doc.get("sha256")
        if str(doc.get("instance", "")).lower() != instance.lower():
            raise CatalogError(f"{path}: describes instance {doc.get('instance')!r}, not {instance}")
        if not is_version(version):
            raise CatalogError(f"{path}: 'version' must be ten digits (YYYYMMDDNN), not {version!r}")
        if fetched is None:
            raise CatalogError(f"{path}: 'fetched_at' is missing or not a time")
        if not isinstance(digest, str) or len(digest) != 64:
            raise CatalogError(f"{path}: 'sha256' is missing")
        assert isinstance(version, str)
        return CacheMeta(instance, version, fetched, digest, str(doc.get("url", "")))

    def store(self, instance: str, data: bytes, version: str, fetched_at: datetime, url: str) -> None:
        """Replace the cached data (already validated by the caller) and its meta file."""
        instance = canonical_instance(instance)
        meta = CacheMeta(instance, version, fetched_at, hashlib.sha256(data).hexdigest(), url)
        _write(self.data_path(instance), data)
        _write(self.meta_path(instance), _dump(meta.to_json()))

    def read_state(self, instance: str) -> UpdateState:
        """The remembered state; a missing or damaged file means "nothing remembered"."""
        try:
            doc = json.loads(self.state_path(instance).read_bytes())
        except (OSError, ValueError, RecursionError):
            return UpdateState()
        if not isinstance(doc, dict):
            return UpdateState()
        latest = doc.get("latest")
        return UpdateState(last_check=_parse_time(doc.get("last_check")),
                           latest=latest if is_version(latest) else None,
                           not_before=_parse_time(doc.get("not_before")))

    def write_state(self, instance: str, state: UpdateState) -> None:
        _write(self.state_path(instance), _dump(state.to_json()))


def _json(data: bytes, origin: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        detail = f"line {exc.lineno}: {exc.msg}" if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise CatalogError(f"{origin}: not valid JSON ({detail})") from None


# --- which data is in use ------------------------------------------------------

@dataclass(frozen=True)
class DataInUse:
    """The endpoint data a command works with, and why that one."""

    source: str  # "cache" | "bundled"
    version: str
    fetched_at: datetime | None = None
    why: str = ""  # for the bundled snapshot: why not the cache

    def describe(self) -> str:
        if self.source == "cache":
            when = f" fetched {self.fetched_at.astimezone(UTC):%Y-%m-%d}" if self.fetched_at else ""
            return f"the cached data, version {self.version}{when}"
        why = f" ({self.why})" if self.why else ""
        return f"the bundled snapshot, version {self.version}{why}"


def select_data(instance: str, cache: EndpointCache | None = None
                ) -> tuple[Catalog, DataInUse, str | None]:
    """The newest usable data without the network: the cache unless it is invalid
    or older than the bundled snapshot. Returns (catalog, in_use, warning)."""
    instance = canonical_instance(instance)
    cache = cache or EndpointCache()
    cached, fetched_at, problem = cache.load(instance)
    if cached is not None and not is_newer(bundled_version(instance), cached.version):
        return cached, DataInUse("cache", cached.version, fetched_at), None
    if cached is not None:
        why = f"newer than the cached version {cached.version}"
    elif problem:
        why = "the cached data is unusable"
    else:
        why = "no cached data yet"
    warning = (f"the cached {instance} endpoint data is unusable ({problem}); using the bundled "
               "snapshot. `netcheck endpoints update` replaces it." if problem else None)
    bundled = load_catalog(instance)
    return bundled, DataInUse("bundled", bundled.version, None, why), warning


def file_version(path: Path) -> tuple[str, str | None]:
    """The version recorded beside an endpoint file (``<stem>.meta.json``), else "unknown".

    Returns (version, warning); the warning says why a present meta file was not used.
    """
    meta = path.with_name(f"{path.name.removesuffix('.json')}.meta.json")
    try:
        if not meta.exists():
            return "unknown", None
        doc = json.loads(meta.read_bytes())
    except (OSError, ValueError, RecursionError):
        return "unknown", f"{meta} cannot be read; the endpoint data's version is unknown"
    version = doc.get("version") if isinstance(doc, dict) else None
    if not is_version(version):
        return "unknown", f"{meta} holds no valid 'version'; the endpoint data's version is unknown"
    assert isinstance(version, str)
    return version, None


def current_catalog(instance: str = "Worldwide", endpoints_file: Path | None = None, *,
                    cache_root: Path | None = None) -> tuple[Catalog, str | None]:
    """The endpoint data to use, without touching the network.

    Returns ``(catalog, warning)``: ``catalog.source`` is ``"file"`` (``endpoints_file``;
    version from a sibling ``.meta.json``, else "unknown"), ``"cache"`` (the last
    successful ``netcheck endpoints update``) or ``"bundled"`` (the snapshot shipped
    with netcheck). ``warning`` is None, or one sentence for the user, e.g. why a
    corrupt cache was ignored. Raises CatalogError only when ``endpoints_file`` (or
    the bundled data) is unusable.
    """
    if endpoints_file is not None:
        version, warning = file_version(endpoints_file)
        return load_catalog(instance, path=endpoints_file, version=version, source="file"), warning
    catalog, _, warning = select_data(instance, EndpointCache(cache_root))
    return catalog, warning


# --- the client ----------------------------------------------------------------

class UpdateStatus(StrEnum):
    UPDATED = "updated"          # new data downloaded and cached
    CURRENT = "current"          # the service has nothing newer
    SKIPPED = "skipped"          # checked less than an hour ago
    BACKED_OFF = "backed_off"    # HTTP 429: not asking again for an hour
    UNREACHABLE = "unreachable"  # offline, refused, timed out, HTTP error
    BAD_ANSWER = "bad_answer"    # the service answered with something unusable


@dataclass(frozen=True)
class UpdateResult:
    instance: str
    status: UpdateStatus
    in_use: DataInUse
    previous: DataInUse | None = None    # for UPDATED: what was in use before
    latest: str | None = None            # the service's latest version, if known
    reason: str | None = None            # for UNREACHABLE / BAD_ANSWER
    checked_at: datetime | None = None   # for SKIPPED: when the last check was
    not_before: datetime | None = None   # for BACKED_OFF
    now: datetime | None = None
    warning: str | None = None           # e.g. the cache was unusable
    cache_path: Path | None = None       # for UPDATED: where the data was written

    def describe(self) -> str:
        """What happened, in one or two plain sentences."""
        use = self.in_use.describe()
        s = self.status
        if s is UpdateStatus.UPDATED:
            prev = self.previous
            was = f" (was {prev.version}, {_SOURCE_NAMES[prev.source]})" if prev else ""
            where = f"; saved in {self.cache_path}" if self.cache_path else ""
            text = f"Updated the {self.instance} endpoint data to version {self.latest}{was}{where}."
            if (self.in_use.source, self.in_use.version) != ("cache", self.latest):
                text += f" Using {use}."
        elif s is UpdateStatus.CURRENT:
            text = f"The {self.instance} endpoint data is up to date; using {use}."
            if self.latest and self.latest != self.in_use.version:
                text += (f" (The service's latest version, {self.latest}, is not newer than "
                         "the data in use.)")
        elif s is UpdateStatus.SKIPPED:
            ago = ""
            if self.checked_at and self.now:
                minutes = max(0, int((self.now - self.checked_at).total_seconds() // 60))
                ago = (" less than a minute ago" if minutes == 0
                       else f" {minutes} minute{'s' if minutes != 1 else ''} ago")
            text = (f"Checked the endpoint web service{ago} (at most once an hour; --force "
                    f"checks now); using {use}.")
            if self.latest and is_newer(self.latest, self.in_use.version):
                text += f" Version {self.latest} is published but was not downloaded."
        elif s is UpdateStatus.BACKED_OFF:
            until = (f" before {self.not_before.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
                     if self.not_before else "")
            text = (f"The endpoint web service asked netcheck to slow down (HTTP 429); not asking "
                    f"again{until}; using {use}.")
        elif s is UpdateStatus.UNREACHABLE:
            text = f"Could not reach the endpoint web service ({self.reason}); using {use}."
        else:
            text = (f"The endpoint web service sent an answer netcheck cannot use ({self.reason}); "
                    f"using {use}.")
        if self.warning:
            text += f"\nNote: {self.warning}"
        return text


_SOURCE_NAMES = {"cache": "cached", "bundled": "bundled snapshot"}


class _Unavailable(Exception):
    """The service could not be asked (network, HTTP status)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _BadAnswer(_Unavailable):
    """The service answered, but not with something usable."""


class _Throttled(Exception):
    """HTTP 429."""


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


_ERRNO_REASONS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.ENETUNREACH: "network unreachable",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETDOWN: "network down",
    errno.ETIMEDOUT: "timed out",
}


def failure_reason(exc: BaseException) -> str:
    """A short, plain reason for a failed request (the one exception table here)."""
    import httpx  # only when talking to the web service: ~0.1 s of imports

    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    for cause in _chain(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"its TLS certificate was not accepted: {cause.verify_message or cause.reason}"
        if isinstance(cause, ssl.SSLError):
            return f"TLS failed ({cause.reason or cause})"
        if isinstance(cause, socket.gaierror):
            return "its name could not be resolved"
        if isinstance(cause, OSError) and cause.errno in _ERRNO_REASONS:
            return _ERRNO_REASONS[cause.errno]
    if isinstance(exc, httpx.ProxyError):
        return f"the proxy refused the request ({exc})"
    if isinstance(exc, httpx.TooManyRedirects):
        return "too many redirects"
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"the connection broke off ({exc})" if str(exc) else "the connection broke off"
    return str(exc) or type(exc).__name__


def _parse_version_answer(doc: Any, instance: str) -> str:
    """The ``latest`` version from a /version answer (an object, or a list of them)."""
    if isinstance(doc, list):
        doc = next((d for d in doc if isinstance(d, dict)
                    and str(d.get("instance", "")).lower() == instance.lower()), None)
    if not isinstance(doc, dict):
        raise _BadAnswer(f"the version answer has no entry for {instance}")
    named = doc.get("instance")
    if isinstance(named, str) and named.lower() != instance.lower():
        raise _BadAnswer(f"the version answer is for {named}, not {instance}")
    latest = doc.get("latest")
    if not is_version(latest):
        raise _BadAnswer(f"the version answer's 'latest' is not a ten-digit version ({latest!r})")
    assert isinstance(latest, str)
    return latest


def make_client(timeout: float = 15.0) -> httpx.Client:
    """The HTTP client for the service: system proxies honoured, certificates verified."""
    import httpx  # only when talking to the web service: ~0.1 s of imports

    return httpx.Client(timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
                        follow_redirects=True,
                        headers={"User-Agent": f"netcheck/{__version__}",
                                 "Accept": "application/json"})


class Updater:
    """Keeps the cached endpoint data current, politely. Never raises for the network.

    ``client`` is injected (tests pass one with ``trust_env=False``); ``clock``
    returns an aware UTC datetime and is injected so tests can move time.
    """

    def __init__(self, client: httpx.Client, base_url: str = DEFAULT_BASE_URL, *,
                 cache_root: Path | None = None, config_root: Path | None = None,
                 clock: Callable[[], datetime] = _utcnow, budget: float = UPDATE_BUDGET) -> None:
        self.client = client
        self.base_url = base_url.rstrip("/")
        self.cache = EndpointCache(cache_root)
        self.config_root = config_root
        self.clock = clock
        self.budget = budget

    def update(self, instance: str = "Worldwide", *, force: bool = False) -> UpdateResult:
        """Check the service and refresh the cache if a newer version is published.

        ``force`` skips the once-an-hour limit, not the back-off after HTTP 429.
        Raises ConfigError only when netcheck's own files cannot be written.
        """
        instance = canonical_instance(instance)
        now = self.clock()
        _, in_use, warning = select_data(instance, self.cache)
        state = self.cache.read_state(instance)
        result = UpdateResult(instance, UpdateStatus.CURRENT, in_use, latest=state.latest,
                              now=now, warning=warning)

        # A time further ahead than the rules allow means the clock went back: ignore it.
        if state.not_before and now < state.not_before <= now + BACKOFF:
            return replace(result, status=UpdateStatus.BACKED_OFF, not_before=state.not_before)
        recent = state.last_check is not None and now - CHECK_INTERVAL < state.last_check <= now
        if recent and not force:
            return replace(result, status=UpdateStatus.SKIPPED, checked_at=state.last_check)

        guid = client_request_id(self.config_root)
        deadline = Deadline.after(self.budget)
        try:
            latest = _parse_version_answer(
                _json_answer(self._get(f"/version/{instance}", guid, deadline), "the version answer"),
                instance)
        except _Throttled:
            return self._back_off(instance, state, result, now)
        except _BadAnswer as exc:
            return replace(result, status=UpdateStatus.BAD_ANSWER, reason=exc.reason)
        except _Unavailable as exc:
            return replace(result, status=UpdateStatus.UNREACHABLE, reason=exc.reason)
        state = replace(state, last_check=now, latest=latest, not_before=None)
        self.cache.write_state(instance, state)
        result = replace(result, latest=latest)
        # Fetch when something newer is published, or to replace an unusable cache.
        if not is_newer(latest, in_use.version) and warning is None:
            return result

        path = f"/endpoints/{instance}"
        try:
            body = self._get(path, guid, deadline)
            parse_endpoint_sets(_json_answer(body, "the endpoint data"), "the endpoint data")
        except _Throttled:
            return self._back_off(instance, state, result, now)
        except CatalogError as exc:
            return replace(result, status=UpdateStatus.BAD_ANSWER, reason=str(exc))
        except _BadAnswer as exc:
            return replace(result, status=UpdateStatus.BAD_ANSWER, reason=exc.reason)
        except _Unavailable as exc:
            return replace(result, status=UpdateStatus.UNREACHABLE, reason=exc.reason)
        self.cache.store(instance, body, latest, now, self.base_url + path)
        _, new_in_use, new_warning = select_data(instance, self.cache)
        return replace(result, status=UpdateStatus.UPDATED, in_use=new_in_use, previous=in_use,
                       warning=new_warning, cache_path=self.cache.data_path(instance))

    def _back_off(self, instance: str, state: UpdateState, result: UpdateResult,
                  now: datetime) -> UpdateResult:
        not_before = now + BACKOFF
        self.cache.write_state(instance, replace(state, not_before=not_before))
        return replace(result, status=UpdateStatus.BACKED_OFF, not_before=not_before)

    def _get(self, path: str, guid: str, deadline: Deadline) -> bytes:
        """GET ``base + path`` with the ClientRequestId; the body of a 200 answer."""
        import httpx  # only when talking to the web service: ~0.1 s of imports

        if deadline.expired:
            raise _Unavailable("timed out")
        timeout = httpx.Timeout(deadline.step(15.0), connect=deadline.step(10.0))
        try:
            with self.client.stream("GET", self.base_url + path, params={"clientrequestid": guid},
                                    timeout=timeout) as response:
                if response.status_code == 429:
                    raise _Throttled()
                if response.status_code != 200:
                    phrase = f" {response.reason_phrase}" if response.reason_phrase else ""
                    raise _Unavailable(f"HTTP {response.status_code}{phrase}")
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > MAX_ANSWER_BYTES:
                        raise _BadAnswer(f"the answer is larger than {MAX_ANSWER_BYTES // 2**20} MiB")
                    if deadline.expired:
                        raise _Unavailable("timed out")
                return bytes(body)
        except httpx.HTTPError as exc:
            raise _Unavailable(failure_reason(exc)) from exc


def _json_answer(body: bytes, what: str) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise _BadAnswer(f"{what} is not JSON") from None
