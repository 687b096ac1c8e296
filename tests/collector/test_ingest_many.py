"""``store.ingest_many`` (the group commit's store): the same rows and answers as ``store.ingest``
one upload after the other, on both databases."""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from netcheck.agent.uploader import encode_upload
from netcheck.collector import store
from netcheck.collector.app import prepare_upload
from netcheck.collector.db import make_engine, migrate
from netcheck.collector.validate import Validators
from tests.collector.conftest import sample_report, upload

NOW = dt.datetime(2026, 12, 1, 9, tzinfo=dt.UTC)
#: every table ingest writes, as rows without the generated ids
TABLES = {
    "reports": "SELECT d.hardware_id, r.report_id, r.verdict, r.seq, r.form, r.site FROM reports r "
               "JOIN devices d ON d.id = r.device_id ORDER BY 1, 2",
    "devices": "SELECT d.hardware_id, r.report_id, d.last_verdict, d.last_seq, d.dropped_total FROM devices d "
               "LEFT JOIN reports r ON r.id = d.last_report_pk ORDER BY 1",
    "workloads": "SELECT r.report_id, w.workload_id, w.status FROM report_workloads w "
                 "JOIN reports r ON r.id = w.report_pk ORDER BY 1, 2",
    "findings": "SELECT r.report_id, f.code FROM report_findings f JOIN reports r ON r.id = f.report_pk ORDER BY 1, 2",
    "catalogs": "SELECT d.hardware_id, r.report_id FROM device_catalogs c JOIN devices d ON d.id = c.device_id "
                "JOIN reports r ON r.id = c.report_pk ORDER BY 1",
    "fact_sets": "SELECT digest FROM site_fact_sets ORDER BY 1",
    "states": "SELECT d.hardware_id, r.report_id, s.verdict, s.seq, s.site, s.workloads, s.findings, s.facts_digest "
              "FROM device_states s JOIN devices d ON d.id = s.device_id JOIN reports r ON r.id = s.report_pk "
              "ORDER BY 1",
}


def _report(n: int, verdict: str = "READY") -> dict[str, Any]:
    report = sample_report()
    report["report_id"] = f"00000000-0000-4000-8000-{n:012d}"
    report["verdict"] = verdict
    return report


def _incoming(device_id: str, report: dict[str, Any], seq: int) -> store.Incoming:
    return prepare_upload(Validators(), device_id, encode_upload(upload(report, seq=seq)))


def _state(new_database: Callable[[], str], many: bool) -> tuple[list[str], dict[str, list[tuple[Any, ...]]]]:
    engine = make_engine(new_database())
    migrate(engine)
    try:
        with engine.begin() as conn:
            _, secret = store.create_secret(conn, NOW)
            a, b = (store.enroll(conn, secret, {"hardware_id": hashlib.sha256(hw).hexdigest(), "os": "windows",
                                                "agent_version": "0.1.0", "tags": {"site": "lyon"}}, NOW).device_id
                    for hw in (b"a", b"b"))
        changed = copy.deepcopy(_report(3))
        changed["findings"] = []
        uploads = [(a, _incoming(a, _report(1), 5)), (a, _incoming(a, _report(2, "AT_RISK"), 3)),  # older seq last
                   (a, _incoming(a, _report(1), 5)),  # the same again: a duplicate
                   (b, _incoming(b, changed, 1)), (b, _incoming(b, _report(4, "NOT_READY"), 2))]
        with engine.begin() as conn:
            if many:
                answers = store.ingest_many(conn, uploads, NOW)
            else:
                answers = [store.ingest(conn, device, item, NOW) for device, item in uploads]
        with engine.connect() as conn:
            return answers, {name: [tuple(r) for r in conn.execute(sa.text(query))] for name, query in TABLES.items()}
    finally:
        engine.dispose()


def test_many_uploads_at_once_store_what_one_after_the_other_would(new_database: Callable[[], str]) -> None:
    one_by_one = _state(new_database, many=False)
    assert one_by_one[0] == ["stored", "stored", "duplicate", "stored", "stored"]
    assert one_by_one[1]["findings"] and one_by_one[1]["catalogs"]  # the comparison compares something
    # the device's latest is its highest sequence number, not the last to arrive
    assert {row[1:3] for row in one_by_one[1]["devices"]} == {
        ("00000000-0000-4000-8000-000000000001", "READY"), ("00000000-0000-4000-8000-000000000004", "NOT_READY")}
    assert [row[1:4] for row in one_by_one[1]["states"]] == [row[1:4] for row in one_by_one[1]["devices"]]
    assert _state(new_database, many=True) == one_by_one


def test_a_reused_report_id_in_a_batch_is_refused(new_database: Callable[[], str]) -> None:
    engine = make_engine(new_database())
    migrate(engine)
    try:
        with engine.begin() as conn:
            _, secret = store.create_secret(conn, NOW)
            device = store.enroll(conn, secret, {"hardware_id": "c" * 64, "os": "windows",
                                                 "agent_version": "0.1.0"}, NOW).device_id
        other = _report(1, "AT_RISK")
        with pytest.raises(store.ReportConflict), engine.begin() as conn:
            store.ingest_many(conn, [(device, _incoming(device, _report(1), 1)),
                                     (device, _incoming(device, other, 2))], NOW)
    finally:
        engine.dispose()
