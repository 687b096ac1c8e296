"""Each device's latest state (``device_states``, ``sweep_responses.workloads``), kept at ingest and
filled by migration 0013, on real SQLite and PostgreSQL: the newest seq wins, a late older report,
a duplicate and a revoked device change nothing, and the backfill gives exactly what ingest keeps."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from netcheck.collector import site_facts, store
from netcheck.collector.db import EXPORT_TEXT_COLUMNS, device_states, head_revision, make_engine, migrate
from netcheck.collector.web import queries
from netcheck.collector.web.sites import devices_listing
from tests.test_sites import two_site_report

NOW = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)
FINDING = ("vpn.optimize_in_tunnel", "critical", "teams_media", "Teams media goes into the VPN", "Exclude it.")


def _incoming(seq: int, verdict: str, teams: str, *, findings: tuple[Any, ...] = (), sweep_id: str | None = None,
              outage: dict[str, Any] | None = None) -> store.Incoming:
    report = {"report_id": f"r-{seq}-{verdict}", "verdict": verdict, **({"outage": outage} if outage else {})}
    body = json.dumps(report).encode()
    return store.Incoming(
        report_id=f"r-{seq}-{verdict}", verdict=verdict, exit_code=0, tool_version="1",
        workloads=(("exchange", "ok", 90, 20.0), ("teams_media", teams, 50, 80.0)),
        report_lz4=store.encode_report(body), body_sha256=f"{seq:064d}", measured_at=NOW, sent_at=NOW, seq=seq,
        dropped=0, spool_full=False, sweep_id=sweep_id, findings=findings, outage_verdict="AT_RISK",
        facts_entry=site_facts.entry(report))


def _enroll(conn: Connection, name: str, site: str) -> str:
    _, secret = store.create_secret(conn, NOW, site=site)
    return store.enroll(conn, secret, {"hardware_id": name * 8, "name": name, "os": "linux",
                                       "agent_version": "1"}, NOW).device_id


def _states(conn: Connection) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in conn.execute(sa.select(device_states).order_by(device_states.c.device_id))]


def _answers(conn: Connection) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in conn.execute(sa.text(
        "SELECT sweep_id, device_id, workloads FROM sweep_responses ORDER BY sweep_id, device_id")).all()]


def _fleet(engine: Engine) -> tuple[str, str, str, site_facts.Entry]:
    """Two devices and a sweep: a answers it NOT READY (seq 5), then its seq 4 arrives late and READY;
    b reports twice, then the same report again. Returns (a, b, sweep id, a's facts)."""
    outage = two_site_report()["outage"]
    facts = site_facts.entry({"outage": outage})
    with engine.begin() as conn:
        a, b = _enroll(conn, "aaaa", "paris"), _enroll(conn, "bbbb", "lyon")
        sweep_id = store.create_sweep(conn, NOW, dt.timedelta(hours=2))["id"]
        newest = _incoming(5, "NOT_READY", "failed", findings=(FINDING,), sweep_id=sweep_id, outage=outage)
        assert store.ingest(conn, a, newest, NOW) == "stored"
        later = NOW + dt.timedelta(minutes=5)
        assert store.ingest(conn, a, _incoming(4, "READY", "ok"), later) == "stored"  # older, arriving late
        assert store.ingest(conn, b, _incoming(1, "READY", "ok"), NOW) == "stored"
        assert store.ingest(conn, b, _incoming(2, "AT_RISK", "degraded"), NOW) == "stored"
        assert store.ingest(conn, b, _incoming(2, "AT_RISK", "degraded"), later) == "duplicate"
    return a, b, sweep_id, facts


def test_the_latest_state_follows_the_newest_seq(new_database: Callable[[], str]) -> None:
    engine = make_engine(new_database())
    try:
        migrate(engine)
        a, b, sweep_id, facts = _fleet(engine)
        with engine.begin() as conn:
            states = {r[0]: r for r in _states(conn)}
            last = dict(conn.execute(sa.text("SELECT id, last_report_pk FROM devices")).all())
            # a: seq 5 stays its state although seq 4 came later; b: the duplicate changed nothing
            assert states[a][1:2] + states[a][4:] == (5, "NOT_READY", "AT_RISK", "paris", facts and facts[0],
                                                      '{"exchange":"ok","teams_media":"failed"}',
                                                      '["vpn.optimize_in_tunnel"]')
            assert states[b][1] == 2 and states[b][3] == NOW and states[b][4] == "AT_RISK"
            assert {d: s[2] for d, s in states.items()} == last  # the report devices.last_report_pk names
            assert _answers(conn) == [(sweep_id, a, '{"exchange":"ok","teams_media":"failed"}')]
            assert queries.workload_counts(conn) == {"exchange": {"ok": 2},
                                                     "teams_media": {"failed": 1, "degraded": 1}}
            assert queries.sweep_workloads(conn, sweep_id) == {"exchange": {"ok": 1}, "teams_media": {"failed": 1}}
            top = queries.top_findings(conn)
            assert [(f["code"], f["devices"], f["remediation"]) for f in top] == [
                ("vpn.optimize_in_tunnel", 1, "Exclude it.")]
            assert queries.latest_counts(conn) == (queries.workload_counts(conn), top)  # the overview's one scan
            assert facts is not None
            listed = conn.execute(devices_listing(conn, [facts[0]]).query).all()
            assert [r.device_id for r in listed] == [a]
            # the devices list's filters on the latest report's workload statuses and findings, exactly
            def listed(**f: Any) -> list[str]:
                return [r["device_id"] for r in queries.devices_page(conn, queries.Filters(**f), NOW).rows]

            assert listed(workload=("teams_media", "failed")) == [a]
            assert listed(workload=("teams_media", "ok")) == [] and listed(workload=("teams", "failed")) == []
            assert listed(finding="vpn.optimize_in_tunnel") == [a] and listed(finding="vpn.optimize") == []
            # a newer report replaces the state
            assert store.ingest(conn, a, _incoming(6, "READY", "ok"), NOW) == "stored"
            assert queries.workload_counts(conn)["teams_media"] == {"ok": 1, "degraded": 1}
            assert queries.top_findings(conn) == []
            assert conn.execute(devices_listing(conn, [facts[0]]).query).all() == []
            # a revoked device drops out of the fleet's counts
            assert store.revoke_device(conn, b, NOW) is not None
            assert queries.workload_counts(conn) == {"exchange": {"ok": 1}, "teams_media": {"ok": 1}}
            assert queries.latest_counts(conn) == (queries.workload_counts(conn), [])
    finally:
        engine.dispose()


def test_migration_0013_fills_the_states_ingest_would_have_kept(new_database: Callable[[], str]) -> None:
    engine = make_engine(new_database())
    try:
        migrate(engine)
        a, _, sweep_id, facts = _fleet(engine)
        with engine.begin() as conn:  # what ingest kept
            kept, answers = _states(conn), _answers(conn)
        assert len(kept) == 2 and answers[0][2] is not None
        assert migrate(engine, "0011", downgrade=True) == "0011"
        with engine.begin() as conn:
            assert not sa.inspect(conn).has_table("device_states")
            # as ingest kept it before 0014: a's site_facts row holds its late, older report (no facts)
            conn.execute(sa.text("UPDATE site_facts SET digest = NULL, report_pk = "
                                 "(SELECT max(id) FROM reports WHERE device_id = :a) WHERE device_id = :a"), {"a": a})
        migrate(engine)  # the backfill
        with engine.begin() as conn:
            assert _states(conn) == kept
            assert _answers(conn) == answers
            # a's site_facts row held its late, older report: the backfill read the latest report's facts back
            assert facts is not None and kept[[r[0] for r in kept].index(a)][7] == facts[0]
            assert queries.sweep_workloads(conn, sweep_id) == {"exchange": {"ok": 1}, "teams_media": {"failed": 1}}
    finally:
        engine.dispose()


def test_a_sweeps_timeline_counts_its_answers_at_each_point(new_database: Callable[[], str]) -> None:
    """The sweep page's chart, counted by the database per interval: an answer counts from the first
    point at or after it; an answer after the sweep's end is not drawn."""
    engine = make_engine(new_database())
    try:
        migrate(engine)
        with engine.begin() as conn:
            sweep_id = store.create_sweep(conn, NOW, dt.timedelta(hours=4))["id"]
            for n, minutes in enumerate((0.5, 31, 59, 61, 239, 300)):
                device = _enroll(conn, f"d{n:03d}", "paris")
                at = NOW + dt.timedelta(minutes=minutes)
                assert store.ingest(conn, device, _incoming(1, "READY", "ok", sweep_id=sweep_id), at) == "stored"
            sw = queries.sweep(conn, sweep_id)
            # 4 points over 4 hours: at 0, 60, 120, 180 and 240 minutes
            points = queries.sweep_timeline(conn, sw, NOW + dt.timedelta(hours=6), points=4)
            # the sweep page's one scan of the answers: the answer after the end is counted, not drawn
            answered, workloads, timeline = queries.sweep_answers(conn, sw, NOW + dt.timedelta(hours=6), points=4)
            assert (answered, workloads, timeline) == (6, queries.sweep_workloads(conn, sweep_id), points)
            assert workloads == {"exchange": {"ok": 6}, "teams_media": {"ok": 6}}
            assert queries.sweep_coverage(conn, sw, NOW) == queries.sweep_coverage(conn, sw, NOW, answered)
        assert points == [(0.0, 0), (3600.0, 3), (7200.0, 4), (10800.0, 4), (14400.0, 5)]
    finally:
        engine.dispose()


def test_migration_0014_drops_site_facts_and_its_downgrade_makes_it_from_the_states(
        new_database: Callable[[], str]) -> None:
    engine = make_engine(new_database())
    try:
        migrate(engine)
        a, _, _, facts = _fleet(engine)
        with engine.connect() as conn:
            assert not sa.inspect(conn).has_table("site_facts")
            kept = _states(conn)
        assert migrate(engine, "0013", downgrade=True) == "0013"
        with engine.connect() as conn:
            pointers = sorted(tuple(r) for r in conn.execute(sa.text(
                "SELECT device_id, report_pk, digest FROM site_facts")))
        assert pointers == sorted((r[0], r[2], r[7]) for r in kept)
        assert facts is not None and (a, kept[[r[0] for r in kept].index(a)][2], facts[0]) in pointers
        assert migrate(engine) == head_revision()
        with engine.connect() as conn:
            assert not sa.inspect(conn).has_table("site_facts")
            assert _states(conn) == kept
    finally:
        engine.dispose()


def _tag_counts_joined(conn: Connection) -> list[dict[str, Any]]:
    """The per-tag counts as the overview made them before migration 0014: ``device_tags`` joined to
    every device."""
    out: dict[tuple[str, str], dict[str | None, int]] = {}
    for key, value, verdict, count in conn.execute(sa.text(
            "SELECT t.key, t.value, d.last_verdict, count(*) FROM device_tags t JOIN devices d ON d.id = t.device_id "
            "WHERE d.revoked_at IS NULL GROUP BY t.key, t.value, d.last_verdict")):
        out.setdefault((key, value), {})[verdict] = int(count)
    return sorted(({"key": k, "value": v, "total": sum(c.values()), **{x: c.get(x, 0) for x in queries.VERDICTS}}
                   for (k, v), c in out.items()), key=lambda r: (r["key"], r["value"]))


def _tagged_fleet(engine: Engine) -> None:
    """Devices enrolled with tags (and a secret's site), one re-enrolled with other tags, one revoked,
    one that never reported."""
    with engine.begin() as conn:
        _, paris = store.create_secret(conn, NOW, site="paris")
        _, plain = store.create_secret(conn, NOW)

        def enroll(secret: str, hw: str, tags: dict[str, str]) -> str:
            return store.enroll(conn, secret, {"hardware_id": hw * 8, "name": hw, "os": "linux",
                                               "agent_version": "1", "tags": tags}, NOW).device_id

        made = [enroll(paris, "aaaa", {"dept": "sales"}), enroll(paris, "bbbb", {"dept": "it", "floor": "2"}),
                enroll(plain, "cccc", {"dept": "sales"}), enroll(plain, "dddd", {}), enroll(paris, "eeee", {})]
        for seq, (device, verdict) in enumerate(zip(made[:4], ("READY", "NOT_READY", "AT_RISK", "READY"),
                                                    strict=True)):
            assert store.ingest(conn, device, _incoming(seq + 1, verdict, "ok"), NOW) == "stored"
        enroll(plain, "cccc", {"dept": "it"})  # re-enrolled: its tags replaced
        assert store.revoke_device(conn, made[1], NOW) is not None


def test_the_tag_counts_read_the_devices_tags_text_and_match_the_join(new_database: Callable[[], str]) -> None:
    engine = make_engine(new_database())
    try:
        migrate(engine)
        _tagged_fleet(engine)
        with engine.begin() as conn:
            counted = sorted(queries.tag_counts(conn), key=lambda r: (r["key"], r["value"]))
            assert counted == _tag_counts_joined(conn)
            assert {(r["key"], r["value"]): r["total"] for r in counted} == {
                ("dept", "sales"): 1, ("dept", "it"): 1, ("site", "paris"): 2}
            # the overview's one scan: the same tags, the verdicts and the devices not seen lately
            verdicts, tags, stale, today = queries.device_counts(conn, NOW + dt.timedelta(days=8), 7)
            assert sorted(tags, key=lambda r: (r["key"], r["value"])) == counted
            assert verdicts == {"READY": 2, "AT_RISK": 1, None: 1}
            assert stale == 4  # the three that reported 8 days ago and the one that never did
            assert queries.device_counts(conn, NOW, 7)[2] == 1
            # and the chart's today, of every device (the revoked one reported that day too)
            assert today == {} and queries.device_counts(conn, NOW, 7)[3] == queries.devices_today(conn, NOW) == {
                "READY": 2, "AT_RISK": 1, "NOT_READY": 1}
        # migration 0014 fills the text from device_tags
        assert migrate(engine, "0013", downgrade=True) == "0013"
        assert migrate(engine) == head_revision()
        with engine.begin() as conn:
            assert sorted(queries.tag_counts(conn), key=lambda r: (r["key"], r["value"])) == counted
            assert conn.execute(sa.text("SELECT count(*) FROM devices WHERE tags = '{}'")).scalar_one() == 1
    finally:
        engine.dispose()


def _refilled(engine: Engine, revision: str, column: str, answers: dict[str, list[Any]]) -> None:
    """Downgraded to ``revision`` (the devices' ``column`` gone) and upgraded again, each query in
    ``answers`` answers what it did."""
    assert migrate(engine, revision, downgrade=True) == revision
    with engine.begin() as conn:
        assert column not in {c["name"] for c in sa.inspect(conn).get_columns("devices")}
    assert migrate(engine) == head_revision()
    with engine.begin() as conn:
        for query, rows in answers.items():
            assert conn.execute(sa.text(query)).all() == rows, query


def test_migration_0016_fills_the_export_texts_enrollment_and_ingest_keep(new_database: Callable[[], str]) -> None:
    """The devices' export texts (``store.export_texts``, ``last_seen_iso``) and the sweep answers'
    verdicts, filled from the columns by the upgrade, are what enrollment and ingest kept."""
    engine = make_engine(new_database())
    kept_columns = ", ".join(("id", *EXPORT_TEXT_COLUMNS, "last_seen_iso"))
    try:
        migrate(engine)
        _fleet(engine)
        _tagged_fleet(engine)
        with engine.begin() as conn:  # and a hostile name and tags
            _, secret = store.create_secret(conn, NOW)
            store.enroll(conn, secret, {"hardware_id": "f" * 32, "name": '=1+"a,b"\n', "os": "linux",
                                        "agent_version": "@1", "tags": {"=k": "-v;x", "\u00e9": "\uff1d"}}, NOW)
            kept = conn.execute(sa.text(f"SELECT {kept_columns} FROM devices ORDER BY id")).all()
            verdicts = conn.execute(sa.text("SELECT sweep_id, device_id, verdict FROM sweep_responses")).all()
        assert {r.last_seen_iso for r in kept} >= {None, store.iso(NOW)} and len(kept) == 6
        assert [v for *_, v in verdicts] == ["NOT_READY"]
        _refilled(engine, "0015", "last_seen_iso", {
            f"SELECT {kept_columns} FROM devices ORDER BY id": kept,
            "SELECT sweep_id, device_id, verdict FROM sweep_responses": verdicts})
    finally:
        engine.dispose()


def test_migration_0017_fills_the_export_lines_every_write_keeps(new_database: Callable[[], str]) -> None:
    """The devices' whole export lines (``export_csv``, ``export_json``) and ``revoked_iso``, filled
    by the upgrade from the texts migration 0016 keeps, are what enrollment, ingest and revoking
    kept (a revoked device's line holds its time)."""
    engine = make_engine(new_database())
    kept_columns = "id, revoked_iso, export_csv, export_json"
    try:
        migrate(engine)
        a, *_ = _fleet(engine)
        _tagged_fleet(engine)
        with engine.begin() as conn:  # a hostile name and tags, and a revoked device
            _, secret = store.create_secret(conn, NOW)
            store.enroll(conn, secret, {"hardware_id": "f" * 32, "name": '=1+"a,b"\n', "os": "linux",
                                        "agent_version": "@1", "tags": {"=k": "-v;x", "\u00e9": "\uff1d"}}, NOW)
            assert store.revoke_device(conn, a, NOW + dt.timedelta(seconds=1, microseconds=5)) is not None
            kept = conn.execute(sa.text(f"SELECT {kept_columns} FROM devices ORDER BY id")).all()
        assert len(kept) == 6 and all(r.export_csv.endswith("\r\n") and r.export_json.endswith("}") for r in kept)
        later = store.iso(NOW + dt.timedelta(seconds=1, microseconds=5))
        assert sorted(r.revoked_iso or "" for r in kept) == ["", "", "", "", store.iso(NOW), later]
        assert sum(later in r.export_csv and later in r.export_json for r in kept) == 1
        _refilled(engine, "0016", "export_csv", {f"SELECT {kept_columns} FROM devices ORDER BY id": kept})
    finally:
        engine.dispose()


def test_migration_0018_fills_the_row_pieces_and_answer_tails_every_write_keeps(
        new_database: Callable[[], str]) -> None:
    """The pieces of the devices' rows in a sweep's lists and the Sites devices (``row_*``), their
    latest states' fact sets (``facts_digest``) and the sweep answers' own cells (``tail_*``), filled
    by the upgrade from the texts migrations 0016 and 0017 keep, from the states and from the
    answers' columns, are what enrollment and ingest kept."""
    engine = make_engine(new_database())
    kept_columns = "id, row_head_csv, row_head_json, row_seen_csv, row_seen_json, facts_digest"
    tails = "SELECT sweep_id, device_id, tail_csv, tail_json FROM sweep_responses ORDER BY sweep_id, device_id"
    try:
        migrate(engine)
        _, _, _, facts = _fleet(engine)
        with engine.begin() as conn:  # and a hostile name
            _, secret = store.create_secret(conn, NOW)
            store.enroll(conn, secret, {"hardware_id": "f" * 32, "name": '=1+"a,b"\n', "os": "linux",
                                        "agent_version": "@1", "tags": {}}, NOW)
            kept = conn.execute(sa.text(f"SELECT {kept_columns} FROM devices ORDER BY id")).all()
            answers = conn.execute(sa.text(tails)).all()
        assert len(kept) == 3 and sum(r.row_head_csv.startswith(f"{r.id},\"'=1+") for r in kept) == 1
        assert sum(store.iso(NOW) in r.row_seen_csv and store.iso(NOW) in r.row_seen_json for r in kept) >= 1
        assert isinstance(facts, tuple) and sorted(r.facts_digest or "" for r in kept) == ["", "", facts[0]]
        assert [a.tail_csv for a in answers] == [f",NOT_READY,{store.iso(NOW)}\r\n"]
        assert migrate(engine, "0017", downgrade=True) == "0017"
        with engine.begin() as conn:
            assert "tail_csv" not in {c["name"] for c in sa.inspect(conn).get_columns("sweep_responses")}
        _refilled(engine, "0017", "row_head_csv", {f"SELECT {kept_columns} FROM devices ORDER BY id": kept,
                                                   tails: answers})
    finally:
        engine.dispose()
