"""Stored forms of a report: the full forms give back the report, the reduced one its verdict and facts;
the reduced upload gives the collector what the full one does."""

from __future__ import annotations

import copy
import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from netcheck.agent.uploader import encode_upload
from netcheck.collector import compact, store
from netcheck.collector.app import prepare_upload
from netcheck.collector.db import make_engine
from netcheck.collector.validate import ApiError, Validators, canonical
from netcheck.render.json import report_to_dict
from netcheck.render.reduced import REDUCED_CONTENT_TYPE, reduce_report
from tests.collector.conftest import Fleet, sample_report, sql, upload
from tests.collector.harness import CollectorProcess
from tests.hostile.sandbox import needs_sandbox, run_sandboxed
from tests.sample_report import sample_report as built_report

ROOT = Path(__file__).resolve().parent.parent
STORED = [ROOT / "fixtures" / "report-sample.json", ROOT / "fixtures" / "report-outage-sample.json",
          ROOT / "fixtures" / "report-worldwide-lab.json", ROOT / "golden" / "report.json"]
#: everything a report states besides its probes: what a reduced report must keep as it was
FACTS = ("verdict", "exit_code", "summary", "workloads", "findings", "outage", "network", "interfaces")


def _impaired(report: dict[str, Any]) -> dict[str, Any]:
    """The lab report with every third probe failed, as a device with trouble sends it."""
    out = copy.deepcopy(report)
    for probe in out["probes"][::3]:
        probe.update(outcome="timeout", reason="no answer in 3 s", detail={"waited_ms": 3000})
    out["verdict"], out["exit_code"] = "AT_RISK", 1
    return out


def _next_schema(report: dict[str, Any]) -> dict[str, Any]:
    """A report of a later schema: members and nested keys this collector has never seen."""
    out = copy.deepcopy(report)
    out["schema_version"] = 2
    out["outage"] = {**out.get("outage", {}), "verdict": "AT_RISK", "sites": [{"id": "hq", "depends": True}],
                     "cases": [{"id": "vpn-drops", "verdict": "degraded"}], "facts": {"home_resolver": "kept"}}
    out["future_member"] = {"anything": [1, 2.5, None, "x"]}
    out["probes"].append("not an object")
    return out


def _reports() -> list[tuple[str, dict[str, Any]]]:
    found = [(path.name, json.loads(path.read_text("utf-8"))) for path in STORED]
    lab = dict(found)["report-worldwide-lab.json"]
    return [*found, ("impaired", _impaired(lab)), ("schema-2", _next_schema(lab)), ("no-probes", {"verdict": "X"})]


@pytest.mark.parametrize(("name", "report"), _reports())
def test_every_form_keeps_the_verdict_and_facts(name: str, report: dict[str, Any]) -> None:
    raw = canonical(report)
    for form in (compact.FORM_LZ4, compact.FORM_FULL):
        assert compact.decode(compact.encode(raw, form)) == report, form
    full = compact.encode(raw, compact.FORM_LZ4)
    assert compact.decode(compact.recompress(full)) == report
    reduced = compact.decode(compact.reduce_blob(full))
    assert {k: v for k, v in reduced.items() if k not in ("probes", compact.REDUCED_KEY)} == \
        {k: v for k, v in report.items() if k != "probes"}
    for fact in FACTS:
        assert reduced.get(fact) == report.get(fact), fact
    probes = report.get("probes", [])
    failed = [p for p in probes if not (isinstance(p, dict) and p.get("outcome") == "ok")]
    assert reduced.get("probes", []) == failed
    summary = reduced[compact.REDUCED_KEY]
    assert summary["probes_total"] == len(probes) and sum(summary["dropped"].values()) == len(probes) - len(failed)
    assert compact.reduce_report(reduced) == reduced
    assert compact.outage_verdict(reduced) == compact.outage_verdict(report)


@needs_sandbox
@pytest.mark.parametrize("how", ["refusing-resolver", "silent-resolver"])
def test_real_checks_keep_their_verdict_and_facts_in_every_form(how: str, tmp_path: Path) -> None:
    """Reports made by the real ``netcheck check --json`` (offline in a network sandbox: every probe
    fails, each with its reason), through every stored form."""
    if how == "refusing-resolver":
        argv = ["-m", "netcheck", "check", "--no-progress", "--json", "--deadline", "60"]
    else:
        argv = ["tests/hostile/child.py", "silent-dns", "check", "--no-progress", "--json", "--deadline", "4"]
    proc = run_sandboxed(argv, tmp_path)
    report = json.loads(proc.stdout)
    assert report["probes"] and proc.returncode == 2, proc.stderr
    raw = canonical(report)
    blob = compact.encode(raw, compact.FORM_LZ4)
    assert compact.decode(compact.recompress(blob)) == report
    reduced = compact.decode(compact.reduce_blob(blob))
    assert reduced == {**report, compact.REDUCED_KEY: reduced[compact.REDUCED_KEY]}  # nothing succeeded: all kept
    for fact in FACTS:
        assert reduced.get(fact) == report.get(fact), fact


def test_forms_are_smaller() -> None:
    lab = json.loads(STORED[2].read_text("utf-8"))
    raw = canonical(lab)
    lz4 = compact.encode(raw, compact.FORM_LZ4)
    assert len(compact.encode(raw, compact.FORM_FULL)) < len(lz4) * 0.7
    assert len(compact.reduce_blob(lz4)) < 4096


def _forms(database_url: str, device_id: str) -> list[tuple[str, str, bytes, str | None, str | None]]:
    rows = sql(database_url, "SELECT report_id, form, report_lz4, site, outage_verdict FROM reports "
               "WHERE device_id = :d ORDER BY id", d=device_id)
    return [(r.report_id, r.form, bytes(r.report_lz4), r.site, r.outage_verdict) for r in rows]


def test_compaction_keeps_the_newest_reports_whole_and_reduces_the_rest(
        start_collector: Callable[..., CollectorProcess], fleet_factory: Callable[[CollectorProcess], Fleet]
) -> None:
    collector = start_collector(env={"NETCHECK_FULL_HISTORY": "2"})
    fleet = fleet_factory(collector)
    device = fleet.enroll(tags={"site": "berlin"})
    other = fleet.enroll()
    lab = json.loads(STORED[2].read_text("utf-8"))
    sent = []
    for seq in (1, 2, 3, 5, 4):  # the last to arrive is not the newest: the newest stays whole anyway
        report = _impaired(lab) if seq == 2 else copy.deepcopy(lab)
        report["report_id"] = f"00000000-0000-4000-8000-00000000000{seq}"
        sent.append(report)
        assert fleet.post(device, upload(report, seq=seq)).status_code == 200
    lone = sample_report()
    assert fleet.post(other, upload(lone)).status_code == 200
    stored = _forms(fleet.database_url, device.device_id)
    assert [form for _, form, *_ in stored] == ["lz4"] * 5
    assert {(site, verdict) for *_, site, verdict in stored} == {("berlin", lab["outage"]["verdict"])}
    engine = make_engine(fleet.database_url)
    try:
        with engine.begin() as conn:  # a transaction rewrites at most its limit
            assert store.compact_reports(conn, 2, limit=2) == 2
        assert store.compact_all(engine, 2) == 4
        assert store.compact_all(engine, 2) == 0  # nothing left to do
    finally:
        engine.dispose()
    after = _forms(fleet.database_url, device.device_id)
    # the newest two by arrival (5, 4) are whole; so is 5, the device's latest by sequence
    assert [form for _, form, *_ in after] == ["reduced", "reduced", "reduced", "zlib", "zlib"]
    for report, (_, form, blob, *_) in zip(sent, after, strict=True):
        decoded = store.decode_report(blob)
        if form == compact.FORM_FULL:
            assert decoded == report
        else:
            assert decoded == compact.reduce_report(report)
            assert decoded["verdict"] == report["verdict"] and decoded["outage"] == report["outage"]
    ((_, form, blob, site, _),) = _forms(fleet.database_url, other.device_id)
    assert form == "zlib" and site is None and store.decode_report(blob) == lone


def test_a_compacted_latest_report_is_left_as_it_is(
        start_collector: Callable[..., CollectorProcess], fleet_factory: Callable[[CollectorProcess], Fleet]
) -> None:
    """A device's latest report once recompressed is done: a later pass does not touch it."""
    fleet = fleet_factory(start_collector())
    device = fleet.enroll()
    report = sample_report()
    assert fleet.post(device, upload(report)).status_code == 200
    engine = make_engine(fleet.database_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE reports SET form = 'zlib', report_lz4 = :b"),
                         {"b": compact.encode(canonical(report), compact.FORM_FULL)})
            assert store.compact_reports(conn, 1) == 0
    finally:
        engine.dispose()
    ((_, form, blob, *_),) = _forms(fleet.database_url, device.device_id)
    assert store.decode_report(blob) == report


def test_after_daily_reports_the_latest_is_complete_and_older_ones_are_compact(
        start_collector: Callable[..., CollectorProcess], fleet_factory: Callable[[CollectorProcess], Fleet]
) -> None:
    """The issue's stored-size condition on a real database: a device sends a full report a day;
    after compaction its latest is stored whole and gives back the same verdict and facts, and
    every older one is reduced, with the preset dictionary, smaller than plain zlib makes it."""
    fleet = fleet_factory(start_collector(env={"NETCHECK_FULL_HISTORY": "1"}))
    device = fleet.enroll()
    lab = json.loads(STORED[2].read_text("utf-8"))
    sent = []
    for day in range(1, 7):
        report = _impaired(lab) if day in (2, 6) else copy.deepcopy(lab)  # the latest has failures too
        report["report_id"] = f"00000000-0000-4000-8000-0000000000{day:02d}"
        sent.append(report)
        assert fleet.post(device, upload(report, seq=day)).status_code == 200
    engine = make_engine(fleet.database_url)
    try:
        assert store.compact_all(engine, 1) == 6
    finally:
        engine.dispose()
    stored = _forms(fleet.database_url, device.device_id)
    assert [form for _, form, *_ in stored] == ["reduced"] * 5 + ["zlib"]
    (latest,) = sql(fleet.database_url, "SELECT r.report_id, r.verdict, r.exit_code FROM reports r "
                    "JOIN devices d ON d.last_report_pk = r.id WHERE d.id = :d", d=device.device_id)
    assert latest.report_id == sent[-1]["report_id"]
    whole = store.decode_report(stored[-1][2])
    assert whole == sent[-1] and (latest.verdict, latest.exit_code) == (whole["verdict"], whole["exit_code"])
    for fact in FACTS:
        assert whole[fact] == sent[-1][fact], fact
    for report, (_, _, blob, *_) in zip(sent[:-1], stored[:-1], strict=True):
        reduced = store.decode_report(blob)
        assert reduced == compact.reduce_report(report)
        for fact in FACTS:
            assert reduced[fact] == report[fact], fact
        assert blob[1] & 0x20, "a reduced blob names its preset dictionary"
        assert len(blob) < len(compact.encode(canonical(reduced), compact.FORM_FULL)) * 0.9
    assert max(len(blob) for _, _, blob, *_ in stored[:-1]) < len(stored[-1][2]) / 3


def test_the_shipped_dictionary_is_the_one_the_script_makes() -> None:
    from bench.make_dictionary import dictionary
    assert compact.DICTIONARY.read_bytes() == dictionary()


def test_reduced_blobs_stored_before_the_dictionary_still_decode() -> None:
    """Reduced reports stored by an earlier collector: plain zlib, no dictionary named."""
    reduced = compact.reduce_report(json.loads(STORED[2].read_text("utf-8")))
    assert compact.decode(compact.encode(canonical(reduced), compact.FORM_FULL)) == reduced
    assert compact.decode(compact.encode(canonical(reduced), compact.FORM_REDUCED)) == reduced


# --- the reduced upload ----------------------------------------------------------------------

def _uploadable() -> list[tuple[str, dict[str, Any]]]:
    """Every report the repository stores that a collector accepts, and the impaired lab report."""
    found = [(name, r) for name, r in _reports() if name not in ("schema-2", "no-probes")]
    return [*found, ("sample_report.py", report_to_dict(built_report()))]


@pytest.mark.parametrize(("name", "report"), _uploadable())
def test_a_reduced_upload_gives_the_same_verdict_and_facts_as_the_full_one(name: str, report: dict[str, Any]) -> None:
    validators = Validators()
    device = "d-1"
    envelope = upload(report, seq=4, dropped=1, sweep_id=None)
    full = prepare_upload(validators, device, encode_upload(envelope))
    reduced_envelope = {**envelope, "report": reduce_report(report)}
    small = prepare_upload(validators, device, encode_upload(reduced_envelope), reduced=True)
    same = ("report_id", "verdict", "exit_code", "tool_version", "workloads", "findings", "catalog",
            "outage_verdict", "facts_entry", "measured_at", "sent_at", "seq", "dropped", "spool_full", "sweep_id")
    assert {k: getattr(small, k) for k in same} == {k: getattr(full, k) for k in same}
    assert (full.form, small.form) == (compact.FORM_LZ4, compact.FORM_REDUCED)
    stored = store.decode_report(small.report_lz4)
    assert stored == reduce_report(report) == compact.decode(compact.reduce_blob(full.report_lz4))
    assert {k: stored.get(k) for k in FACTS} == {k: report.get(k) for k in FACTS}
    assert len(small.report_lz4) < len(full.report_lz4)


def test_a_reduced_upload_must_say_so_and_a_full_one_must_not() -> None:
    validators = Validators()
    report = json.loads(STORED[2].read_text("utf-8"))
    envelope = upload(report)
    with pytest.raises(ApiError, match="_reduced"):  # a full report sent as reduced
        prepare_upload(validators, "d", encode_upload(envelope), reduced=True)
    reduced_envelope = {**envelope, "report": reduce_report(report)}
    with pytest.raises(ApiError, match="_reduced"):  # a reduced report sent as application/json
        prepare_upload(validators, "d", encode_upload(reduced_envelope))
    forged = copy.deepcopy(reduced_envelope)
    forged["report"][compact.REDUCED_KEY]["dropped"]["username"] = 1
    with pytest.raises(ApiError, match="username"):
        prepare_upload(validators, "d", encode_upload(forged), reduced=True)


def test_reduced_uploads_are_stored_as_they_came_and_old_full_ones_still_work(fleet: Fleet) -> None:
    """Over HTTP: a full upload (an older agent's, plain or gzip) and a reduced one of the same
    device; the reduced one is stored reduced, is the latest, and compaction leaves it alone while
    the full one stays whole."""
    device = fleet.enroll()
    lab = json.loads(STORED[2].read_text("utf-8"))
    full, small = copy.deepcopy(lab), _impaired(lab)
    small["report_id"] = "00000000-0000-4000-8000-0000000000aa"
    assert fleet.post(device, upload(full, seq=1)).status_code == 200
    body = encode_upload(upload(reduce_report(small), seq=2))
    headers = {**device.auth, "Content-Type": REDUCED_CONTENT_TYPE, "Content-Encoding": "gzip"}
    answer = fleet.client.post("/api/v1/reports", content=gzip.compress(body), headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "stored"
    again = fleet.client.post("/api/v1/reports", content=body, headers={**headers, "Content-Encoding": "identity"})
    assert again.json()["status"] == "duplicate"
    wrong = fleet.client.post("/api/v1/reports", content=body,
                              headers={**device.auth, "Content-Type": "application/x-netcheck"})
    assert wrong.status_code == 415 and REDUCED_CONTENT_TYPE in wrong.json()["error"]["message"]
    engine = make_engine(fleet.database_url)
    try:
        store.compact_all(engine, 1)
    finally:
        engine.dispose()
    rows = _forms(fleet.database_url, device.device_id)
    assert [form for _, form, *_ in rows] == ["zlib", "reduced"]
    assert store.decode_report(rows[0][2]) == full
    assert store.decode_report(rows[1][2]) == reduce_report(small)
    (dev,) = sql(fleet.database_url, "SELECT last_verdict FROM devices WHERE id = :d", d=device.device_id)
    workloads = sql(fleet.database_url, "SELECT w.workload_id, w.status FROM report_workloads w JOIN reports r "
                    "ON r.id = w.report_pk WHERE r.report_id = :r ORDER BY 1", r=small["report_id"])
    assert dev.last_verdict == "AT_RISK"
    assert [tuple(w) for w in workloads] == sorted((w["id"], w["status"]) for w in small["workloads"])
