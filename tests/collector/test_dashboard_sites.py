"""The Sites pages over HTTP on a real collector (SQLite and PostgreSQL): each site's blast radius from
several-site reports (tests/test_sites.py's, made by the real report code), the what-if, the devices
behind a number, the systems no profile claims, and hostile site names."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from netcheck.collector.db import make_engine
from netcheck.collector.web import sites
from tests.collector.conftest import Fleet, sample_report, sql, upload
from tests.collector.dashboard import add_user, admin_cli, sign_in
from tests.collector.harness import CollectorProcess
from tests.test_sites import two_site_report

HOSTILE = '<script>window.pwned=1</script><img src=/x onerror="x()">&"\''
UNNAMED_SITE = {"name": "unnamed site", "told": False, "networks": ["10.40.0.8/32"],
                "systems": [{"kind": "proxy", "name": "10.40.0.8:3128"}]}


def report(rename: str | None = None, unnamed: bool = False) -> dict[str, Any]:
    """The two-site report (Paris, Dublin DC) as the collector stores it, Dublin DC renamed if asked."""
    text = json.dumps(two_site_report())
    if rename is not None:
        text = text.replace('"Dublin DC"', json.dumps(rename))
    data: dict[str, Any] = json.loads(text)
    if unnamed:
        data["outage"]["sites"].append(UNNAMED_SITE)
    return data


@pytest.fixture
def client() -> Iterator[list[httpx.Client]]:
    opened: list[httpx.Client] = []
    yield opened
    for c in opened:
        c.close()


def signed_in(proc: CollectorProcess, opened: list[httpx.Client]) -> httpx.Client:
    c, _ = sign_in(proc.url, *add_user(proc.database_url, "read-only"))
    opened.append(c)
    return c


def cells(html: str) -> list[str]:
    return [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", html, re.S)]


def test_blast_radius_what_if_and_the_devices_behind_a_number(
        start_collector: Callable[..., CollectorProcess], fleet_factory: Callable[[CollectorProcess], Fleet],
        client: list[httpx.Client]) -> None:
    proc = start_collector()
    fleet = fleet_factory(proc)
    two = [fleet.enroll(name=f"laptop-{i}") for i in range(3)]
    for i, d in enumerate(two):
        assert fleet.post(d, upload(report(unnamed=i == 0))).status_code == 200
    old = fleet.enroll(name="old-agent")
    assert fleet.post(old, upload(sample_report())).status_code == 200  # schema v1: no facts
    # ingest kept the facts: each device's latest state points at its digest, each distinct set once
    assert [tuple(r) for r in sql(proc.database_url, "SELECT count(*), count(facts_digest), "
                                                     "count(DISTINCT facts_digest) FROM device_states")] == [(4, 3, 2)]
    assert sql(proc.database_url, "SELECT count(*) FROM site_fact_sets")[0][0] == 2
    ui = signed_in(proc, client)

    page = ui.get("/ui/sites")
    assert page.status_code == 200
    assert "3 devices with prediction facts; 1 whose latest report has none" in page.text
    row = cells(page.text.split('href="/ui/sites/whatif?down=Paris"', 1)[1])[:5]
    # Paris: known to 3, all 3 lose sign-in (the VPN goes through Paris) in both VPN behaviours;
    # Exchange is impaired now whatever the site, so it is not Paris's loss
    assert row == ["yes", "3", "3", "3", "Sign-in: 3 / 3"], row
    assert "10.40.0.8:3128" in page.text and "10.40.0.8/32" in page.text  # the system no profile claims

    whatif = ui.get("/ui/sites/whatif", params=[("down", "Dublin DC")])
    assert whatif.status_code == 200
    assert "3 would lose something if the VPN tunnel stays" in " ".join(whatif.text.split())
    assert "sign_in_server" in whatif.text and "password hash sync" in whatif.text  # the remedy, by kind
    both = ui.get("/ui/sites/whatif", params=[("down", "Paris"), ("down", "Dublin DC")])
    assert "What if Dublin DC and Paris went down?" in both.text
    assert ui.get("/ui/sites/whatif", params={"down": "Atlantis"}).status_code == 400

    listed = ui.get("/ui/sites/devices", params=[("down", "Paris"), ("workload", "identity"),
                                                 ("kind", "vpn_tunnel"), ("format", "json")]).json()
    assert sorted(d["device_id"] for d in listed["site-devices"]) == sorted(d.device_id for d in two)
    none = ui.get("/ui/sites/devices", params=[("down", "Paris"), ("workload", "exchange"), ("format", "json")])
    assert none.json()["site-devices"] == []  # impaired already, not by Paris
    for behind in ([("kind", "measured_now")], [("fate", "degraded"), ("behaviour", "drops")]):
        got = ui.get("/ui/sites/devices", params=[("down", "Paris"), ("workload", "exchange"), *behind,
                                                  ("format", "json")]).json()["site-devices"]
        assert len(got) == 3, behind  # but the what-if's numbers of it link to its devices

    # a report that arrives late (an older seq, from a spool) leaves the device's facts alone
    assert fleet.post(two[1], upload(sample_report(), seq=0)).status_code == 200
    assert "3 devices with prediction facts; 1 whose latest report has none" in ui.get("/ui/sites").text

    # a site only the policy's profiles name is listed too
    done = admin_cli(proc.database_url, "policy", "set", "site_profiles",
                     json.dumps([{"name": "Lyon", "networks": ["10.50.0.0/16"]}]))
    assert done.returncode == 0, done.stderr
    lyon = ui.get("/ui/sites").text.split('href="/ui/sites/whatif?down=Lyon"', 1)[1]
    assert cells(lyon)[:5] == ["yes", "0", "0", "0", "nothing"]

    # a new latest report replaces the device's facts
    assert fleet.post(two[0], upload(sample_report(), seq=2)).status_code == 200
    assert "2 devices with prediction facts; 2 whose latest report has none" in ui.get("/ui/sites").text
    assert "10.40.0.8:3128" not in ui.get("/ui/sites").text
    # retention's prune forgets the sets of facts no device uses any more
    from netcheck.collector import store
    from netcheck.collector.db import make_engine

    engine = make_engine(proc.database_url, pool_size=1)
    try:
        store.prune_all(engine, dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
    finally:
        engine.dispose()
    assert sql(proc.database_url, "SELECT count(*) FROM site_fact_sets")[0][0] == 1


def test_hostile_site_names_are_text(fleet: Fleet, client: list[httpx.Client]) -> None:
    device = fleet.enroll()
    assert fleet.post(device, upload(report(rename=HOSTILE))).status_code == 200
    ui = signed_in(fleet.collector, client)
    for got in (ui.get("/ui/sites"), ui.get("/ui/sites/whatif", params={"down": HOSTILE}),
                ui.get("/ui/sites/devices", params={"down": HOSTILE, "workload": "identity"})):
        assert got.status_code == 200, got.text[:500]
        assert "<script>window.pwned" not in got.text and "<img src=/x" not in got.text
        assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in got.text


def test_a_new_worker_reads_the_kept_predictions_and_lost_fact_sets_are_made_again(
        start_collector: Callable[..., CollectorProcess], fleet_factory: Callable[[CollectorProcess], Fleet],
        client: list[httpx.Client]) -> None:
    """The Sites page keeps each ``what_if`` answer in ``site_predictions`` under a digest of its
    inputs; a new worker process (here a new ``Sites``) reads it instead of computing it. A set of
    facts lost from ``site_fact_sets`` is made again from a report that has it."""
    proc = start_collector()
    fleet = fleet_factory(proc)
    for d in [fleet.enroll(name=f"laptop-{i}") for i in range(2)]:
        assert fleet.post(d, upload(report())).status_code == 200
    assert signed_in(proc, client).get("/ui/sites").status_code == 200
    digest = sql(proc.database_url, "SELECT DISTINCT facts_digest FROM device_states")[0][0]
    # one fact set, with every site up and each known site down alone
    kept = {r[0] for r in sql(proc.database_url, "SELECT key FROM site_predictions")}
    downs = [frozenset(), frozenset({"Paris"}), frozenset({"Dublin DC"})]
    assert kept == {sites.prediction_key(digest, d) for d in downs}
    assert len({sites.prediction_key(digest, d) for d in [*downs, frozenset({"Paris", "Dublin DC"})]}) == 4
    # what a new worker reads is what was kept: mark the kept answer for Paris down, then read it
    paris = sites.prediction_key(digest, frozenset({"Paris"}))
    sql(proc.database_url, "UPDATE site_predictions SET body = :b WHERE key = :k",
        b=json.dumps([{"id": "marked", "stays": "works", "drops": "works", "causes": []}]), k=paris)
    engine = make_engine(proc.database_url, pool_size=1, max_overflow=0)
    try:
        fresh = sites.Sites()
        with engine.begin() as conn:
            fleet_now = fresh.fleet(conn)
            fresh.prepare(conn, fleet_now, downs, dt.datetime.now(dt.UTC))
        (one,) = fleet_now.sets
        assert [r["id"] for r in fresh.predict(one, frozenset({"Paris"}))] == ["marked"]
        assert "identity" in [r["id"] for r in fresh.predict(one, frozenset({"Dublin DC"}))]
        # the kept sets of facts make themselves again from the reports when they are lost
        sql(proc.database_url, "DELETE FROM site_fact_sets")
        with engine.begin() as conn:
            assert [s.digest for s in sites.Sites().fleet(conn).sets] == [digest]
        assert [r[0] for r in sql(proc.database_url, "SELECT digest FROM site_fact_sets")] == [digest]
    finally:
        engine.dispose()
    # a what-if not asked before is computed and kept
    assert signed_in(proc, client).get("/ui/sites/whatif", params=[("down", "Paris"), ("down", "Dublin DC")]
                                       ).status_code == 200
    assert sql(proc.database_url, "SELECT count(*) FROM site_predictions")[0][0] == 4


def test_a_collector_makes_the_sites_predictions_ahead_of_the_first_view(
        start_collector: Callable[..., CollectorProcess], fleet_factory: Callable[[CollectorProcess], Fleet]) -> None:
    """After start-up, in the background, a collector makes and keeps what the Sites page shows first
    (each set of facts with no site down and with each site down alone), so that page's first view,
    after an upgrade of the prediction's code too, reads them: none is made by a view here."""
    first = start_collector()
    fleet = fleet_factory(first)
    for d in [fleet.enroll(name=f"laptop-{i}") for i in range(2)]:
        assert fleet.post(d, upload(report())).status_code == 200
    first.stop()
    sql(first.database_url, "DELETE FROM site_predictions")  # as after an upgrade: none has its key
    start_collector(database_url=first.database_url)
    digest = sql(first.database_url, "SELECT DISTINCT facts_digest FROM device_states")[0][0]
    wanted = {sites.prediction_key(digest, d) for d in (frozenset(), frozenset({"Paris"}), frozenset({"Dublin DC"}))}
    deadline = time.monotonic() + 30
    while {r[0] for r in sql(first.database_url, "SELECT key FROM site_predictions")} != wanted:
        assert time.monotonic() < deadline, "the predictions were not made ahead"
        time.sleep(0.1)


def test_the_prediction_digest_covers_every_module_the_prediction_imports() -> None:
    """The kept predictions' key digests the prediction code's source. The modules are found by reading
    the imports from ``what_if`` on (no list kept by hand): every ``netcheck`` module that importing it
    loads, in a fresh interpreter, must be among them, or a change to that module would serve stale
    predictions."""
    import subprocess
    import sys

    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, netcheck.assess.what_if; "
         "print('\\n'.join(m for m in sys.modules if m.partition('.')[0] == 'netcheck'))"],
        capture_output=True, text=True, check=True).stdout.split()
    found = sites.prediction_modules()
    assert "netcheck.assess.what_if" in found and "netcheck.assess.outage" in found
    assert set(loaded) <= set(found), sorted(set(loaded) - set(found))
    # another entry: this module's imports reach the collector's own modules
    assert "netcheck.collector.site_facts" in sites.prediction_modules("netcheck.collector.web.sites")


def test_the_dashboard_warms_at_start_up(tmp_path: Any) -> None:
    """``Dashboard.warm`` (run by the app's start-up, before a process takes requests) compiles every
    page template, so a first view does not pay for it and a broken template stops the start, not a
    user's view."""
    import jinja2

    from netcheck.collector.settings import Settings
    from netcheck.collector.web import views

    ui = views.dashboard(Settings(database_url=f"sqlite:///{tmp_path}/unused.db"),
                         make_engine(f"sqlite:///{tmp_path}/unused.db"))
    ui.warm()
    pages = [n for n in ui.env.list_templates() if n.endswith(".html")]
    assert "sites.html" in pages and len(ui.env.cache or {}) >= len(pages)
    (tmp_path / "broken.html").write_text("{% if %}")
    ui.env.loader = jinja2.FileSystemLoader(tmp_path)
    with pytest.raises(jinja2.TemplateSyntaxError):
        ui.warm()
