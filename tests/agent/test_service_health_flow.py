"""Must show (issue 15): a simulated Exchange incident is published on a loopback Graph, the real
collector (``netcheck serve``) polls it, an enrolled agent whose Exchange check fails (its front
door refuses connections on loopback) gets the incident with its policy, and the agent's text,
HTML and JSON reports name it; the collector's store has the report, and the dashboard's overview
and the device's page (signed in over HTTP) name the incident beside the failure.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

import netcheck.check as check_module
from netcheck.agent.loop import build_agent, default_run_check, run_once
from netcheck.agent.schedule import Schedule
from netcheck.assess.report import Report
from netcheck.collector import health
from netcheck.collector.db import make_engine
from netcheck.collector.store import decode_report
from netcheck.deadline import Deadline
from netcheck.models import Category, ProbeResult, ProbeSpec, Target
from netcheck.platform import Interface
from netcheck.probes.tcp import probe_tcp
from netcheck.proxy.settings import ProxySettings
from netcheck.render.html import render_html
from netcheck.render.json import report_to_dict
from netcheck.render.text import render_text
from tests.agent.conftest import Real, Rig
from tests.agent.test_loop import _admin
from tests.collector.conftest import sql
from tests.collector.dashboard import add_user, sign_in
from tests.graph_double import CLIENT_ID, TENANT, GraphDouble, issue
from tests.servers import V4, closed_port


class _Laptop:
    """What perform_check asks of the platform: no proxy, one wired interface, no OneDrive."""

    def proxy_settings(self) -> ProxySettings:
        return ProxySettings(source="test")

    def interfaces(self) -> tuple[Interface, ...]:
        return (Interface("eth0", "physical", None, (), ("192.168.1.20/24",), True),)

    def onedrive_urls(self) -> tuple[str, ...]:
        return ()


@pytest.fixture
def graph(tmp_path: Path) -> Iterator[GraphDouble]:
    double = GraphDouble(trustme.CA()).start()
    double.ca.cert_pem.write_to_path(str(tmp_path / "graph-ca.pem"))
    (tmp_path / "graph-secret").write_text(double.secret, encoding="utf-8")
    yield double
    double.stop()


@pytest.fixture
def teams_front_door() -> Iterator[int]:
    """A listening loopback port: Teams answers; Exchange's port is closed."""
    sock = socket.socket()
    sock.bind((V4, 0))
    sock.listen(64)
    yield sock.getsockname()[1]
    sock.close()


def publish_exchange_incident(graph: GraphDouble) -> str:
    """An active Exchange incident (since 40 minutes ago) and a long-resolved Teams one on the Graph
    double; returns the line an agent's report names the Exchange one with."""
    start = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=40)).replace(second=0, microsecond=0)
    graph.issues = [issue("EX123456", "Exchange Online", "Users can't access email",
                          start=start.isoformat().replace("+00:00", "Z"), status="serviceInterruption"),
                    issue("TM000001", "Microsoft Teams", "Old chat delays", resolved=True, status="serviceRestored",
                          start="2026-11-01T09:00:00Z", end="2026-11-01T10:00:00Z")]
    # the report gives the time of day alone for an incident that began today (UTC), and the date
    # with it when it began on an earlier day (a run in the first 40 minutes after midnight)
    today = start.date() == dt.datetime.now(dt.UTC).date()
    since = f"{start:%H:%M} UTC" if today else f"{start.day} {start:%b} {start:%H:%M} UTC"
    return f"Exchange Online: incident EX123456, 'Users can't access email', since {since}"


def polling_collector(real: Callable[..., Real], graph: GraphDouble, tmp_path: Path) -> Real:
    """A real collector (``netcheck serve``) that polls the Graph double (its files in ``tmp_path``),
    once it has stored the active Exchange incident."""
    collector = real(env={
        "NETCHECK_GRAPH_TENANT": TENANT, "NETCHECK_GRAPH_CLIENT_ID": CLIENT_ID,
        "NETCHECK_GRAPH_CLIENT_SECRET_FILE": str(tmp_path / "graph-secret"),
        "NETCHECK_GRAPH_URL": graph.graph_url, "NETCHECK_GRAPH_AUTHORITY": graph.url,
        "NETCHECK_GRAPH_CA_BUNDLE": str(tmp_path / "graph-ca.pem"), "NETCHECK_LOG_LEVEL": "info"})
    for _ in range(300):  # the collector polls Graph as it starts
        if sql(collector.database_url, "SELECT last_success_at FROM health_poll")[0:1] and \
                sql(collector.database_url, "SELECT last_success_at FROM health_poll")[0][0] is not None:
            break
        time.sleep(0.1)
    status = json.loads(_admin(collector.database_url, "health-status", "--json"))
    assert status["state"] == "ok" and status["active_incidents"] == 1, status
    assert [i["id"] for i in status["issues"]] == ["EX123456"]
    return collector


def assert_stored_report_names_incident(collector: Real, named: str) -> None:
    """The collector's one stored report carries the incident finding, and its store finds the incident
    active when the report was measured."""
    stored = sql(collector.database_url, "SELECT report_lz4 FROM reports")
    doc = decode_report(bytes(stored[0][0]))
    incident = [f for f in doc["findings"] if f["code"] == "service_health.incident"]
    assert incident[0]["title"] == named and incident[0]["workload"] == "exchange"
    assert "TM000001" not in json.dumps(doc)  # resolved long ago: not shown

    engine = make_engine(collector.database_url, pool_size=1)
    try:
        with engine.begin() as conn:
            at = dt.datetime.fromisoformat(doc["measured_at"].replace("Z", "+00:00"))
            assert [i["id"] for i in health.active_issues(conn, at, ("Exchange Online",))] == ["EX123456"]
    finally:
        engine.dispose()


def assert_dashboard_names_incident(collector: Real, graph: GraphDouble) -> None:
    """The overview marks the fleet's Exchange failures, the device's page its own, and the incident is
    on the timeline under the failure curve (signed in over HTTP as a read-only user)."""
    marked = "Exchange Online: Microsoft incident EX123456 active"
    ui, _ = sign_in(collector.url, *add_user(collector.database_url, "read-only"))
    try:
        overview = ui.get("/ui/")
        assert overview.status_code == 200
        assert marked in overview.text and "1 device fails</a>" in " ".join(overview.text.split())
        assert "EX123456 Exchange Online</text>" in overview.text and "TM000001" not in overview.text
        device_id = sql(collector.database_url, "SELECT id FROM devices")[0][0]
        assert marked in ui.get(f"/ui/devices/{device_id}").text
    finally:
        ui.close()
    log = collector.proc.stderr_path.read_text("utf-8", "replace")
    assert graph.secret not in log  # the Graph client secret never reaches the collector's log


def test_an_exchange_incident_reaches_the_report_of_an_agent_that_fails_exchange(
        real: Callable[..., Real], rigs: Callable[..., Rig], graph: GraphDouble, teams_front_door: int,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    named = publish_exchange_incident(graph)
    collector = polling_collector(real, graph, tmp_path)

    # the agent's check: Exchange's front door refuses connections, Teams' answers (real TCP probes
    # on loopback); everything else of perform_check (assessment, service health, report) is real
    async def loopback_probes(plan: Any, spec: ProbeSpec, deadline: Deadline, *args: Any, **kwargs: Any
                              ) -> list[ProbeResult]:
        exchange = Target("outlook.office365.com", closed_port(), None, V4, Category.OPTIMIZE, ("exchange",))
        teams = Target("teams.microsoft.com", teams_front_door, None, V4, Category.OPTIMIZE, ("teams",))
        return [await probe_tcp(exchange, spec, deadline), await probe_tcp(teams, spec, deadline)]

    reports: list[Report] = []
    real_perform = check_module.perform_check

    def perform(options: Any, **kwargs: Any) -> Report:
        reports.append(real_perform(options, **kwargs))
        return reports[-1]

    monkeypatch.setattr(check_module, "routable_families", lambda addresses: (("ipv4",), ""))
    monkeypatch.setattr(check_module, "current_platform", _Laptop)
    monkeypatch.setattr(check_module, "run_plan", loopback_probes)
    monkeypatch.setattr(check_module, "_predict_outage", lambda *args: (None, ()))
    monkeypatch.setattr(check_module, "perform_check", perform)
    rig = rigs(collector.url, collector.secret)
    agent = build_agent(run_check=default_run_check, spool=rig.spool, client=rig.client, uploader=rig.uploader,
                        schedule=Schedule(), tags=rig.store.load_config().tags)
    result = run_once(agent, upload_deadline_s=30)
    assert (result.checks, result.spooled, result.upload.stored) == (1, 1, 1)
    assert agent.shared.policy["service_health"]["issues"][0]["id"] == "EX123456"  # came with the policy

    report = reports[0]
    statuses = {w.id: str(w.status) for w in report.assessment.workloads}
    assert statuses["exchange"] == "failed" and statuses["teams"] == "ok"
    text = render_text(report, width=200)
    assert named in text and "This is not your network" in text
    assert "Microsoft reports an incident for Exchange Online (EX123456): this is not your network." in text
    page = render_html(report_to_dict(report))
    assert "EX123456" in page and "Users can&#x27;t access email" in page and "not your network" in page
    assert_stored_report_names_incident(collector, named)
    assert_dashboard_names_incident(collector, graph)
