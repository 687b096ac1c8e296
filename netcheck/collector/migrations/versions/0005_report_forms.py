"""Stored reports have a form, a site and an outage verdict: ``reports.form``, ``site``, ``outage_verdict``.

``form`` says how ``report_lz4`` holds the report (``netcheck.collector.compact``): ``lz4`` as
ingest writes it (every existing row), ``zlib`` once the compaction pass recompressed it, and
``reduced`` for a report older than its device's newest ``full_history`` ones, kept without
the detail of its successful probes. ``site`` is the device's ``site`` tag when the report
arrived (filled from the current tags for existing rows), ``outage_verdict`` the report's
``outage.verdict`` (left empty for existing rows: filling it would decode every report). A
partial index holds the ``lz4`` rows alone: the ones compaction has yet to rewrite.

The downgrade turns every blob back into an LZ4 frame of its JSON; a reduced report stays
reduced (its dropped detail is gone).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import lz4.frame
import sqlalchemy as sa
from alembic import op

from netcheck.collector.compact import inflate

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_BATCH = 500


def upgrade() -> None:
    op.add_column("reports", sa.Column("form", sa.String(8), nullable=False, server_default="lz4"))
    op.add_column("reports", sa.Column("site", sa.String(128), nullable=True))
    op.add_column("reports", sa.Column("outage_verdict", sa.String(16), nullable=True))
    op.execute("UPDATE reports SET site = (SELECT value FROM device_tags WHERE device_tags.device_id = "
               "reports.device_id AND device_tags.key = 'site')")
    op.create_index("ix_reports_site_received_at", "reports", ["site", "received_at"])
    op.create_index("ix_reports_lz4_device_id", "reports", ["device_id"], sqlite_where=sa.text("form = 'lz4'"),
                    postgresql_where=sa.text("form = 'lz4'"))


def downgrade() -> None:
    bind = op.get_bind()
    table = sa.table("reports", sa.column("id", sa.BigInteger), sa.column("form", sa.String),
                     sa.column("report_lz4", sa.LargeBinary))
    while True:
        rows = bind.execute(sa.select(table.c.id, table.c.report_lz4).where(table.c.form != "lz4")
                            .order_by(table.c.id).limit(_BATCH)).all()
        if not rows:
            break
        bind.execute(sa.update(table).where(table.c.id == sa.bindparam("b_id"))
                     .values(report_lz4=sa.bindparam("b_blob"), form="lz4"),
                     [{"b_id": r[0], "b_blob": lz4.frame.compress(inflate(r[1]))} for r in rows])
    op.drop_index("ix_reports_lz4_device_id", table_name="reports")
    op.drop_index("ix_reports_site_received_at", table_name="reports")
    with op.batch_alter_table("reports") as batch:
        batch.drop_column("outage_verdict")
        batch.drop_column("site")
        batch.drop_column("form")
