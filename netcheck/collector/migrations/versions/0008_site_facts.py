"""The Sites page's cache: ``site_facts`` (per device, the latest report read and the digest of
its prediction facts) and ``site_fact_sets`` (each distinct set of facts once).

Both are derived from the stored reports and may be emptied at any time: the dashboard refills
them from the devices' latest reports.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
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
    op.create_table(
        "site_fact_sets",
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("digest", name="pk_site_fact_sets"),
    )


def downgrade() -> None:
    op.drop_table("site_fact_sets")
    op.drop_index("ix_site_facts_digest", table_name="site_facts")
    op.drop_table("site_facts")
