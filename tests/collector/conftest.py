"""Collector test fixtures: every test runs against a real ``netcheck serve`` process on
loopback, once on SQLite and once on a private PostgreSQL cluster (``backend`` is a
session-scoped parameter, so each backend's collectors and cluster are shared by its tests).

- ``collector``: a shared collector per backend with rate limits off (tests enroll their own
  devices, so they do not see each other's data);
- ``start_collector(env=..., args=...)``: a dedicated collector on a fresh database, for tests
  that need their own limits or break the database;
- ``fleet``: an HTTP client, an enrollment secret and helpers to enroll devices and upload.

Every collector's log is checked for tracebacks when it stops: an unhandled exception fails the
test that caused it.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import secrets
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from netcheck.collector import store
from netcheck.collector.db import make_engine, migrate
from tests.collector.harness import CollectorProcess, PgCluster, pg_bindir

BACKENDS = ("sqlite", "postgresql")
SAMPLE = Path(__file__).resolve().parent.parent / "fixtures" / "report-sample.json"
#: the shared collectors: limits off, so tests can hammer them freely; the dashboard counts afresh
#: on every view, so a test sees what it just uploaded
NO_LIMITS = {"NETCHECK_RATE_DEVICE": "0", "NETCHECK_RATE_ADDRESS": "0", "NETCHECK_RATE_ENROLL_ADDRESS": "0",
             "NETCHECK_RATE_ENROLL_GLOBAL": "0", "NETCHECK_UI_CACHE_S": "0"}


def sample_report(**changes: Any) -> dict[str, Any]:
    """The schema's sample report with a fresh report id."""
    report: dict[str, Any] = json.loads(SAMPLE.read_text("utf-8"))
    report["report_id"] = str(uuid.uuid4())
    report.update(changes)
    return report


def upload(report: dict[str, Any], seq: int = 1, *, dropped: int = 0, spool_full: bool = False,
           sent_at: str | None = None, sweep_id: str | None = None) -> dict[str, Any]:
    sent = sent_at or dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
    return {"report": copy.deepcopy(report),
            "agent": {"seq": seq, "dropped": dropped, "spool_full": spool_full, "sent_at": sent},
            "sweep_id": sweep_id}


def hardware_id() -> str:
    return secrets.token_hex(32)


def check_log(collector: CollectorProcess) -> None:
    text = collector.log()
    assert "Traceback" not in text, f"the collector logged a traceback:\n{text[-5000:]}"


def sql(database_url: str, query: str, **params: Any) -> list[sa.Row[Any]]:
    """Run one query against the collector's database from the test process."""
    engine = make_engine(database_url, pool_size=1, max_overflow=0)
    try:
        with engine.begin() as conn:
            result = conn.execute(sa.text(query), params)
            return list(result) if result.returns_rows else []
    finally:
        engine.dispose()


def create_secret(database_url: str, site: str | None = None) -> tuple[str, str]:
    engine = make_engine(database_url, pool_size=1, max_overflow=0)
    try:
        migrate(engine)
        with engine.begin() as conn:
            return store.create_secret(conn, store.utcnow(), site=site)
    finally:
        engine.dispose()


@dataclass
class Device:
    device_id: str
    token: str
    hardware_id: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class Fleet:
    collector: CollectorProcess
    client: httpx.Client
    secret: str
    secret_id: str
    devices: list[Device] = field(default_factory=list)

    @property
    def database_url(self) -> str:
        return self.collector.database_url

    def enroll_raw(self, secret: str | None = None, hw: str | None = None, *, tags: dict[str, str] | None = None,
                   name: str | None = None, headers: dict[str, str] | None = None) -> httpx.Response:
        body = {"secret": self.secret if secret is None else secret,
                "device": {"hardware_id": hw or hardware_id(), "name": name, "os": "linux",
                           "agent_version": "0.1.0", "tags": tags or {}}}
        return self.client.post("/api/v1/enroll", json=body, headers=headers)

    def enroll(self, hw: str | None = None, **kwargs: Any) -> Device:
        hw = hw or hardware_id()
        response = self.enroll_raw(hw=hw, **kwargs)
        assert response.status_code == 200, response.text
        data = response.json()
        device = Device(data["device_id"], data["token"], hw)
        self.devices.append(device)
        return device

    def post(self, device: Device, body: Any, headers: dict[str, str] | None = None, **kwargs: Any
             ) -> httpx.Response:
        return self.client.post("/api/v1/reports", json=body, headers={**device.auth, **(headers or {})}, **kwargs)

    def count(self, query: str, **params: Any) -> int:
        return int(sql(self.database_url, query, **params)[0][0])


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    bindir = pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian's postgresql "
                    "package or set NETCHECK_TEST_PG_BIN")
    cluster = PgCluster(bindir)
    yield cluster
    cluster.close()


@pytest.fixture(scope="session")
def new_database(backend: str, request: pytest.FixtureRequest,
                 tmp_path_factory: pytest.TempPathFactory) -> Callable[[], str]:
    """A factory of empty databases on the current backend."""
    cluster: PgCluster | None = request.getfixturevalue("pg_cluster") if backend == "postgresql" else None

    def make() -> str:
        if cluster is None:
            return f"sqlite:///{tmp_path_factory.mktemp('sqlite')}/collector.db"
        return cluster.create_database()

    return make


@pytest.fixture(scope="session")
def collector(new_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[CollectorProcess]:
    proc = CollectorProcess(new_database(), env=NO_LIMITS, workdir=tmp_path_factory.mktemp("collector"))
    yield proc
    proc.stop()
    check_log(proc)


@pytest.fixture
def start_collector(new_database: Callable[[], str], tmp_path: Path
                    ) -> Iterator[Callable[..., CollectorProcess]]:
    started: list[CollectorProcess] = []

    def start(env: dict[str, str] | None = None, args: tuple[str, ...] = (),
              database_url: str | None = None) -> CollectorProcess:
        proc = CollectorProcess(database_url or new_database(), env={**NO_LIMITS, **(env or {})}, args=args,
                                workdir=tmp_path)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()
    for proc in started:
        check_log(proc)


def make_fleet(proc: CollectorProcess) -> Fleet:
    secret_id, secret = create_secret(proc.database_url)
    return Fleet(proc, proc.client(), secret, secret_id)


@pytest.fixture
def fleet(collector: CollectorProcess) -> Iterator[Fleet]:
    f = make_fleet(collector)
    yield f
    f.client.close()


@pytest.fixture
def fleet_factory() -> Iterator[Callable[[CollectorProcess], Fleet]]:
    made: list[Fleet] = []

    def make(proc: CollectorProcess) -> Fleet:
        f = make_fleet(proc)
        made.append(f)
        return f

    yield make
    for f in made:
        f.client.close()
