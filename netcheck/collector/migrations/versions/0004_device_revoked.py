"""A revoked device stays revoked: ``devices.revoked_at``.

``netcheck admin revoke-device`` sets it (and revokes the device's tokens); enrollment refuses a
device that has it, whatever secret it brings, until ``netcheck admin readmit-device`` clears it.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("devices", sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("revoked_at")
