"""The dashboard at fleet scale: ``fleet_days`` (the overview's 30-day chart: per finished UTC
day, the devices that reported by the verdict of their last report that day, counted once and
kept), an index on ``devices (name, id)`` (the devices list's order: a page reads its rows from
the index instead of sorting every device) and one on ``devices (revoked_at)`` (the revoked
devices, on the administration page, without reading every device).

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fleet_days",
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("ready", sa.Integer, nullable=False),
        sa.Column("at_risk", sa.Integer, nullable=False),
        sa.Column("not_ready", sa.Integer, nullable=False),
        sa.Column("unknown", sa.Integer, nullable=False),
        sa.Column("counted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("day", name="pk_fleet_days"),
    )
    op.create_index("ix_devices_name_id", "devices", ["name", "id"])
    op.create_index("ix_devices_revoked_at", "devices", ["revoked_at"])


def downgrade() -> None:
    op.drop_index("ix_devices_revoked_at", table_name="devices")
    op.drop_index("ix_devices_name_id", table_name="devices")
    op.drop_table("fleet_days")
