"""Microsoft service health: ``health_issues``, ``health_services`` and ``health_poll``.

The collector polls Graph's service communications API (``netcheck.collector.health``) and keeps
the incidents and advisories it describes, each service's status, and the poller's lease and
status (last success, last error).

Revision ID: 0007
Revises: 0004 (0005 and 0006 are other branches' work; the lead relinks at merge)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "health_issues",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("service", sa.String(200), nullable=False),
        sa.Column("feature", sa.String(200)),
        sa.Column("title", sa.String(1000), nullable=False),
        sa.Column("impact", sa.Text),
        sa.Column("classification", sa.String(32), nullable=False),
        sa.Column("origin", sa.String(32)),
        sa.Column("status", sa.String(64), nullable=False),
        sa.Column("is_resolved", sa.Boolean, nullable=False),
        sa.Column("start_at", _TIME),
        sa.Column("end_at", _TIME),
        sa.Column("last_modified_at", _TIME),
        sa.Column("first_seen_at", _TIME, nullable=False),
        sa.Column("last_seen_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_health_issues"),
    )
    op.create_index("ix_health_issues_is_resolved", "health_issues", ["is_resolved"])
    op.create_index("ix_health_issues_start_at", "health_issues", ["start_at"])
    op.create_table(
        "health_services",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("service", sa.String(200), nullable=False),
        sa.Column("status", sa.String(64), nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_health_services"),
    )
    op.create_table(
        "health_poll",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("holder", sa.String(64)),
        sa.Column("lease_until", _TIME),
        sa.Column("next_poll_at", _TIME),
        sa.Column("last_attempt_at", _TIME),
        sa.Column("last_success_at", _TIME),
        sa.Column("last_error_at", _TIME),
        sa.Column("last_error", sa.String(500)),
        sa.Column("last_note", sa.String(500)),
        sa.PrimaryKeyConstraint("name", name="pk_health_poll"),
    )


def downgrade() -> None:
    op.drop_table("health_poll")
    op.drop_table("health_services")
    op.drop_index("ix_health_issues_start_at", table_name="health_issues")
    op.drop_index("ix_health_issues_is_resolved", table_name="health_issues")
    op.drop_table("health_issues")
