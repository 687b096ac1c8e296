"""``site_predictions``: the Sites pages' ``what_if`` answers, one per set of facts and sites down,
kept so that a new worker process reads them instead of computing them (``web/sites.py``). A
cache: the downgrade drops it, the upgrade starts it empty.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "site_predictions",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("facts_digest", sa.String(64), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_site_predictions"),
    )
    op.create_index("ix_site_predictions_facts_digest", "site_predictions", ["facts_digest"])


def downgrade() -> None:
    op.drop_index("ix_site_predictions_facts_digest", table_name="site_predictions")
    op.drop_table("site_predictions")
