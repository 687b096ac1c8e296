"""The dashboard: its accounts and sessions, each report's findings as rows, each device's endpoint data.

``ui_users`` holds argon2 password hashes and a role (admin, read-only), ``ui_sessions`` the
SHA-256 digest of each session cookie with its CSRF token; ``report_findings`` lets the fleet
overview count the most common causes without decompressing reports (filled on ingest; reports
stored before this migration have none); ``device_catalogs`` the endpoint data version each device's
newest report was tested against.

Revision ID: 0006
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)
_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "report_findings",
        sa.Column("report_pk", sa.BigInteger, nullable=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("device_id", sa.String(36), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("workload_id", sa.String(32)),
        sa.Column("title", sa.String(255), nullable=False),
        sa.Column("remediation", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("report_pk", "code", name="pk_report_findings"),
        sa.ForeignKeyConstraint(["report_pk"], ["reports.id"], name="fk_report_findings_report_pk_reports",
                                ondelete="CASCADE"),
    )
    op.create_index("ix_report_findings_code", "report_findings", ["code"])
    op.create_table(
        "device_catalogs",
        sa.Column("device_id", sa.String(36), nullable=False),
        sa.Column("instance", sa.String(32), nullable=False),
        sa.Column("version", sa.String(200), nullable=False),
        sa.Column("report_pk", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("device_id", name="pk_device_catalogs"),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], name="fk_device_catalogs_device_id_devices",
                                ondelete="CASCADE"),
    )
    op.create_index("ix_device_catalogs_instance_version", "device_catalogs", ["instance", "version"])
    op.create_table(
        "ui_users",
        sa.Column("id", _BIG_ID, nullable=False, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("failed_logins", sa.Integer, nullable=False, server_default="0"),
        sa.Column("locked_until", _TS),
        sa.Column("last_login_at", _TS),
        sa.PrimaryKeyConstraint("id", name="pk_ui_users"),
        sa.UniqueConstraint("name", name="uq_ui_users_name"),
    )
    op.create_table(
        "ui_sessions",
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("user_id", sa.BigInteger, nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("digest", name="pk_ui_sessions"),
        sa.ForeignKeyConstraint(["user_id"], ["ui_users.id"], name="fk_ui_sessions_user_id_ui_users",
                                ondelete="CASCADE"),
    )
    op.create_index("ix_ui_sessions_user_id", "ui_sessions", ["user_id"])
    op.create_index("ix_ui_sessions_expires_at", "ui_sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_table("ui_sessions")
    op.drop_table("ui_users")
    op.drop_table("device_catalogs")
    op.drop_table("report_findings")
