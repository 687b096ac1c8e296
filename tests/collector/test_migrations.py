"""The Alembic migrations build exactly the schema of ``db.py``, idempotently, on both databases."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from netcheck.collector import store
from netcheck.collector.db import current_revision, head_revision, make_engine, metadata, migrate

REAL = Path(__file__).resolve().parent.parent / "fixtures" / "report-worldwide-lab.json"


def test_migrations_match_the_tables_and_are_idempotent(new_database: Callable[[], str]) -> None:
    engine = make_engine(new_database())
    try:
        with engine.connect() as conn:
            assert current_revision(conn) is None
        assert migrate(engine) == head_revision()
        assert migrate(engine) == head_revision()
        with engine.connect() as conn:
            assert current_revision(conn) == head_revision()
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
            if conn.dialect.name == "sqlite":  # off, and waiting long, only while migrating
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1
                assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one() == 5000
    finally:
        engine.dispose()


def test_collectors_starting_together_migrate_once(new_database: Callable[[], str]) -> None:
    url = new_database()
    script = ("import sys; from netcheck.collector.db import make_engine, migrate; "
              "print(migrate(make_engine(sys.argv[1])))")
    procs = [subprocess.Popen([sys.executable, "-c", script, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(4)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err.strip().splitlines()[-3:] for _, err in outputs]
    assert [out.strip() for out, _ in outputs] == [head_revision()] * 4
    # and threads of one process
    engines = [make_engine(url) for _ in range(3)]
    try:
        with ThreadPoolExecutor(3) as pool:
            assert list(pool.map(migrate, engines)) == [head_revision()] * 3
        with engines[0].connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
    finally:
        for engine in engines:
            engine.dispose()


def test_sqlite_is_durable_and_in_wal_mode(tmp_path: object) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/c.db")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar_one() == 2  # FULL
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1
    finally:
        engine.dispose()


_INSERT_0002 = sa.text(
    "INSERT INTO reports (device_id, report_id, body_sha256, measured_at, received_at, sent_at, skew_s, seq, dropped, "
    "spool_full, verdict, exit_code, tool_version, report_json) VALUES ('dev', :r, 'x', :t, :t, :t, 0, 1, 0, false, "
    "'READY', 0, '1', :j)")


def _device(conn: sa.Connection) -> None:
    now = dt.datetime.now(dt.UTC)
    conn.execute(sa.text("INSERT INTO enroll_secrets (id, digest, created_at) VALUES ('s', 'd', :t)"), {"t": now})
    conn.execute(sa.text("INSERT INTO devices (id, hardware_id, os, agent_version, secret_id, enrolled_at, "
                         "updated_at) VALUES ('dev', 'hw', 'linux', '1', 's', :t, :t)"), {"t": now})


def test_0003_compresses_the_stored_reports_and_its_downgrade_restores_them(new_database: Callable[[], str]) -> None:
    """Reports stored as text before 0003 read back whole after it, and after going back."""
    engine = make_engine(new_database())
    real = REAL.read_text("utf-8")
    texts = {f"r{i}": real.replace('"report_id": "', f'"report_id": "{i}-', 1) for i in range(1203)}  # > 2 batches
    try:
        migrate(engine, "0002")
        with engine.begin() as conn:
            _device(conn)
            now = dt.datetime.now(dt.UTC)
            conn.execute(_INSERT_0002, [{"r": r, "t": now, "j": j} for r, j in texts.items()])
            conn.execute(sa.text("INSERT INTO report_workloads (report_pk, workload_id, device_id, status) "
                                 "SELECT id, 'teams', device_id, 'ok' FROM reports"))
        migrate(engine)
        with engine.connect() as conn:
            # rebuilding the reports table on SQLite must not cascade into the rows that refer to it
            assert conn.execute(sa.text("SELECT count(*) FROM report_workloads")).scalar_one() == len(texts)
            rows = conn.execute(sa.text("SELECT report_id, report_lz4 FROM reports")).all()
            assert {r: store.decode_report(blob) for r, blob in rows} == {r: json.loads(j) for r, j in texts.items()}
            assert max(len(blob) for _, blob in rows) < len(real) / 4
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
            if conn.dialect.name == "postgresql":  # stored as it comes: the database does not compress it again
                assert conn.execute(sa.text(
                    "SELECT attstorage FROM pg_attribute WHERE attrelid = 'reports'::regclass "
                    "AND attname = 'report_lz4'")).scalar_one() == "e"
        assert migrate(engine, "0002", downgrade=True) == "0002"
        with engine.connect() as conn:
            back = dict(conn.execute(sa.text("SELECT report_id, report_json FROM reports")).all())
            assert back == texts
            assert conn.execute(sa.text("SELECT count(*) FROM report_workloads")).scalar_one() == len(texts)
    finally:
        engine.dispose()


def test_0005_fills_the_site_and_its_downgrade_turns_every_form_back_into_lz4(
        new_database: Callable[[], str]) -> None:
    engine = make_engine(new_database())
    real = json.loads(REAL.read_text("utf-8"))
    try:
        migrate(engine, "0004")
        with engine.begin() as conn:
            _device(conn)
            conn.execute(sa.text("INSERT INTO device_tags (device_id, key, value) VALUES ('dev', 'site', 'hq')"))
            now = dt.datetime.now(dt.UTC)
            conn.execute(sa.text(
                "INSERT INTO reports (device_id, report_id, body_sha256, measured_at, received_at, sent_at, skew_s, "
                "seq, dropped, spool_full, verdict, exit_code, tool_version, report_lz4) VALUES ('dev', :r, 'x', :t, "
                ":t, :t, 0, :s, 0, false, 'READY', 0, '1', :b)"),
                [{"r": f"r{i}", "t": now, "s": i, "b": store.encode_report(json.dumps(real).encode())}
                 for i in range(3)])
        assert migrate(engine, "0005") == "0005"
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT DISTINCT form, site FROM reports")).all() == [("lz4", "hq")]
        assert store.compact_all(engine, 1) == 3
        assert migrate(engine, "0004", downgrade=True) == "0004"
        with engine.connect() as conn:
            blobs = [bytes(b) for (b,) in conn.execute(sa.text("SELECT report_lz4 FROM reports ORDER BY id"))]
        decoded = [store.decode_report(b) for b in blobs]
        assert decoded[-1] == real  # the latest, complete
        assert decoded[0]["verdict"] == real["verdict"] and "_reduced" in decoded[0]  # reduced stays reduced
    finally:
        engine.dispose()
