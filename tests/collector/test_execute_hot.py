"""``db.execute_hot``: the statements every upload runs give the same rows and the same errors
as ``conn.execute``, on both databases (on PostgreSQL they bypass SQLAlchemy's execution)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from netcheck.collector.db import execute_hot, insert_rows, make_engine, migrate, rate_counters
from netcheck.collector.limits import _upsert


@pytest.fixture
def engine(new_database: Callable[[], str]) -> Iterator[Engine]:
    engine = make_engine(new_database())
    migrate(engine)
    yield engine
    engine.dispose()


def test_rows_parameters_and_literals_as_conn_execute(engine: Engine) -> None:
    upsert = _upsert(engine.dialect.name)  # the rate limiter's own statement
    with engine.begin() as conn:
        counts = [execute_hot(conn, upsert, {"bucket": "b", "minute": 7})[0].count for _ in range(3)]
        assert counts == [1, 2, 3]
        # many parameter sets, no rows back
        assert execute_hot(conn, sa.insert(rate_counters), [
            {"bucket": f"m{i}", "minute": i, "count": i} for i in range(5)]) == []
        listed = execute_hot(conn, sa.select(rate_counters.c.bucket, rate_counters.c.count, sa.literal("x").label("x"))
                             .where(rate_counters.c.minute < sa.bindparam("below")).order_by(rate_counters.c.bucket),
                             {"below": 3})
        assert [(r.bucket, r.count, r.x) for r in listed] == [("m0", 0, "x"), ("m1", 1, "x"), ("m2", 2, "x")]
    with engine.begin() as conn:  # and it all ran inside the transaction, which committed
        assert conn.execute(sa.select(sa.func.count()).select_from(rate_counters)).scalar_one() == 6


def test_each_parameter_set_gets_its_own_rows(engine: Engine) -> None:
    upsert = _upsert(engine.dialect.name)
    insert = sa.dialects.sqlite.insert if engine.dialect.name == "sqlite" else sa.dialects.postgresql.insert
    once = insert(rate_counters).on_conflict_do_nothing().returning(rate_counters.c.bucket)
    with engine.begin() as conn:
        rows = execute_hot(conn, upsert, [{"bucket": b, "minute": 1} for b in ("a", "b", "a", "a")], each=True)
        assert [[r.count for r in one] for one in rows] == [[1], [1], [2], [3]]
        rows = execute_hot(conn, once, [{"bucket": b, "minute": 2, "count": 0} for b in ("x", "x", "y")], each=True)
        assert [[r.bucket for r in one] for one in rows] == [["x"], [], ["y"]]


def test_errors_are_sqlalchemys_without_the_values_and_roll_back(engine: Engine) -> None:
    insert = sa.insert(rate_counters)
    with pytest.raises(sa.exc.IntegrityError) as caught, engine.begin() as conn:
        execute_hot(conn, insert, {"bucket": "dup", "minute": 1, "count": 1})
        execute_hot(conn, insert, {"bucket": "dup", "minute": 1, "count": 1})
    assert not caught.value.connection_invalidated
    assert "[parameters" not in str(caught.value)  # values may be a report: never in a log line
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(rate_counters)).scalar_one() == 0


def test_hits_counted_together_give_the_verdicts_of_one_after_the_other(engine: Engine) -> None:
    from netcheck.collector.limits import Limit, RateLimiter

    limiter = RateLimiter(clock=lambda: 600.0)
    limits = [Limit("dev:a", 2), Limit("dev:b", 2), Limit("dev:a", 2), Limit("off", 0), Limit("dev:a", 2)]
    with engine.begin() as conn:
        together = limiter.hit_each(conn, limits)
    with engine.begin() as conn:
        conn.execute(sa.delete(rate_counters))
        alone = [limiter.hit(conn, limit) for limit in limits]
    assert together == alone
    assert [v.limited for v in together] == [False, False, False, False, True]
    assert together[-1].retry_after == 60 and together[-1].bucket == "dev:a"


def test_rows_inserted_together_are_those_conn_execute_inserts(engine: Engine) -> None:
    """``insert_rows`` (on PostgreSQL a COPY, whose text format escapes tabs, newlines, backslashes
    and ``\\N``) stores each value as an INSERT does, NULLs and floats included; its errors are
    SQLAlchemy's without the values, and roll back."""
    table = sa.Table("copied", sa.MetaData(), sa.Column("key", sa.Integer, primary_key=True),
                     sa.Column("text", sa.Text, nullable=False), sa.Column("score", sa.SmallInteger),
                     sa.Column("ms", sa.Float))
    texts = ["plain", "tab\there", "new\nline\r", "back\\slash", "\\N", "\\.", "é 東京 😀", "", "'quoted'"]
    rows = [{"key": i, "text": text, "score": None if i % 2 else i, "ms": None if i % 3 else i / 7}
            for i, text in enumerate(texts)]
    with engine.begin() as conn:
        table.create(conn)
        insert_rows(conn, table, rows)
        insert_rows(conn, table, [])
        conn.execute(sa.insert(table), [{**row, "key": row["key"] + 100} for row in rows])
    with engine.connect() as conn:
        stored = [row._asdict() for row in conn.execute(sa.select(table).order_by(table.c.key))]
    assert stored[:len(rows)] == rows
    assert stored[len(rows):] == [{**row, "key": row["key"] + 100} for row in rows]
    with pytest.raises(sa.exc.IntegrityError) as caught, engine.begin() as conn:
        insert_rows(conn, table, [{"key": 1000, "text": "secret value", "score": 1, "ms": 1.0}])
        insert_rows(conn, table, [{"key": 1000, "text": "secret value", "score": 1, "ms": 1.0}])
    assert "secret value" not in str(caught.value) and not caught.value.connection_invalidated
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one() == 2 * len(rows)
