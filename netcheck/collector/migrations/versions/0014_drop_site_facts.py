"""Drop ``site_facts``: the Sites pages group the devices by ``device_states.facts_digest`` (migration
0013, kept at ingest for the report ``devices.last_report_pk`` names), so the per-device pointer
ingest also kept (with its own rule for "latest": the highest ``report_pk``, which a late report from
a spool took) is no longer read, nor written. ``site_fact_sets`` stays: the bodies the digests name.

The downgrade makes the table again from the devices' latest states (each device's latest report
and its digest), what 0008-0013 ingest kept but for late reports.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_site_facts_digest", table_name="site_facts")
    op.drop_table("site_facts")


def downgrade() -> None:
    op.create_table(
        "site_facts",
        sa.Column("device_id", sa.String(36), nullable=False),
        sa.Column("report_pk", sa.BigInteger, nullable=False),
        sa.Column("digest", sa.String(64)),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], name="fk_site_facts_device_id_devices",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("device_id", name="pk_site_facts"),
    )
    op.create_index("ix_site_facts_digest", "site_facts", ["digest"])
    op.execute("INSERT INTO site_facts (device_id, report_pk, digest) "
               "SELECT device_id, report_pk, facts_digest FROM device_states")
