"""C4 authentication and C5 object-level authorization."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from netcheck.collector import auth, store
from netcheck.collector.app import _Accepted, _Api
from netcheck.collector.db import make_engine, migrate, relax_durability, relaxed_transaction
from netcheck.collector.settings import Settings
from tests.collector.conftest import Fleet, sample_report, sql, upload

ROUTES = [("POST", "/api/v1/reports"), ("GET", "/api/v1/policy"), ("GET", "/api/v1/sweeps/pending")]
TABLES = ["enroll_secrets", "devices", "device_tags", "device_tokens", "reports", "report_workloads", "sweeps",
          "sweep_responses", "policy", "rate_counters"]


def _call(fleet: Fleet, method: str, path: str, headers: dict[str, str], query: str = "") -> tuple[int, bytes]:
    body = upload(sample_report()) if method == "POST" else None
    response = fleet.client.request(method, path + query, json=body, headers=headers)
    return response.status_code, response.content


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_missing_malformed_unknown_and_revoked_tokens_get_the_same_401(fleet: Fleet, method: str,
                                                                       path: str) -> None:
    old = fleet.enroll()
    new = fleet.enroll(hw=old.hardware_id)  # re-enroll: the old token lives until the new one is used
    assert new.device_id == old.device_id
    assert _call(fleet, "GET", "/api/v1/policy", new.auth)[0] == 200  # first use revokes the old token
    cases = {
        "missing": {},
        "empty": {"Authorization": ""},
        "basic": {"Authorization": "Basic dXNlcjpwYXNz"},
        "bearer without token": {"Authorization": "Bearer"},
        "malformed": {"Authorization": "Bearer not-a-token"},
        "unknown": {"Authorization": f"Bearer {auth.new_token()}"},
        "secret instead of token": {"Authorization": f"Bearer {fleet.secret}"},
        "revoked": old.auth,
    }
    answers = {name: _call(fleet, method, path, headers) for name, headers in cases.items()}
    assert {status for status, _ in answers.values()} == {401}, answers
    bodies = {body for _, body in answers.values()}
    assert len(bodies) == 1, answers
    assert b'"unauthorized"' in bodies.pop()


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_tokens_in_the_query_string_are_refused(fleet: Fleet, method: str, path: str) -> None:
    device = fleet.enroll()
    for query in (f"?token={device.token}", f"?access_token={device.token}", f"?{device.token}"):
        # even with a valid Authorization header: the URL (and so some log) already holds the token
        status, body = _call(fleet, method, path, device.auth, query)
        assert status == 400 and b"token_in_query" in body, (query, body)
        status, body = _call(fleet, method, path, {}, query)
        assert status == 400 and b"token_in_query" in body


def test_the_database_holds_only_digests(fleet: Fleet) -> None:
    device = fleet.enroll()
    assert fleet.post(device, upload(sample_report())).status_code == 200
    dump = "\n".join(repr(tuple(row)) for table in TABLES for row in sql(fleet.database_url, f"SELECT * FROM {table}"))
    assert device.token not in dump and device.token[4:] not in dump
    assert fleet.secret not in dump and fleet.secret[4:] not in dump
    digests = [r.digest for r in sql(fleet.database_url, "SELECT digest FROM device_tokens WHERE device_id = :d",
                                     d=device.device_id)]
    assert digests == [hashlib.sha256(device.token.encode()).hexdigest()]
    assert len(device.token) >= 4 + 43  # 32 random bytes


def test_a_device_id_in_the_body_must_be_the_tokens_device(fleet: Fleet) -> None:
    a, b = fleet.enroll(), fleet.enroll()
    top = {**upload(sample_report()), "device_id": b.device_id}
    response = fleet.post(a, top)
    assert response.status_code == 403 and response.json()["error"]["code"] == "device_mismatch"
    nested = upload(sample_report())
    nested["report"]["network"]["device_id"] = b.device_id
    assert fleet.post(a, nested).status_code == 403
    assert fleet.count("SELECT count(*) FROM reports WHERE device_id IN (:a, :b)", a=a.device_id,
                       b=b.device_id) == 0
    # the device's own id is fine
    own = {**upload(sample_report()), "device_id": a.device_id}
    response = fleet.post(a, own)
    assert response.status_code == 200 and response.json()["device_id"] == a.device_id


def test_a_device_cannot_overwrite_another_devices_report(fleet: Fleet) -> None:
    a, b = fleet.enroll(), fleet.enroll()
    report = sample_report()
    assert fleet.post(b, upload(report)).json()["device_id"] == b.device_id
    forged = {**report, "verdict": "READY", "exit_code": 0}
    response = fleet.post(a, upload(forged))
    assert response.status_code == 200 and response.json()["device_id"] == a.device_id  # a's own row
    rows = sql(fleet.database_url, "SELECT device_id, verdict FROM reports WHERE report_id = :r ORDER BY verdict",
               r=report["report_id"])
    assert {(r.device_id, r.verdict) for r in rows} == {(b.device_id, "AT_RISK"), (a.device_id, "READY")}


def test_sweep_answers_are_per_device(fleet: Fleet) -> None:
    import datetime as dt

    from netcheck.collector import store
    from netcheck.collector.db import make_engine

    a, b = fleet.enroll(), fleet.enroll()
    engine = make_engine(fleet.database_url)
    try:
        with engine.begin() as conn:
            sweep = store.create_sweep(conn, store.utcnow(), dt.timedelta(hours=1))
    finally:
        engine.dispose()
    assert fleet.post(b, upload(sample_report(), sweep_id=sweep["id"])).status_code == 200
    pending_a = fleet.client.get("/api/v1/sweeps/pending", headers=a.auth).json()["sweeps"]
    pending_b = fleet.client.get("/api/v1/sweeps/pending", headers=b.auth).json()["sweeps"]
    assert sweep["id"] in [s["id"] for s in pending_a]
    assert sweep["id"] not in [s["id"] for s in pending_b]


def test_the_token_lookup_of_the_gate_relaxes_only_its_own_transaction(new_database: Callable[[], str]) -> None:
    """The gate's transaction (a counter, a token's first use) need not wait for the disk; the
    report transactions that follow on the same pooled connection must."""
    engine = make_engine(new_database(), pool_size=1, max_overflow=0)
    try:
        migrate(engine)
        with engine.begin() as conn:  # durable for this session, whatever the server's default
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("SET synchronous_commit = on")
        with engine.begin() as conn:
            found = store.lookup_token(conn, "nct_unknown", "authfail:198.18.0.1", 0, relax=True)
            assert found.device_id is None and found.failures == 0
            if conn.dialect.name == "postgresql":
                assert conn.exec_driver_sql("SHOW synchronous_commit").scalar_one() == "off"
        with engine.begin() as conn:  # the same connection: the pool holds one
            if conn.dialect.name == "postgresql":
                assert conn.exec_driver_sql("SHOW synchronous_commit").scalar_one() == "on"
    finally:
        engine.dispose()


def test_a_relaxed_transaction_leaves_the_next_one_durable(new_database: Callable[[], str]) -> None:
    """The gate's transactions commit without waiting for the disk (SQLite: ``synchronous=NORMAL``,
    set before they begin), and the report transaction that follows on the same pooled connection
    waits for it again (``FULL``)."""
    engine = make_engine(new_database(), pool_size=1, max_overflow=0)

    def durability(conn: sa.Connection) -> object:
        if conn.dialect.name == "postgresql":
            return conn.exec_driver_sql("SHOW synchronous_commit").scalar_one()
        return {1: "off", 2: "on"}[conn.exec_driver_sql("PRAGMA synchronous").scalar_one()]

    try:
        migrate(engine)
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("SET synchronous_commit = on")
            assert durability(conn) == "on"
        for _ in range(2):  # and again, once the connection has been relaxed before
            with relaxed_transaction(engine) as conn:
                relax_durability(conn)
                conn.exec_driver_sql("DELETE FROM rate_counters")  # a write: SQLite took its write lock
                assert durability(conn) == "off"
            with engine.begin() as conn:  # the same connection: the pool holds one
                assert durability(conn) == "on"
    finally:
        engine.dispose()


def _stored(fleet: Fleet, report: dict[str, object]) -> int:
    return fleet.count("SELECT count(*) FROM reports WHERE report_id = :r", r=report["report_id"])


def test_a_token_revoked_after_its_last_upload_is_refused_before_the_next_one_is_stored(fleet: Fleet) -> None:
    """A token the gate accepted lately skips the gate's own transaction (``app._Accepted``); it is
    still checked in the store's, before anything is stored: an administrator's revocation, or a
    re-enrollment whose new token was used, refuses the old token's next upload at once."""
    revoked, replaced = fleet.enroll(), fleet.enroll()
    for device in (revoked, replaced):
        assert fleet.post(device, upload(sample_report())).status_code == 200  # accepted: let through next time
    engine = make_engine(fleet.database_url)
    try:
        with engine.begin() as conn:
            store.revoke_device(conn, revoked.device_id, store.utcnow())
    finally:
        engine.dispose()
    new = fleet.enroll(hw=replaced.hardware_id)
    assert fleet.client.get("/api/v1/policy", headers=new.auth).status_code == 200  # revokes the old token
    for device in (revoked, replaced):
        report = sample_report()
        response = fleet.post(device, upload(report, seq=2))
        assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized", response.text
        assert _stored(fleet, report) == 0
        again = sample_report()
        assert fleet.post(device, upload(again, seq=3)).status_code == 401  # and through the gate again
        assert _stored(fleet, again) == 0
    report = sample_report()
    assert fleet.post(new, upload(report, seq=2)).status_code == 200
    assert _stored(fleet, report) == 1


def test_the_gate_in_the_stores_transaction_leaves_it_durable(new_database: Callable[[], str]) -> None:
    """The gate run inside the store's transaction (``_Api._gates_in_store``) does not relax it, as
    the gate's own transaction does: the report commit that follows waits for the disk."""
    url = new_database()
    engine = make_engine(url, pool_size=1, max_overflow=0)
    try:
        migrate(engine)
        api = _Api(Settings(database_url=url), engine)
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("SET synchronous_commit = on")
            answers = api._gates(conn, [("198.18.0.1", auth.new_token())], store.utcnow(), relax=False)
            assert answers[0].status == 401  # type: ignore[union-attr]
            if conn.dialect.name == "postgresql":
                assert conn.exec_driver_sql("SHOW synchronous_commit").scalar_one() == "on"
            answers = api._gates(conn, [("198.18.0.1", auth.new_token())], store.utcnow())
            if conn.dialect.name == "postgresql":  # the gate's own: relaxed (the test can fail)
                assert conn.exec_driver_sql("SHOW synchronous_commit").scalar_one() == "off"
    finally:
        engine.dispose()


def test_accepted_tokens_expire_and_stay_bounded() -> None:
    now = [0.0]
    accepted = _Accepted(ttl=10, limit=2, clock=lambda: now[0])
    accepted.add("nct_a", "dev-a")
    accepted.add("nct_b", "dev-b")
    assert accepted.device("nct_a") == "dev-a" and accepted.device(None) is None
    accepted.add("nct_c", "dev-c")  # over the limit: the oldest goes
    assert accepted.device("nct_a") is None and accepted.device("nct_c") == "dev-c"
    accepted.drop("nct_c")
    assert accepted.device("nct_c") is None
    now[0] = 11
    assert accepted.device("nct_b") is None  # expired
