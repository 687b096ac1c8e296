"""What the exports of a sweep's lists and of the devices behind a Sites number read as they are:

- ``devices.row_head_csv``, ``row_head_json`` (the device's id and name) and ``row_seen_csv``,
  ``row_seen_json`` (its last contact and verdict): the pieces of its row in those lists
  (``db.row_pieces``), kept by every write of a column they hold (enrollment, ingest); the upgrade
  joins them from the texts migrations 0016 and 0017 keep, in one statement over the devices;
- ``sweep_responses.tail_csv`` and ``tail_json``: the answer's own cells, its verdict and time, at
  the end of its row in the answered devices' list (``db.answer_tails``), kept at ingest; the
  upgrade writes them from each answer's columns in batches of ``BATCH`` (keyset);
- ``devices.facts_digest``: its latest state's (``device_states.facts_digest``), kept by the ingest
  that keeps the state; the upgrade copies it from the states, in the statement that joins the
  pieces (one rewrite of each device row).

Revision ID: 0018
Revises: 0017
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from netcheck.collector.db import (
    DEVICE_KEPT,
    ROW_PIECE_COLUMNS,
    UTCDateTime,
    answer_tails,
    device_states,
    devices,
    row_pieces,
)
from netcheck.collector.store import iso

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

BATCH = 5000

_TAILS = ("tail_csv", "tail_json")
_answers = sa.table("sweep_responses", sa.column("sweep_id"), sa.column("device_id"), sa.column("verdict"),
                    sa.column("received_at", UTCDateTime), *(sa.column(c) for c in _TAILS))


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        for name in ROW_PIECE_COLUMNS:
            batch.add_column(sa.Column(name, sa.Text, nullable=False, server_default=""))
        batch.add_column(sa.Column("facts_digest", sa.String(64)))
    with op.batch_alter_table("sweep_responses") as batch:
        for name in _TAILS:
            batch.add_column(sa.Column(name, sa.Text, nullable=False, server_default=""))
    conn = op.get_bind()
    state = sa.select(device_states.c.facts_digest).where(device_states.c.device_id == devices.c.id)
    conn.execute(sa.update(devices).values(**row_pieces(DEVICE_KEPT), facts_digest=state.scalar_subquery()))
    _fill_answers(conn)


def downgrade() -> None:
    with op.batch_alter_table("sweep_responses") as batch:
        for name in _TAILS:
            batch.drop_column(name)
    with op.batch_alter_table("devices") as batch:
        for name in (*ROW_PIECE_COLUMNS, "facts_digest"):
            batch.drop_column(name)


def _fill_answers(conn: sa.Connection) -> None:
    key = sa.tuple_(_answers.c.sweep_id, _answers.c.device_id)
    read = (sa.select(_answers.c.sweep_id, _answers.c.device_id, _answers.c.verdict, _answers.c.received_at)
            .order_by(_answers.c.sweep_id, _answers.c.device_id).limit(BATCH))
    fill = (sa.update(_answers)
            .where(_answers.c.sweep_id == sa.bindparam("s"), _answers.c.device_id == sa.bindparam("d"))
            .values({c: sa.bindparam(f"t_{c}") for c in _TAILS}))
    after = None
    while True:
        rows = conn.execute(read if after is None else read.where(key > sa.tuple_(*after))).all()
        if not rows:
            return
        conn.execute(fill, [{"s": r.sweep_id, "d": r.device_id,
                             **{f"t_{k}": v for k, v in answer_tails(r.verdict, iso(r.received_at)).items()}}
                            for r in rows])
        after = (rows[-1].sweep_id, rows[-1].device_id)
