"""Stored forms of a report: the full forms give back the report, the reduced one its verdict and facts."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from netcheck.collector import compact, store
from netcheck.collector.db import make_engine
from netcheck.collector.validate import canonical
from tests.collector.conftest import Fleet, sample_report, sql, upload
from tests.collector.harness import CollectorProcess
from tests.hostile.sandbox import needs_sandbox, run_sandboxed

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
