"""Report size benchmark: what an upload costs the laptop to encode, and what a fleet's reports
cost the collector's disk.

    .venv/bin/python bench/bench_storage.py [--devices 100] [--days 30] [--full-history 3]
        [--db sqlite|postgresql] [--impaired 0.1] [--per-day 1]

1. Agent encoding: the real lab report (405 probes, 237 KiB of JSON) encoded as the agent's
   uploader does (``upload_body``, canonical JSON) and gzipped as its transport sends it
   (``gzip_body``): CPU per upload (process time, median of 50) and bytes on the wire.
2. Stored size: a simulated fleet of ``--devices`` laptops each sends one report a day for
   ``--days`` days (the lab report with its timings jittered, a fresh id, and ``--impaired`` of
   the reports with a third of their probes failed), prepared and stored by the collector's own
   upload path (``app.prepare_upload``, ``store.ingest``), and the compaction pass run after each
   day as the collector runs it after each pruning. Prints the stored blob bytes per report by
   form, and the database's own size per report: every table a report's rows go to
   (``REPORT_TABLES``) with its indexes, after VACUUM (SQLite's pages of each, from ``dbstat``,
   and its whole file apart; PostgreSQL's ``pg_total_relation_size``: heap, indexes, TOAST); and
   checks every device's latest report is complete (all its probes, full form). ``--per-day N``:
   N reports a day per laptop, as the agent sends them: the first of each day in full, the
   others reduced (stored as they come); every device's newest full report is then checked
   complete (its latest is then usually reduced).

Prints its command and environment; asserts nothing.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import hashlib
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_ingest import REAL, environment  # noqa: E402
from netcheck.agent.spool import Counters, SpoolRecord  # noqa: E402
from netcheck.agent.transport import gzip_body  # noqa: E402
from netcheck.agent.uploader import encode_upload, upload_body  # noqa: E402
from netcheck.collector import compact, store  # noqa: E402
from netcheck.collector.app import prepare_upload  # noqa: E402
from netcheck.collector.db import make_engine, migrate  # noqa: E402
from netcheck.collector.validate import Validators  # noqa: E402
from netcheck.render.reduced import reduce_report  # noqa: E402
from tests.collector.harness import PgCluster, pg_bindir  # noqa: E402


def agent_encoding(report: dict[str, Any]) -> dict[str, Any]:
    record = SpoolRecord(seq=1, report_id=report["report_id"], spooled_at=time.time(), sweep_id=None, report=report)
    counters = Counters()
    out = {}
    for form in ("full", "reduced"):
        times, body, wire = [], b"", b""
        for _ in range(50):
            start = time.process_time()
            body = upload_body(record, counters, time.time(), reduced=form == "reduced")
            wire = gzip_body(body)
            times.append(time.process_time() - start)
        out[form] = {"cpu_ms_per_upload_median": round(statistics.median(times) * 1000, 2),
                     "cpu_ms_per_upload_max": round(max(times) * 1000, 2),
                     "json_kib": round(len(body) / 1024, 1), "wire_kib": round(len(wire) / 1024, 1)}
    return out


def day_report(base: dict[str, Any], day: dt.datetime, rng: random.Random, impaired: bool) -> dict[str, Any]:
    """The lab report as one laptop sends it on ``day``: its timings vary, sometimes probes fail."""
    report = copy.deepcopy(base)
    report["report_id"] = str(uuid.uuid4())
    report["measured_at"] = day.isoformat().replace("+00:00", "Z")
    for probe in report["probes"]:
        probe["phases"] = {k: round(v * rng.uniform(0.7, 1.5), 2) for k, v in probe["phases"].items()}
    for workload in report["workloads"]:
        if workload.get("latency_ms") is not None:
            workload["latency_ms"] = round(workload["latency_ms"] * rng.uniform(0.7, 1.5), 2)
    if impaired:
        for probe in report["probes"][rng.randrange(3)::3]:
            probe.update(outcome="timeout", reason="no answer in 3 s", detail={"waited_ms": 3000})
        report["verdict"], report["exit_code"] = "AT_RISK", 1
    return report


#: the tables a report's rows go to (each with its indexes; on PostgreSQL its TOAST too)
REPORT_TABLES = ("reports", "report_workloads", "report_findings", "device_catalogs", "device_states",
                 "site_fact_sets", "sweep_responses")


def _database_bytes(engine: Any) -> dict[str, int]:
    """Bytes the reports take, per table with its indexes: SQLite's pages of each (``dbstat``), and
    the whole file's used pages; PostgreSQL's ``pg_total_relation_size`` (heap, indexes, TOAST)."""
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            out = {table: 0 for table in REPORT_TABLES}
            for table, size in conn.exec_driver_sql(
                    "SELECT m.tbl_name, sum(s.pgsize) FROM dbstat s JOIN sqlite_schema m ON m.name = s.name "
                    "GROUP BY m.tbl_name"):
                if table in out:
                    out[table] += int(size)
            pages = conn.exec_driver_sql("PRAGMA page_count").scalar_one()
            free = conn.exec_driver_sql("PRAGMA freelist_count").scalar_one()
            out["whole database file"] = int((pages - free) * conn.exec_driver_sql("PRAGMA page_size").scalar_one())
            return out
        return {table: int(conn.exec_driver_sql(f"SELECT pg_total_relation_size('{table}')").scalar_one())
                for table in REPORT_TABLES}


def stored_size(url: str, args: argparse.Namespace, base: dict[str, Any]) -> dict[str, Any]:
    rng = random.Random(12)
    engine = make_engine(url)
    migrate(engine)
    start = dt.datetime(2026, 11, 1, 9, tzinfo=dt.UTC)
    with engine.begin() as conn:
        _, secret = store.create_secret(conn, start)
        devices = [store.enroll(conn, secret, {"hardware_id": hashlib.sha256(str(i).encode()).hexdigest(),
                                                "os": "windows", "agent_version": "0.1.0",
                                                "tags": {"site": f"site-{i % 7}"}}, start).device_id
                   for i in range(args.devices)]
    validators = Validators()
    ingest_s = compact_s = 0.0
    for day in range(args.days):
        when = start + dt.timedelta(days=day)
        t0 = time.process_time()
        with engine.begin() as conn:
            for check in range(args.per_day):
                at = when + dt.timedelta(hours=24 * check / args.per_day)
                reduced = check > 0  # the first of the day in full, as the agent sends them
                for seq, device in enumerate(devices):
                    report = day_report(base, at, rng, rng.random() < args.impaired)
                    if reduced:
                        report = reduce_report(report)
                    stamp = at.isoformat().replace("+00:00", "Z")
                    raw = encode_upload({"report": report, "sweep_id": None, "agent": {
                        "seq": (day * 100 + check) * 10_000 + seq, "dropped": 0, "spool_full": False,
                        "sent_at": stamp}})
                    # what the collector's upload handler stores: verdict, workloads, findings,
                    # catalog, site facts and the blob, from the same function
                    store.ingest(conn, device, prepare_upload(validators, device, raw, reduced=reduced), at)
        t1 = time.process_time()
        store.compact_all(engine, args.full_history)
        ingest_s += t1 - t0
        compact_s += time.process_time() - t1
    with engine.connect() as conn:
        forms = {r.form: (int(r.n), int(r.bytes)) for r in conn.exec_driver_sql(
            "SELECT form, count(*) AS n, sum(length(report_lz4)) AS bytes FROM reports GROUP BY form")}
        # every device's newest full report (its latest, when each report goes in full)
        newest_full = conn.exec_driver_sql(
            "SELECT r.form, r.report_lz4 FROM reports r WHERE r.id = (SELECT max(f.id) FROM reports f "
            "WHERE f.device_id = r.device_id AND f.form <> 'reduced')").all()
        latest = conn.exec_driver_sql(
            "SELECT r.form, r.report_lz4 FROM reports r JOIN devices d ON d.last_report_pk = r.id").all()
    probes = len(base["probes"])

    def whole(rows: list[Any]) -> bool:
        return len(rows) == args.devices and all(
            r.form == compact.FORM_FULL and len(store.decode_report(r.report_lz4)["probes"]) == probes
            and compact.REDUCED_KEY not in store.decode_report(r.report_lz4) for r in rows)
    total = sum(n for n, _ in forms.values())
    # space freed by rewritten rows is reused by later ones; reclaim it to measure what is held
    with engine.connect() as conn:
        raw: Any = conn.connection.driver_connection
        if conn.dialect.name == "sqlite":
            raw.execute("VACUUM")
        else:
            raw.commit()
            raw.autocommit = True
            raw.execute("VACUUM FULL reports")
    sizes = _database_bytes(engine)
    db_bytes = sum(v for k, v in sizes.items() if k in REPORT_TABLES)
    engine.dispose()
    return {"reports": total, "every_latest_report_complete": whole(latest),
            "every_newest_full_report_complete": whole(newest_full),
            "blob_bytes_per_report": round(sum(b for _, b in forms.values()) / total),
            "by_form": {f: {"reports": n, "bytes_each": round(b / n)} for f, (n, b) in forms.items()},
            "counted": "the report tables' pages with their indexes (PostgreSQL: and TOAST), after VACUUM",
            "database_bytes_per_report": round(db_bytes / total),
            "database_kib_per_report": round(db_bytes / total / 1024, 2),
            "bytes_per_report_by_table": {k: round(v / total) for k, v in sizes.items()},
            "collector_cpu_ms_per_report": {"ingest_encode_and_store": round(ingest_s / total * 1000, 2),
                                            "compaction": round(compact_s / total * 1000, 2)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--full-history", type=int, default=3)
    parser.add_argument("--impaired", type=float, default=0.1, help="share of reports with failed probes")
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--per-day", type=int, default=1,
                        help="reports per laptop per day: the first in full, the others reduced")
    args = parser.parse_args()
    print(json.dumps({"environment": environment(sys.argv)}, indent=2), flush=True)
    base = json.loads(REAL.read_text("utf-8"))
    print(json.dumps({"agent_encoding": agent_encoding(base)}, indent=2), flush=True)
    with tempfile.TemporaryDirectory(prefix="netcheck-bench-") as tmp:
        cluster = None
        if args.db == "postgresql":
            bindir = pg_bindir()
            if bindir is None:
                sys.exit("PostgreSQL server binaries not found")
            cluster = PgCluster(bindir, durable=True)
            url = cluster.create_database("storage")
        else:
            url = f"sqlite:///{Path(tmp) / 'storage.db'}"
        try:
            result = stored_size(url, args, base)
        finally:
            if cluster is not None:
                cluster.close()
    result.update(database=args.db, devices=args.devices, days=args.days, per_day=args.per_day,
                  full_history=args.full_history,
                  load_average_after=[round(x, 2) for x in os.getloadavg()], python=platform.python_version())
    print(json.dumps({"stored_size": result}, indent=2), flush=True)


if __name__ == "__main__":
    main()
