"""What the exports PostgreSQL writes read as they are, kept where the lists' rows are:

- ``devices.<column>_csv`` and ``<column>_json`` for ``name``, ``os``, ``agent_version`` and
  ``tags`` (``db.EXPORT_TEXTS``): each one's CSV cell and JSON value as the dashboard's Python
  writers write them (``store.export_texts``), kept by ``store.enroll``; and ``last_seen_iso``,
  ``last_seen_at`` as ``store.iso`` writes it, kept at ingest. The upgrade fills them from each
  device's columns (its tags from ``devices.tags``, the text enrollment keeps with ``device_tags``)
  in batches of ``BATCH`` devices (keyset, by device id).
- ``sweep_responses.verdict``: the answer's verdict, kept at ingest; the upgrade reads it from each
  answer's report.

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

from netcheck.collector.db import EXPORT_TEXT_COLUMNS, EXPORT_TEXTS, UTCDateTime
from netcheck.collector.store import export_texts, iso

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

BATCH = 5000

_COLUMNS = EXPORT_TEXT_COLUMNS
_devices = sa.table("devices", sa.column("id"), *(sa.column(c) for c in (*EXPORT_TEXTS, *_COLUMNS)),
                    sa.column("last_seen_at", UTCDateTime), sa.column("last_seen_iso"))


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        for name in _COLUMNS:
            batch.add_column(sa.Column(name, sa.Text, nullable=False, server_default=""))
        batch.add_column(sa.Column("last_seen_iso", sa.String(32)))
    with op.batch_alter_table("sweep_responses") as batch:
        batch.add_column(sa.Column("verdict", sa.String(16)))
    conn = op.get_bind()
    _fill_devices(conn)
    conn.execute(sa.text("UPDATE sweep_responses SET verdict = "
                         "(SELECT verdict FROM reports WHERE reports.id = sweep_responses.report_pk)"))


def downgrade() -> None:
    with op.batch_alter_table("sweep_responses") as batch:
        batch.drop_column("verdict")
    with op.batch_alter_table("devices") as batch:
        for name in (*_COLUMNS, "last_seen_iso"):
            batch.drop_column(name)


def _fill_devices(conn: sa.Connection) -> None:
    read = (sa.select(_devices.c.id, *(_devices.c[c] for c in EXPORT_TEXTS), _devices.c.last_seen_at)
            .order_by(_devices.c.id).limit(BATCH))
    fill = (sa.update(_devices).where(_devices.c.id == sa.bindparam("d"))
            .values({c: sa.bindparam(f"t_{c}") for c in (*_COLUMNS, "last_seen_iso")}))
    after = None
    while True:
        rows = conn.execute(read if after is None else read.where(_devices.c.id > after)).all()
        if not rows:
            return
        texts = [export_texts({**r._mapping, "tags": json.loads(r.tags)}) for r in rows]
        conn.execute(fill, [{"d": r.id, "t_last_seen_iso": iso(r.last_seen_at), **{f"t_{k}": v for k, v in t.items()}}
                            for r, t in zip(rows, texts, strict=True)])
        after = rows[-1].id
