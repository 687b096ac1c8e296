"""C7 idempotent ingest, and what a stored report records (clocks, workloads, sweeps, policy)."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx

from netcheck.collector import store
from netcheck.collector.db import make_engine
from tests.collector.conftest import Fleet, sample_report, sql, upload
from tests.collector.harness import CollectorProcess


def test_report_is_stored_with_both_clocks_verdict_and_workloads(fleet: Fleet) -> None:
    device = fleet.enroll()
    report = sample_report(measured_at="2026-11-20T08:00:00Z")
    two_hours_ago = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)).isoformat()
    response = fleet.post(device, upload(report, seq=7, dropped=3, spool_full=True, sent_at=two_hours_ago))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"status": "stored", "report_id": report["report_id"], "device_id": device.device_id}

    row = sql(fleet.database_url, "SELECT * FROM reports WHERE device_id = :d", d=device.device_id)[0]
    assert row.report_id == report["report_id"]
    assert row.verdict == "AT_RISK" and row.exit_code == 1 and row.seq == 7 and row.dropped == 3
    assert bool(row.spool_full) is True
    assert str(row.measured_at).startswith("2026-11-20 08:00:00")
    assert 7000 < row.skew_s < 7400  # the agent's clock is two hours behind the server's
    assert store.decode_report(row.report_lz4) == report
    workloads = sql(fleet.database_url, "SELECT workload_id, status, score FROM report_workloads "
                                        "WHERE device_id = :d ORDER BY workload_id", d=device.device_id)
    assert [tuple(w) for w in workloads] == [("exchange", "ok", 82), ("teams_media", "degraded", None)]
    dev = sql(fleet.database_url, "SELECT last_verdict, dropped_total, last_seen_at FROM devices WHERE id = :d",
              d=device.device_id)[0]
    assert dev.last_verdict == "AT_RISK" and dev.dropped_total == 3 and dev.last_seen_at is not None


def test_same_report_twice_is_one_row_and_the_same_answer(fleet: Fleet) -> None:
    device = fleet.enroll()
    report = sample_report()
    first = fleet.post(device, upload(report, seq=1))
    # a retry after a lost acknowledgement: same report, later sent_at and another seq
    second = fleet.post(device, upload(report, seq=2, sent_at="2030-01-01T00:00:00+01:00"))
    assert first.status_code == second.status_code == 200
    assert first.json()["status"] == "stored"
    assert second.json() == {**first.json(), "status": "duplicate"}
    assert fleet.count("SELECT count(*) FROM reports WHERE device_id = :d", d=device.device_id) == 1


def test_the_same_report_formatted_differently_is_a_duplicate(fleet: Fleet) -> None:
    device = fleet.enroll()
    body = upload(sample_report())
    assert fleet.post(device, body).json()["status"] == "stored"
    pretty = json.dumps({"agent": body["agent"], "report": dict(reversed(list(body["report"].items())))},
                        indent=4, ensure_ascii=True)
    response = fleet.client.post("/api/v1/reports", content=pretty.encode(),
                                 headers={**device.auth, "Content-Type": "application/json"})
    assert response.status_code == 200 and response.json()["status"] == "duplicate"


def test_same_id_with_a_different_body_is_refused_and_logged(fleet: Fleet) -> None:
    device = fleet.enroll()
    report = sample_report()
    assert fleet.post(device, upload(report)).status_code == 200
    changed = {**report, "summary": "Something else entirely."}
    response = fleet.post(device, upload(changed))
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "report_id_conflict"
    stored = sql(fleet.database_url, "SELECT report_lz4 FROM reports WHERE device_id = :d", d=device.device_id)
    assert [store.decode_report(r.report_lz4)["summary"] for r in stored] == [report["summary"]]
    assert "reused by device" in fleet.collector.log()


def test_a_date_time_the_schema_allows_but_no_date_holds_is_a_documented_422(fleet: Fleet) -> None:
    """Found by the API fuzz test: year 1 at +01:01 is year 0 in UTC; refused, as the OpenAPI document says."""
    device = fleet.enroll()
    response = fleet.post(device, upload({**sample_report(), "measured_at": "0001-01-01T01:00:00+01:01"}))
    assert response.status_code == 422
    assert response.json()["error"] == {
        "code": "unusable_timestamp", "field": "report.measured_at",
        "message": "report.measured_at: '0001-01-01T01:00:00+01:01' is not a usable RFC 3339 date-time"}
    assert not sql(fleet.database_url, "SELECT 1 FROM reports WHERE device_id = :d", d=device.device_id)


def test_fifty_concurrent_identical_posts_make_one_row(fleet: Fleet) -> None:
    device = fleet.enroll()
    body = upload(sample_report())
    limits = httpx.Limits(max_connections=50, max_keepalive_connections=50)
    with httpx.Client(base_url=fleet.collector.url, timeout=60, limits=limits) as client:
        def post(_: int) -> httpx.Response:
            return client.post("/api/v1/reports", json=body, headers=device.auth)

        with ThreadPoolExecutor(max_workers=50) as pool:
            responses = list(pool.map(post, range(50)))
    assert [r.status_code for r in responses] == [200] * 50, {r.status_code: r.text for r in responses}
    statuses = sorted(r.json()["status"] for r in responses)
    assert statuses == ["duplicate"] * 49 + ["stored"]
    assert fleet.count("SELECT count(*) FROM reports WHERE device_id = :d", d=device.device_id) == 1
    assert fleet.count("SELECT count(*) FROM report_workloads WHERE device_id = :d", d=device.device_id) == 2


def test_concurrent_uploads_stored_together_each_get_their_own_answer(fleet: Fleet) -> None:
    """Sixty uploads at once from four devices (stored in shared transactions when they queue),
    one of them a report id reused with another body: that one is refused, every other stored,
    and each device's latest report is its highest sequence number."""
    devices = [fleet.enroll() for _ in range(4)]
    taken = sample_report()
    assert fleet.post(devices[0], upload(taken, seq=1)).status_code == 200
    jobs = [(devices[i % 4], upload(sample_report(), seq=10 + i)) for i in range(59)]
    jobs.append((devices[0], upload({**taken, "verdict": "READY", "exit_code": 0}, seq=2)))
    limits = httpx.Limits(max_connections=60, max_keepalive_connections=60)
    with httpx.Client(base_url=fleet.collector.url, timeout=60, limits=limits) as client, \
            ThreadPoolExecutor(max_workers=60) as pool:
        responses = list(pool.map(lambda job: client.post("/api/v1/reports", json=job[1], headers=job[0].auth),
                                  jobs))
    codes = [r.status_code for r in responses]
    assert codes == [200] * 59 + [422], {r.status_code: r.text for r in responses}
    assert responses[-1].json()["error"]["code"] == "report_id_conflict"
    for (device, body), answer in zip(jobs[:-1], responses[:-1], strict=True):
        assert answer.json() == {"status": "stored", "report_id": body["report"]["report_id"],
                                 "device_id": device.device_id}
    mine = {d.device_id for d in devices}
    assert sum(fleet.count("SELECT count(*) FROM reports WHERE device_id = :d", d=d) for d in mine) == 60
    assert sum(fleet.count("SELECT count(*) FROM report_workloads WHERE device_id = :d", d=d) for d in mine) == 120
    latest = sql(fleet.database_url, "SELECT d.id, r.seq FROM devices d JOIN reports r ON r.id = d.last_report_pk")
    assert sorted(r.seq for r in latest if r.id in mine) == [65, 66, 67, 68]


def test_report_ids_are_per_device(fleet: Fleet) -> None:
    a, b = fleet.enroll(), fleet.enroll()
    report = sample_report()
    assert fleet.post(a, upload(report)).json()["status"] == "stored"
    assert fleet.post(b, upload(report)).json()["status"] == "stored"


def test_a_days_old_measurement_is_accepted_and_the_newest_seq_is_the_latest(fleet: Fleet) -> None:
    device = fleet.enroll()
    newer = sample_report(verdict="READY", exit_code=0, measured_at="2026-11-27T10:00:00Z")
    older = sample_report(verdict="NOT_READY", exit_code=2, measured_at="2026-11-01T10:00:00-05:00")
    assert fleet.post(device, upload(newer, seq=11)).status_code == 200
    assert fleet.post(device, upload(older, seq=3)).status_code == 200  # drained late from the spool
    dev = sql(fleet.database_url, "SELECT last_verdict, last_seq FROM devices WHERE id = :d", d=device.device_id)[0]
    assert (dev.last_verdict, dev.last_seq) == ("READY", 11)


def test_gzip_bodies_are_accepted(fleet: Fleet) -> None:
    device = fleet.enroll()
    body = json.dumps(upload(sample_report())).encode()
    response = fleet.client.post("/api/v1/reports", content=gzip.compress(body), headers={
        **device.auth, "Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "stored"


def test_duplicate_workload_ids_keep_the_first_status(fleet: Fleet) -> None:
    device = fleet.enroll()
    report = sample_report()
    report["workloads"].append({**report["workloads"][0], "status": "failed"})
    assert fleet.post(device, upload(report)).status_code == 200
    rows = sql(fleet.database_url, "SELECT workload_id, status FROM report_workloads WHERE device_id = :d "
                                   "ORDER BY workload_id", d=device.device_id)
    assert [tuple(r) for r in rows] == [("exchange", "ok"), ("teams_media", "degraded")]


def test_pending_sweeps_follow_tags_answers_and_expiry(fleet: Fleet) -> None:
    paris = fleet.enroll(tags={"site": "paris"})
    lyon = fleet.enroll(tags={"site": "lyon"})
    engine = make_engine(fleet.database_url)
    now = store.utcnow()
    try:
        with engine.begin() as conn:
            everyone = store.create_sweep(conn, now, dt.timedelta(hours=48), thorough=True)
            only_paris = store.create_sweep(conn, now, dt.timedelta(hours=1), tag=("site", "paris"))
            store.create_sweep(conn, now - dt.timedelta(hours=2), dt.timedelta(hours=1))  # expired
    finally:
        engine.dispose()

    def pending(device_auth: dict[str, str]) -> list[str]:
        response = fleet.client.get("/api/v1/sweeps/pending", headers=device_auth)
        assert response.status_code == 200, response.text
        return [s["id"] for s in response.json()["sweeps"]]

    assert set(pending(paris.auth)) >= {everyone["id"], only_paris["id"]}
    assert only_paris["id"] not in pending(lyon.auth)
    sweep = next(s for s in fleet.client.get("/api/v1/sweeps/pending", headers=paris.auth).json()["sweeps"]
                 if s["id"] == everyone["id"])
    assert sweep["thorough"] is True and sweep["expires_at"].endswith("Z")

    assert fleet.post(paris, upload(sample_report(), sweep_id=only_paris["id"])).status_code == 200
    assert only_paris["id"] not in pending(paris.auth)
    # lyon answering a sweep that does not target it records nothing, but its report is kept
    assert fleet.post(lyon, upload(sample_report(), sweep_id=only_paris["id"])).status_code == 200
    answers = sql(fleet.database_url, "SELECT device_id FROM sweep_responses WHERE sweep_id = :s",
                  s=only_paris["id"])
    assert [r.device_id for r in answers] == [paris.device_id]


def test_policy_has_sensible_defaults_and_follows_the_admin(
        start_collector: Callable[..., CollectorProcess], fleet_factory: Callable[[CollectorProcess], Fleet]) -> None:
    fleet = fleet_factory(start_collector())  # its own database: the policy is collector-wide
    device = fleet.enroll()
    response = fleet.client.get("/api/v1/policy", headers=device.auth)
    assert response.status_code == 200
    policy = response.json()
    assert set(policy) == {"tenant", "instance", "user_domain", "schedule", "deadline_s", "thresholds",
                           "site_profiles", "endpoints_url"}
    assert policy["schedule"] == {"interval_s": 14400, "jitter_s": 900}
    assert policy["instance"] == "Worldwide" and policy["tenant"] is None and policy["deadline_s"] == 30.0
    engine = make_engine(fleet.database_url)
    try:
        with engine.begin() as conn:
            store.set_policy(conn, "schedule.interval_s", "3600", store.utcnow())
    finally:
        engine.dispose()
    assert fleet.client.get("/api/v1/policy", headers=device.auth).json()["schedule"]["interval_s"] == 3600


def test_a_version_2_report_with_sites_and_facts_is_stored_and_what_if_works_on_what_comes_back(
        fleet: Fleet) -> None:
    from netcheck.assess.what_if import what_if
    from tests.test_sites import two_site_report

    device = fleet.enroll()
    report = json.loads(json.dumps(two_site_report()))
    response = fleet.post(device, upload(report))
    assert response.status_code == 200, response.text
    row = sql(fleet.database_url, "SELECT report_lz4 FROM reports WHERE device_id = :d", d=device.device_id)[0]
    stored = store.decode_report(row.report_lz4)
    assert stored["schema_version"] == 2 and stored == report
    assert {r["id"]: r["stays"] for r in what_if(stored, ["Dublin DC"])}["identity"] == "fails"
    report_v1 = sample_report()
    assert fleet.post(device, upload(report_v1, seq=2)).status_code == 200  # version 1 still accepted
    broken = json.loads(json.dumps(report))
    broken["report_id"] = "0a1b2c3d-0000-4000-8000-000000000002"
    broken["outage"]["cases"][0]["workloads"][0]["causes"][0]["kind"] = "guessed"
    refused = fleet.post(device, upload(broken, seq=3))
    assert refused.status_code in (400, 422) and "kind" in refused.text
