"""Initial collector schema: secrets, devices, tokens, reports, sweeps, policy, rate counters.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)
_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "enroll_secrets",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("site", sa.String(128)),
        sa.Column("note", sa.String(255)),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("revoked_at", _TS),
        sa.PrimaryKeyConstraint("id", name="pk_enroll_secrets"),
        sa.UniqueConstraint("digest", name="uq_enroll_secrets_digest"),
    )
    op.create_table(
        "devices",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("hardware_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255)),
        sa.Column("os", sa.String(16), nullable=False),
        sa.Column("agent_version", sa.String(64), nullable=False),
        sa.Column("secret_id", sa.String(32), nullable=False),
        sa.Column("enrolled_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("last_seen_at", _TS),
        sa.Column("last_seq", sa.BigInteger),
        sa.Column("last_report_pk", sa.BigInteger),
        sa.Column("last_verdict", sa.String(16)),
        sa.Column("dropped_total", sa.BigInteger, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("id", name="pk_devices"),
        sa.UniqueConstraint("hardware_id", name="uq_devices_hardware_id"),
    )
    op.create_table(
        "device_tags",
        sa.Column("device_id", sa.String(36), nullable=False),
        sa.Column("key", sa.String(32), nullable=False),
        sa.Column("value", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("device_id", "key", name="pk_device_tags"),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], ondelete="CASCADE",
                                name="fk_device_tags_device_id_devices"),
    )
    op.create_index("ix_device_tags_key_value", "device_tags", ["key", "value"])
    op.create_table(
        "device_tokens",
        sa.Column("id", _BIG_ID, nullable=False, autoincrement=True),
        sa.Column("device_id", sa.String(36), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("first_used_at", _TS),
        sa.Column("revoked_at", _TS),
        sa.PrimaryKeyConstraint("id", name="pk_device_tokens"),
        sa.UniqueConstraint("digest", name="uq_device_tokens_digest"),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], ondelete="CASCADE",
                                name="fk_device_tokens_device_id_devices"),
    )
    op.create_index("ix_device_tokens_device_id", "device_tokens", ["device_id"])
    op.create_table(
        "reports",
        sa.Column("id", _BIG_ID, nullable=False, autoincrement=True),
        sa.Column("device_id", sa.String(36), nullable=False),
        sa.Column("report_id", sa.String(36), nullable=False),
        sa.Column("body_sha256", sa.String(64), nullable=False),
        sa.Column("measured_at", _TS, nullable=False),
        sa.Column("received_at", _TS, nullable=False),
        sa.Column("sent_at", _TS, nullable=False),
        sa.Column("skew_s", sa.Float, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("dropped", sa.BigInteger, nullable=False),
        sa.Column("spool_full", sa.Boolean, nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("exit_code", sa.SmallInteger, nullable=False),
        sa.Column("tool_version", sa.String(200), nullable=False),
        sa.Column("sweep_id", sa.String(64)),
        sa.Column("report_json", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_reports"),
        sa.UniqueConstraint("device_id", "report_id", name="uq_reports_device_id_report_id"),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], ondelete="CASCADE",
                                name="fk_reports_device_id_devices"),
    )
    _compress_reports_with_lz4()
    op.create_index("ix_reports_device_id_received_at", "reports", ["device_id", "received_at"])
    op.create_index("ix_reports_received_at", "reports", ["received_at"])
    op.create_table(
        "report_workloads",
        sa.Column("report_pk", sa.BigInteger, nullable=False),
        sa.Column("workload_id", sa.String(32), nullable=False),
        sa.Column("device_id", sa.String(36), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("score", sa.SmallInteger),
        sa.Column("latency_ms", sa.Float),
        sa.PrimaryKeyConstraint("report_pk", "workload_id", name="pk_report_workloads"),
        sa.ForeignKeyConstraint(["report_pk"], ["reports.id"], ondelete="CASCADE",
                                name="fk_report_workloads_report_pk_reports"),
    )
    op.create_index("ix_report_workloads_workload_id_status", "report_workloads", ["workload_id", "status"])
    op.create_table(
        "sweeps",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("thorough", sa.Boolean, nullable=False),
        sa.Column("tag_key", sa.String(32)),
        sa.Column("tag_value", sa.String(128)),
        sa.Column("note", sa.String(255)),
        sa.PrimaryKeyConstraint("id", name="pk_sweeps"),
    )
    op.create_table(
        "sweep_responses",
        sa.Column("sweep_id", sa.String(36), nullable=False),
        sa.Column("device_id", sa.String(36), nullable=False),
        sa.Column("report_pk", sa.BigInteger, nullable=False),
        sa.Column("received_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("sweep_id", "device_id", name="pk_sweep_responses"),
        sa.ForeignKeyConstraint(["sweep_id"], ["sweeps.id"], ondelete="CASCADE",
                                name="fk_sweep_responses_sweep_id_sweeps"),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], ondelete="CASCADE",
                                name="fk_sweep_responses_device_id_devices"),
    )
    op.create_table(
        "policy",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value_json", sa.Text, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_policy"),
    )
    op.create_table(
        "rate_counters",
        sa.Column("bucket", sa.String(160), nullable=False),
        sa.Column("minute", sa.BigInteger, nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("bucket", "minute", name="pk_rate_counters"),
    )


def _compress_reports_with_lz4() -> None:
    """PostgreSQL 14+ built with lz4: compress report JSON with it (faster than pglz, smaller)."""
    bind = op.get_bind()
    version = bind.dialect.server_version_info
    if bind.dialect.name != "postgresql" or version is None or version < (14,):
        return
    try:
        with bind.begin_nested():
            bind.exec_driver_sql("ALTER TABLE reports ALTER COLUMN report_json SET COMPRESSION lz4")
    except sa.exc.DBAPIError:
        pass  # a build without lz4 keeps the default (pglz)


def downgrade() -> None:
    for table in ("rate_counters", "policy", "sweep_responses", "sweeps", "report_workloads", "reports",
                  "device_tokens", "device_tags", "devices", "enroll_secrets"):
        op.drop_table(table)
