"""The IT dashboard's pages under ``/ui/``: server-rendered Jinja2 (autoescaped), no script.

Every page needs a session (``accounts``); every POST carries the session's CSRF token (the
sign-in form a double-submit cookie's); changes need the admin role. Lists take their filters and
``page`` from the query string (deep links), and ``format=csv`` or ``format=json`` exports the
whole filtered list. Responses carry a strict Content-Security-Policy (no script at all, nothing
from elsewhere); a device's report, the employee's own HTML (``render_html``), is served to a
sandboxed frame.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlencode

import anyio.to_thread
import jinja2
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from netcheck.collector import store
from netcheck.collector.db import READS_ONLY
from netcheck.collector.export import table_csv
from netcheck.collector.settings import Settings
from netcheck.collector.web import accounts, charts, copy_export, endpoints, queries, service_health
from netcheck.collector.web.queries import Filters, Page
from netcheck.collector.web.sites import SitePages, prediction_code_digest, workload_names
from netcheck.errors import ConfigError
from netcheck.render.html import render_html

if TYPE_CHECKING:
    from netcheck.collector.web.entra import EntraSignIn

log = logging.getLogger(__name__)
T = TypeVar("T")
HERE = Path(__file__).resolve().parent
PREFIX = "/ui"
_TAG = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.-]{0,31})=(.{1,128})$")
_CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'")
#: the employee's report: its own inline style, inline SVG, nothing else; framed by the dashboard only
_REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'; sandbox"
_DURATION = re.compile(r"^(\d{1,4})([hd])$")

Handler = Callable[[Request, accounts.Session], Awaitable[Response]]


def _iso(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "" if value is None else str(value)


def _count(value: Any) -> str:
    """A count as IT reads it at fleet scale: thousands separated (``102,400``)."""
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return store.iso(value)
    raise TypeError(type(value).__name__)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["when"] = _iso
    env.filters["count"] = _count
    # a workload's name from endpoints/workloads.toml (its id when the catalog does not know it)
    env.filters["workload"] = lambda wid: workload_names().get(wid, wid)
    env.globals["VERDICT_LABELS"] = queries.VERDICT_LABELS
    env.globals["VERDICTS"] = queries.VERDICTS
    env.globals["prefix"] = PREFIX
    return env


class Dashboard:
    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.env = _environment()
        self.cookie = "__Host-netcheck_ui" if settings.tls else "netcheck_ui"
        self.login_cookie = "__Host-netcheck_login" if settings.tls else "netcheck_login"
        self.recent = queries.Recent(settings.ui_cache_s, connect=self._connect)
        self._copies: bool | None = None
        self.days = queries.FleetDays(self._connect, read=self._read if engine.dialect.name == "sqlite" else None)
        self.site_pages = SitePages(self)
        self.entra: EntraSignIn | None = None
        if settings.entra_sign_in:
            from netcheck.collector.web.entra import EntraSignIn

            self.entra = EntraSignIn(self)  # web/entra.py: "Sign in with Microsoft"

    def warm(self) -> None:
        """The work every process would otherwise do on its first views, done at start-up, before it
        takes requests: each template compiled, the workloads' names and the digest of the prediction
        code (``sites``) read."""
        for name in self.env.list_templates(filter_func=lambda n: n.endswith(".html")):
            self.env.get_template(name)
        workload_names()
        prediction_code_digest()

    async def ready(self) -> None:
        """After start-up, in the background: the Sites page's predictions made and kept before its
        first view (``SitePages.prepared``). A database that cannot answer now leaves them to that
        view, as before."""
        try:
            await self._db(self.site_pages.prepared)
        except SQLAlchemyError as e:
            log.warning("the Sites predictions were not made ahead: %s", str(e).splitlines()[0][:300])

    # --- plumbing ----------------------------------------------------------------------------------

    @contextmanager
    def _connect(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # The pages probe a few rows per device by primary key: on the default cost
                # (4, for spinning disks) PostgreSQL scans whole tables instead (1.8 million
                # workload rows at 10,000 devices, bench/bench_dashboard.py)
                conn.exec_driver_sql("SET LOCAL random_page_cost = 1.1")
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        """A transaction that only reads (``db.READS_ONLY``: on SQLite, without the write lock)."""
        with self.engine.connect() as conn:
            conn.execution_options(**{READS_ONLY: True})
            with conn.begin():
                yield conn

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        def run() -> T:
            with self._connect() as conn:
                return fn(conn, *args)

        return await anyio.to_thread.run_sync(run)

    def _headers(self, response: Response, csp: str = _CSP) -> Response:
        response.headers["Content-Security-Policy"] = csp
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        if csp is _CSP:
            response.headers["X-Frame-Options"] = "DENY"
        return response

    def render(self, name: str, status: int = 200, **context: Any) -> Response:
        html = self.env.get_template(name).render(**context)
        return self._headers(HTMLResponse(html, status_code=status))

    def _set_cookie(self, response: Response, name: str, value: str, max_age: int | None) -> None:
        response.set_cookie(name, value, max_age=max_age, path="/", secure=self.settings.tls, httponly=True,
                            samesite="strict")

    def page(self, fn: Handler, *, admin: bool = False) -> Callable[[Request], Awaitable[Response]]:
        """A page that needs a session; POSTs need its CSRF token, ``admin`` pages the admin role."""

        async def endpoint(request: Request) -> Response:
            session = await self._db(accounts.session, request.cookies.get(self.cookie), store.utcnow())
            if session is None:
                if request.method != "GET":
                    return self.render("error.html", 403, message="Your session has ended: sign in again.",
                                       session=None)
                back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return self._headers(RedirectResponse(f"{PREFIX}/login?{urlencode({'next': back})}", 303))
            if request.method == "POST":
                form = await request.form()
                request.state.form = form
                if not hmac.compare_digest(str(form.get("csrf", "")).encode(), session.csrf.encode()):
                    return self.render("error.html", 403, message="The form was stale or forged (CSRF token "
                                       "mismatch): reload the page and try again.", session=session)
            if admin and not session.user.admin:
                return self.render("error.html", 403, message="This needs the admin role; your account is "
                                   "read-only.", session=session)
            return await fn(request, session)

        return endpoint

    @staticmethod
    def _int(request: Request, name: str, default: int, low: int = 1, high: int = 1_000_000) -> int:
        try:
            return min(high, max(low, int(request.query_params.get(name, default))))
        except ValueError:
            return default

    def _export(self, request: Request, name: str, columns: Sequence[str],
                batches: Callable[[], Iterable[list[dict[str, Any]]]],
                written: Callable[[str], Iterator[bytes]] | None = None) -> Response | None:
        """``format=csv`` or ``format=json``: the whole list, streamed as ``batches`` yields it (the
        first bytes leave at once, memory stays one batch), or as the database writes it
        (``written``, given the format), else None (the page)."""
        fmt = request.query_params.get("format")
        if fmt not in ("csv", "json"):
            return None
        body: Iterator[str] | Iterator[bytes]
        if written is not None:
            body = written(fmt)
        else:
            body = _csv_lines(columns, batches()) if fmt == "csv" else _json_lines(name, batches())
        response = StreamingResponse(body, media_type="text/csv; charset=utf-8" if fmt == "csv" else "application/json",
                                     headers={"Content-Disposition": f'attachment; filename="netcheck-{name}.{fmt}"'})
        return self._headers(response)

    def _stream(self, request: Request, name: str, listing: queries.Listing) -> Response | None:
        """A list's export: written by PostgreSQL (``copy_export``) when it can, else row by row here."""
        def batches() -> Iterable[list[dict[str, Any]]]:
            return queries.export_batches(self._connect, listing)

        def written(fmt: str) -> Iterator[bytes]:
            # a generator: the first chunk is asked for in a worker thread, never on the event loop
            if self._copies is None:
                with self._connect() as conn:
                    self._copies = copy_export.supports(conn)
            if not self._copies:
                lines = _csv_lines(listing.columns, batches()) if fmt == "csv" else _json_lines(name, batches())
                yield from (line.encode() for line in lines)
            elif fmt == "csv":
                yield from copy_export.csv_chunks(self._connect, listing)
            else:
                yield from copy_export.json_chunks(self._connect, listing, name)

        return self._export(request, name, listing.columns, batches,
                            written if self.engine.dialect.name == "postgresql" else None)

    def _page_no(self, request: Request) -> int:
        return self._int(request, "page", 1)

    @staticmethod
    def _links(request: Request, result: Page, *, after: str | None = None) -> dict[str, str | None]:
        """Previous and next page, and the exports. ``after``: the list is walked by that key
        (keyset: the next page starts after the last row's key, through its index, however deep;
        "previous" goes back to the first page)."""
        params = {k: v for k, v in request.query_params.items() if k not in ("page", "after")}

        def link(**changes: Any) -> str:
            merged = {**params, **{k: str(v) for k, v in changes.items()}}
            return f"{request.url.path}?{urlencode(merged)}"

        if after is not None:
            deep = "after" in request.query_params
            return {"prev": link() if deep else None,
                    "next": link(after=result.rows[-1][after]) if result.more and result.rows else None,
                    "csv": link(format="csv"), "json": link(format="json")}
        return {"prev": link(page=result.page - 1) if result.page > 1 else None,
                "next": link(page=result.page + 1) if result.more else None,
                "csv": link(format="csv"), "json": link(format="json")}

    # --- sign-in -----------------------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        return self.login_page(request)

    def login_page(self, request: Request, error: str | None = None, status: int = 200,
                   next_path: str | None = None) -> Response:
        """The sign-in form (a fresh double-submit CSRF cookie), with an error sentence after a failure."""
        token = secrets.token_urlsafe(24)
        response = self.render("login.html", status, csrf=token, error=error, session=None,
                               next=_safe_next(next_path or request.query_params.get("next")),
                               entra=self.entra is not None)
        self._set_cookie(response, self.login_cookie, token, 3600)
        return response

    async def login(self, request: Request) -> Response:
        form = await request.form()
        expected = request.cookies.get(self.login_cookie, "")
        if not expected or not hmac.compare_digest(str(form.get("csrf", "")).encode(), expected.encode()):
            return self.render("error.html", 403, message="The sign-in form was stale or forged: reload it.",
                               session=None)
        name, password = str(form.get("name", ""))[:64], str(form.get("password", ""))[:1024]
        made = await anyio.to_thread.run_sync(partial(self._sign_in, name, password))
        if made is None:
            return self.login_page(request, "Wrong name or password, or the account is locked for a while after "
                                   "repeated failures.", 401, str(form.get("next", "")))
        response = self._headers(RedirectResponse(_safe_next(str(form.get("next", ""))), 303))
        self._set_cookie(response, self.cookie, made, int(accounts.SESSION_FOR.total_seconds()))
        response.delete_cookie(self.login_cookie, path="/", secure=self.settings.tls, httponly=True,
                               samesite="strict")
        return response

    def _sign_in(self, name: str, password: str) -> str | None:
        with self.engine.begin() as conn:
            made = accounts.sign_in(conn, name, password, store.utcnow())
        return None if made is None else made[0]

    async def logout(self, request: Request, session: accounts.Session) -> Response:
        cookie = request.cookies.get(self.cookie, "")
        await self._db(accounts.sign_out, cookie)
        elsewhere = await self.entra.sign_out_url(session) if self.entra is not None else None
        if elsewhere is not None:  # a page that moves on: the CSP's form-action forbids redirecting a form elsewhere
            response = self.render("signed_out.html", session=None, target=elsewhere)
        else:
            response = self._headers(RedirectResponse(f"{PREFIX}/login", 303))
        response.delete_cookie(self.cookie, path="/", secure=self.settings.tls, httponly=True, samesite="strict")
        return response

    # --- pages -------------------------------------------------------------------------------------

    async def overview(self, request: Request, session: accounts.Session) -> Response:
        stale_days = self._int(request, "stale_days", 7, 1, 3650)
        data = await self._db(lambda conn: self.recent.get(("overview", stale_days), conn,
                                                           partial(self._overview, stale_days=stale_days)))
        return self.render("overview.html", session=session, stale_days=stale_days, cache_s=self.recent.keep_s,
                           **data)

    def _overview(self, conn: Connection, stale_days: int) -> dict[str, Any]:
        now = store.utcnow()
        counts, tags, stale, today = queries.device_counts(conn, now, stale_days)
        trend = self.days.trend(conn, now, today=today)
        workloads, findings = queries.latest_counts(conn)
        return {"counts": counts, "total": sum(counts.values()), "trend": trend, "counted_at": now,
                "counting": [r["day"] for r in trend[:-1] if r["counting"]],
                "trend_chart": charts.stacked_bars(trend, queries.VERDICTS),
                "workloads": workloads, "tags": tags, "stale": stale, "findings": findings,
                "health": service_health.overview(conn, now, trend, workloads)}

    def _filters(self, request: Request) -> Filters:
        q = request.query_params
        tag = _TAG.match(q.get("tag", ""))
        workload, _, status = q.get("workload", "").partition("=")
        stale = q.get("stale_days", "")
        return Filters(verdict=q.get("verdict") or None, tag=(tag.group(1), tag.group(2)) if tag else None,
                       finding=q.get("finding") or None, workload=(workload, status) if status else None,
                       stale_days=int(stale) if stale.isdigit() and 0 < int(stale) < 100000 else None,
                       name=q.get("name") or None, revoked=q.get("revoked") == "1")

    async def devices(self, request: Request, session: accounts.Session) -> Response:
        f = self._filters(request)
        exported = self._stream(request, "devices", queries.devices_listing(f, store.utcnow()))
        if exported is not None:
            return exported
        result = await self._db(queries.devices_page, f, store.utcnow(), self._page_no(request))
        return self.render("devices.html", session=session, result=result, f=f, q=request.query_params,
                           links=self._links(request, result))

    async def device(self, request: Request, session: accounts.Session) -> Response:
        device_id = request.path_params["device_id"]
        found = await self._db(self._device, device_id, self._page_no(request))
        if found is None:
            return self.render("error.html", 404, message="No such device.", session=session)
        exported = self._stream(request, "history", queries.history_listing(device_id))
        if exported is not None:
            return exported
        info, history = found
        marks = await self._db(service_health.device_marks, device_id)
        return self.render("device.html", session=session, d=info, history=history, marks=marks,
                           links=self._links(request, history), report=request.query_params.get("report"))

    def _device(self, conn: Connection, device_id: str, page: int) -> tuple[Any, Page] | None:
        info = queries.device(conn, device_id)
        if info is None:
            return None
        return info, queries.history_page(conn, device_id, page)

    async def device_report(self, request: Request, session: accounts.Session) -> Response:
        """The report as the employee sees it (``render_html``), for the device page's sandboxed frame."""
        raw = request.query_params.get("report", "")
        pk = int(raw) if raw.isdigit() else None
        report = await self._db(queries.report_body, request.path_params["device_id"], pk)
        if report is None:
            return self._headers(HTMLResponse("<p>No report stored.</p>", 404), _REPORT_CSP)
        html = await anyio.to_thread.run_sync(render_html, report)
        return self._headers(HTMLResponse(html), _REPORT_CSP)

    async def sweeps(self, request: Request, session: accounts.Session, *, error: str | None = None,
                     status: int = 200) -> Response:
        exported = self._stream(request, "sweeps", queries.sweeps_listing())
        if exported is not None:
            return exported
        result = await self._db(queries.sweeps_page, self._page_no(request))
        sites = await self._db(queries.known_sites) if session.user.admin else []
        return self.render("sweeps.html", status, session=session, result=result, sites=sites,
                           links=self._links(request, result), error=error)

    async def sweep_create(self, request: Request, session: accounts.Session) -> Response:
        form: FormData = request.state.form
        tag_text = str(form.get("tag", "")).strip()
        site = str(form.get("site", "")).strip()
        tag = _TAG.match(f"site={site}" if site else tag_text)
        lifetime = _DURATION.match(str(form.get("expires", "")).strip())
        error = None
        if site and tag_text:
            error = "choose a site or a tag, not both"
        elif (site or tag_text) and tag is None:
            error = f"{site!r} is not a site name" if site else f"{tag_text!r} is not a tag such as site=paris"
        elif lifetime is None or int(lifetime.group(1)) == 0:
            error = "the expiry must be a number of hours or days, such as 48h or 7d"
        if error is not None:
            return await self.sweeps(request, session, error=error, status=400)
        assert lifetime is not None
        hours = int(lifetime.group(1)) * (24 if lifetime.group(2) == "d" else 1)
        note = str(form.get("note", "")).strip()[:255] or None
        created = await self._db(partial(store.create_sweep, thorough=form.get("thorough") == "1",
                                         tag=(tag.group(1), tag.group(2)) if tag else None, note=note),
                                 store.utcnow(), dt.timedelta(hours=hours))
        return self._headers(RedirectResponse(f"{PREFIX}/sweeps/{created['id']}", 303))

    async def sweep(self, request: Request, session: accounts.Session) -> Response:
        view = "answered" if request.query_params.get("show") == "answered" else "missing"
        if request.query_params.get("format") in ("csv", "json"):
            sw = await self._db(queries.sweep, request.path_params["sweep_id"])
            if sw is not None:
                listing = queries.sweep_devices_listing(sw, view == "answered", store.utcnow())
                exported = self._stream(request, f"sweep-{view}", listing)
                assert exported is not None
                return exported
        found = await self._db(self._sweep, request.path_params["sweep_id"], view == "answered",
                               request.query_params.get("after") or None)
        if found is None:
            return self.render("error.html", 404, message="No such sweep.", session=session)
        return self.render("sweep.html", session=session, view=view,
                           links=self._links(request, found["devices"], after="device_id"), **found)

    def _sweep(self, conn: Connection, sweep_id: str, answered: bool, after: str | None) -> dict[str, Any] | None:
        sw = queries.sweep(conn, sweep_id)
        if sw is None:
            return None
        now = store.utcnow()

        def counts(conn: Connection) -> dict[str, Any]:
            at = store.utcnow()
            answered, workloads, timeline = queries.sweep_answers(conn, sw, at)
            coverage = queries.sweep_coverage(conn, sw, at, answered)
            return {"coverage": coverage, "workloads": workloads, "counted_at": at,
                    "chart": charts.line(timeline, max(1, coverage["targeted"]))}

        return {"sw": sw, **self.recent.get(("sweep", sw.id), conn, counts),
                "devices": queries.sweep_devices_page(conn, sw, answered, now, after)}

    async def admin(self, request: Request, session: accounts.Session, *, shown: str | None = None,
                    error: str | None = None, status: int = 200) -> Response:
        data = await self._db(self._admin)
        return self.render("admin.html", status, session=session, shown=shown, error=error,
                           policy_keys=store.POLICY_KEYS, **data)

    def _admin(self, conn: Connection) -> dict[str, Any]:
        now = store.utcnow()
        current = store.get_policy(conn)
        return {"secrets": queries.secrets_page(conn, 1, 500).rows,
                "policy": json.dumps({k: v for k, v in current.items() if k != "site_profiles"}, indent=2,
                                     sort_keys=True),
                "profiles": [{"name": p.get("name", ""), "json": json.dumps(p, indent=1, sort_keys=True)}
                             for p in current["site_profiles"]],
                "revoked": queries.devices_page(conn, Filters(revoked=True), now, 1, 500).rows}

    async def admin_site_profile(self, request: Request, session: accounts.Session) -> Response:
        """Add a site profile, replace one (``original``: the name it had), or remove one (``remove``);
        the whole list is then stored as ``admin policy set site_profiles`` stores it, so it is
        validated the same way (``fleet_policy.document_problem``: each profile, and the names they give)."""
        form: FormData = request.state.form
        original = str(form.get("original", ""))
        remove = form.get("remove") == "1"
        if remove:
            profile = None
        else:
            try:
                profile = json.loads(str(form.get("profile", "")))
            except ValueError as exc:
                return await self.admin(request, session, error=f"the site profile is not JSON: {exc}", status=400)

        def change(conn: Connection) -> None:
            profiles = store.get_policy(conn)["site_profiles"]
            store.set_policy(conn, "site_profiles", json.dumps(_profiles_with(profiles, original, profile)),
                             store.utcnow())

        try:
            await self._db(change)
        except ConfigError as exc:
            return await self.admin(request, session, error=str(exc), status=400)
        return self._headers(RedirectResponse(f"{PREFIX}/admin#site-profiles", 303))

    async def admin_secret(self, request: Request, session: accounts.Session) -> Response:
        form: FormData = request.state.form
        site = str(form.get("site", "")).strip() or None
        if site is not None and _TAG.match(f"site={site}") is None:
            return await self.admin(request, session, error=f"{site!r} is not a site name", status=400)
        note = str(form.get("note", "")).strip()[:255] or None
        _, value = await self._db(partial(store.create_secret, site=site, note=note), store.utcnow())
        return await self.admin(request, session, shown=value)

    async def admin_revoke_secret(self, request: Request, session: accounts.Session) -> Response:
        await self._db(store.revoke_secret, str(request.state.form.get("id", "")), store.utcnow())
        return self._headers(RedirectResponse(f"{PREFIX}/admin", 303))

    async def admin_policy(self, request: Request, session: accounts.Session) -> Response:
        form: FormData = request.state.form
        try:
            await self._db(store.set_policy, str(form.get("key", "")), str(form.get("value", "")), store.utcnow())
        except ConfigError as exc:
            return await self.admin(request, session, error=str(exc), status=400)
        return self._headers(RedirectResponse(f"{PREFIX}/admin", 303))

    async def admin_readmit(self, request: Request, session: accounts.Session) -> Response:
        await self._db(store.readmit_device, str(request.state.form.get("device_id", "")))
        return self._headers(RedirectResponse(f"{PREFIX}/admin", 303))

    async def endpoint_data(self, request: Request, session: accounts.Session) -> Response:
        def count(conn: Connection) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
            fleet = queries.catalog_versions(conn)  # a fleet-wide count, and a diff per version
            return fleet, endpoints.changes(fleet)

        fleet, rows = await self._db(lambda conn: self.recent.get(("endpoints",), conn, count))
        exported = self._export(request, "endpoint-versions", ("instance", "version", "devices"), lambda: [fleet])
        if exported is not None:
            return exported
        return self.render("endpoints.html", session=session, rows=rows)

    def routes(self) -> Mount:
        p = self.page
        return Mount(PREFIX, routes=[
            Route("/", p(self.overview), methods=["GET"]),
            Route("/login", self.login_form, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            *(self.entra.routes() if self.entra is not None else []),
            Route("/logout", p(self.logout), methods=["POST"]),
            Route("/devices", p(self.devices), methods=["GET"]),
            Route("/devices/{device_id}", p(self.device), methods=["GET"]),
            Route("/devices/{device_id}/report", p(self.device_report), methods=["GET"]),
            Route("/sweeps", p(self.sweeps), methods=["GET"]),
            Route("/sweeps", p(self.sweep_create, admin=True), methods=["POST"]),
            Route("/sweeps/{sweep_id}", p(self.sweep), methods=["GET"]),
            *self.site_pages.routes(),  # web/sites.py: blast radius, what-if
            Route("/endpoints", p(self.endpoint_data), methods=["GET"]),
            Route("/admin", p(self.admin), methods=["GET"]),
            Route("/admin/secrets", p(self.admin_secret, admin=True), methods=["POST"]),
            Route("/admin/secrets/revoke", p(self.admin_revoke_secret, admin=True), methods=["POST"]),
            Route("/admin/policy", p(self.admin_policy, admin=True), methods=["POST"]),
            Route("/admin/readmit", p(self.admin_readmit, admin=True), methods=["POST"]),
            Route("/admin/site-profiles", p(self.admin_site_profile, admin=True), methods=["POST"]),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ])


def _profiles_with(profiles: list[Any], original: str, profile: Any) -> list[Any]:
    """The policy's site profiles with the one named ``original`` replaced by ``profile`` (removed
    when ``profile`` is None; ``profile`` added at the end when no profile is named ``original``)."""
    def named(p: Any) -> bool:
        return isinstance(p, dict) and str(p.get("name", "")).casefold() == original.casefold() != ""

    out = [profile if named(p) else p for p in profiles if profile is not None or not named(p)]
    if profile is not None and not any(named(p) for p in profiles):
        out.append(profile)
    return out


def _csv_lines(columns: Sequence[str], batches: Iterable[list[dict[str, Any]]]) -> Iterator[str]:
    yield table_csv(columns, [])
    for rows in batches:
        yield table_csv(columns, [_iso_values(r) for r in rows], header=False)


def _iso_values(row: dict[str, Any]) -> dict[str, Any]:
    return {k: store.iso(v) if isinstance(v, dt.datetime) else v for k, v in row.items()}


def _json_lines(name: str, batches: Iterable[list[dict[str, Any]]]) -> Iterator[str]:
    """``{"<name>": [row, ...]}``, a row a line; a batch a chunk (a chunk per row cost the response
    one send per row: 10,000 devices on SQLite took 2.6 s as JSON, against 0.5 s as CSV)."""
    yield "{" + json.dumps(name) + ": ["
    first = True
    for rows in batches:
        if rows:
            yield ("\n" if first else ",\n") + ",\n".join(
                json.dumps(r, default=_json_default, ensure_ascii=False) for r in rows)
            first = False
    yield "\n]}\n"


def _safe_next(value: str | None) -> str:
    """Where to go after signing in: a dashboard path only (never another site)."""
    if value and value.startswith(PREFIX + "/") and not value.startswith("//") and "\\" not in value:
        return value
    return PREFIX + "/"


def dashboard(settings: Settings, engine: Engine) -> Dashboard:
    """The dashboard, for ``create_app``: its ``routes()`` are mounted, its ``warm()`` runs at start-up."""
    return Dashboard(settings, engine)

