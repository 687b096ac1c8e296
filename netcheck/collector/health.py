"""Microsoft service health: the collector polls Graph, keeps incidents and advisories, serves them.

Graph's service communications API (``/admin/serviceAnnouncement/healthOverviews`` and
``/issues``, application permission ServiceHealth.Read.All) is read with the client-credentials
grant of an Entra app registration, through MSAL. The whole collector polls once per
``health_interval_s``, however many processes and hosts serve it:

- every collector process runs :func:`poll_forever`, which wakes every minute (or every
  interval, if shorter) and tries to take the **lease** in ``health_poll`` (one row, one short
  transaction: the row is updated only if the lease is free, expired or already ours). The
  holder renews it each turn; if it dies, another process takes over when the lease expires;
- the holder polls when ``next_poll_at`` has come. That time is in the database too, so a 429's
  ``Retry-After`` holds for every process: polling stops politely, and resumes after the delay;
- a poll reads every page (``@odata.nextLink``, only ever to Graph's own origin: the token is
  never sent elsewhere), parses everything, then stores it in one transaction. A malformed
  answer, a refused credential (the token endpoint's 401 ``invalid_client``: an expired client
  secret), a network error or a throttle stores nothing and is recorded as the **last error**
  (time and one line); the data of the last good poll stays, marked with its time.

The client secret comes from a file (``graph_client_secret_file``, read through
``netcheck.files``) or ``NETCHECK_GRAPH_CLIENT_SECRET``; it is never a setting, never logged
and never stored: every error text goes through :func:`_scrub` before it is logged or stored.

The dashboard and ``netcheck admin health-status`` read :func:`poll_status`,
:func:`active_issues`, :func:`incidents_by_workload` and :func:`issue_timeline`; agents get
:func:`served_health` with their policy (:func:`policy_document`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import logging
import os
import random
import secrets
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from netcheck.agent.transport import ssl_context
from netcheck.collector import client_secret, store
from netcheck.collector.db import dialect_insert, health_issues, health_poll, health_services
from netcheck.collector.settings import Settings
from netcheck.errors import ConfigError

log = logging.getLogger(__name__)

POLLER = "graph"
SECRET_ENV = "NETCHECK_GRAPH_CLIENT_SECRET"
OVERVIEWS = "/admin/serviceAnnouncement/healthOverviews"
ISSUES = "/admin/serviceAnnouncement/issues"
#: pages read at most per list (Graph's pages hold 100: far more issues than any tenant has)
MAX_PAGES = 50
REQUEST_TIMEOUT_S = 30.0
#: how long to wait after a 429 or 503 that gives no (or an absurd) Retry-After
DEFAULT_RETRY_AFTER_S = 60.0
MAX_RETRY_AFTER_S = 6 * 3600.0
#: a process looks at the lease this often (at most)
TICK_S = 60.0
#: issues served to agents at most (newest first)
MAX_SERVED = 100
_CLASSES = ("incident", "advisory")


class PollError(Exception):
    """One poll failed; ``message`` is one line for the status and the log (no secret in it)."""

    def __init__(self, kind: str, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Issue:
    id: str
    service: str
    feature: str | None
    title: str
    impact: str | None
    classification: str
    origin: str | None
    status: str
    is_resolved: bool
    start_at: dt.datetime | None
    end_at: dt.datetime | None
    last_modified_at: dt.datetime | None


@dataclass(frozen=True)
class Service:
    id: str
    service: str
    status: str


@dataclass(frozen=True)
class Snapshot:
    services: tuple[Service, ...]
    issues: tuple[Issue, ...]
    #: entries left out because they were not what the API documents
    skipped: int = 0


# --- parsing (pure) --------------------------------------------------------------------------------


def _text(raw: Mapping[str, Any], key: str, limit: int, *, required: bool = True) -> str | None:
    value = raw.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise ValueError(f"{key} is missing or not a string")
    return value.strip()[:limit]


def _time(raw: Mapping[str, Any], key: str) -> dt.datetime | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{key} is not a date-time")
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{key} is not a date-time") from None
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)


def _enum(value: str) -> str:
    """Graph's enum values, whatever their case in the JSON ("ServiceOperational")."""
    return value[:1].lower() + value[1:]


def parse_issue(raw: object) -> Issue:
    """One ``serviceHealthIssue``; ValueError says what is wrong with it."""
    if not isinstance(raw, dict):
        raise ValueError("an issue is not an object")
    resolved = raw.get("isResolved")
    if not isinstance(resolved, bool):
        raise ValueError("isResolved is not true or false")
    classification = _enum(_text(raw, "classification", 32) or "")
    return Issue(
        id=_text(raw, "id", 64) or "", service=_text(raw, "service", 200) or "",
        feature=_text(raw, "feature", 200, required=False), title=_text(raw, "title", 1000) or "",
        impact=_text(raw, "impactDescription", 4000, required=False), classification=classification,
        origin=_text(raw, "origin", 32, required=False), status=_enum(_text(raw, "status", 64) or ""),
        is_resolved=resolved, start_at=_time(raw, "startDateTime"), end_at=_time(raw, "endDateTime"),
        last_modified_at=_time(raw, "lastModifiedDateTime"))


def parse_service(raw: object) -> Service:
    """One ``serviceHealth`` of the overview."""
    if not isinstance(raw, dict):
        raise ValueError("a service is not an object")
    return Service(_text(raw, "id", 64) or "", _text(raw, "service", 200) or "",
                   _enum(_text(raw, "status", 64) or ""))


def retry_after(value: str | None, now: dt.datetime) -> float:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), bounded."""
    seconds = DEFAULT_RETRY_AFTER_S
    if value:
        text = value.strip()
        if text.isdigit():
            seconds = float(text)
        else:
            try:
                seconds = (email.utils.parsedate_to_datetime(text) - now).total_seconds()
            except (TypeError, ValueError):
                pass
    return min(max(seconds, 1.0), MAX_RETRY_AFTER_S)


_scrub = client_secret.scrub


# --- credentials and Graph -------------------------------------------------------------------------


def read_secret(settings: Settings, environ: Mapping[str, str] | None = None) -> str | None:
    """The app's client secret: the secret file, else ``NETCHECK_GRAPH_CLIENT_SECRET``."""
    return client_secret.read(settings.graph_client_secret_file, SECRET_ENV,
                              "the Graph client secret file (graph_client_secret_file)", environ)


def _scope(graph_url: str) -> str:
    parts = urlsplit(graph_url)
    return f"{parts.scheme}://{parts.netloc}/.default"


class TokenSource:
    """Application tokens from the login service (client credentials, through MSAL).

    MSAL keeps the token until it expires; :meth:`forget` drops it (Graph said 401).
    """

    def __init__(self, settings: Settings, secret: str) -> None:
        self.settings = settings
        self.secret = secret
        self._app: Any = None

    def forget(self) -> None:
        self._app = None

    def _make_app(self) -> Any:
        import msal
        import requests  # msal's own HTTP library

        session = requests.Session()
        session.trust_env = True  # a collector behind an outbound proxy uses it, as for any HTTPS
        # requests takes the bundle as a path: the poller's ssl_context() has already read it
        # through netcheck's one reader of user files (a FIFO or a device was refused there)
        session.verify = self.settings.graph_ca_bundle or True
        authority = f"{self.settings.graph_authority.rstrip('/')}/{self.settings.graph_tenant}"
        return msal.ConfidentialClientApplication(
            self.settings.graph_client_id, client_credential=self.secret, authority=authority,
            http_client=session, timeout=REQUEST_TIMEOUT_S, instance_discovery=False)

    def token(self) -> str:
        authority = self.settings.graph_authority
        try:
            if self._app is None:
                self._app = self._make_app()
            result = self._app.acquire_token_for_client(scopes=[_scope(self.settings.graph_url)])
        except Exception as exc:  # MSAL raises ValueError, requests' errors and more
            self._app = None
            raise PollError("login", _scrub(f"cannot get a token from the login service {authority}: "
                                            f"{type(exc).__name__}: {exc}", self.secret)) from None
        if not isinstance(result, dict) or not isinstance(result.get("access_token"), str):
            self._app = None
            result = result if isinstance(result, dict) else {}
            code = str(result.get("error") or "no token")
            said = str(result.get("error_description") or "").split("\n")[0][:200]
            hint = (" (an expired or wrong client secret, or a deleted app: renew the secret in Entra ID, "
                    "App registrations > Certificates & secrets, and update the secret file)"
                    if code in ("invalid_client", "unauthorized_client") else "")
            raise PollError("credentials", _scrub(f"the login service refused the app's credentials: {code}"
                                                  f"{': ' + said if said else ''}{hint}", self.secret))
        return str(result["access_token"])


class GraphReader:
    """GETs Graph lists, every page, with the token; errors become :class:`PollError`."""

    def __init__(self, settings: Settings, tokens: TokenSource, client: httpx.Client,
                 clock: Callable[[], dt.datetime] = store.utcnow) -> None:
        self.base = settings.graph_url.rstrip("/")
        self.origin = urlsplit(self.base)[:2]
        self.tokens = tokens
        self.client = client
        self.clock = clock

    def _get(self, url: str, path: str) -> Any:
        for attempt in (1, 2):
            headers = {"Authorization": f"Bearer {self.tokens.token()}", "Accept": "application/json"}
            try:
                response = self.client.get(url, headers=headers)
            except httpx.HTTPError as exc:
                raise PollError("network", f"cannot reach Graph ({path}): {type(exc).__name__}: "
                                f"{str(exc)[:200]}") from None
            if response.status_code == 401 and attempt == 1:
                self.tokens.forget()  # the token expired or was revoked: one more try with a new one
                continue
            break
        status = response.status_code
        if status in (429, 503):
            wait = retry_after(response.headers.get("retry-after"), self.clock())
            raise PollError("throttled", f"Graph answered {status} to {path}"
                            f"{' (throttled)' if status == 429 else ''}; polling resumes in {wait:.0f} s",
                            retry_after_s=wait)
        if status in (401, 403):
            raise PollError("credentials", f"Graph refused {path} with {status}: the app needs the application "
                            "permission ServiceHealth.Read.All, with admin consent")
        if status != 200:
            raise PollError("http", f"Graph answered {status} to {path}")
        try:
            return response.json()
        except ValueError:
            raise PollError("malformed", f"Graph's answer to {path} is not JSON") from None

    def collect(self, path: str) -> list[Any]:
        """Every item of a list, following ``@odata.nextLink`` (same origin only)."""
        url = self.base + path
        items: list[Any] = []
        for _ in range(MAX_PAGES):
            page = self._get(url, path)
            if not isinstance(page, dict) or not isinstance(page.get("value"), list):
                raise PollError("malformed", f"Graph's answer to {path} has no 'value' list")
            items.extend(page["value"])
            link = page.get("@odata.nextLink")
            if link is None:
                return items
            if not isinstance(link, str) or urlsplit(link)[:2] != self.origin:
                raise PollError("malformed", f"Graph's answer to {path} links its next page outside Graph")
            url = link
        raise PollError("malformed", f"Graph's answer to {path} has more than {MAX_PAGES} pages")


def fetch(reader: GraphReader) -> Snapshot:
    """Read the overview and the issues; everything or a PollError."""
    skipped = 0
    services: list[Service] = []
    for raw in reader.collect(OVERVIEWS):
        try:
            services.append(parse_service(raw))
        except ValueError:
            skipped += 1
    issues: list[Issue] = []
    for raw in reader.collect(ISSUES):
        try:
            issues.append(parse_issue(raw))
        except ValueError as exc:
            skipped += 1
            log.debug("skipping an issue from Graph: %s", exc)
    return Snapshot(tuple(services), tuple(issues), skipped)


# --- storage -------------------------------------------------------------------------------------


def store_snapshot(conn: Connection, snap: Snapshot, now: dt.datetime) -> None:
    """Upsert the overview and the issues. An unresolved issue Graph no longer lists is marked
    resolved (when every entry could be read: a skipped one might be it)."""
    ins = dialect_insert(conn.dialect.name, health_services)
    for s in snap.services:
        values = {"service": s.service, "status": s.status, "updated_at": now}
        conn.execute(ins.values(id=s.id, **values).on_conflict_do_update(index_elements=["id"], set_=values))
    ins = dialect_insert(conn.dialect.name, health_issues)
    for i in snap.issues:
        end = i.end_at if i.is_resolved else None
        if i.is_resolved and end is None:
            end = i.last_modified_at or now
        values = {"service": i.service, "feature": i.feature, "title": i.title, "impact": i.impact,
                  "classification": i.classification, "origin": i.origin, "status": i.status,
                  "is_resolved": i.is_resolved, "start_at": i.start_at or now, "end_at": end,
                  "last_modified_at": i.last_modified_at, "last_seen_at": now}
        conn.execute(ins.values(id=i.id, first_seen_at=now, **values)
                     .on_conflict_do_update(index_elements=["id"], set_=values))
    if not snap.skipped:
        seen = [i.id for i in snap.issues]
        conn.execute(health_issues.update()
                     .where(health_issues.c.is_resolved.is_(False), health_issues.c.id.not_in(seen))
                     .values(is_resolved=True, end_at=now))


def take_lease(conn: Connection, holder: str, now: dt.datetime, lease_s: float) -> dt.datetime | None:
    """Take or renew the poller's lease; returns when the next poll is due, or None if another
    process holds the lease."""
    conn.execute(dialect_insert(conn.dialect.name, health_poll).values(name=POLLER).on_conflict_do_nothing())
    t = health_poll.c
    taken = conn.execute(
        health_poll.update()
        .where(t.name == POLLER, sa.or_(t.holder.is_(None), t.holder == holder, t.lease_until.is_(None),
                                        t.lease_until < now))
        .values(holder=holder, lease_until=now + dt.timedelta(seconds=lease_s)))
    if taken.rowcount != 1:
        return None
    due = conn.execute(sa.select(t.next_poll_at).where(t.name == POLLER)).scalar_one()
    return due or now


def _record(conn: Connection, now: dt.datetime, next_at: dt.datetime, **values: Any) -> None:
    conn.execute(health_poll.update().where(health_poll.c.name == POLLER)
                 .values(last_attempt_at=now, next_poll_at=next_at, **values))


# --- the poller ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PollResult:
    state: str  # "ok", "error", "standby" (another process holds the lease), "waiting" (not due)
    message: str = ""


class Poller:
    """One collector process's side of the poll (see the module docstring)."""

    def __init__(self, settings: Settings, engine: Engine, *, client: httpx.Client | None = None,
                 clock: Callable[[], dt.datetime] = store.utcnow, holder: str | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.clock = clock
        self.holder = holder or f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(4)}"
        self.tick_s = min(TICK_S, settings.health_interval_s)
        self.lease_s = max(3 * self.tick_s, 2 * REQUEST_TIMEOUT_S + 60)
        self.client = client or httpx.Client(
            verify=ssl_context(Path(settings.graph_ca_bundle) if settings.graph_ca_bundle else None),
            timeout=REQUEST_TIMEOUT_S, follow_redirects=False,
            headers={"User-Agent": "netcheck-collector"})
        self.secret: str | None = None
        self._tokens: TokenSource | None = None

    def close(self) -> None:
        self.client.close()

    def release(self) -> None:
        """Give the lease up (a stopping process), so that another one polls without waiting for it
        to expire."""
        with self.engine.begin() as conn:
            conn.execute(health_poll.update().where(health_poll.c.name == POLLER, health_poll.c.holder == self.holder)
                         .values(holder=None, lease_until=None))

    def _reader(self) -> GraphReader:
        if self._tokens is None:
            secret = read_secret(self.settings)
            if not secret:
                raise PollError("credentials", f"no client secret: set graph_client_secret_file "
                                f"(NETCHECK_GRAPH_CLIENT_SECRET_FILE) or {SECRET_ENV}")
            self.secret = secret
            self._tokens = TokenSource(self.settings, secret)
        return GraphReader(self.settings, self._tokens, self.client, self.clock)

    def poll_once(self) -> PollResult:
        """Take the lease and, when due, poll Graph and store what it says. Never raises for
        Graph's or the network's failures (they are the status); database errors do raise."""
        now = self.clock()
        with self.engine.begin() as conn:
            due = take_lease(conn, self.holder, now, self.lease_s)
        if due is None:
            return PollResult("standby")
        if due > now:
            return PollResult("waiting")
        interval = dt.timedelta(seconds=self.settings.health_interval_s)
        try:
            snap = fetch(self._reader())
        except (PollError, ConfigError) as exc:
            retry = getattr(exc, "retry_after_s", None)
            message = _scrub(str(exc), self.secret)
            done = self.clock()
            with self.engine.begin() as conn:
                _record(conn, now, done + (dt.timedelta(seconds=retry) if retry else interval),
                        last_error_at=done, last_error=message[:500])
            log.warning("service health: %s", message)
            return PollResult("error", message)
        note = f"{snap.skipped} malformed entr{'y' if snap.skipped == 1 else 'ies'} skipped" if snap.skipped else None
        done = self.clock()
        with self.engine.begin() as conn:
            store_snapshot(conn, snap, done)
            _record(conn, now, done + interval, last_success_at=done, last_note=note)
        if note:
            log.warning("service health: Graph's answer had %s", note)
        return PollResult("ok", note or "")


async def poll_forever(poller: Poller) -> None:
    """Run in every collector process (app lifespan); only the lease holder polls."""
    try:
        while True:
            try:
                # at shutdown the thread is left to finish its request: a stopping collector does
                # not wait for Graph (up to REQUEST_TIMEOUT_S per page)
                await anyio.to_thread.run_sync(poller.poll_once, abandon_on_cancel=True)
            except sa.exc.SQLAlchemyError as exc:
                log.warning("service health: database error: %s", str(exc).splitlines()[0][:300])
            except Exception as exc:  # a bug must not stop the collector; say it in one line
                log.error("service health poll failed: %s", _scrub(f"{type(exc).__name__}: {exc}", poller.secret))
            await anyio.sleep(poller.tick_s * random.uniform(0.8, 1.0))
    finally:
        with contextlib.suppress(sa.exc.SQLAlchemyError):
            poller.release()
        poller.close()


# --- queries (admin CLI, dashboard, agents) ---------------------------------------------------------


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def poll_status(conn: Connection) -> dict[str, Any]:
    """The poller's status: last attempt, success and error, next poll, active issue counts."""
    row = conn.execute(sa.select(health_poll).where(health_poll.c.name == POLLER)).first()
    counts: dict[str, int] = dict(conn.execute(sa.select(health_issues.c.classification, sa.func.count())
                               .where(health_issues.c.is_resolved.is_(False))
                               .group_by(health_issues.c.classification)).all())
    out: dict[str, Any] = {"polled": row is not None}
    for key in ("last_attempt_at", "last_success_at", "last_error_at", "next_poll_at", "lease_until"):
        out[key] = _iso(getattr(row, key)) if row is not None else None
    out["last_error"] = row.last_error if row is not None else None
    out["last_note"] = row.last_note if row is not None else None
    out["holder"] = row.holder if row is not None else None
    ok = row is not None and row.last_success_at is not None and (
        row.last_error_at is None or row.last_success_at >= row.last_error_at)
    out["state"] = "never polled" if row is None or row.last_attempt_at is None else "ok" if ok else "failing"
    out["active_incidents"] = int(counts.get("incident", 0))
    out["active_advisories"] = int(counts.get("advisory", 0))
    return out


def _issue_dict(r: Any) -> dict[str, Any]:
    return {"id": r.id, "service": r.service, "feature": r.feature, "title": r.title,
            "classification": r.classification, "status": r.status, "is_resolved": bool(r.is_resolved),
            "start": _iso(r.start_at), "end": _iso(r.end_at), "last_modified": _iso(r.last_modified_at)}


def active_issues(conn: Connection, at: dt.datetime, services: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Incidents and advisories active at ``at`` (started by then, not ended), newest first;
    only for ``services`` (Graph's service names) if given."""
    t = health_issues.c
    query = (sa.select(health_issues).where(t.classification.in_(_CLASSES), t.start_at <= at,
                                            sa.or_(t.end_at.is_(None), t.end_at > at))
             .order_by(t.start_at.desc(), t.id))
    if services:
        query = query.where(t.service.in_(services))
    return [_issue_dict(r) for r in conn.execute(query)]


def issue_timeline(conn: Connection, since: dt.datetime, until: dt.datetime,
                   services: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Incidents and advisories that overlap [since, until], oldest first: each with ``start``
    and ``end`` (None while it lasts), to draw beside the fleet's failure curve."""
    t = health_issues.c
    query = (sa.select(health_issues).where(t.classification.in_(_CLASSES), t.start_at <= until,
                                            sa.or_(t.end_at.is_(None), t.end_at >= since))
             .order_by(t.start_at, t.id))
    if services:
        query = query.where(t.service.in_(services))
    return [_issue_dict(r) for r in conn.execute(query)]


def workload_services() -> dict[str, tuple[str, ...]]:
    """netcheck's workloads (``report_workloads.workload_id``) -> the services of Microsoft's
    service health behind each (``health_services`` in ``endpoints/workloads.toml``)."""
    from netcheck.m365.catalog import data_dir, load_workload_map

    return {w.id: w.health_services for w in load_workload_map(data_dir() / "workloads.toml").workloads}


def incidents_by_workload(conn: Connection, at: dt.datetime) -> dict[str, list[dict[str, Any]]]:
    """For the dashboard: per workload, the incidents and advisories active at ``at`` for its
    services (workloads without any are left out), so a failure at ``at`` can be marked."""
    active = active_issues(conn, at)
    out: dict[str, list[dict[str, Any]]] = {}
    for workload, services in workload_services().items():
        found = [i for i in active if i["service"] in services]
        if found:
            out[workload] = found
    return out


def served_health(conn: Connection, now: dt.datetime) -> dict[str, Any] | None:
    """What agents get as ``service_health`` in their policy: the active issues and the time of
    the last good poll (``as_of``: None if none succeeded yet); None if the collector never polled."""
    status = conn.execute(sa.select(health_poll.c.last_success_at, health_poll.c.last_attempt_at)
                          .where(health_poll.c.name == POLLER)).first()
    if status is None or status.last_attempt_at is None:
        return None
    issues = active_issues(conn, now)[:MAX_SERVED] if status.last_success_at is not None else []
    return {"as_of": _iso(status.last_success_at),
            "issues": [{k: i[k] for k in ("id", "service", "feature", "title", "classification", "status",
                                          "start", "last_modified")} for i in issues]}


def policy_document(conn: Connection) -> dict[str, Any]:
    """``GET /api/v1/policy``: the stored policy, plus ``service_health`` once the collector polls
    it (additive: agents that do not know the key ignore it)."""
    doc = store.get_policy(conn)
    health = served_health(conn, store.utcnow())
    if health is not None:
        doc["service_health"] = health
    return doc
