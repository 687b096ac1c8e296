"""Ingest benchmark: simulated agents post real-sized reports to a real collector.

    .venv/bin/python bench/bench_ingest.py [--db postgresql|sqlite|both] [--devices 2000]
        [--seconds 30] [--rate 333] [--workers 2] [--connections 32] [--keep-alive] [--db-pool N]
        [--encoding gzip|identity] [--form reduced|full]

For each database it starts a private cluster (PostgreSQL, durable settings: fsync and
synchronous_commit on) or a file (SQLite, WAL, synchronous=FULL), runs ``netcheck serve`` with
its default limits (rate limits on; each simulated agent has its own address through
X-Forwarded-For), enrolls the devices, then:

1. closed loop: ``--connections`` uploads in flight at once, each on its own connection as a
   laptop's would be (``--keep-alive`` reuses them: the kernel then spreads the connections,
   not the uploads, over the worker processes), posted as fast as they are answered (the
   sustained capacity);
2. open loop: reports arrive at ``--rate`` per second whatever the latency (a sweep), for
   ``--seconds``; latency is measured from the scheduled send time, so queueing counts.

Each report is a real one (a full worldwide check from the lab: 405 probes, ~240 KB) with a
fresh report id, sent as the agent sends it (``--encoding gzip``, the default) or as an older
agent did (``identity``), in the reduced form the agent sends between its daily full reports
and for an ordinary sweep (``--form reduced``, the default: 8 KiB of JSON) or in full (``full``:
once a day, a thorough sweep, an agent older than the reduced form). Prints its exact command
and environment (Python build, CPU model and count, library versions, load average before and
during each phase), then reports/s, p50/p99 latency, the answers by status, CPU per report by
party, and the time 100,000 laptops would take. Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import functools
import json
import os
import platform
import secrets
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from collections import Counter
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from netcheck.agent.uploader import encode_upload  # noqa: E402
from netcheck.collector import store  # noqa: E402
from netcheck.collector.db import make_engine, migrate  # noqa: E402
from netcheck.collector.validate import Validators  # noqa: E402
from netcheck.render.reduced import REDUCED_CONTENT_TYPE, reduce_report  # noqa: E402
from tests.collector.harness import CollectorProcess, PgCluster, pg_bindir  # noqa: E402

#: ``netcheck check --json`` in the lab's bench-25ms world (tests/lab), IPv4 and IPv6, tenant contoso
REAL = ROOT / "tests" / "fixtures" / "report-worldwide-lab.json"
RID = "00000000-0000-4000-8000-000000000000"
SEQ = 987654321987
SENT = "2026-11-28T16:00:00Z"
FLEET = 100_000



def environment(argv: list[str]) -> dict[str, Any]:
    """What a reader needs to compare figures: the command, the machine, the builds, the load."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for name in ("uvicorn", "starlette", "httptools", "SQLAlchemy", "psycopg", "orjson", "jsonschema-rs", "lz4"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    bindir = pg_bindir()
    postgres = None
    if bindir is not None:
        postgres = subprocess.run([str(Path(bindir) / "postgres"), "--version"], capture_output=True, text=True,
                                  check=False).stdout.strip()
    return {"command": shlex.join([sys.executable, *argv]), "postgresql": postgres,
            "python": f"{platform.python_implementation()} {platform.python_version()} "
                      f"({' '.join(platform.python_build())}, {platform.python_compiler()})",
            "cpu": cpu, "cpus": os.cpu_count(), "kernel": platform.release(), "libraries": versions,
            "load_average_before": [round(x, 2) for x in os.getloadavg()]}


def realistic_report() -> dict[str, Any]:
    """A real report: a full worldwide check the lab's laptop made (405 probes, ~240 KB of JSON)."""
    report: dict[str, Any] = json.loads(REAL.read_text("utf-8"))
    report["report_id"] = RID
    Validators().report.check(report)
    return report


def body_template(report: dict[str, Any], sweep_id: str | None = None) -> bytes:
    """An upload as the agent encodes it (answering ``sweep_id``), with placeholders for what changes
    from one to the next."""
    envelope = {"report": report, "agent": {"seq": SEQ, "dropped": 0, "spool_full": False, "sent_at": SENT},
                "sweep_id": sweep_id}
    return encode_upload(envelope)


def _deflate(data: bytes, last: bool) -> bytes:
    """``data`` as raw deflate blocks ending on a byte boundary (the last with the final block)."""
    packer = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


@functools.cache
def _deflated(piece: bytes, last: bool) -> bytes:
    return _deflate(piece, last)


def gzip_pieces(pieces: list[bytes]) -> list[bytes]:
    """One gzip member of ``b"".join(pieces)``, as the agent sends it, made of pieces compressed
    apart: the large constant pieces of a template once and for all (cached), the few bytes that
    change per upload each time. Concatenated raw deflate blocks that end on a byte boundary are one
    valid stream; the CRC and size cover the whole. The load generator, on the same two cores,
    then spends microseconds per upload instead of the 2 ms a laptop spends on gzip."""
    crc, size = 0, 0
    out = [b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"]
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        out.append(_deflated(piece, last) if len(piece) > 64 else _deflate(piece, last))
        crc, size = zlib.crc32(piece, crc), size + len(piece)
    out.append(crc.to_bytes(4, "little") + (size & 0xFFFFFFFF).to_bytes(4, "little"))
    return out


@dataclass
class Agent:
    device_id: str
    token: str
    address: str
    seq: int = 0


@dataclass
class Results:
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    started: float = 0.0
    finished: float = 0.0

    def summary(self) -> dict[str, Any]:
        ok = self.statuses.get(200, 0)
        elapsed = self.finished - self.started
        lat = sorted(self.latencies)
        q = statistics.quantiles(lat, n=100) if len(lat) >= 100 else [float("nan")] * 99
        rate = ok / elapsed if elapsed else 0.0
        return {"sent": sum(self.statuses.values()), "stored": ok, "seconds": round(elapsed, 1),
                "reports_per_s": round(rate, 1), "p50_ms": round(q[49] * 1000, 1), "p99_ms": round(q[98] * 1000, 1),
                "max_ms": round(lat[-1] * 1000, 1) if lat else None,
                "statuses": dict(self.statuses), "fleet_100k_minutes": round(FLEET / rate / 60, 1) if rate else None}


class Connection:
    """One keep-alive HTTP/1.1 connection speaking just enough HTTP for the collector."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes | list[bytes], headers: dict[str, str]) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        pieces = [body] if isinstance(body, bytes) else body
        headers = {"Content-Type": "application/json", **headers}
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Length: {sum(map(len, pieces))}\r\n"
                + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n")
        self.writer.write(head.encode())
        for piece in pieces:
            self.writer.write(piece)
        await self.writer.drain()
        status_line = await self.reader.readline()
        length, close = 0, False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "connection" and "close" in value.lower():
                close = True
        payload = await self.reader.readexactly(length)
        if close:
            await self.close()
        return int(status_line.split()[1]), payload

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
        self.reader = self.writer = None


_TICK = os.sysconf("SC_CLK_TCK")


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_seconds(root: int | None) -> float:
    """CPU time (user + system) used so far by ``root`` and its live descendants."""
    if root is None:
        return 0.0
    total = 0
    for pid in _descendants(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
        if pid == root:
            total += int(fields[13]) + int(fields[14])  # children that exited (database backends)
    return total / _TICK


@dataclass
class CpuMeter:
    """CPU per stored report, by party: robust to whatever else the machine is running."""

    collector: int
    database: int | None
    marks: dict[str, float] = field(default_factory=dict)

    def start(self) -> None:
        self.marks = {"collector": cpu_seconds(self.collector), "database": cpu_seconds(self.database),
                      "client": time.process_time()}

    def per_report_ms(self, stored: int) -> dict[str, float]:
        now = {"collector": cpu_seconds(self.collector), "database": cpu_seconds(self.database),
               "client": time.process_time()}
        return {k: round((now[k] - self.marks[k]) / max(stored, 1) * 1000, 2) for k in now}


@functools.cache
def _template_parts(template: bytes) -> tuple[list[bytes], list[str]]:
    """The template cut at its placeholders: the pieces between them, and which one each cut was."""
    marks = sorted((template.index(text.encode()), text) for text in (RID, str(SEQ), SENT))
    pieces, start = [], 0
    for at, text in marks:
        pieces.append(template[start:at])
        start = at + len(text)
    pieces.append(template[start:])
    return pieces, [text for _, text in marks]


def make_body(template: bytes, agent: Agent) -> list[bytes]:
    """A fresh upload as pieces, written one after the other: copying 240 KB three times per upload
    would make the load generator, which shares the machine's two cores, cost more than it must."""
    agent.seq += 1
    fresh = {RID: str(uuid.uuid4()), str(SEQ): str(agent.seq),
             SENT: dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")}
    pieces, marks = _template_parts(template)
    out = [pieces[0]]
    for text, piece in zip(marks, pieces[1:], strict=True):
        out += [fresh[text].encode(), piece]
    return out


#: how uploads are encoded ("gzip" as the agent sends them, "identity" as older agents did); set by main()
ENCODING = "gzip"
#: the report's form ("reduced" as the agent usually sends it, "full"); set by main()
FORM = "reduced"


async def post_one(conn: Connection, template: bytes, agent: Agent, results: Results, t0: float,
                   keep_alive: bool) -> None:
    headers = {"Authorization": f"Bearer {agent.token}", "X-Forwarded-For": agent.address,
               "Content-Type": REDUCED_CONTENT_TYPE if FORM == "reduced" else "application/json"}
    body = make_body(template, agent)
    if ENCODING == "gzip":
        body = gzip_pieces(body)
        headers["Content-Encoding"] = "gzip"
    try:
        status, _ = await conn.post("/api/v1/reports", body, headers)
    except (OSError, asyncio.IncompleteReadError, ValueError):
        keep_alive, status = False, 0
    if not keep_alive:
        await conn.close()
    results.latencies.append(time.perf_counter() - t0)
    results.statuses[status] += 1


async def closed_loop(url: str, template: bytes, agents: list[Agent], seconds: float, connections: int,
                      keep_alive: bool) -> Results:
    host, port = urlsplit(url).hostname or "127.0.0.1", urlsplit(url).port or 80
    results = Results(started=time.perf_counter())
    stop = results.started + seconds
    counter = iter(range(10**12))

    async def worker() -> None:
        conn = Connection(host, port)
        while time.perf_counter() < stop:
            agent = agents[next(counter) % len(agents)]
            await post_one(conn, template, agent, results, time.perf_counter(), keep_alive)
        await conn.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    results.finished = time.perf_counter()
    return results


async def open_loop(url: str, template: bytes, agents: list[Agent], seconds: float, rate: float, keep_alive: bool,
                    max_connections: int = 256) -> Results:
    """Reports arrive on a fixed schedule; latency counts from the scheduled time."""
    host, port = urlsplit(url).hostname or "127.0.0.1", urlsplit(url).port or 80
    idle: list[Connection] = []
    slots = asyncio.Semaphore(max_connections)
    results = Results(started=time.perf_counter())
    tasks = []

    async def send(agent: Agent, scheduled: float) -> None:
        async with slots:
            conn = idle.pop() if idle else Connection(host, port)
            await post_one(conn, template, agent, results, scheduled, keep_alive)
            if keep_alive:
                idle.append(conn)

    total = int(seconds * rate)
    for i in range(total):
        scheduled = results.started + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(agents[i % len(agents)], scheduled)))
    await asyncio.gather(*tasks)
    results.finished = time.perf_counter()
    for conn in idle:
        await conn.close()
    return results


async def enroll_all(url: str, secret: str, count: int) -> tuple[list[Agent], float]:
    host, port = urlsplit(url).hostname or "127.0.0.1", urlsplit(url).port or 80
    agents: list[Agent] = []
    start = time.perf_counter()
    queue = list(range(count))

    async def worker() -> None:
        conn = Connection(host, port)
        while queue:
            i = queue.pop()
            address = f"198.18.{i // 250}.{i % 250 + 1}"
            body = json.dumps({"secret": secret, "device": {
                "hardware_id": secrets.token_hex(32), "name": None, "os": "windows", "agent_version": "0.1.0",
                "tags": {"site": f"site-{i % 20}"}}}).encode()
            status, payload = await conn.post("/api/v1/enroll", body, {"X-Forwarded-For": address})
            if status != 200:
                raise RuntimeError(f"enrollment failed: {status} {payload[:200]!r}")
            data = json.loads(payload)
            agents.append(Agent(data["device_id"], data["token"], address))
        await conn.close()

    await asyncio.gather(*(worker() for _ in range(16)))
    return agents, time.perf_counter() - start


def run_one(db: str, args: argparse.Namespace, template: bytes, workdir: Path) -> dict[str, Any]:
    cluster = None
    if db == "postgresql":
        bindir = pg_bindir()
        if bindir is None:
            return {"error": "PostgreSQL server binaries not found"}
        cluster = PgCluster(bindir, durable=True)
        url = cluster.create_database("bench")
    else:
        url = f"sqlite:///{workdir / 'bench.db'}"
    collector = None
    try:
        engine = make_engine(url)
        migrate(engine)
        with engine.begin() as conn:
            _, secret = store.create_secret(conn, store.utcnow())
        engine.dispose()
        env = {"NETCHECK_RATE_ENROLL_GLOBAL": "0"}  # the bench enrolls thousands at once
        if args.db_pool is not None:
            env["NETCHECK_DB_POOL_SIZE"] = str(args.db_pool)
        collector = CollectorProcess(url, env=env, workdir=workdir, args=(
            "--workers", str(args.workers), "--trusted-proxy-header", "X-Forwarded-For"))
        agents, enroll_s = asyncio.run(enroll_all(collector.url, secret, args.devices))
        out: dict[str, Any] = {"database": db, "workers": args.workers, "keep_alive": args.keep_alive,
                               "encoding": args.encoding, "form": args.form, "devices": len(agents),
                               "enrollments_per_s": round(len(agents) / enroll_s, 1),
                               "report_bytes": len(template)}
        postmaster = None
        if cluster is not None:
            postmaster = int((cluster.datadir / "postmaster.pid").read_text().split()[0])
        meter = CpuMeter(collector.proc.pid, postmaster)
        # a short warm-up, then the closed loop (capacity), then the open loop (a sweep at --rate)
        asyncio.run(closed_loop(collector.url, template, agents, 3, args.connections, args.keep_alive))
        meter.start()
        closed = asyncio.run(closed_loop(collector.url, template, agents, args.seconds, args.connections,
                                         args.keep_alive))
        out["closed_loop"] = closed.summary()
        out["closed_loop"]["load_average_during"] = [round(x, 2) for x in os.getloadavg()]
        out["closed_loop"]["cpu_ms_per_report"] = meter.per_report_ms(closed.statuses.get(200, 0))
        cpu = out["closed_loop"]["cpu_ms_per_report"]
        server_ms = cpu["collector"] + cpu["database"]
        out["closed_loop"]["server_capacity_on_2_cores"] = round(2000 / server_ms, 1) if server_ms else None
        if args.rate > 0:
            meter.start()
            opened = asyncio.run(open_loop(collector.url, template, agents, args.seconds, args.rate, args.keep_alive))
            out["open_loop"] = opened.summary()
            out["open_loop"]["load_average_during"] = [round(x, 2) for x in os.getloadavg()]
            out["open_loop"]["target_rate"] = args.rate
            out["open_loop"]["cpu_ms_per_report"] = meter.per_report_ms(opened.statuses.get(200, 0))
        engine = make_engine(url)
        with engine.connect() as conn:
            out["rows"] = conn.exec_driver_sql("SELECT count(*) FROM reports").scalar_one()
        engine.dispose()
        return out
    finally:
        if collector is not None:
            collector.stop()
        if cluster is not None:
            cluster.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=["postgresql", "sqlite", "both"], default="both")
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=333.0, help="open-loop arrival rate, reports/s (0: skip)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32, help="closed loop: uploads in flight at once")
    parser.add_argument("--keep-alive", action="store_true",
                        help="reuse connections between uploads (default: one connection per upload, as a laptop "
                             "that uploads once per check opens its own)")
    parser.add_argument("--encoding", choices=["gzip", "identity"], default="gzip",
                        help="Content-Encoding of uploads: gzip as the agent sends them (default), identity as "
                             "older agents did")
    parser.add_argument("--form", choices=["reduced", "full"], default="reduced",
                        help="the report as the agent sends it between full ones (reduced, default) or in full")
    parser.add_argument("--db-pool", type=int, default=None,
                        help="database connections per worker process (default: the collector's own)")
    args = parser.parse_args()
    global ENCODING, FORM
    ENCODING, FORM = args.encoding, args.form
    print(json.dumps({"environment": environment(sys.argv)}, indent=2), flush=True)
    report = realistic_report()
    template = body_template(reduce_report(report) if FORM == "reduced" else report)
    wire = sum(map(len, gzip_pieces([template]))) if args.encoding == "gzip" else len(template)
    print(f"report: {REAL.name} ({FORM}), {len(template) / 1024:.0f} KiB per upload, {wire / 1024:.0f} KiB on the wire "
          f"({args.encoding}); {os.cpu_count()} CPUs", flush=True)
    for db in (["postgresql", "sqlite"] if args.db == "both" else [args.db]):
        with tempfile.TemporaryDirectory(prefix="netcheck-bench-") as tmp:
            result = run_one(db, args, template, Path(tmp))
        print(json.dumps(result, indent=2), flush=True)


if __name__ == "__main__":
    main()
