"""C9 database outage: uploads get 503 (never 200), /readyz fails, /healthz stays up; after
recovery the agent's retries complete the data with nothing lost and nothing doubled.

PostgreSQL: a private cluster is stopped and started again. SQLite: another process holds the
database's write lock past the collector's timeout (as a stuck backup or a full disk would).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.collector.conftest import Fleet, sample_report, sql, upload
from tests.collector.harness import CollectorProcess, PgCluster, pg_bindir


@contextmanager
def _sqlite_locked(database_url: str) -> Iterator[None]:
    path = Path(database_url.removeprefix("sqlite:///"))
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        yield
        conn.execute("ROLLBACK")
    finally:
        conn.close()


@contextmanager
def _pg_stopped(cluster: PgCluster) -> Iterator[None]:
    cluster.stop()
    try:
        yield
    finally:
        cluster.start()


def test_database_outage_gives_503_and_recovery_loses_nothing(
        backend: str, tmp_path: Path, start_collector: Callable[..., CollectorProcess],
        fleet_factory: Callable[[CollectorProcess], Fleet]) -> None:
    env = {"NETCHECK_DB_TIMEOUT_S": "1"}
    cluster: PgCluster | None = None
    if backend == "postgresql":
        bindir = pg_bindir()
        if bindir is None:
            pytest.skip("PostgreSQL server binaries not found")
        cluster = PgCluster(bindir, durable=True)
    try:
        proc = start_collector(env=env, database_url=cluster.create_database() if cluster else None)
        fleet = fleet_factory(proc)
        devices = [fleet.enroll() for _ in range(3)]
        before = [(d, upload(sample_report(), seq=1)) for d in devices]
        assert all(fleet.post(d, body).json()["status"] == "stored" for d, body in before)

        outage = _pg_stopped(cluster) if cluster else _sqlite_locked(proc.database_url)
        during = [(d, upload(sample_report(), seq=2)) for d in devices]
        with outage:
            for d, body in during:
                response = fleet.post(d, body)
                assert response.status_code == 503, response.text
                assert response.json()["error"]["code"] == "database_unavailable"
                assert int(response.headers["Retry-After"]) > 0
            assert fleet.client.get("/api/v1/policy", headers=devices[0].auth).status_code == 503
            assert fleet.enroll_raw().status_code == 503
            assert fleet.client.get("/readyz").status_code == 503
            assert fleet.client.get("/healthz").status_code == 200
            # an acknowledgement lost before the outage: the retry gets no 200 while the data can't be checked
            assert fleet.post(*before[0]).status_code == 503

        proc.wait_ready(60)
        # the agents retry everything they did not get a JSON acknowledgement for, and a lost ack
        for d, body in during:
            response = fleet.post(d, body)
            assert response.status_code == 200, response.text
            assert response.json()["status"] == "stored"
        assert fleet.post(*before[0]).json()["status"] == "duplicate"
        ids = [b["report"]["report_id"] for _, b in before + during]
        stored = fleet.count("SELECT count(*) FROM reports WHERE report_id IN (" +
                             ",".join(f"'{i}'" for i in ids) + ")")
        assert stored == len(ids) == 6
    finally:
        if cluster is not None:
            cluster.close()


def test_connections_the_database_dropped_are_replaced_without_a_503(
        backend: str, start_collector: Callable[..., CollectorProcess],
        fleet_factory: Callable[[CollectorProcess], Fleet]) -> None:
    """A failover or a restart between two uploads: the pooled connections are dead, and the
    next upload still gets its 200 (the dead connection is noticed, the rest of the pool closed,
    the work retried once on a new one)."""
    if backend != "postgresql":
        pytest.skip("SQLite has no server to drop a connection")
    proc = start_collector()
    fleet = fleet_factory(proc)
    devices = [fleet.enroll() for _ in range(3)]
    with ThreadPoolExecutor(8) as pool:  # at once, so that the collector pools several connections
        answers = list(pool.map(lambda d: fleet.post(d, upload(sample_report(), seq=1)), devices * 3))
    assert [a.json()["status"] for a in answers] == ["stored"] * 9
    dropped = sql(proc.database_url, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                  "WHERE application_name = 'netcheck-collector' AND pid <> pg_backend_pid()")[0][0]
    assert dropped >= 2  # a second dead connection is what a retry without closing the pool would get
    for d in devices:
        response = fleet.post(d, upload(sample_report(), seq=2))
        assert response.status_code == 200, response.text
    assert "database connection lost; retrying on a new one" in proc.log()
    assert fleet.count("SELECT count(*) FROM reports") == 12
