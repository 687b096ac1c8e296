"""What the dashboard's fleet-wide counts read, kept where they need no join:

- ``devices.tags``: the device's tags (``device_tags``) as one text (``store.pairs_text``), kept by
  ``store.enroll``; the overview's per-tag counts group the devices by it. The upgrade fills it
  from ``device_tags`` in batches of ``BATCH`` devices (keyset, by device id).
- ``site_facts`` is dropped: the Sites pages group the devices by ``device_states.facts_digest``
  (migration 0013, kept at ingest for the report ``devices.last_report_pk`` names), so the
  per-device pointer ingest also kept (with its own rule for "latest": the highest ``report_pk``,
  which a late report from a spool took) is no longer read, nor written. ``site_fact_sets`` stays:
  the bodies the digests name. The downgrade makes the table again from the devices' latest states
  (each device's latest report and its digest), what 0008-0013 ingest kept but for late reports.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from netcheck.collector.store import pairs_text

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

BATCH = 5000

_devices = sa.table("devices", sa.column("id"), sa.column("tags"))
_tags = sa.table("device_tags", sa.column("device_id"), sa.column("key"), sa.column("value"))


def upgrade() -> None:
    op.drop_index("ix_site_facts_digest", table_name="site_facts")
    op.drop_table("site_facts")
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("tags", sa.Text, nullable=False, server_default="{}"))
    _fill_tags(op.get_bind())


def downgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("tags")
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


def _fill_tags(conn: sa.Connection) -> None:
    tagged = sa.select(_tags.c.device_id).distinct().order_by(_tags.c.device_id).limit(BATCH)
    fill = sa.update(_devices).where(_devices.c.id == sa.bindparam("d")).values(tags=sa.bindparam("t"))
    after = None
    while True:
        ids = list(conn.execute(tagged if after is None else tagged.where(_tags.c.device_id > after)).scalars())
        if not ids:
            return
        pairs: dict[str, list[tuple[str, str]]] = {i: [] for i in ids}
        for device_id, key, value in conn.execute(sa.select(_tags.c.device_id, _tags.c.key, _tags.c.value)
                                                  .where(_tags.c.device_id.in_(ids))):
            pairs[device_id].append((key, value))
        conn.execute(fill, [{"d": i, "t": pairs_text(p)} for i, p in pairs.items()])
        after = ids[-1]
