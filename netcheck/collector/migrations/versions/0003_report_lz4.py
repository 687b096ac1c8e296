"""Stored reports are compressed by the collector (an LZ4 frame), not by the database.

The collector already holds each report's canonical JSON; compressing it there (0.13 ms for a
real 237 KiB report, down to about 29 KiB) spares PostgreSQL the UTF-8 check and its own TOAST
compression, and sends an eighth of the bytes over the wire: the database's CPU per stored
report fell from about 1.3 to 1.05 ms (bench/bench_ingest.py). The column is stored
``EXTERNAL`` on PostgreSQL, so the database does not try to compress it again. Read it back
with ``netcheck.collector.store.decode_report`` (or ``lz4 -d`` on an exported blob: it is a
standard LZ4 frame).

Existing rows are converted in batches; the downgrade converts them back.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lz4.frame
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_BATCH = 500


def _convert(source: str, target: str, fn: Callable[[Any], Any]) -> None:
    """Fill ``target`` from ``source`` for every row, ``_BATCH`` rows per statement."""
    bind = op.get_bind()
    table = sa.table("reports", sa.column("id", sa.BigInteger), sa.column(source), sa.column(target))
    last = -1
    while True:
        rows = bind.execute(sa.select(table.c.id, table.c[source]).where(table.c.id > last)
                            .order_by(table.c.id).limit(_BATCH)).all()
        if not rows:
            return
        bind.execute(sa.update(table).where(table.c.id == sa.bindparam("b_id"))
                     .values({target: sa.bindparam("b_value")}),
                     [{"b_id": row[0], "b_value": fn(row[1])} for row in rows])
        last = rows[-1][0]


def upgrade() -> None:
    op.add_column("reports", sa.Column("report_lz4", sa.LargeBinary(), nullable=True))
    _convert("report_json", "report_lz4", lambda text: lz4.frame.compress(text.encode("utf-8")))
    with op.batch_alter_table("reports") as batch:
        batch.drop_column("report_json")
        batch.alter_column("report_lz4", existing_type=sa.LargeBinary(), nullable=False)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE reports ALTER COLUMN report_lz4 SET STORAGE EXTERNAL")


def downgrade() -> None:
    op.add_column("reports", sa.Column("report_json", sa.Text(), nullable=True))
    _convert("report_lz4", "report_json", lambda blob: lz4.frame.decompress(blob).decode("utf-8"))
    with op.batch_alter_table("reports") as batch:
        batch.drop_column("report_lz4")
        batch.alter_column("report_json", existing_type=sa.Text(), nullable=False)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE reports ALTER COLUMN report_json SET COMPRESSION lz4")
