"""The store path alone: CPU and wall time per report of ``store.ingest_many`` on a real database,
uploads stored one per transaction and in batches (as the group commit makes them).

    .venv/bin/python bench/bench_store_path.py [--db postgresql|sqlite] [--reports 800] [--batches 1,16]
        [--rounds 2] [--gate]

The reduced lab report, prepared once per upload by ``app.prepare_upload`` before the clock
starts; then per batch size: Python CPU (process time), the database's CPU (PostgreSQL: its
processes' /proc counters) and wall time, per report. ``--gate``: each batch also through the
gate as the app runs it (in this thread: no hand-off), once in the gate's own transaction before
the store's (``_Api._gate_batch``, then ``_Api._store_batch``: "apart"), once inside the store's
(a token ``app._Accepted`` let through: "inside"). Prints its command and environment; asserts
nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_ingest import REAL, environment  # noqa: E402
from netcheck.agent.uploader import encode_upload  # noqa: E402
from netcheck.collector import store  # noqa: E402
from netcheck.collector.app import _Api, prepare_upload  # noqa: E402
from netcheck.collector.db import make_engine, migrate  # noqa: E402
from netcheck.collector.settings import Settings  # noqa: E402
from netcheck.collector.validate import Validators  # noqa: E402
from netcheck.render.reduced import reduce_report  # noqa: E402
from tests.collector.harness import PgCluster, pg_bindir  # noqa: E402


def _cpu_of(pids_of: int | None) -> float:
    """CPU seconds of a PostgreSQL server's processes (the postmaster and its children); 0 without one."""
    if pids_of is None:
        return 0.0
    ticks = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(pid) == pids_of or int(fields[1]) == pids_of:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def run(url: str, postmaster: int | None, args: argparse.Namespace) -> list[dict[str, Any]]:
    engine = make_engine(url)
    migrate(engine)
    with engine.begin() as conn:
        _, secret = store.create_secret(conn, store.utcnow())
        enrolled = [store.enroll(conn, secret, {"hardware_id": f"{i:064x}", "os": "windows", "agent_version": "0.1.0",
                                                "tags": {"site": f"site-{i % 7}"}}, store.utcnow())
                    for i in range(200)]
    devices, tokens = [e.device_id for e in enrolled], {e.device_id: e.token for e in enrolled}
    api = _Api(Settings(database_url=url, rate_device=1_000_000), engine)
    modes = ["apart", "inside"] if args.gate else ["none"]
    validators, reduced = Validators(), reduce_report(json.loads(REAL.read_text("utf-8")))
    seq, out = 1, []
    for rnd in range(args.rounds):
        for batch, mode in ((b, m) for b in args.batches for m in modes):
            uploads = []
            for k in range(args.reports):
                device = devices[k % len(devices)]
                body = {"report": {**reduced, "report_id": str(uuid.uuid4())}, "sweep_id": None,
                        "agent": {"seq": seq, "dropped": 0, "spool_full": False, "sent_at": "2026-12-06T00:00:00Z"}}
                seq += 1
                uploads.append((device, prepare_upload(validators, device, encode_upload(body), reduced=True)))
            cpu, wall, db = time.process_time(), time.perf_counter(), _cpu_of(postmaster)
            for i in range(0, len(uploads), batch):
                some = uploads[i:i + batch]
                if mode == "none":
                    with engine.begin() as conn:
                        store.ingest_many(conn, sorted(some, key=lambda u: u[0]), store.utcnow())
                    continue
                gates = [("198.18.0.1", tokens[device]) for device, _ in some]
                if mode == "apart":
                    assert api._gate_batch(gates) == [device for device, _ in some]
                answers = api._store_batch([(device, item, gate if mode == "inside" else None)
                                            for (device, item), gate in zip(some, gates, strict=True)])
                assert all(answer == "stored" for answer in answers), answers
            n = len(uploads) / 1000
            out.append({"round": rnd, "batch": batch, "gate": mode,
                        "python_cpu_ms": round((time.process_time() - cpu) / n, 2),
                        "database_cpu_ms": round((_cpu_of(postmaster) - db) / n, 2),
                        "wall_ms": round((time.perf_counter() - wall) / n, 2),
                        "load_average": [round(x, 2) for x in os.getloadavg()]})
            print(json.dumps(out[-1]), flush=True)
    engine.dispose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--reports", type=int, default=800)
    parser.add_argument("--batches", default="1,16", help="batch sizes, comma-separated")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--gate", action="store_true", help="each batch through the gate too, apart and inside")
    args = parser.parse_args()
    args.batches = [int(b) for b in args.batches.split(",")]
    print(json.dumps({"environment": environment(sys.argv)}, indent=2), flush=True)
    with tempfile.TemporaryDirectory(prefix="netcheck-bench-") as tmp:
        if args.db == "sqlite":
            run(f"sqlite:///{Path(tmp) / 'store.db'}", None, args)
            return
        bindir = pg_bindir()
        if bindir is None:
            sys.exit("PostgreSQL server binaries not found")
        cluster = PgCluster(bindir, durable=True)
        try:
            url = cluster.create_database("store")
            run(url, int((cluster.datadir / "postmaster.pid").read_text().split()[0]), args)
        finally:
            cluster.close()


if __name__ == "__main__":
    main()
