"""The collector's service-health poller against a loopback double of Graph and the login service.

Real HTTPS (a trustme CA), real MSAL, a real database (SQLite and PostgreSQL): paging, throttling,
expired credentials, revoked tokens, malformed answers, the lease between processes, and the
secret never reaching a log or a row.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import trustme
from sqlalchemy.engine import Engine

from netcheck.collector import health
from netcheck.collector.db import health_issues, health_poll, health_services, make_engine, migrate
from netcheck.collector.settings import Settings
from netcheck.errors import ConfigError
from netcheck.fleet_policy import usable_policy
from tests.collector.conftest import sql
from tests.collector.harness import CollectorProcess
from tests.graph_double import CLIENT_ID, TENANT, GraphDouble, issue

T0 = dt.datetime(2026, 12, 6, 15, 0, tzinfo=dt.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def graph(ca: trustme.CA) -> Iterator[GraphDouble]:
    double = GraphDouble(ca).start()
    double.issues = [
        issue("EX123456", "Exchange Online", "Users can't access email"),
        issue("SP222222", "SharePoint Online", "Slow file uploads", classification="advisory"),
        issue("TM333333", "Microsoft Teams", "Chat delays", resolved=True, status="serviceRestored",
              start="2026-12-06T09:00:00Z", end="2026-12-06T10:00:00Z"),
        issue("MO444444", "Microsoft 365 suite", "Admin center slow", classification="advisory"),
        issue("EX555555", "Exchange Online", "Delayed mail", start="2026-12-06T12:00:00Z"),
    ]
    yield double
    double.stop()


@pytest.fixture
def engine(new_database: Callable[[], str]) -> Iterator[Engine]:
    eng = make_engine(new_database(), pool_size=2)
    migrate(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def settings(graph: GraphDouble, ca: trustme.CA, tmp_path: Path) -> Settings:
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    secret_file = tmp_path / "graph-secret"
    secret_file.write_text(graph.secret + "\n", encoding="utf-8")
    return Settings(database_url="sqlite:///unused.db", graph_tenant=TENANT, graph_client_id=CLIENT_ID,
                    graph_client_secret_file=str(secret_file), graph_url=graph.graph_url,
                    graph_authority=graph.url, graph_ca_bundle=str(bundle), health_interval_s=300)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def poller(settings: Settings, engine: Engine, clock: Clock) -> Iterator[health.Poller]:
    p = health.Poller(settings, engine, clock=clock, holder="test-a")
    yield p
    p.close()


def _status(engine: Engine) -> dict[str, object]:
    with engine.begin() as conn:
        return health.poll_status(conn)


def _active(engine: Engine, at: dt.datetime = T0) -> list[str]:
    with engine.begin() as conn:
        return [i["id"] for i in health.active_issues(conn, at)]


def _issue_pages(graph: GraphDouble) -> list[str]:
    return [p for m, p in graph.requests if "/issues" in p]


def test_a_poll_reads_every_page_and_stores_incidents_and_advisories(poller: health.Poller, engine: Engine,
                                                                     graph: GraphDouble) -> None:
    got = poller.poll_once()
    assert got.state == "ok", got.message
    assert _issue_pages(graph) == ["/v1.0/admin/serviceAnnouncement/issues",
                                   "/v1.0/admin/serviceAnnouncement/issues?$skiptoken=1",
                                   "/v1.0/admin/serviceAnnouncement/issues?$skiptoken=2"]
    assert _active(engine) == ["EX123456", "MO444444", "SP222222", "EX555555"]  # newest first
    with engine.begin() as conn:
        services = {r.id: (r.service, r.status) for r in conn.execute(sa.select(health_services))}
        timeline = health.issue_timeline(conn, T0 - dt.timedelta(hours=12), T0)
        active = health.active_issues(conn, T0, ("Exchange Online",))
    assert services["Exchange"] == ("Exchange Online", "serviceOperational")  # PascalCase in the JSON
    assert [i["id"] for i in timeline] == ["TM333333", "EX555555", "EX123456", "MO444444", "SP222222"]
    assert timeline[0]["end"] == "2026-12-06T10:00:00Z" and timeline[1]["end"] is None
    assert active[0] == {"id": "EX123456", "service": "Exchange Online", "feature": "E-Mail and calendar access",
                         "title": "Users can't access email", "classification": "incident",
                         "status": "serviceDegradation", "is_resolved": False, "start": "2026-12-06T14:02:00Z",
                         "end": None, "last_modified": "2026-12-06T14:02:00Z"}
    with engine.begin() as conn:
        marks = {w: [i["id"] for i in found] for w, found in health.incidents_by_workload(conn, T0).items()}
        assert health.incidents_by_workload(conn, T0 - dt.timedelta(days=1)) == {}
    assert marks["exchange"] == ["EX123456", "MO444444", "EX555555"]  # Exchange Online and the suite
    assert marks["sharepoint"] == ["MO444444", "SP222222"] and marks["teams"] == ["MO444444"]
    status = _status(engine)
    assert status["state"] == "ok" and status["last_success_at"] == "2026-12-06T15:00:00Z"
    assert (status["active_incidents"], status["active_advisories"]) == (2, 2)
    assert status["next_poll_at"] == "2026-12-06T15:05:00Z"


def test_an_issue_graph_no_longer_lists_is_resolved(poller: health.Poller, engine: Engine, graph: GraphDouble,
                                                    clock: Clock) -> None:
    assert poller.poll_once().state == "ok"
    graph.issues = [i for i in graph.issues if i["id"] != "EX555555"]
    graph.issues[0] = {**graph.issues[0], "isResolved": True, "status": "serviceRestored",
                       "endDateTime": "2026-12-06T15:03:00Z"}
    assert poller.poll_once().state == "waiting"  # not due: nothing asked
    clock.advance(300)
    assert poller.poll_once().state == "ok"
    assert _active(engine, clock.now) == ["MO444444", "SP222222"]
    with engine.begin() as conn:
        ended = {i["id"]: i["end"] for i in health.issue_timeline(conn, T0, clock.now)}
    assert ended["EX123456"] == "2026-12-06T15:03:00Z" and ended["EX555555"] == "2026-12-06T15:05:00Z"
    assert _active(engine, T0) == ["EX123456", "MO444444", "SP222222", "EX555555"]  # history stays


def test_throttling_stops_the_poll_until_retry_after_for_every_process(
        poller: health.Poller, settings: Settings, engine: Engine, graph: GraphDouble, clock: Clock) -> None:
    assert poller.poll_once().state == "ok"
    before = _active(engine)
    clock.advance(300)
    graph.throttle, graph.throttle_on_page = 1200, 1
    graph.requests.clear()
    got = poller.poll_once()
    assert got.state == "error" and "429" in got.message and "1200 s" in got.message
    assert _issue_pages(graph) == ["/v1.0/admin/serviceAnnouncement/issues",
                                   "/v1.0/admin/serviceAnnouncement/issues?$skiptoken=1"]  # stopped there
    assert _active(engine) == before  # nothing half-stored
    status = _status(engine)
    assert status["state"] == "failing" and status["next_poll_at"] == "2026-12-06T15:25:00Z"
    graph.requests.clear()
    clock.advance(1100)  # the lease expired meanwhile: another process takes it, and waits too
    other = health.Poller(settings, engine, clock=clock, holder="test-b")
    try:
        assert other.poll_once().state == "waiting"
        assert poller.poll_once().state == "standby"
        assert graph.requests == []
        graph.throttle = None
        clock.advance(100)
        assert other.poll_once().state == "ok"
    finally:
        other.close()
    assert _status(engine)["state"] == "ok"


def test_retry_after_as_an_http_date_and_bounds() -> None:
    assert health.retry_after("Sun, 06 Dec 2026 15:02:00 GMT", T0) == 120
    assert health.retry_after(None, T0) == health.DEFAULT_RETRY_AFTER_S
    assert health.retry_after("soon", T0) == health.DEFAULT_RETRY_AFTER_S
    assert health.retry_after("0", T0) == 1
    assert health.retry_after("99999999", T0) == health.MAX_RETRY_AFTER_S


def test_expired_credentials_are_a_clear_status_and_the_poller_recovers(
        poller: health.Poller, engine: Engine, graph: GraphDouble, clock: Clock) -> None:
    assert poller.poll_once().state == "ok"
    graph.expired_secret = True
    poller._tokens = None  # a restarted collector: no token in MSAL's cache
    clock.advance(300)
    got = poller.poll_once()
    assert got.state == "error"
    assert "refused the app's credentials: invalid_client: AADSTS7000222" in got.message
    assert "renew the secret" in got.message
    status = _status(engine)
    assert status["state"] == "failing" and status["last_success_at"] == "2026-12-06T15:00:00Z"
    assert status["last_error"] == got.message
    assert len(_active(engine)) == 4  # the last good poll's data stays
    graph.expired_secret = False  # IT renewed the secret
    clock.advance(300)
    assert poller.poll_once().state == "ok"
    assert _status(engine)["state"] == "ok"


def test_a_token_graph_refuses_is_renewed_once(poller: health.Poller, graph: GraphDouble, clock: Clock) -> None:
    assert poller.poll_once().state == "ok"
    assert sum(1 for m, _ in graph.requests if m == "POST") == 1  # MSAL kept the token for the second list
    graph.revoke_tokens = True
    clock.advance(300)
    assert poller.poll_once().state == "ok"
    assert sum(1 for m, _ in graph.requests if m == "POST") == 2


def test_a_wrong_login_service_is_an_error_not_a_crash(settings: Settings, engine: Engine, clock: Clock) -> None:
    from tests.servers import closed_port

    p = health.Poller(settings.replace(graph_authority=f"https://127.0.0.1:{closed_port()}"), engine, clock=clock)
    try:
        got = p.poll_once()
    finally:
        p.close()
    assert got.state == "error" and "cannot get a token from the login service" in got.message


@pytest.mark.parametrize(("mode", "words"), [
    ("json", "is not JSON"), ("no_value", "has no 'value' list"), ("foreign_link", "outside Graph")])
def test_a_malformed_answer_stores_nothing(mode: str, words: str, poller: health.Poller, engine: Engine,
                                           graph: GraphDouble, clock: Clock) -> None:
    assert poller.poll_once().state == "ok"
    graph.issues.append(issue("EX999999", "Exchange Online", "New one", start="2026-12-06T14:59:00Z"))
    graph.malformed = mode
    graph.requests.clear()
    clock.advance(300)
    got = poller.poll_once()
    assert got.state == "error" and words in got.message
    assert not any("evil" in p for _, p in graph.requests)
    assert "EX999999" not in _active(engine, clock.now) and len(_active(engine, clock.now)) == 4
    assert _status(engine)["last_error"] == got.message


def test_a_malformed_entry_is_skipped_and_resolves_nothing(poller: health.Poller, engine: Engine,
                                                           graph: GraphDouble, clock: Clock) -> None:
    assert poller.poll_once().state == "ok"
    graph.malformed = "bad_item"  # the first issue (EX123456) comes without its id
    clock.advance(300)
    got = poller.poll_once()
    assert got.state == "ok" and got.message == "1 malformed entry skipped"
    assert "EX123456" in _active(engine, clock.now)  # not taken for resolved
    assert _status(engine)["last_note"] == "1 malformed entry skipped"


def test_parse_issue_refuses_what_the_api_does_not_document() -> None:
    good = issue("EX1", "Exchange Online", "t")
    assert health.parse_issue({**good, "classification": "Incident"}).classification == "incident"
    for bad in ({**good, "isResolved": "false"}, {**good, "title": 5}, {**good, "startDateTime": "yesterday"},
                {**good, "service": ""}, ["not", "an", "object"]):
        with pytest.raises(ValueError):
            health.parse_issue(bad)


def test_one_process_polls_at_a_time(poller: health.Poller, settings: Settings, engine: Engine,
                                     graph: GraphDouble, clock: Clock) -> None:
    other = health.Poller(settings, engine, clock=clock, holder="test-b")
    try:
        assert poller.poll_once().state == "ok"
        clock.advance(120)
        assert other.poll_once().state == "standby"  # the lease is test-a's
        assert poller.poll_once().state == "waiting"  # test-a renews it; the next poll is not due
        clock.advance(poller.lease_s + 1)  # test-a died: its lease runs out
        assert other.poll_once().state == "ok"
        assert poller.poll_once().state == "standby"
    finally:
        other.close()
    with engine.begin() as conn:
        assert conn.execute(sa.select(health_poll.c.holder)).scalar_one() == "test-b"


def test_the_secret_never_reaches_a_log_a_row_or_an_agent(poller: health.Poller, engine: Engine,
                                                          graph: GraphDouble, clock: Clock,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        assert poller.poll_once().state == "ok"
        for mode in ("expired", "throttle", "malformed"):
            graph.expired_secret, graph.throttle = mode == "expired", 30 if mode == "throttle" else None
            graph.malformed = "json" if mode == "malformed" else None
            poller._tokens = None
            clock.advance(3600)
            assert poller.poll_once().state == "error"
    assert any(graph.secret in body for body in graph.token_bodies)  # it was used...
    assert graph.secret not in caplog.text  # ...and never logged
    with engine.begin() as conn:
        rows = [json.dumps([str(v) for v in r]) for t in (health_issues, health_poll, health_services)
                for r in conn.execute(sa.select(t))]
        served = json.dumps(health.policy_document(conn))
    assert rows and not any(graph.secret in r for r in rows)
    assert graph.secret not in served


def test_agents_get_the_active_issues_in_a_valid_policy(poller: health.Poller, engine: Engine) -> None:
    with engine.begin() as conn:
        assert "service_health" not in health.policy_document(conn)  # never polled: nothing added
    assert poller.poll_once().state == "ok"
    with engine.begin() as conn:
        served = health.served_health(conn, T0)
        doc = health.policy_document(conn)
    assert served is not None and served["as_of"] == "2026-12-06T15:00:00Z"
    assert [i["id"] for i in served["issues"]] == ["EX123456", "MO444444", "SP222222", "EX555555"]
    usable, problems = usable_policy(json.loads(json.dumps(doc)))
    assert problems == [] and usable["service_health"]["issues"][0]["title"] == "Users can't access email"


def test_settings_need_both_ids_and_an_https_graph() -> None:
    with pytest.raises(ConfigError, match="both graph_tenant and graph_client_id"):
        Settings(graph_client_id=CLIENT_ID)
    with pytest.raises(ConfigError, match="graph_url must be an https:// URL"):
        Settings(graph_tenant=TENANT, graph_client_id=CLIENT_ID, graph_url="http://127.0.0.1:1/v1.0")
    env = {"NETCHECK_GRAPH_TENANT": TENANT, "NETCHECK_GRAPH_CLIENT_ID": CLIENT_ID,
           "NETCHECK_GRAPH_CLIENT_SECRET": "not-in-settings"}
    settings = Settings.from_env(env)
    assert settings.service_health and "not-in-settings" not in repr(settings)
    assert "not-in-settings" not in json.dumps(settings.to_env())
    assert health.read_secret(settings, env) == "not-in-settings"


def _env(settings: Settings) -> dict[str, str]:
    return {k: v for k, v in settings.to_env().items() if k.startswith(("NETCHECK_GRAPH", "NETCHECK_HEALTH"))}


def test_a_collector_with_several_workers_polls_once(start_collector: Callable[..., CollectorProcess],
                                                     settings: Settings, graph: GraphDouble) -> None:
    proc = start_collector(env={**_env(settings), "NETCHECK_LOG_LEVEL": "info"}, args=("--workers", "2"))
    for _ in range(300):
        if [r for r in sql(proc.database_url, "SELECT last_success_at FROM health_poll") if r[0] is not None]:
            break
        time.sleep(0.1)
    time.sleep(2)  # both workers have started their poll loop by now
    overviews = [p for m, p in graph.requests if p.endswith("/healthOverviews")]
    assert len(overviews) == 1 and sum(1 for m, _ in graph.requests if m == "POST") == 1
    holders = sql(proc.database_url, "SELECT holder FROM health_poll")
    assert len(holders) == 1 and holders[0][0]
    assert graph.secret not in proc.stderr_path.read_text("utf-8", "replace")


def test_admin_health_status_says_how_the_poll_goes(poller: health.Poller, engine: Engine, graph: GraphDouble,
                                                    clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from netcheck.collector.cli import admin

    for name in [k for k in os.environ if k.startswith("NETCHECK_")]:
        monkeypatch.delenv(name)
    url = engine.url.render_as_string(hide_password=False)
    got = CliRunner().invoke(admin, ["health-status", "--database-url", url])
    assert got.exit_code == 0 and got.output.startswith("Service health is not configured: set NETCHECK_GRAPH_TENANT")
    assert poller.poll_once().state == "ok"
    graph.expired_secret = True
    poller._tokens = None
    clock.advance(300)
    assert poller.poll_once().state == "error"
    monkeypatch.setenv("NETCHECK_GRAPH_TENANT", TENANT)
    monkeypatch.setenv("NETCHECK_GRAPH_CLIENT_ID", CLIENT_ID)
    got = CliRunner().invoke(admin, ["health-status", "--database-url", url])
    assert got.exit_code == 0, got.output
    lines = got.output.splitlines()
    assert lines[0] == "Service health poll: failing"
    assert lines[1] == "  last success: 2026-12-06T15:00:00Z"
    assert "  error: the login service refused the app's credentials: invalid_client: AADSTS7000222" in got.output
    assert "Active: 2 incident(s), 2 advisory(ies)" in got.output
    assert "EX123456  incident" in got.output and graph.secret not in got.output


def test_a_stopping_process_gives_the_lease_up(poller: health.Poller, settings: Settings, engine: Engine,
                                               clock: Clock) -> None:
    other = health.Poller(settings, engine, clock=clock, holder="test-b")
    try:
        assert poller.poll_once().state == "ok"
        assert other.poll_once().state == "standby"
        poller.release()
        assert other.poll_once().state == "waiting"  # took the lease at once; the next poll is not due yet
    finally:
        other.close()
