"""Dashboard sign-in with Entra ID: ``ui_users.subject`` (an Entra user's tenant and object id; None
for local accounts) and ``ui_oidc_states`` (sign-ins under way: state digest, browser binding, nonce,
PKCE verifier; single use, short-lived).

Revision ID: 0010
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("ui_users", sa.Column("subject", sa.String(128), nullable=True))
    op.create_index("ix_ui_users_subject", "ui_users", ["subject"], unique=True)
    op.create_table(
        "ui_oidc_states",
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("browser", sa.String(64), nullable=False),
        sa.Column("nonce", sa.String(64), nullable=False),
        sa.Column("verifier", sa.String(128), nullable=False),
        sa.Column("next", sa.String(512), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("digest", name="pk_ui_oidc_states"),
    )
    op.create_index("ix_ui_oidc_states_expires_at", "ui_oidc_states", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_ui_oidc_states_expires_at", table_name="ui_oidc_states")
    op.drop_table("ui_oidc_states")
    op.drop_index("ix_ui_users_subject", table_name="ui_users")
    with op.batch_alter_table("ui_users") as batch:
        batch.drop_column("subject")
