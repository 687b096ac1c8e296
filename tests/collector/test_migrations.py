"""The Alembic migrations build exactly the schema of ``db.py``, idempotently, on both databases."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from netcheck.collector.db import current_revision, head_revision, make_engine, metadata, migrate


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
    finally:
        engine.dispose()


def test_collectors_starting_together_migrate_once(new_database: Callable[[], str]) -> None:
    url = new_database()
    script = ("import sys; from netcheck.collector.db import make_engine, migrate; "
              "print(migrate(make_engine(sys.argv[1])))")
    procs = [subprocess.Popen([sys.executable, "-c", script, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(4)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, outputs
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


def test_reports_are_compressed_with_lz4_on_postgresql(new_database: Callable[[], str]) -> None:
    engine = make_engine(new_database())
    try:
        migrate(engine)
        with engine.connect() as conn:
            if conn.dialect.name != "postgresql":
                assert conn.dialect.name == "sqlite"
                return  # nothing to change on SQLite
            method = conn.execute(sa.text(
                "SELECT attcompression FROM pg_attribute WHERE attrelid = 'reports'::regclass "
                "AND attname = 'report_json'")).scalar_one()
            assert method == "l"
            # a real-sized report is stored compressed with it, and reads back whole
            conn.execute(sa.text("INSERT INTO enroll_secrets (id, digest, created_at) VALUES ('s', 'd', now())"))
            conn.execute(sa.text(
                "INSERT INTO devices (id, hardware_id, os, agent_version, secret_id, enrolled_at, updated_at) "
                "VALUES ('dev', 'hw', 'linux', '1', 's', now(), now())"))
            text = '{"probes": [' + ",".join(f'{{"host": "h{i}.example", "ms": {i}}}' for i in range(5000)) + "]}"
            conn.execute(sa.text(
                "INSERT INTO reports (device_id, report_id, body_sha256, measured_at, received_at, sent_at, skew_s, "
                "seq, dropped, spool_full, verdict, exit_code, tool_version, report_json) VALUES ('dev', 'r', 'x', "
                "now(), now(), now(), 0, 1, 0, false, 'READY', 0, '1', :t)"), {"t": text})
            row = conn.execute(sa.text(
                "SELECT pg_column_compression(report_json), report_json FROM reports WHERE report_id = 'r'")).one()
            assert row[0] == "lz4" and row[1] == text
    finally:
        engine.dispose()
