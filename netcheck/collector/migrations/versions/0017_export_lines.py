"""Each device's whole row in the dashboard's device lists' exports, kept where the row is:

- ``devices.revoked_iso``: ``revoked_at`` as ``store.iso`` writes it, kept by ``store.revoke_device``
  and ``readmit_device``; the upgrade writes it for the revoked devices (few) from ``revoked_at``;
- ``devices.export_csv`` and ``export_json``: the device's CSV line and JSON object as the Python
  path writes them (``db.export_lines``: joined from the texts migration 0016 keeps, the last
  contact's, the verdict and ``revoked_iso``), kept by every write of a column they hold; the
  upgrade joins them in one statement over the devices.

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from netcheck.collector.db import UTCDateTime, devices, export_lines
from netcheck.collector.store import iso

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

_revoked = sa.table("devices", sa.column("id"), sa.column("revoked_at", UTCDateTime), sa.column("revoked_iso"))


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("revoked_iso", sa.String(32)))
        batch.add_column(sa.Column("export_csv", sa.Text, nullable=False, server_default=""))
        batch.add_column(sa.Column("export_json", sa.Text, nullable=False, server_default=""))
    conn = op.get_bind()
    revoked = conn.execute(sa.select(_revoked.c.id, _revoked.c.revoked_at)
                           .where(_revoked.c.revoked_at.is_not(None))).all()
    if revoked:
        conn.execute(sa.update(_revoked).where(_revoked.c.id == sa.bindparam("d"))
                     .values(revoked_iso=sa.bindparam("t")), [{"d": r.id, "t": iso(r.revoked_at)} for r in revoked])
    conn.execute(sa.update(devices).values(**export_lines(pieces=False)))


def downgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        for name in ("export_json", "export_csv", "revoked_iso"):
            batch.drop_column(name)
