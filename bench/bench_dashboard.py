"""Dashboard benchmark: every page and export of ``/ui/`` over a simulated fleet.

    .venv/bin/python bench/bench_dashboard.py [--db postgresql|sqlite|both] [--devices 10000]
        [--days 30] [--repeat 15] [--live-seconds 20] [--live-rate 333] [--live-agents 600]
        [--database-url URL] [--live-only] [--skip REGEX]

For each database it makes a private PostgreSQL cluster (fsync off while loading: reads are what
is measured) or a SQLite file, loads ``--devices`` devices with ``--days`` daily reports each
(verdicts, per-workload rows, findings, tags: 20 sites, 8 departments; a sweep that 60 % of them
answered), straight into the tables (COPY on PostgreSQL, executemany on SQLite); the full report
blob is stored only for each device's newest report, as the pages need only those: a two-site report
(Paris, Dublin DC), in ``--fact-sets`` variants (200) whose facts differ (``site_fact_sets``), for
the Sites pages, and each device's latest state (``device_states``, with its facts' digest, and the
sweep answers' workloads) as ``store.record_latest`` keeps them. Then it runs
``netcheck serve --workers 2`` on the database, signs in, and requests each page ``--repeat`` times,
one at a time, on loopback: the times printed are the server's answer time as the client sees it
(loopback adds well under a millisecond): the first view ("cold": the overview and a sweep's counts
are then counted afresh) apart, then p50, p95 and max of the others (those counts are reused, and
recounted in the background once older than ``NETCHECK_UI_CACHE_S``, 10 s), and the p95 of the
time to the first bytes (exports are streamed: the first bytes leave long before the last).
Then ("live") it enrolls ``--live-agents`` devices and posts real reports (bench_ingest's
open-loop generator: a worldwide check in the reduced form an agent sends for an ordinary sweep,
gzipped) answering the sweep at ``--live-rate`` per
second for ``--live-seconds``, while it loads the sweep's page every half second: the page's
times, the answered count it showed first and last, and the rate the collector kept up.
``--database-url`` measures a database this bench filled before (the load of 100,000 devices
takes 10-15 minutes). Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import httpx  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from netcheck.collector import site_facts, store  # noqa: E402
from netcheck.collector.db import EXPORT_TEXT_COLUMNS, answer_tails, device_states, export_lines, make_engine, migrate  # noqa: E402
from netcheck.collector.db import devices as devices_table  # noqa: E402
from netcheck.collector.web import accounts  # noqa: E402
from tests.collector.harness import CollectorProcess, PgCluster, pg_bindir  # noqa: E402

VERDICTS = (("READY", 0, 0.70), ("AT_RISK", 1, 0.18), ("NOT_READY", 2, 0.08), ("UNKNOWN", 3, 0.04))
WORKLOADS = ("exchange", "sharepoint", "teams", "teams_media", "identity", "office")
STATUS = {"READY": "ok", "AT_RISK": "degraded", "NOT_READY": "failed", "UNKNOWN": "not_tested"}
FINDINGS = (("teams.udp_blocked", "warning", "teams_media", "Teams media cannot use UDP",
             "Allow UDP 3478-3481 to the Teams media ranges."),
            ("vpn.optimize_in_tunnel", "critical", "teams_media", "Teams media goes into the VPN",
             "Exclude 52.112.0.0/14, 52.122.0.0/15, 2603:1063::/39 from the tunnel."),
            ("dns.slow", "warning", "exchange", "Name resolution is slow", "Use a closer DNS resolver."))
PASSWORD = "benchmark-password-1"


def environment() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "loadavg": [round(x, 2) for x in os.getloadavg()],
            "kernel": platform.release(), "python": platform.python_version()}


def _pick(rng: random.Random) -> tuple[str, int]:
    x = rng.random()
    for verdict, code, share in VERDICTS:
        if x < share:
            return verdict, code
        x -= share
    return VERDICTS[-1][0], VERDICTS[-1][1]


def _fact_variants(count: int) -> list[dict[str, Any]]:
    """``count`` two-site reports (Paris, Dublin DC: tests/test_sites.py's) whose facts differ (the home
    router's address), as a fleet's laptops differ."""
    from tests.test_sites import two_site_report

    text = json.dumps(two_site_report())
    return [json.loads(text.replace("192.168.1.1", f"192.168.{k // 250}.{k % 250 + 1}")) for k in range(count)]


def generate(devices: int, days: int, now: dt.datetime, fact_sets: int = 200
             ) -> Iterator[tuple[str, list[tuple[Any, ...]]]]:
    """(table, rows) in insertion order; rows are tuples in the table's column order used by ``load``."""
    rng = random.Random(13)
    variants = _fact_variants(fact_sets)
    blobs = [store.encode_report(json.dumps(v).encode()) for v in variants]
    entries = [site_facts.entry(v) for v in variants]
    secret_id = "sec_bench"
    yield "enroll_secrets", [(secret_id, "0" * 64, None, "bench", now, None)]
    yield "site_fact_sets", [(e[0], e[1], now) for e in entries if e is not None]
    ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(devices)]
    sweep_id = str(uuid.uuid4())
    sweep_start = now - dt.timedelta(hours=6)
    yield "sweeps", [(sweep_id, sweep_start, now + dt.timedelta(hours=42), False, None, None, "bench sweep")]
    pk = 0
    chunk = max(1, 200_000 // max(1, days))
    for start in range(0, devices, chunk):
        dev_rows, tag_rows, rep_rows, wl_rows, f_rows, cat_rows, sw_rows = [], [], [], [], [], [], []
        st_rows = []
        for i in range(start, min(devices, start + chunk)):
            did = ids[i]
            stale = rng.random() < 0.03
            last_day = rng.randint(min(8, days - 1), days - 1) if stale else 0
            latest = None
            for d in range(days - 1, last_day - 1, -1):
                pk += 1
                verdict, code = _pick(rng)
                at = now - dt.timedelta(days=d, minutes=rng.randint(0, 600))
                newest = d == last_day
                rep_rows.append((pk, did, str(uuid.uuid4()), "0" * 64, at, at, at, 0.1, days - d, 0, False,
                                 verdict, code, "0.9.0", None, blobs[i % len(blobs)] if newest else b""))
                for w in WORKLOADS:
                    wl_rows.append((pk, w, did, STATUS[verdict] if w == "teams_media" else "ok", 80, 20.0))
                if verdict != "READY":
                    for f in FINDINGS[: 1 + (i % len(FINDINGS))]:
                        f_rows.append((pk, f[0], did, f[1], f[2], f[3], f[4]))
                latest = (pk, verdict, at, days - d)
            assert latest is not None
            tags = [("site", f"site{i % 20:02d}"), ("dept", f"dept{i % 8}")]
            shown = {"name": f"laptop-{i:06d}", "os": "windows", "agent_version": "0.9.0"}
            texts = store.export_texts({**shown, "tags": dict(tags)})
            dev_rows.append((did, uuid.UUID(did).hex + uuid.UUID(did).hex, *shown.values(),
                             secret_id, now - dt.timedelta(days=60), now, latest[2], latest[3], latest[0],
                             latest[1], 0, None, store.pairs_text(tags), *(texts[c] for c in EXPORT_TEXT_COLUMNS),
                             store.iso(latest[2])))
            tag_rows += [(did, k, v) for k, v in tags]
            cat_rows.append((did, "Worldwide", "2026081400" if i % 4 else "2026073100", latest[0]))
            found = entries[i % len(entries)]
            workloads = store.pairs_text((w, STATUS[latest[1]] if w == "teams_media" else "ok") for w in WORKLOADS)
            codes = [] if latest[1] == "READY" else [f[0] for f in FINDINGS[: 1 + (i % len(FINDINGS))]]
            st_rows.append((did, latest[3], latest[0], latest[2], latest[1], None, f"site{i % 20:02d}",
                            None if found is None else found[0], workloads, store.findings_text(codes)))
            if not stale and rng.random() < 0.6:
                answered = sweep_start + dt.timedelta(minutes=rng.randint(1, 300))
                sw_rows.append((sweep_id, did, latest[0], answered, workloads, latest[1],
                                *answer_tails(latest[1], store.iso(answered)).values()))
        yield "devices", dev_rows
        yield "device_tags", tag_rows
        yield "reports", rep_rows
        yield "report_workloads", wl_rows
        yield "report_findings", f_rows
        yield "device_catalogs", cat_rows
        yield "sweep_responses", sw_rows
        yield "device_states", st_rows


COLUMNS = {
    "enroll_secrets": ("id", "digest", "site", "note", "created_at", "revoked_at"),
    "sweeps": ("id", "created_at", "expires_at", "thorough", "tag_key", "tag_value", "note"),
    "devices": ("id", "hardware_id", "name", "os", "agent_version", "secret_id", "enrolled_at", "updated_at",
                "last_seen_at", "last_seq", "last_report_pk", "last_verdict", "dropped_total", "revoked_at", "tags",
                *EXPORT_TEXT_COLUMNS, "last_seen_iso"),
    "device_tags": ("device_id", "key", "value"),
    "reports": ("id", "device_id", "report_id", "body_sha256", "measured_at", "received_at", "sent_at", "skew_s",
                "seq", "dropped", "spool_full", "verdict", "exit_code", "tool_version", "sweep_id", "report_lz4"),
    "report_workloads": ("report_pk", "workload_id", "device_id", "status", "score", "latency_ms"),
    "report_findings": ("report_pk", "code", "device_id", "severity", "workload_id", "title", "remediation"),
    "device_catalogs": ("device_id", "instance", "version", "report_pk"),
    "sweep_responses": ("sweep_id", "device_id", "report_pk", "received_at", "workloads", "verdict", "tail_csv",
                        "tail_json"),
    "site_fact_sets": ("digest", "body", "created_at"),
    "device_states": ("device_id", "seq", "report_pk", "received_at", "verdict", "outage_verdict", "site",
                      "facts_digest", "workloads", "findings"),
}


def load(url: str, devices: int, days: int, now: dt.datetime, fact_sets: int = 200) -> tuple[int, str]:
    """Fill the database; returns (reports, sweep id)."""
    engine = make_engine(url, pool_size=1, max_overflow=0, timeout_s=60)
    migrate(engine)
    reports = 0
    sweep_id = ""
    try:
        with engine.begin() as conn:
            for table, rows in generate(devices, days, now, fact_sets):
                if not rows:
                    continue
                if table == "sweeps":
                    sweep_id = rows[0][0]
                if table == "reports":
                    reports += len(rows)
                cols = COLUMNS[table]
                if conn.dialect.name == "postgresql":
                    raw: Any = conn.connection.driver_connection
                    with raw.cursor().copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as copy:
                        for row in rows:
                            copy.write_row(row)
                else:
                    conn.execute(sa.table(table, *(sa.column(c) for c in cols)).insert(),
                                 [dict(zip(cols, _sqlite(row), strict=True)) for row in rows])
            # each device's export lines and row pieces, joined from the texts loaded, and its state's
            # fact set (as migrations 0017 and 0018 write them)
            state = sa.select(device_states.c.facts_digest).where(device_states.c.device_id == devices_table.c.id)
            conn.execute(sa.update(devices_table).values(**export_lines(), facts_digest=state.scalar_subquery()))
            accounts.add_user(conn, "bench", PASSWORD, "read-only", now)
            if conn.dialect.name == "postgresql":  # COPY gave the ids: move the sequence past them for ingest
                conn.exec_driver_sql("SELECT setval(pg_get_serial_sequence('reports', 'id'), max(id)) FROM reports")
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE" if conn.dialect.name == "postgresql" else "ANALYZE")
    finally:
        engine.dispose()
    return reports, sweep_id


def _sqlite(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(v.astimezone(dt.UTC).replace(tzinfo=None) if isinstance(v, dt.datetime) else v for v in row)


def _sign_in(client: httpx.Client) -> None:
    form = client.get("/ui/login").text
    token = re.search(r'name="csrf" value="([^"]+)"', form)
    assert token is not None
    done = client.post("/ui/login", data={"csrf": token.group(1), "name": "bench", "password": PASSWORD})
    assert done.status_code == 303, done.text


def _timed(client: httpx.Client, path: str) -> tuple[float, float, int]:
    """(ms to the first body bytes, ms to the last, bytes): an export is streamed, so the two differ."""
    t0 = time.perf_counter()
    first, size = None, 0
    with client.stream("GET", path) as got:
        assert got.status_code == 200, (path, got.status_code, got.read()[:300])
        for chunk in got.iter_bytes():
            if first is None:
                first = time.perf_counter()
            size += len(chunk)
    end = time.perf_counter()
    return ((first or end) - t0) * 1000, (end - t0) * 1000, size


def measure(proc: CollectorProcess, sweep_id: str, repeat: int, skip: str | None = None
            ) -> list[tuple[str, list[float], list[float], int]]:
    """Each page ``repeat`` times, but those whose path matches the regular expression ``skip``:
    (path, ms to first bytes, ms to last, bytes)."""
    out = []
    with httpx.Client(base_url=proc.url, timeout=600) as client:
        _sign_in(client)
        devices = client.get("/ui/devices?verdict=NOT_READY").text
        some = re.search(r'href="/ui/devices/([0-9a-f-]{36})"', devices)
        assert some is not None
        some_id = some.group(1)
        pages = ["/ui/", "/ui/devices", "/ui/devices?page=40", "/ui/devices?verdict=NOT_READY",
                 "/ui/devices?tag=site%3Dsite07", "/ui/devices?finding=vpn.optimize_in_tunnel",
                 "/ui/devices?workload=teams_media%3Dfailed", "/ui/devices?stale_days=7",
                 f"/ui/devices/{some_id}", f"/ui/devices/{some_id}/report", "/ui/sweeps", f"/ui/sweeps/{sweep_id}",
                 f"/ui/sweeps/{sweep_id}?show=answered", f"/ui/sweeps/{sweep_id}?show=answered&after=8",
                 "/ui/admin", "/ui/endpoints",
                 "/ui/devices?verdict=NOT_READY&format=csv", "/ui/devices?format=csv", "/ui/devices?format=json",
                 f"/ui/sweeps/{sweep_id}?format=csv", f"/ui/sweeps/{sweep_id}?show=answered&format=csv",
                 f"/ui/sweeps/{sweep_id}?format=json", f"/ui/sweeps/{sweep_id}?show=answered&format=json",
                 f"/ui/devices/{some_id}?format=json",
                 "/ui/sites", "/ui/sites/whatif?down=Paris&down=Dublin+DC",
                 "/ui/sites/devices?down=Paris&workload=identity",
                 "/ui/sites/devices?down=Paris&workload=identity&format=csv",
                 "/ui/sites/devices?down=Paris&workload=identity&format=json"]
        print(f"{'page':62} {'cold':>7} {'p50':>7} {'p95':>7} {'max':>7} {'1st p95':>8} {'bytes':>10}  (ms)")
        for path in pages:
            if skip and re.search(skip, path):
                continue
            firsts, fulls, size = [], [], 0
            for _ in range(repeat):
                first, full, size = _timed(client, path)
                firsts.append(first)
                fulls.append(full)
            out.append((path, firsts, fulls, size))
            warm, warm1 = fulls[1:] or fulls, firsts[1:] or firsts
            print(f"{path[:62]:62} {fulls[0]:7.1f} {statistics.median(warm):7.1f} {_p95(warm):7.1f} "
                  f"{max(warm):7.1f} {_p95(warm1):8.1f} {size:10d}", flush=True)
    return out


def live_sweep(proc: CollectorProcess, url: str, sweep_id: str, seconds: float, rate: float,
               agents: int) -> dict[str, Any]:
    """The sweep's page, timed every half second while ``agents`` enrolled devices post real
    reports answering the sweep at ``rate`` per second (bench_ingest's open-loop generator)."""
    import asyncio
    import threading

    import bench_ingest

    engine = make_engine(url, pool_size=1, max_overflow=0)
    with engine.begin() as conn:
        _, secret = store.create_secret(conn, store.utcnow())
    engine.dispose()
    enrolled, _ = asyncio.run(bench_ingest.enroll_all(proc.url, secret, agents))
    # in the reduced form, as an agent answers an ordinary sweep (bench_ingest posts that form)
    template = bench_ingest.body_template(bench_ingest.reduce_report(bench_ingest.realistic_report()), sweep_id)
    done: dict[str, Any] = {}

    def load() -> None:
        done["results"] = asyncio.run(bench_ingest.open_loop(proc.url, template, enrolled, seconds, rate, False))

    path = f"/ui/sweeps/{sweep_id}"
    times: list[float] = []
    answered: list[int] = []
    with httpx.Client(base_url=proc.url, timeout=600) as client:
        _sign_in(client)
        sender = threading.Thread(target=load)
        sender.start()
        while sender.is_alive():
            t0 = time.perf_counter()
            got = client.get(path)
            times.append((time.perf_counter() - t0) * 1000)
            shown = re.search(r'id="answered">([\d,]+)<', got.text)
            answered.append(int(shown.group(1).replace(",", "")) if shown else -1)
            time.sleep(max(0.0, 0.5 - (time.perf_counter() - t0)))
        sender.join()
        loadavg = [round(x, 2) for x in os.getloadavg()]
    summary = done["results"].summary()
    return {"target_rate": rate, "agents": agents, "seconds": seconds, "ingest": summary, "load_average": loadavg,
            "page_views": len(times), "page_p50_ms": round(statistics.median(times), 1),
            "page_p95_ms": round(_p95(times), 1), "page_max_ms": round(max(times), 1),
            "answered_shown_first": answered[0], "answered_shown_last": answered[-1]}


def _p95(values: list[float]) -> float:
    return sorted(values)[max(0, round(0.95 * len(values)) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=("postgresql", "sqlite", "both"), default="both")
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--fact-sets", type=int, default=200,
                        help="distinct sets of prediction facts among the devices (the Sites pages' cost)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    parser.add_argument("--database-url", help="measure this database, filled by an earlier run of this "
                        "bench's load (no loading; --db, --devices and --days are then ignored)")
    parser.add_argument("--live-seconds", type=float, default=20,
                        help="how long the sweep page is timed while reports arrive (0: not at all)")
    parser.add_argument("--live-rate", type=float, default=333, help="reports per second arriving meanwhile")
    parser.add_argument("--live-agents", type=int, default=600, help="devices enrolled to send them")
    parser.add_argument("--live-only", action="store_true", help="time only the sweep page while reports arrive")
    parser.add_argument("--skip", metavar="REGEX", help="leave out the pages whose path matches (e.g. 'format=')")
    args = parser.parse_args()
    now = dt.datetime.now(dt.UTC)
    results: dict[str, Any] = {"environment_before": environment(), "devices": args.devices, "days": args.days}
    targets = [("given", args.database_url)] if args.database_url else \
        [(db, None) for db in (("postgresql", "sqlite") if args.db == "both" else (args.db,))]
    for db, given in targets:
        cluster = None
        if given is not None:
            url = given
        elif db == "postgresql":
            bindir = pg_bindir()
            if bindir is None:
                print("PostgreSQL binaries not found; skipping PostgreSQL")
                continue
            cluster = PgCluster(bindir)
            url = cluster.create_database("bench")
        else:
            url = f"sqlite:///{tempfile.mkdtemp(prefix='bench-dash-')}/collector.db"
        try:
            if given is None:
                t0 = time.perf_counter()
                reports, sweep_id = load(url, args.devices, args.days, now, args.fact_sets)
                print(f"\n{db}: {args.devices} devices, {reports} reports loaded in {time.perf_counter() - t0:.0f} s "
                      f"(load average {environment()['loadavg']})")
            else:
                reports, sweep_id = _existing(url)
                print(f"\n{url.split('@')[-1]}: {reports} reports (load average {environment()['loadavg']})")
            results[db] = _run(url, sweep_id, reports, args)
        finally:
            if cluster is not None:
                cluster.close()
    results["environment_after"] = environment()
    env0, env1 = results["environment_before"], results["environment_after"]
    print(f"\nmachine: {env0['cpus']} CPUs, Linux {env0['kernel']}, Python {env0['python']}; load average "
          f"{env0['loadavg']} before, {env1['loadavg']} after (other work on the machine shows here)")
    if args.json:
        buf = io.StringIO()
        json.dump(results, buf, indent=2)
        print(buf.getvalue())


def _existing(url: str) -> tuple[int, str]:
    engine = make_engine(url, pool_size=1, max_overflow=0)
    try:
        migrate(engine)
        with engine.begin() as conn:
            reports = int(conn.exec_driver_sql("SELECT count(*) FROM reports").scalar_one())
            sweep_id = conn.exec_driver_sql("SELECT id FROM sweeps WHERE note = 'bench sweep'").scalar_one()
    finally:
        engine.dispose()
    return reports, str(sweep_id)


def _run(url: str, sweep_id: str, reports: int, args: argparse.Namespace) -> dict[str, Any]:
    env = {"NETCHECK_RATE_ENROLL_GLOBAL": "0"}  # the live phase enrolls its devices at once
    with CollectorProcess(url, env=env, workdir=Path(tempfile.mkdtemp(prefix="bench-dash-")),
                          args=("--workers", "2", "--trusted-proxy-header", "X-Forwarded-For")) as proc:
        rows = [] if args.live_only else measure(proc, sweep_id, args.repeat, args.skip)
        out: dict[str, Any] = {"reports": reports, "pages": {
            p: {"cold_ms": round(f[0], 1), "p50_ms": round(statistics.median(f[1:] or f), 1),
                "p95_ms": round(_p95(f[1:] or f), 1), "first_byte_p95_ms": round(_p95(b[1:] or b), 1), "bytes": s}
            for p, b, f, s in rows}}
        if args.live_seconds > 0:
            live = live_sweep(proc, url, sweep_id, args.live_seconds, args.live_rate, args.live_agents)
            ingest = live["ingest"]
            print(f"\nsweep page while reports arrive (target {args.live_rate:g}/s for {args.live_seconds:g} s, "
                  f"{args.live_agents} devices): {ingest['reports_per_s']} reports/s stored "
                  f"({ingest['stored']} of {ingest['sent']}, upload p50 {ingest['p50_ms']} ms, "
                  f"p99 {ingest['p99_ms']} ms); "
                  f"page p50 {live['page_p50_ms']} ms, p95 {live['page_p95_ms']} ms, max {live['page_max_ms']} ms over "
                  f"{live['page_views']} views; answered shown {live['answered_shown_first']} -> "
                  f"{live['answered_shown_last']}; load average {live['load_average']}")
            out["live_sweep"] = live
    return out


if __name__ == "__main__":
    main()
