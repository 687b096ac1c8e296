"""Is it us or Microsoft? The service-health findings of a report (pure), and the status page probe
against a loopback HTTPS server standing in for Microsoft's status site."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
import ssl
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import trustme

from netcheck.assess.service_health import (
    STALE_AFTER,
    Issue,
    ServiceHealth,
    StatusSite,
    annotate,
    from_policy,
    health_findings,
    status_site_to_look,
)
from netcheck.check import _probe, probe_status_site
from netcheck.deadline import Deadline
from netcheck.m365.catalog import data_dir, load_workload_map
from netcheck.models import Assessment, Finding, ProbeSpec, Severity, Status, Verdict, WorkloadResult
from tests.servers import V4, StreamServer, closed_port, http_answer

NOW = dt.datetime(2026, 12, 6, 15, 0, tzinfo=dt.UTC)
WORKLOADS = load_workload_map(data_dir() / "workloads.toml")
SERVICES = {w.id: w.health_services for w in WORKLOADS.workloads}
EXCHANGE_DOWN = Issue("EX123456", "Exchange Online", "Users can't access email", "incident", "serviceInterruption",
                      dt.datetime(2026, 12, 6, 14, 2, tzinfo=dt.UTC))


def row(wid: str, status: Status) -> WorkloadResult:
    return WorkloadResult(wid, WORKLOADS.by_id(wid).name, status, ())


def rows(**statuses: Status) -> list[WorkloadResult]:
    return [row(w, statuses.get(w, Status.OK)) for w in ("exchange", "sharepoint", "teams", "identity")]


def fresh(*issues: Issue) -> ServiceHealth:
    return ServiceHealth(NOW - dt.timedelta(minutes=4), issues)


def test_a_failing_workload_with_an_incident_names_it_and_says_it_is_not_the_network() -> None:
    found = health_findings(rows(exchange=Status.FAILED), SERVICES, fresh(EXCHANGE_DOWN), None, NOW)
    assert len(found) == 1
    f = found[0]
    assert f.title == "Exchange Online: incident EX123456, 'Users can't access email', since 14:02 UTC"
    assert f.code == "service_health.incident" and f.severity is Severity.CRITICAL and f.workload == "exchange"
    assert "This is not your network" in f.detail and "service interrupted" in f.detail
    assert "check your connection as well" not in f.detail
    assert f.evidence == ("Microsoft service health as of 14:56 UTC, through your organisation's collector: "
                          "EX123456 (incident, serviceInterruption) for Exchange Online",)


def test_incidents_of_working_or_other_services_are_not_shown() -> None:
    assert health_findings(rows(), SERVICES, fresh(EXCHANGE_DOWN), None, NOW) == ()
    teams = Issue("TM1", "Microsoft Teams", "Chat delays", "incident", "investigating", NOW)
    found = health_findings(rows(exchange=Status.FAILED), SERVICES, fresh(teams), None, NOW)
    assert [f.code for f in found] == ["service_health.none"]
    assert found[0].severity is Severity.INFO and "no active incident" in found[0].detail
    assert found[0].title == "Microsoft reports no incident for Exchange Online"


def test_a_suite_wide_advisory_covers_every_degraded_workload_once() -> None:
    suite = Issue("MO1", "Microsoft 365 suite", "Slow sign-in pages", "advisory", "serviceDegradation",
                  NOW - dt.timedelta(days=1))
    found = health_findings(rows(exchange=Status.DEGRADED, teams=Status.DEGRADED), SERVICES, fresh(suite), None, NOW)
    assert len(found) == 1 and found[0].severity is Severity.WARNING
    assert found[0].title == "Microsoft 365 suite: advisory MO1, 'Slow sign-in pages', since 5 Dec 15:00 UTC"
    assert "Exchange Online, Teams are impaired" in found[0].detail


def test_when_everything_fails_it_says_to_check_the_connection_too() -> None:
    every = rows(exchange=Status.FAILED, sharepoint=Status.FAILED, teams=Status.FAILED, identity=Status.FAILED)
    found = health_findings(every, SERVICES, fresh(EXCHANGE_DOWN), None, NOW)
    assert "check your connection as well" in found[0].detail


@pytest.mark.parametrize("health", [None, ServiceHealth(None), ServiceHealth(NOW - STALE_AFTER - dt.timedelta(1))])
def test_without_recent_word_from_the_collector_it_points_to_the_status_page(health: ServiceHealth | None) -> None:
    site = StatusSite("https://status.example/", reachable=True)
    found = health_findings(rows(exchange=Status.FAILED), SERVICES, health, site, NOW)
    assert [f.code for f in found] == ["service_health.status_site"]
    assert found[0].title == "Is it Microsoft? See Microsoft's status page, https://status.example/"
    assert "That page can be reached from here." in found[0].detail
    down = StatusSite("https://status.example/", reachable=False, reason="connection refused")
    found = health_findings(rows(exchange=Status.FAILED), SERVICES, health, down, NOW)
    assert "cannot be reached from here (connection refused)" in found[0].detail
    assert found[0].evidence == ("status.example: unreachable (connection refused)",)
    unknown = health_findings(rows(exchange=Status.FAILED), SERVICES, health, None, NOW)
    assert [f.code for f in unknown] == ["service_health.unknown"]


def test_the_policy_value_is_read_and_what_cannot_be_used_left_out() -> None:
    got = from_policy({"as_of": "2026-12-06T14:56:00Z", "issues": [
        {"id": "EX123456", "service": "Exchange Online", "title": "Users can't access email",
         "classification": "incident", "status": "serviceInterruption", "start": "2026-12-06T14:02:00Z",
         "feature": None, "last_modified": None},
        {"id": "X", "service": "s", "title": "t", "classification": "incident", "status": "s", "start": "never"}]})
    assert got == ServiceHealth(NOW - dt.timedelta(minutes=4), (EXCHANGE_DOWN,))
    assert from_policy(None) is None and from_policy([]) is None


def _assessment(*workloads: WorkloadResult) -> Assessment:
    other = Finding("reach.exchange", Severity.CRITICAL, "Exchange: 1 required endpoint(s) unreachable", "d", "r",
                    "exchange")
    return Assessment(Verdict.NOT_READY, "Right now, from here, you cannot use Exchange Online.", workloads, (other,))


def _never(url: str) -> StatusSite:
    raise AssertionError(f"the status page {url} was looked at")


def test_annotate_adds_the_incident_first_and_to_the_summary_and_keeps_the_verdict() -> None:
    before = _assessment(*rows(exchange=Status.FAILED))
    after = annotate(before, WORKLOADS, "Worldwide", fresh(EXCHANGE_DOWN), _never, NOW)
    assert after.verdict is before.verdict and after.workloads == before.workloads
    assert [f.code for f in after.findings] == ["service_health.incident", "reach.exchange"]
    assert after.findings[1].remediation == "If it still fails once Microsoft's incident (above) is over: r"
    assert after.summary == ("Right now, from here, you cannot use Exchange Online. Microsoft reports an incident "
                             "for Exchange Online (EX123456): this is not your network.")
    healthy = _assessment(*rows())
    assert annotate(healthy, WORKLOADS, "Worldwide", None, _never, NOW) is healthy


def test_the_status_page_is_looked_at_only_for_trouble_without_recent_word() -> None:
    url = WORKLOADS.status_site["Worldwide"]
    assert status_site_to_look(None, WORKLOADS, "Worldwide", None, NOW) == url  # before probing: it may be
    assert status_site_to_look(None, WORKLOADS, "Worldwide", fresh(), NOW) is None
    assert status_site_to_look(None, WORKLOADS, "no such instance", None, NOW) is None
    assert status_site_to_look(rows(), WORKLOADS, "Worldwide", None, NOW) is None
    assert status_site_to_look(rows(teams=Status.DEGRADED), WORKLOADS, "Worldwide", None, NOW) == url
    assert status_site_to_look(rows(exchange=Status.FAILED), WORKLOADS, "Worldwide", fresh(), NOW) is None


@pytest.mark.parametrize("wanted", [True, False])
def test_the_status_page_request_goes_out_beside_the_probes_and_only_a_needed_answer_is_waited_for(
        wanted: bool) -> None:
    site = StatusSite("https://status.example/", reachable=True)
    assessment = _assessment(*rows(exchange=Status.FAILED if wanted else Status.OK))
    events: list[str] = []

    async def check() -> tuple[object, ...]:
        sent = asyncio.Event()

        async def probes() -> list[object]:
            await sent.wait()  # the probes end only once the status-page request has gone out
            events.append("probes done")
            return []

        async def look() -> StatusSite:
            events.append("status page asked")
            sent.set()
            if not wanted:
                await asyncio.Event().wait()  # never answers: a check that does not need it must not wait
            return site

        return await asyncio.wait_for(_probe(probes(), lambda _: assessment, look,  # type: ignore[arg-type]
                                             lambda a: a is assessment and wanted), 30)

    assert asyncio.run(check()) == ([], assessment, site if wanted else None)
    assert events == ["status page asked", "probes done"]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def roots(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "roots.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def test_the_status_page_probe_against_a_loopback_stand_in(ca: trustme.CA, roots: str) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert(V4).configure_cert(context)
    spec = ProbeSpec(system_roots=roots)
    with StreamServer(http_answer(200, "OK", [("Server", "status")], b"all good"), V4, context) as server:
        url = f"https://{V4}:{server.port}/"
        assert probe_status_site(url, spec, Deadline.after(3)) == StatusSite(url, True, "")
        after = annotate(_assessment(*rows(exchange=Status.FAILED)), replace(WORKLOADS, status_site={"Worldwide": url}),
                         "Worldwide", None, lambda u: probe_status_site(u, spec, Deadline.after(3)), NOW)
    assert [f.code for f in after.findings] == ["reach.exchange", "service_health.status_site"]
    assert after.findings[0].remediation == "r"  # no incident known: the fix stands
    assert after.findings[1].title == f"Is it Microsoft? See Microsoft's status page, {url}"
    assert "That page can be reached from here." in after.findings[1].detail
    down = f"https://{V4}:{closed_port()}/"
    got = probe_status_site(down, spec, Deadline.after(3))
    assert got.reachable is False and got.reason
    assert probe_status_site(down, spec, Deadline.after(0)) == StatusSite(down)  # no time left: not probed


def test_the_status_page_is_data() -> None:
    assert WORKLOADS.status_site == {"Worldwide": "https://status.office365.com/"}
    assert "Exchange Online" in WORKLOADS.by_id("exchange").health_services


def test_netcheck_check_reads_the_policy_the_agent_last_received(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from netcheck.agent.loop import POLICY_FILE
    from netcheck.agent.spool import Spool
    from netcheck.assess.service_health import agent_policy_path, last_service_health

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert agent_policy_path() == Spool().root / POLICY_FILE
    assert last_service_health() is None  # not enrolled, or no policy yet
    agent_policy_path().write_text('{"service_health": {"as_of": "2026-12-06T14:56:00Z", "issues": []}}')
    assert last_service_health() == ServiceHealth(NOW - dt.timedelta(minutes=4), ())
    agent_policy_path().write_text('{"service_health": {"as_of": 1}}')
    assert last_service_health() is None  # what the schema refuses is not used
    agent_policy_path().write_text("not json")
    assert last_service_health() is None


@pytest.mark.parametrize("value", [
    "down", 42, [], {"as_of": "yesterday", "issues": []}, {"as_of": None},
    {"as_of": None, "issues": [{"id": "EX1"}]},
    {"as_of": "2026-12-06T14:56:00Z", "issues": [{"id": "x" * 65, "service": "s", "title": "t",
                                                   "classification": "incident", "status": "s",
                                                   "start": "2026-12-06T14:02:00Z"}]},
    {"as_of": "2026-12-06T14:56:00Z", "issues": [None] * 101}])
def test_a_hostile_service_health_never_stops_a_check(value: object, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from netcheck.agent.loop import CheckRequest, check_options

    with caplog.at_level(logging.WARNING, logger="netcheck.agent.loop"):
        options = check_options(CheckRequest(policy={"service_health": value}))
    assert options.service_health is None
    assert "service_health" in caplog.text


def test_titles_reach_the_report_as_one_printable_line() -> None:
    got = from_policy({"as_of": "2026-12-06T14:56:00Z", "issues": [
        {"id": "EX1", "service": "Exchange\nOnline", "title": "Mail \x1b[31mdown\x1b[0m\r\n  now",
         "classification": "incident", "status": "investigating", "start": "2026-12-06T14:02:00Z", "feature": ""}]})
    assert got is not None
    issue = got.issues[0]
    assert (issue.service, issue.title, issue.feature) == ("Exchange Online", "Mail [31mdown [0m now", None)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to run as another user")
def test_an_agent_directory_this_user_cannot_enter_means_no_service_health(tmp_path: Path) -> None:
    """`netcheck check` by a user who cannot enter the agent's directory (another account's, or a service's):
    no service health, not a crash (it was exit 5 as the standard user of the packaged executable)."""
    private = tmp_path / "agent"
    private.mkdir(mode=0o700)
    (private / "policy.json").write_text("{}")
    os.chmod(tmp_path, 0o755)
    code = ("import sys; from pathlib import Path; from netcheck.assess.service_health import last_service_health; "
            "print(last_service_health(Path(sys.argv[1])))")
    res = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", code,
                          str(private / "policy.json")], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parent.parent)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "None"
