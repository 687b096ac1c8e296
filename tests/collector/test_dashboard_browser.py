"""The dashboard end to end in Debian's headless Chromium, driven by Playwright (``tests.browser``):
sign in, start a sweep, let real agents (enrollment, sweep polling, spool, uploader; the
measurement itself is injected) answer against the real collector, watch coverage move, export
CSV, sign out. A hostile report renders as text (no element it carries reaches the DOM). Every
request the browser makes goes to the collector on loopback. Screenshots of each main page (the
sites and a what-if included) go to
``build/screenshots/`` (``NETCHECK_SCREENSHOTS`` overrides): CI keeps them as artefacts.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from netcheck.agent.loop import CheckRequest, build_agent, run_once
from netcheck.agent.schedule import Schedule
from tests.agent.conftest import Rig, make_rig
from tests.agent.helpers import fake_report
from tests.browser import INSTALL_HINT, Browser, find_chromium
from tests.collector.conftest import Fleet, upload
from tests.collector.dashboard import PAYLOAD, add_user, hostile_report
from tests.collector.harness import CollectorProcess

pytestmark = pytest.mark.chromium
SHOTS = Path(os.environ.get("NETCHECK_SCREENSHOTS") or Path(__file__).resolve().parents[2] / "build" / "screenshots")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    binary = find_chromium()
    if binary is None:
        pytest.skip(INSTALL_HINT)
    with Browser(binary, direct_loopback=True) as chromium:
        yield chromium


@pytest.fixture
def page(browser: Browser) -> Iterator[Any]:
    page = browser.new_page()
    page.on("dialog", lambda d: pytest.fail(f"a dialog opened: {d.message}"))
    yield page
    page.context.close()
    # Chromium's own background requests (update checks) went to the loopback recorder, not out;
    # the tests check the page's requests (``requests_seen``): all to the collector


def _shot(page: Any, backend: str, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{backend}-{name}.png"), full_page=True)


def _sign_in(page: Any, url: str, name: str, password: str) -> None:
    page.goto(f"{url}/ui/")
    assert "/ui/login" in page.url
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{url}/ui/")


def _agent(rig: Rig, verdict: str) -> Callable[[], int]:
    def check(request: CheckRequest) -> dict[str, Any]:
        if verdict == "READY":
            return fake_report(verdict="READY", exit_code=0, findings=[])
        return fake_report()

    agent = build_agent(run_check=check, spool=rig.spool, client=rig.client, uploader=rig.uploader,
                        schedule=Schedule())
    return lambda: run_once(agent, upload_deadline_s=30).upload.stored


def _numbers(page: Any) -> dict[str, int]:
    return {k: int(page.inner_text(f"#{k}").replace(",", "")) for k in ("answered", "pending", "offline", "targeted")}


def test_sign_in_sweep_agents_answer_export_sign_out(page: Any, backend: str, tmp_path: Path,
                                                     start_collector: Callable[..., CollectorProcess],
                                                     fleet_factory: Callable[[CollectorProcess], Fleet]) -> None:
    proc = start_collector()
    fleet = fleet_factory(proc)
    rigs = [make_rig(tmp_path / f"agent{i}", proc.url, fleet.secret) for i in range(4)]
    agents = [_agent(rig, "READY" if i % 2 else "AT_RISK") for i, rig in enumerate(rigs)]
    try:
        assert [run() for run in agents] == [1, 1, 1, 1]  # the scheduled check of each
        name, password = add_user(proc.database_url, "admin")
        _sign_in(page, proc.url, name, password)
        assert page.inner_text(".card.v-READY .n") == "2" and page.inner_text(".card.v-AT_RISK .n") == "2"
        _shot(page, backend, "overview")

        page.click("text=Sweeps")
        page.fill("input[name=note]", "before the storm")
        page.fill("input[name=expires]", "2h")
        page.click("text=Start sweep")
        page.wait_for_url("**/ui/sweeps/*")
        sweep_url = page.url
        assert _numbers(page) == {"answered": 0, "pending": 4, "offline": 0, "targeted": 4}
        _shot(page, backend, "sweep-started")

        assert agents[0]() == 2 and agents[1]() == 2  # the sweep's check and the scheduled one
        page.goto(sweep_url)
        assert _numbers(page) == {"answered": 2, "pending": 2, "offline": 0, "targeted": 4}
        _shot(page, backend, "sweep-in-progress")
        page.click("a[href='?show=answered']")
        assert page.locator("td:text-is('answered')").count() == 2

        assert agents[2]() == 2 and agents[3]() == 2
        page.goto(sweep_url)
        assert _numbers(page)["answered"] == 4
        with page.expect_download() as got:
            page.click("text=CSV")
        text = Path(got.value.path()).read_text("utf-8")
        assert text.splitlines()[0].startswith("device_id,name,state")

        page.click("text=Devices")
        with page.expect_download() as got:
            page.click("text=CSV")
        rows = list(csv.DictReader(io.StringIO(Path(got.value.path()).read_text("utf-8"))))
        assert len(rows) == 4 and {r["last_verdict"] for r in rows} == {"READY", "AT_RISK"}
        _shot(page, backend, "devices")
        page.locator("tbody a").first.click()
        page.wait_for_url("**/ui/devices/*")
        frame = page.frame_locator("iframe.report")
        assert frame.locator("body").inner_text()
        _shot(page, backend, "device")
        page.click("text=Administration")
        _shot(page, backend, "admin")

        page.click("text=Sign out")
        page.wait_for_url("**/ui/login")
        page.goto(sweep_url)
        assert "/ui/login" in page.url
        assert all(u.startswith(proc.url) for u in page.requests_seen), page.requests_seen
    finally:
        for rig in rigs:
            rig.client.close()


def test_hostile_report_renders_as_text(page: Any, backend: str, fleet: Fleet) -> None:
    device = fleet.enroll(name=PAYLOAD, tags={"dept": PAYLOAD[:100]})
    assert fleet.post(device, upload(hostile_report())).status_code == 200
    name, password = add_user(fleet.database_url, "read-only")
    _sign_in(page, fleet.collector.url, name, password)
    for path in ("/ui/", f"/ui/devices?name={PAYLOAD[:12]}", f"/ui/devices/{device.device_id}"):
        page.goto(fleet.collector.url + path)
        assert page.evaluate("window.pwned") is None
        assert page.locator("script").count() == 0
        assert page.locator("img").count() == 0
        assert PAYLOAD in page.inner_text("main")
    frame = page.frame_locator("iframe.report")
    assert "<script>window.pwned=1</script>" in frame.locator("body").inner_text()
    assert frame.locator("script, img").count() == 0
    _shot(page, backend, "hostile-device")
    assert all(u.startswith(fleet.collector.url) for u in page.requests_seen), page.requests_seen


def test_a_sites_blast_radius_and_a_what_if(page: Any, backend: str, tmp_path: Path,
                                            start_collector: Callable[..., CollectorProcess],
                                            fleet_factory: Callable[[CollectorProcess], Fleet]) -> None:
    """Real agents upload two-site reports (Paris, Dublin DC: tests/test_sites.py's, made by the real
    report code); IT opens Paris's blast radius, runs a what-if of both sites, follows a cause to
    its devices. A hostile site name stays text."""
    import uuid

    from tests.collector.test_dashboard_sites import HOSTILE, report

    proc = start_collector()
    fleet = fleet_factory(proc)
    rigs = [make_rig(tmp_path / f"agent{i}", proc.url, fleet.secret) for i in range(3)]

    def two_sites(i: int, rig: Rig) -> Callable[[], int]:
        def check(request: CheckRequest) -> dict[str, Any]:
            return {**report(unnamed=i == 0), "report_id": str(uuid.uuid4())}

        agent = build_agent(run_check=check, spool=rig.spool, client=rig.client, uploader=rig.uploader,
                            schedule=Schedule())
        return lambda: run_once(agent, upload_deadline_s=30).upload.stored

    agents = [two_sites(i, rig) for i, rig in enumerate(rigs)]
    try:
        assert [run() for run in agents] == [1, 1, 1]
        assert fleet.post(fleet.enroll(), upload(report(rename=HOSTILE))).status_code == 200
        name, password = add_user(proc.database_url, "read-only")
        _sign_in(page, proc.url, name, password)
        page.click("header >> text=Sites")
        page.wait_for_url("**/ui/sites")
        assert "4 devices with prediction facts" in page.inner_text("main")
        assert HOSTILE in page.inner_text("main") and page.evaluate("window.pwned") is None
        assert page.locator("script, img").count() == 0
        assert "10.40.0.8:3128" in page.inner_text("main")  # the system no profile claims
        _shot(page, backend, "sites")

        page.click("table.sites >> text=Paris")  # Paris's blast radius
        page.wait_for_url("**/ui/sites/whatif?down=Paris")
        assert "What if Paris went down?" in page.inner_text("h1")
        assert "Sign-in (identity)" in page.inner_text("table.whatif-result")

        page.check("input[value='Dublin DC']")
        page.click("text=Predict")
        page.wait_for_url("**/ui/sites/whatif?*")
        assert "down=Paris" in page.url and "down=Dublin+DC" in page.url  # a link for a ticket
        assert page.inner_text("h1") == "What if Dublin DC and Paris went down?"
        assert "sign_in_server" in page.inner_text("main") and "password hash sync" in page.inner_text("main")
        _shot(page, backend, "whatif")

        page.locator("a[href*='kind=sign_in_server']").first.click()
        page.wait_for_url("**/ui/sites/devices?*")
        assert page.locator("tbody tr").count() == 3
        assert all(u.startswith(proc.url) for u in page.requests_seen), page.requests_seen
    finally:
        for rig in rigs:
            rig.client.close()


def test_a_microsoft_incident_beside_the_fleets_failures(page: Any, backend: str, fleet: Fleet) -> None:
    """An Exchange incident as the poller stores it (``health.store_snapshot``, Graph's JSON parsed by
    the real parser) while devices fail Exchange: the overview and the device page name it, the
    timeline draws it. The Graph round trip itself is tests/agent/test_service_health_flow.py's."""
    import datetime as dt

    from netcheck.collector import health, store
    from netcheck.collector.db import make_engine
    from tests.collector.conftest import sample_report
    from tests.graph_double import issue

    start = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M:00Z")
    engine = make_engine(fleet.database_url, pool_size=1)
    try:
        with engine.begin() as conn:
            found = health.parse_issue(issue(f"EX{fleet.secret_id[-6:].upper()}", "Exchange Online",
                                             "Users can't access email", start=start,
                                             status="serviceInterruption"))
            health.store_snapshot(conn, health.Snapshot((), (found,)), store.utcnow())
    finally:
        engine.dispose()
    failing = sample_report()
    failing["workloads"][0]["status"] = "failed"
    failing["measured_at"] = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    device = fleet.enroll()
    assert fleet.post(device, upload(failing)).status_code == 200
    name, password = add_user(fleet.database_url, "read-only")
    _sign_in(page, fleet.collector.url, name, password)
    marked = f"Exchange Online: Microsoft incident {found.id} active"
    assert marked in page.inner_text("main")
    assert page.locator(f"svg text:text-is('{found.id} Exchange Online')").count() == 1
    _shot(page, backend, "overview-incident")
    page.goto(f"{fleet.collector.url}/ui/devices/{device.device_id}")
    assert marked in page.inner_text(".incidents")


def test_site_profiles_and_a_sweep_by_site(page: Any, backend: str, fleet: Fleet) -> None:
    site = f"lyon{fleet.secret_id[-6:]}"
    fleet.enroll(tags={"site": site})
    name, password = add_user(fleet.database_url, "admin")
    _sign_in(page, fleet.collector.url, name, password)
    page.click("text=Administration")
    page.fill("form.profile textarea[name=profile] >> nth=-1",
              '{"name": "Lyon", "networks": ["10.69.0.0/16"], "vpn_exclude": ["Optimize"]}')
    page.click("text=Add site profile")
    assert "vpn_exclude needs vpn_mode" in page.inner_text(".error")  # refused as `admin policy set` refuses it
    page.fill("form.profile textarea[name=profile] >> nth=-1",
              '{"name": "Lyon", "networks": ["10.69.0.0/16"], "vpn_mode": "split", "vpn_exclude": ["Optimize"]}')
    page.click("text=Add site profile")
    page.wait_for_url("**/ui/admin#site-profiles")
    assert page.locator("td:text-is('Lyon')").count() == 1
    _shot(page, backend, "admin-site-profiles")
    page.locator("tr:has(td:text-is('Lyon')) button:text-is('Remove')").click()
    page.wait_for_url("**/ui/admin#site-profiles")
    assert page.locator("td:text-is('Lyon')").count() == 0

    page.click("text=Sweeps")
    page.select_option("select[name=site]", site)
    page.fill("input[name=expires]", "2h")
    page.click("text=Start sweep")
    page.wait_for_url("**/ui/sweeps/*")
    assert f"site={site}" in page.inner_text("main")
    assert page.inner_text("#targeted") == "1"
