"""The dashboard under /ui/ over HTTP, on a real collector (SQLite and PostgreSQL): sign-in,
sessions, CSRF, roles, lock-out, the pages, exports, and a hostile report."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast

import httpx
import pytest
from sqlalchemy.engine import Connection

from netcheck.collector import store
from netcheck.collector.db import make_engine
from netcheck.collector.web import accounts, queries
from netcheck.m365.catalog import load_versions
from netcheck.m365.webservice import EndpointCache
from tests.collector.conftest import Fleet, sample_report, upload
from tests.collector.dashboard import PAYLOAD, add_user, admin_cli, csrf_of, hostile_report, sign_in
from tests.collector.harness import CollectorProcess

ENDPOINTS = Path(__file__).resolve().parents[2] / "endpoints"

PAGES = ("/ui/", "/ui/devices", "/ui/sweeps", "/ui/admin", "/ui/sites", "/ui/endpoints")


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    """Every HTTP client a test opens is closed after it."""
    yield
    for client in OPENED:
        client.close()
    OPENED.clear()


OPENED: list[httpx.Client] = []


def client_for(url: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=30.0)
    OPENED.append(client)
    return client


def signed_in(fleet: Fleet, role: str) -> tuple[httpx.Client, str]:
    client, token = sign_in(fleet.collector.url, *add_user(fleet.database_url, role))
    OPENED.append(client)
    return client, token


def test_pages_need_a_session_and_the_cookie_is_locked_down(fleet: Fleet) -> None:
    anonymous = client_for(fleet.collector.url)
    for path in PAGES:
        got = anonymous.get(path + "?verdict=READY")
        assert got.status_code == 303, path
        assert got.headers["location"].startswith("/ui/login?next=")
    assert anonymous.post("/ui/sweeps", data={"expires": "1h"}).status_code == 403
    name, password = add_user(fleet.database_url, "read-only")
    form = anonymous.get("/ui/login")
    assert "script-src" not in form.headers["content-security-policy"]  # no script at all
    assert form.headers["x-frame-options"] == "DENY"
    # the sign-in form's own CSRF token (double-submit cookie)
    forged = client_for(fleet.collector.url).post(
        "/ui/login", data={"csrf": "x", "name": name, "password": password})
    assert forged.status_code == 403
    done = anonymous.post("/ui/login", data={"csrf": csrf_of(form.text), "name": name, "password": password,
                                             "next": "https://evil.example/"})
    assert done.status_code == 303 and done.headers["location"] == "/ui/"  # never off-site
    cookie = next(v for k, v in done.headers.multi_items() if k == "set-cookie" and v.startswith("netcheck_ui="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie  # plain HTTP here
    for path in PAGES:
        assert anonymous.get(path).status_code == 200, path
    assert anonymous.post("/ui/logout", data={"csrf": csrf_of(anonymous.get("/ui/").text)}).status_code == 303
    assert anonymous.get("/ui/").status_code == 303


def test_csrf_and_roles_refuse_what_they_should(fleet: Fleet) -> None:
    reader, reader_csrf = signed_in(fleet, "read-only")
    admin, admin_csrf = signed_in(fleet, "admin")
    before = fleet.count("SELECT count(*) FROM sweeps")
    assert reader.post("/ui/sweeps", data={"csrf": reader_csrf, "expires": "1h"}).status_code == 403
    assert admin.post("/ui/sweeps", data={"expires": "1h"}).status_code == 403
    assert admin.post("/ui/sweeps", data={"csrf": reader_csrf, "expires": "1h"}).status_code == 403
    assert reader.post("/ui/admin/secrets", data={"csrf": reader_csrf}).status_code == 403
    assert reader.post("/ui/admin/policy", data={"csrf": reader_csrf, "key": "tenant", "value": "x"}).status_code == 403
    assert fleet.count("SELECT count(*) FROM sweeps") == before
    made = admin.post("/ui/sweeps", data={"csrf": admin_csrf, "expires": "1h", "tag": "site=nowhere"})
    assert made.status_code == 303
    assert fleet.count("SELECT count(*) FROM sweeps") == before + 1
    bad = admin.post("/ui/sweeps", data={"csrf": admin_csrf, "expires": "soon"})
    assert bad.status_code == 400 and "48h or 7d" in bad.text
    # the policy is validated as `admin policy set` validates it
    refused = admin.post("/ui/admin/policy", data={"csrf": admin_csrf, "key": "schedule.interval_s", "value": "-5"})
    assert refused.status_code == 400 and "invalid policy value" in refused.text
    secret = admin.post("/ui/admin/secrets", data={"csrf": admin_csrf, "site": "lyon", "note": "new office"})
    assert secret.status_code == 200 and 'id="new-secret">ncs_' in secret.text
    # a removed account's session ends at once
    reader_name = admin_cli(fleet.database_url, "user", "list", "--json")
    names = [u["name"] for u in json.loads(reader_name.stdout) if u["role"] == "read-only"]
    assert "password" not in reader_name.stdout and "argon2" not in reader_name.stdout
    for name in names:
        assert admin_cli(fleet.database_url, "user", "remove", name).returncode == 0
    assert reader.get("/ui/").status_code == 303


def test_repeated_failures_lock_the_account(fleet: Fleet) -> None:
    name, password = add_user(fleet.database_url, "admin")
    client = client_for(fleet.collector.url)

    def attempt(pw: str) -> int:
        token = csrf_of(client.get("/ui/login").text)
        return client.post("/ui/login", data={"csrf": token, "name": name, "password": pw}).status_code

    for _ in range(accounts.MAX_FAILURES):
        assert attempt("wrong password!") == 401
    assert attempt(password) == 401  # locked: even the right password
    assert fleet.count("SELECT count(*) FROM ui_users WHERE name = :n AND locked_until IS NOT NULL", n=name) == 1
    assert attempt("x") == 401  # an unknown name and a wrong password look the same
    short = admin_cli(fleet.database_url, "user", "add", "shorty", "--role", "admin", stdin="short\n")
    assert short.returncode == 4 and "too short" in short.stderr


def test_hostile_report_is_text_on_every_page_and_neutralised_in_exports(fleet: Fleet) -> None:
    device = fleet.enroll(name=PAYLOAD, tags={"site": PAYLOAD[:100]})
    assert fleet.post(device, upload(hostile_report())).status_code == 200
    client, _ = signed_in(fleet, "read-only")
    for path in (*PAGES, f"/ui/devices/{device.device_id}", f"/ui/devices/{device.device_id}/report",
                 f"/ui/devices?name={PAYLOAD[:20]}"):
        page = client.get(path)
        assert page.status_code == 200, path
        assert "<script>window.pwned" not in page.text and "<img src=/x" not in page.text, path
    overview = client.get("/ui/").text
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in overview  # the finding's title, as text
    report = client.get(f"/ui/devices/{device.device_id}/report")
    assert "sandbox" in report.headers["content-security-policy"]
    exported = client.get("/ui/devices", params={"name": PAYLOAD[:20], "format": "csv"})
    rows = [r for r in csv.DictReader(io.StringIO(exported.text)) if r["device_id"] == device.device_id]
    assert [r["name"] for r in rows] == ["'" + PAYLOAD]
    assert rows[0]["tags"] == f"site={PAYLOAD[:100]}"  # starts with "site=", no formula
    as_json = client.get("/ui/devices", params={"name": PAYLOAD[:20], "format": "json"}).json()
    mine = [d for d in as_json["devices"] if d["device_id"] == device.device_id]
    assert mine[0]["name"] == PAYLOAD  # JSON carries the value as it is


def test_overview_counts_findings_and_filters_deep_link(fleet: Fleet) -> None:
    tag = f"t{fleet.secret_id[-6:]}"
    devices = [fleet.enroll(tags={"dept": tag}) for _ in range(3)]
    for d in devices:
        assert fleet.post(d, upload(hostile_report())).status_code == 200
    client, _ = signed_in(fleet, "read-only")
    listed = client.get("/ui/devices", params={"tag": f"dept={tag}", "finding": "teams.udp_blocked",
                                               "verdict": "AT_RISK", "format": "json"}).json()
    assert sorted(d["device_id"] for d in listed["devices"]) == sorted(d.device_id for d in devices)
    failed = client.get("/ui/devices", params={"tag": f"dept={tag}", "workload": "exchange=failed",
                                               "format": "json"}).json()
    assert failed["devices"] == []
    page = client.get("/ui/devices", params={"tag": f"dept={tag}"}).text
    assert page.count('href="/ui/devices/') == 3
    history = client.get(f"/ui/devices/{devices[0].device_id}", params={"format": "csv"}).text
    assert history.splitlines()[0] == "received_at,measured_at,verdict,tool_version,sweep_id,report_id"


def test_endpoint_data_page_diffs_the_fleets_version_against_the_data_in_use(
        start_collector: Callable[..., CollectorProcess], fleet_factory: Callable[[CollectorProcess], Fleet],
        tmp_path: Path) -> None:
    # the collector's host ran `netcheck endpoints update`: its cache holds a newer version in which
    # Microsoft added a Teams media prefix (an Optimize change the VPN team must act on)
    data = json.loads((ENDPOINTS / "worldwide.json").read_text("utf-8"))
    teams = next(s for s in data if s["id"] == 11)
    teams["ips"].append("2603:1063:4000::/38")
    cache = tmp_path / "cache"
    EndpointCache(cache / "netcheck" / "endpoints").store(
        "Worldwide", json.dumps(data).encode(), "2026120100", dt.datetime.now(dt.UTC), "https://example.invalid/")
    proc = start_collector(env={"XDG_CACHE_HOME": str(cache)})
    fleet = fleet_factory(proc)
    bundled = load_versions(ENDPOINTS)["Worldwide"]
    made = []
    for version in (bundled, bundled, "2025010100"):
        report = sample_report(catalog={"instance": "Worldwide", "version": version, "source": "bundled"})
        made.append(fleet.enroll())
        assert fleet.post(made[-1], upload(report)).status_code == 200
    client, _ = signed_in(fleet, "read-only")
    page = client.get("/ui/endpoints")
    assert page.status_code == 200
    assert "2603:1063:4000::/38" in page.text  # the new Optimize prefix, from netcheck.m365.diff
    assert "does not hold version 2025010100" in page.text
    rows = client.get("/ui/endpoints", params={"format": "json"}).json()["endpoint-versions"]
    assert sorted((r["version"], r["devices"]) for r in rows) == [("2025010100", 1), (bundled, 2)]
    engine = make_engine(fleet.database_url, pool_size=1, max_overflow=0)
    try:
        with engine.begin() as conn:  # a revoked device no longer counts
            assert store.revoke_device(conn, made[0].device_id, dt.datetime.now(dt.UTC)) is not None
            counted = queries.catalog_versions(conn)
    finally:
        engine.dispose()
    assert sorted((r["version"], r["devices"]) for r in counted) == [("2025010100", 1), (bundled, 1)]


def test_recent_reuses_a_count_for_its_time_only() -> None:
    now = [100.0]
    recent = queries.Recent(10.0, clock=lambda: now[0])  # no connection: a stale count is made by the view
    made: list[int] = []
    no_conn = cast(Connection, None)

    def count(conn: Connection) -> int:
        made.append(1)
        return len(made)

    assert recent.get("k", no_conn, count) == 1
    now[0] += 9.9
    assert recent.get("k", no_conn, count) == 1
    assert recent.get("other", no_conn, count) == 2
    now[0] += 0.2
    assert recent.get("k", no_conn, count) == 3
    zero = queries.Recent(0.0)
    assert zero.get("k", no_conn, count) == 4 and zero.get("k", no_conn, count) == 5


def test_recent_serves_a_stale_count_at_once_while_a_thread_counts_afresh() -> None:
    now = [100.0]
    started, release = threading.Event(), threading.Event()
    connections: list[str] = []

    @contextmanager
    def connect() -> Iterator[Connection]:
        connections.append("background")
        yield cast(Connection, None)

    recent = queries.Recent(10.0, clock=lambda: now[0], connect=connect)
    values = iter(["first", "second"])

    def count(conn: Connection) -> str:
        if connections:  # the background recount
            started.set()
            release.wait(10)
        return next(values)

    no_conn = cast(Connection, None)
    assert recent.get("k", no_conn, count) == "first"
    now[0] += 15  # stale: still served at once, and one recount starts
    assert recent.get("k", no_conn, count) == "first"
    assert started.wait(10)
    assert recent.get("k", no_conn, count) == "first"  # the recount is still running: no second one
    release.set()
    for _ in range(200):
        if recent.get("k", no_conn, count) == "second":
            break
        time.sleep(0.05)
    assert recent.get("k", no_conn, count) == "second" and connections == ["background"]
    now[0] += 10 * queries.Recent.STALE_TIMES  # too old to show: the view counts (and the values ran out)
    with pytest.raises(StopIteration):
        recent.get("k", no_conn, count)
