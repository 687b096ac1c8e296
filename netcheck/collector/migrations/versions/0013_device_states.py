"""Each device's latest state: ``device_states`` (verdict, outage verdict, site, the digest of the
prediction facts, per-workload statuses and finding codes of the device's latest report), kept at
ingest by ``store.record_latest``, and ``sweep_responses.workloads`` (a sweep answer's per-workload
statuses). The dashboard's fleet-wide counts read these instead of joining the per-report rows.

The upgrade fills both from what is stored: each device's latest report (``devices.last_report_pk``)
with its ``report_workloads``, ``report_findings`` and current ``site_facts`` (where ``site_facts``
holds another report, the latest report's facts are read back from it), and each sweep
answer's ``report_workloads``, in batches of ``BATCH`` devices or answers (keyset, by primary key).

Revision ID: 0013
Revises: 0011
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from netcheck.collector.site_facts import entry
from netcheck.collector.store import decode_report, findings_text, pairs_text

revision = "0013"
down_revision = "0011"
branch_labels = None
depends_on = None

BATCH = 5000

_devices = sa.table("devices", sa.column("id"), sa.column("last_seq"), sa.column("last_report_pk"))
_reports = sa.table("reports", sa.column("id"), sa.column("received_at"), sa.column("verdict"),
                    sa.column("outage_verdict"), sa.column("site"))
_site_facts = sa.table("site_facts", sa.column("device_id"), sa.column("report_pk"), sa.column("digest"))
_blobs = sa.table("reports", sa.column("id"), sa.column("report_lz4"))
_workloads = sa.table("report_workloads", sa.column("report_pk"), sa.column("workload_id"), sa.column("status"))
_findings = sa.table("report_findings", sa.column("report_pk"), sa.column("code"))
_responses = sa.table("sweep_responses", sa.column("sweep_id"), sa.column("device_id"), sa.column("report_pk"),
                      sa.column("workloads"))
_STATE_COLUMNS = ("device_id", "seq", "report_pk", "received_at", "verdict", "outage_verdict", "site",
                  "facts_digest", "workloads", "findings")


def upgrade() -> None:
    op.create_table(
        "device_states",
        sa.Column("device_id", sa.String(36), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("report_pk", sa.BigInteger, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("outage_verdict", sa.String(16)),
        sa.Column("site", sa.String(128)),
        sa.Column("facts_digest", sa.String(64)),
        sa.Column("workloads", sa.Text, nullable=False),
        sa.Column("findings", sa.Text, nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], name="fk_device_states_device_id_devices",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("device_id", name="pk_device_states"),
    )
    op.create_index("ix_device_states_facts_digest", "device_states", ["facts_digest"])
    op.add_column("sweep_responses", sa.Column("workloads", sa.Text))
    conn = op.get_bind()
    _fill_states(conn)
    _fill_answers(conn)


def downgrade() -> None:
    with op.batch_alter_table("sweep_responses") as batch:
        batch.drop_column("workloads")
    op.drop_index("ix_device_states_facts_digest", table_name="device_states")
    op.drop_table("device_states")


def _by_report(conn: sa.Connection, table: Any, column: Any, pks: Sequence[int]) -> dict[int, list[Any]]:
    """``column`` of ``table``'s rows for these reports (``(workload, status)`` pairs or codes), by report."""
    out: dict[int, list[Any]] = {pk: [] for pk in pks}
    for row in conn.execute(sa.select(table.c.report_pk, *column).where(table.c.report_pk.in_(pks))):
        out[row[0]].append(tuple(row[1:]) if len(column) > 1 else row[1])
    return out


def _fill_states(conn: sa.Connection) -> None:
    latest = (sa.select(_devices.c.id, _devices.c.last_seq, _devices.c.last_report_pk, _reports.c.received_at,
                        _reports.c.verdict, _reports.c.outage_verdict, _reports.c.site, _site_facts.c.digest,
                        _site_facts.c.report_pk.label("facts_pk"))
              .select_from(_devices.join(_reports, _reports.c.id == _devices.c.last_report_pk)
                           .outerjoin(_site_facts, sa.and_(_site_facts.c.device_id == _devices.c.id,
                                                           _site_facts.c.report_pk == _devices.c.last_report_pk)))
              .where(_devices.c.last_seq.is_not(None)).order_by(_devices.c.id).limit(BATCH))
    states = sa.table("device_states", *(sa.column(c) for c in _STATE_COLUMNS))
    after = None
    while True:
        rows = conn.execute(latest if after is None else latest.where(_devices.c.id > after)).all()
        if not rows:
            return
        pks = [r.last_report_pk for r in rows]
        workloads = _by_report(conn, _workloads, (_workloads.c.workload_id, _workloads.c.status), pks)
        findings = _by_report(conn, _findings, (_findings.c.code,), pks)
        digests = {r.id: r.digest for r in rows}
        unread = {r.last_report_pk: r.id for r in rows if r.facts_pk is None}
        for pk, blob in conn.execute(sa.select(_blobs.c.id, _blobs.c.report_lz4).where(_blobs.c.id.in_(unread))):
            found = entry(decode_report(blob))  # facts site_facts does not hold for the latest report: read back
            digests[unread[pk]] = None if found is None else found[0]
        conn.execute(states.insert(), [
            {"device_id": r.id, "seq": r.last_seq, "report_pk": r.last_report_pk, "received_at": r.received_at,
             "verdict": r.verdict, "outage_verdict": r.outage_verdict, "site": r.site,
             "facts_digest": digests[r.id],
             "workloads": pairs_text(workloads[r.last_report_pk]),
             "findings": findings_text(findings[r.last_report_pk])} for r in rows])
        after = rows[-1].id


def _fill_answers(conn: sa.Connection) -> None:
    answers = (sa.select(_responses.c.sweep_id, _responses.c.device_id, _responses.c.report_pk)
               .order_by(_responses.c.sweep_id, _responses.c.device_id).limit(BATCH))
    fill = (sa.update(_responses)
            .where(_responses.c.sweep_id == sa.bindparam("s"), _responses.c.device_id == sa.bindparam("d"))
            .values(workloads=sa.bindparam("w")))
    after: tuple[str, str] | None = None
    while True:
        query = answers if after is None else answers.where(
            sa.tuple_(_responses.c.sweep_id, _responses.c.device_id) > sa.tuple_(*after))
        rows = conn.execute(query).all()
        if not rows:
            return
        workloads = _by_report(conn, _workloads, (_workloads.c.workload_id, _workloads.c.status),
                               sorted({r.report_pk for r in rows}))
        conn.execute(fill, [{"s": r.sweep_id, "d": r.device_id, "w": pairs_text(workloads[r.report_pk])}
                            for r in rows])
        after = (rows[-1].sweep_id, rows[-1].device_id)
