"""The collector's tables (SQLAlchemy Core), the engine, and schema migrations.

One schema for SQLite (the zero-configuration default) and PostgreSQL (production, several
collector processes). Alembic migrations in ``migrations/`` create and evolve it; ``migrate()``
runs them programmatically, under an advisory lock on PostgreSQL so that collectors starting
together do not race. SQLite runs in WAL mode with ``synchronous=FULL`` (a commit survives a
power cut; only a ``RELAXED`` transaction, a rate count, commits without waiting for the disk) and
every transaction starts with ``BEGIN IMMEDIATE`` so that writers queue on the busy timeout
instead of failing when a read lock cannot be upgraded.

Times are stored in UTC. The full report is kept as canonical JSON text; the fields the
dashboard filters on (verdict, per-workload status, sweep answers, tags) are columns and rows.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.pool import ConnectionPoolEntry

from netcheck.errors import ConfigError

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
#: arbitrary constant: the PostgreSQL advisory lock held while migrating
_MIGRATION_LOCK = 0x6E6574636865636B
_MIGRATE_THREADS = threading.Lock()
#: how long a collector starting on SQLite waits for another one's migration (converting the
#: rows of a big database can take minutes)
_MIGRATION_WAIT_S = 3600


class UTCDateTime(sa.types.TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on both databases (SQLite has no time zone type)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


#: 64-bit integer primary keys that are still SQLite rowid aliases
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

metadata = sa.MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})

enroll_secrets = sa.Table(
    "enroll_secrets", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("digest", sa.String(64), nullable=False, unique=True),
    sa.Column("site", sa.String(128)),
    sa.Column("note", sa.String(255)),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("revoked_at", UTCDateTime),
)

#: the device columns whose export texts ``devices`` keeps (``<column>_csv``, ``<column>_json``)
EXPORT_TEXTS = ("name", "os", "agent_version", "tags")
#: those texts' columns
EXPORT_TEXT_COLUMNS = tuple(f"{c}_{form}" for c in EXPORT_TEXTS for form in ("csv", "json"))
#: the pieces of the devices' rows the devices keep for the other lists' exports (``row_pieces``)
ROW_PIECE_COLUMNS = ("row_head_csv", "row_head_json", "row_seen_csv", "row_seen_json")

devices = sa.Table(
    "devices", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("hardware_id", sa.String(64), nullable=False, unique=True),
    sa.Column("name", sa.String(255)),
    sa.Column("os", sa.String(16), nullable=False),
    sa.Column("agent_version", sa.String(64), nullable=False),
    sa.Column("secret_id", sa.String(32), nullable=False),
    sa.Column("enrolled_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("last_seen_at", UTCDateTime),
    sa.Column("last_seq", sa.BigInteger),
    sa.Column("last_report_pk", sa.BigInteger),
    sa.Column("last_verdict", sa.String(16)),
    sa.Column("dropped_total", sa.BigInteger, nullable=False, server_default="0"),
    #: set by ``admin revoke-device``: the device cannot enroll again until ``admin readmit-device``
    sa.Column("revoked_at", UTCDateTime),
    #: the device's tags (``device_tags``) as one text (``store.pairs_text``), kept by ``store.enroll``
    #: (migration 0014): few distinct values across a fleet, so the overview's per-tag counts group
    #: the devices by it and parse each once, instead of joining ``device_tags`` to every device
    sa.Column("tags", sa.Text, nullable=False, server_default="{}"),
    #: the exports' texts of the columns above (migration 0016), so that PostgreSQL writes an export
    #: by joining kept texts instead of formatting 100,000 rows' cells: ``<column>_csv`` the CSV cell
    #: (``export.csv_cell``) and ``<column>_json`` the JSON value (``export.json_value``) of each of
    #: ``EXPORT_TEXTS``, kept by ``store.enroll`` (the only write of those columns), and
    #: ``last_seen_iso``, ``last_seen_at`` as ``store.iso`` writes it, kept at ingest
    *(sa.Column(name, sa.Text, nullable=False, server_default="") for name in EXPORT_TEXT_COLUMNS),
    sa.Column("last_seen_iso", sa.String(32)),
    #: ``revoked_at`` as ``store.iso`` writes it, kept by ``store.revoke_device`` and
    #: ``readmit_device`` (migration 0017)
    sa.Column("revoked_iso", sa.String(32)),
    #: the device's whole row in the dashboard's device lists' exports (``DEVICE_EXPORT_COLUMNS``):
    #: its CSV line (CR LF ended) and its JSON object, joined from the texts above (``export_lines``)
    #: by every write of a column they hold (enrollment, ingest, revoking, readmitting; migration
    #: 0017), so that PostgreSQL writes the list of every device by joining these lines
    sa.Column("export_csv", sa.Text, nullable=False, server_default=""),
    sa.Column("export_json", sa.Text, nullable=False, server_default=""),
    #: the pieces of the device's row in the other lists of devices' exports (a sweep's lists, the
    #: devices behind a Sites number; ``ROW_PIECES``, migration 0018), kept with the lines above:
    #: ``row_head_*`` its id and name (``id,name,`` and ``{"device_id": ..., "name": ...``), and
    #: ``row_seen_*`` its last contact and verdict (``,last_seen_at,last_verdict`` and
    #: ``, "last_seen_at": ..., "last_verdict": ...``), which those lists join around the cells of
    #: their own (a sweep's state and answer, the device's system)
    *(sa.Column(name, sa.Text, nullable=False, server_default="") for name in ROW_PIECE_COLUMNS),
    #: ``device_states.facts_digest`` of the device's latest state, kept by the ingest that keeps the
    #: state, by the same rule (a report with a newer or equal ``seq``; migration 0018): the devices
    #: behind a Sites number are the devices walked in the list's order whose digest is one of the
    #: number's, without a probe of another table per device
    sa.Column("facts_digest", sa.String(64)),
    sa.Index(None, "name", "id"),  # the dashboard's devices list, in name order (migration 0011)
    sa.Index(None, "revoked_at"),  # the revoked devices (administration page; migration 0011)
)



@dataclass(frozen=True)
class Kept:
    """A list's column whose export texts need no formatting in the database: its CSV cell and its
    JSON value as SQL expressions on the list's tables (texts ``devices`` keeps, or texts made of
    characters that need no neutralising, quoting or escaping), which the exports join as they are."""

    csv: Any
    json: Any


def plain(text: Any) -> Kept:
    """``Kept`` for a text column whose every value is its own CSV cell (no formula start, comma,
    quote or line break) and, in quotes, its own JSON string (no quote, backslash or control): the
    collector's own device ids (UUIDs), verdicts (the report schema's enum), times as ``store.iso``
    writes them, the sweep lists' states. NULL: an empty cell, ``null``."""
    return Kept(sa.func.coalesce(text, sa.literal("")),
                sa.func.coalesce(sa.literal('"').op("||")(text).op("||")(sa.literal('"')), sa.literal("null")))


#: the dashboard's device lists' columns, in their CSV order, and in their JSON objects' key order
#: (the list's query's: the tags come last, where the Python path puts the mapping it reads)
DEVICE_EXPORT_COLUMNS = ("device_id", "name", "os", "agent_version", "tags", "last_seen_at", "last_verdict",
                         "revoked_at")
DEVICE_EXPORT_KEYS = ("device_id", "name", "os", "agent_version", "last_seen_at", "last_verdict", "revoked_at",
                      "tags")
#: each of those columns' export texts, as ``devices`` keeps them
DEVICE_KEPT = {"device_id": plain(devices.c.id),
               **{c: Kept(devices.c[f"{c}_csv"], devices.c[f"{c}_json"]) for c in EXPORT_TEXTS},
               "last_seen_at": plain(devices.c.last_seen_iso), "last_verdict": plain(devices.c.last_verdict),
               "revoked_at": plain(devices.c.revoked_iso)}


def joined(parts: Sequence[Any]) -> Any:
    """The texts ``parts`` (SQL expressions) joined in SQL."""
    text = parts[0]
    for part in parts[1:]:
        text = text.op("||")(part)
    return text


def export_lines(changed: Mapping[str, Kept] | None = None, *, pieces: bool = True) -> dict[str, Any]:
    """``devices.export_csv`` and ``export_json`` as SQL expressions for a write of ``devices``: the
    row's kept texts (``DEVICE_KEPT``), but ``changed``'s for the columns the write changes (an
    ``UPDATE`` reads the row as it was). The CSV line is what ``export.table_csv`` writes (the cells
    joined by commas, CR LF ended), the object what ``json.dumps`` writes (``", "``, ``": "``). And,
    unless not ``pieces``, the pieces of the device's rows in the other lists the write changes
    (``row_pieces``)."""
    kept = {**DEVICE_KEPT, **(changed or {})}
    cells = [part for c in DEVICE_EXPORT_COLUMNS for part in (sa.literal(","), kept[c].csv)][1:]
    members = [part for i, c in enumerate(DEVICE_EXPORT_KEYS)
               for part in (sa.literal(("{" if i == 0 else ", ") + f'"{c}": '), kept[c].json)]
    lines = {"export_csv": joined([*cells, sa.literal("\r\n")]), "export_json": joined([*members, sa.literal("}")])}
    if not pieces:  # the lines alone (migration 0017, before the pieces' columns)
        return lines
    return {**lines, **row_pieces(kept, None if changed is None else set(changed))}


#: each of ``ROW_PIECE_COLUMNS``' pieces: the columns it holds, in their order
_ROW_PIECES = {"row_head": ("device_id", "name"), "row_seen": ("last_seen_at", "last_verdict")}


def row_pieces(kept: Mapping[str, Kept], changed: AbstractSet[str] | None = None) -> dict[str, Any]:
    """``devices.row_head_*`` and ``row_seen_*`` as SQL expressions from the texts ``kept`` (those of
    ``DEVICE_KEPT``), only the pieces holding one of the ``changed`` columns (None: every piece). In
    CSV, ``id,name,`` and ``,last_seen_at,last_verdict`` (a cell between them); in JSON, an object's
    first members without its braces' end, ``{"device_id": ..., "name": ...`` and
    ``, "last_seen_at": ..., "last_verdict": ...``, as ``json.dumps`` writes them."""
    out: dict[str, Any] = {}
    for piece, columns in _ROW_PIECES.items():
        if changed is not None and not changed & set(columns):
            continue
        head = piece == "row_head"
        cells = [part for c in columns for part in (sa.literal(","), kept[c].csv)]
        out[f"{piece}_csv"] = joined([*cells[1:], sa.literal(",")] if head else cells)
        out[f"{piece}_json"] = joined([part for i, c in enumerate(columns) for part in (
            sa.literal(("{" if head and i == 0 else ", ") + f'"{c}": '), kept[c].json)])
    return out


device_tags = sa.Table(
    "device_tags", metadata,
    sa.Column("device_id", sa.String(36), sa.ForeignKey("devices.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("key", sa.String(32), primary_key=True),
    sa.Column("value", sa.String(128), nullable=False),
    sa.Index(None, "key", "value"),
)

device_tokens = sa.Table(
    "device_tokens", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("device_id", sa.String(36), sa.ForeignKey("devices.id", ondelete="CASCADE"),
              nullable=False, index=True),
    sa.Column("digest", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("first_used_at", UTCDateTime),
    sa.Column("revoked_at", UTCDateTime),
)

reports = sa.Table(
    "reports", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("device_id", sa.String(36), sa.ForeignKey("devices.id", ondelete="CASCADE"), nullable=False),
    sa.Column("report_id", sa.String(36), nullable=False),
    sa.Column("body_sha256", sa.String(64), nullable=False),
    sa.Column("measured_at", UTCDateTime, nullable=False),
    sa.Column("received_at", UTCDateTime, nullable=False),
    sa.Column("sent_at", UTCDateTime, nullable=False),
    #: server clock minus the agent's clock when it sent the report (seconds, transit included)
    sa.Column("skew_s", sa.Float, nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("dropped", sa.BigInteger, nullable=False),
    sa.Column("spool_full", sa.Boolean, nullable=False),
    sa.Column("verdict", sa.String(16), nullable=False),
    sa.Column("exit_code", sa.SmallInteger, nullable=False),
    sa.Column("tool_version", sa.String(200), nullable=False),
    sa.Column("sweep_id", sa.String(64)),
    #: the stored report, in the form ``form`` names (``netcheck.collector.compact``; ingest writes
    #: an LZ4 frame of its canonical JSON, compaction rewrites it): ``store.decode_report``
    sa.Column("report_lz4", sa.LargeBinary, nullable=False),
    sa.Column("form", sa.String(8), nullable=False, server_default="lz4"),
    #: the device's site tag when the report arrived, and the report's ``outage.verdict``
    sa.Column("site", sa.String(128)),
    sa.Column("outage_verdict", sa.String(16)),
    sa.UniqueConstraint("device_id", "report_id"),
    sa.Index(None, "device_id", "received_at"),
    sa.Index(None, "received_at"),
    sa.Index(None, "site", "received_at"),
    #: the reports compaction has not rewritten yet (a few: those since its last pass)
    sa.Index("ix_reports_lz4_device_id", "device_id", sqlite_where=sa.text("form = 'lz4'"),
             postgresql_where=sa.text("form = 'lz4'")),
)

report_workloads = sa.Table(
    "report_workloads", metadata,
    sa.Column("report_pk", sa.BigInteger, sa.ForeignKey("reports.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("workload_id", sa.String(32), primary_key=True),
    sa.Column("device_id", sa.String(36), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("score", sa.SmallInteger),
    sa.Column("latency_ms", sa.Float),
    sa.Index(None, "workload_id", "status"),
)

sweeps = sa.Table(
    "sweeps", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Column("thorough", sa.Boolean, nullable=False),
    sa.Column("tag_key", sa.String(32)),
    sa.Column("tag_value", sa.String(128)),
    sa.Column("note", sa.String(255)),
)

sweep_responses = sa.Table(
    "sweep_responses", metadata,
    sa.Column("sweep_id", sa.String(36), sa.ForeignKey("sweeps.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("device_id", sa.String(36), sa.ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("report_pk", sa.BigInteger, nullable=False),
    sa.Column("received_at", UTCDateTime, nullable=False),
    #: the answer's per-workload statuses (``store.pairs_text``), for the sweep page's results
    #: per workload without reading ``report_workloads`` (migration 0013; None: not recorded)
    sa.Column("workloads", sa.Text),
    #: the answer's verdict (its report's ``reports.verdict``), kept at ingest (migration 0016): the
    #: answered devices' list reads it here instead of probing 3 million reports once per answer
    sa.Column("verdict", sa.String(16)),
    #: the answer's cells at the end of its row in the answered devices' export, after the device's
    #: kept pieces (``devices.row_*``): ``,verdict,received_at`` CR LF, and
    #: ``, "verdict": ..., "received_at": ..., "state": "answered"}`` (``answer_tails``), kept at
    #: ingest (migration 0018): nothing in them changes after
    sa.Column("tail_csv", sa.Text, nullable=False, server_default=""),
    sa.Column("tail_json", sa.Text, nullable=False, server_default=""),
)


def answer_tails(verdict: str | None, received_iso: str | None) -> dict[str, str]:
    """``sweep_responses.tail_csv`` and ``tail_json`` of an answer with this verdict (a word of the
    report schema's enum: nothing to neutralise, quote or escape) received at ``received_iso``
    (``store.iso``), as the Python writers write them (None: an empty cell, ``null``)."""
    return {"tail_csv": f",{verdict or ''},{received_iso or ''}\r\n",
            "tail_json": f', "verdict": {json.dumps(verdict)}, "received_at": {json.dumps(received_iso)}, '
                         '"state": "answered"}'}


#: the findings of each report, for the dashboard's "most common causes" (migration 0006):
#: joined on ``devices.last_report_pk``, so no page decompresses report blobs to count them
report_findings = sa.Table(
    "report_findings", metadata,
    sa.Column("report_pk", sa.BigInteger, sa.ForeignKey("reports.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("code", sa.String(64), primary_key=True),
    sa.Column("device_id", sa.String(36), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("workload_id", sa.String(32)),
    sa.Column("title", sa.String(255), nullable=False),
    sa.Column("remediation", sa.Text, nullable=False),
    sa.Index(None, "code"),
)

#: each device's latest state (migration 0013), kept at ingest by ``store.record_latest``: what the
#: dashboard's fleet-wide counts read instead of joining ``report_workloads`` / ``report_findings``
#: on every device's latest report. Only a report with a newer (or equal) ``seq`` replaces a row, the
#: rule ``devices.last_report_pk`` follows, so ``report_pk`` is that report.
device_states = sa.Table(
    "device_states", metadata,
    sa.Column("device_id", sa.String(36), sa.ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("report_pk", sa.BigInteger, nullable=False),
    sa.Column("received_at", UTCDateTime, nullable=False),
    sa.Column("verdict", sa.String(16), nullable=False),
    #: the report's ``outage.verdict``, and the device's site tag when it arrived
    sa.Column("outage_verdict", sa.String(16)),
    sa.Column("site", sa.String(128)),
    #: the digest of the report's prediction facts (``site_fact_sets``; None: the report has none):
    #: what the Sites pages group the devices by (``site_facts`` before migration 0014)
    sa.Column("facts_digest", sa.String(64)),
    #: per-workload statuses (``store.pairs_text``) and finding codes (``store.findings_text``):
    #: few distinct values across a fleet, so a count groups by them and parses each once
    sa.Column("workloads", sa.Text, nullable=False),
    sa.Column("findings", sa.Text, nullable=False),
    sa.Index(None, "facts_digest"),
)

#: the endpoint data each device's newest report was tested against, for the dashboard's
#: "Endpoint data" page (migration 0006; upserted on ingest, the highest report wins)
device_catalogs = sa.Table(
    "device_catalogs", metadata,
    sa.Column("device_id", sa.String(36), sa.ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("instance", sa.String(32), nullable=False),
    sa.Column("version", sa.String(200), nullable=False),
    sa.Column("report_pk", sa.BigInteger, nullable=False),
    sa.Index(None, "instance", "version"),
)

#: dashboard accounts (``netcheck admin user``): argon2 hashes, a role, the lock-out counter
ui_users = sa.Table(
    "ui_users", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("failed_logins", sa.Integer, nullable=False, server_default="0"),
    sa.Column("locked_until", UTCDateTime),
    sa.Column("last_login_at", UTCDateTime),
    #: an Entra ID user's "entra:<tenant id>:<object id>" (its password hash is unusable); None for a
    #: local account
    sa.Column("subject", sa.String(128)),
    sa.Index(None, "subject", unique=True),
)

#: dashboard sessions: the cookie's SHA-256 digest, never the cookie itself
ui_sessions = sa.Table(
    "ui_sessions", metadata,
    sa.Column("digest", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.BigInteger, sa.ForeignKey("ui_users.id", ondelete="CASCADE"), nullable=False,
              index=True),
    sa.Column("csrf", sa.String(64), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False, index=True),
)

#: sign-ins with Entra ID under way: the state's digest, single use, bound to the browser by the
#: digest of a cookie, with the nonce and PKCE verifier the callback needs
ui_oidc_states = sa.Table(
    "ui_oidc_states", metadata,
    sa.Column("digest", sa.String(64), primary_key=True),
    sa.Column("browser", sa.String(64), nullable=False),
    sa.Column("nonce", sa.String(64), nullable=False),
    sa.Column("verifier", sa.String(128), nullable=False),
    sa.Column("next", sa.String(512), nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False, index=True),
)

policy = sa.Table(
    "policy", metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value_json", sa.Text, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

#: fixed one-minute windows, shared by every collector process through the database
rate_counters = sa.Table(
    "rate_counters", metadata,
    sa.Column("bucket", sa.String(160), primary_key=True),
    sa.Column("minute", sa.BigInteger, primary_key=True),
    sa.Column("count", sa.Integer, nullable=False),
)


#: Microsoft service health, polled from Graph (netcheck.collector.health; migration 0007): the
#: issues (incidents and advisories) as Graph last described them
health_issues = sa.Table(
    "health_issues", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("service", sa.String(200), nullable=False),
    sa.Column("feature", sa.String(200)),
    sa.Column("title", sa.String(1000), nullable=False),
    sa.Column("impact", sa.Text),
    sa.Column("classification", sa.String(32), nullable=False),
    sa.Column("origin", sa.String(32)),
    sa.Column("status", sa.String(64), nullable=False),
    sa.Column("is_resolved", sa.Boolean, nullable=False),
    sa.Column("start_at", UTCDateTime),
    sa.Column("end_at", UTCDateTime),
    sa.Column("last_modified_at", UTCDateTime),
    sa.Column("first_seen_at", UTCDateTime, nullable=False),
    sa.Column("last_seen_at", UTCDateTime, nullable=False),
    sa.Index(None, "is_resolved"),
    sa.Index(None, "start_at"),
)

#: the health overview: each subscribed service's current status
health_services = sa.Table(
    "health_services", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("service", sa.String(200), nullable=False),
    sa.Column("status", sa.String(64), nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

#: one row per poller: the lease that lets one collector process poll, and the poll's status
health_poll = sa.Table(
    "health_poll", metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("holder", sa.String(64)),
    sa.Column("lease_until", UTCDateTime),
    sa.Column("next_poll_at", UTCDateTime),
    sa.Column("last_attempt_at", UTCDateTime),
    sa.Column("last_success_at", UTCDateTime),
    sa.Column("last_error_at", UTCDateTime),
    sa.Column("last_error", sa.String(500)),
    sa.Column("last_note", sa.String(500)),
)


#: a connection's execution option (``conn.execution_options(**{READS_ONLY: True})``): its transactions
#: only read. On SQLite they begin deferred, not ``BEGIN IMMEDIATE``: in WAL mode such a transaction
#: neither waits for nor holds the write lock, so a long count never holds up uploads or page views.
READS_ONLY = "netcheck_reads_only"


#: a connection's execution option (``conn.execution_options(**{RELAXED: True})``, or
#: ``relaxed_transaction``): on SQLite its transactions commit without waiting for the disk
#: (``synchronous=NORMAL``, set before they begin: SQLite refuses to change it inside one). In WAL
#: mode such a commit is appended to the log unsynced; the next durable commit (a report's, with
#: ``synchronous=FULL``) or checkpoint syncs the log and it with it, and a crash before that may lose
#: it, never corrupt anything. The PostgreSQL counterpart is ``relax_durability``.
RELAXED = "netcheck_relaxed"


def relax_durability(conn: Connection) -> None:
    """This transaction need not wait for its commit to reach the disk (PostgreSQL; on SQLite,
    open it with ``relaxed_transaction``).

    For rate-limit counters and a token's first use: losing the last of them in a crash is
    harmless, and not waiting for the WAL flush keeps the gate in front of every request fast.
    Reports are always committed durably.
    """
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL synchronous_commit = off")


@contextmanager
def relaxed_transaction(engine: Engine) -> Iterator[Connection]:
    """``engine.begin()`` for a transaction whose commit need not wait for the disk (``RELAXED``):
    on SQLite that is set here; on PostgreSQL the transaction relaxes itself (``relax_durability``,
    or ``store.lookup_tokens(relax=True)`` in its first statement, saving a round trip)."""
    with engine.connect() as conn:
        conn.execution_options(**{RELAXED: True})
        with conn.begin():
            yield conn


#: compiled SQL of the statements ``execute_hot`` ran on PostgreSQL, by statement identity
_HOT_SQL: dict[int, tuple[Any, str, dict[str, Any]]] = {}


def execute_hot(conn: Connection, stmt: Any,
                params: Mapping[str, Any] | Sequence[Mapping[str, Any]], *, each: bool = False) -> list[Any]:
    """Run one of the statements every upload runs; returns its rows (``row.column``), or with
    ``each`` (a sequence of parameter sets) the rows of each set, in order: on PostgreSQL one
    round trip for all of them (psycopg's ``executemany`` with ``returning``).

    On PostgreSQL the statement, compiled once, goes straight to the driver's cursor in the
    connection's transaction: SQLAlchemy's per-execution work (about 75 microseconds of CPU for an
    insert of a report, more than the driver's own) is a tenth of a collector's time per upload.
    So it is only for statements whose values the driver takes as they are: aware datetimes,
    bytes, numbers, strings (no ``TypeDecorator`` conversions run). Driver errors become
    SQLAlchemy's, as ``conn.execute`` raises them; a lost connection is invalidated and says so
    (``connection_invalidated``), so callers retry and answer 503 exactly as for ``conn.execute``.
    Elsewhere (SQLite) it is ``conn.execute``.
    """
    if conn.dialect.name != "postgresql":
        if each:
            assert not isinstance(params, Mapping)
            return [list(conn.execute(stmt, one).all()) for one in params]
        result = conn.execute(stmt, params)
        return list(result.all()) if result.returns_rows else []
    if not isinstance(params, Mapping) and len(params) == 1:  # one set: a plain execute, no pipeline
        rows = execute_hot(conn, stmt, params[0])
        return [rows] if each else rows
    entry = _HOT_SQL.get(id(stmt))
    if entry is None or entry[0] is not stmt:
        compiled = stmt.compile(dialect=conn.dialect)
        # the values the statement carries itself (literals, set_config's arguments)
        fixed = {name: value for name, value in compiled.params.items() if value is not None}
        entry = _HOT_SQL[id(stmt)] = (stmt, compiled.string, fixed)
    _, sql, fixed = entry
    if fixed:
        params = {**fixed, **params} if isinstance(params, Mapping) else [{**fixed, **p} for p in params]
    from psycopg.rows import namedtuple_row

    with _driver_cursor(conn, sql, row_factory=namedtuple_row) as cursor:
        if isinstance(params, Mapping):
            cursor.execute(sql, params)
        elif each:
            cursor.executemany(sql, params, returning=True)
            out = [list(cursor.fetchall())]
            while cursor.nextset():
                out.append(list(cursor.fetchall()))
            return out
        else:
            cursor.executemany(sql, params)
        return list(cursor.fetchall()) if cursor.description is not None else []


@contextmanager
def _driver_cursor(conn: Connection, sql: str, **options: Any) -> Iterator[Any]:
    """A psycopg cursor in ``conn``'s transaction (PostgreSQL); its errors become SQLAlchemy's
    (``sql`` names the statement, never its values), a lost connection invalidated and said so."""
    raw = conn.connection.dbapi_connection
    assert raw is not None
    cursor = raw.cursor(**options)
    try:
        yield cursor
    except conn.dialect.loaded_dbapi.Error as exc:
        lost = conn.dialect.is_disconnect(exc, raw, cursor)
        if lost:
            conn.invalidate(exc)
        raise sa.exc.DBAPIError.instance(sql, None, exc, conn.dialect.loaded_dbapi.Error, hide_parameters=True,
                                         connection_invalidated=lost, dialect=conn.dialect) from exc
    finally:
        cursor.close()


def insert_rows(conn: Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert rows (each the same columns) that no other row can conflict with, such as a stored
    report's workloads and findings, with values the driver takes as they are (as ``execute_hot``).

    On PostgreSQL one ``COPY ... FROM STDIN``: the rows go as one stream, where ``executemany``
    binds and executes each row on its own (in psycopg and in PostgreSQL: a report's 6 workloads
    and 2 findings were a tenth of the collector's CPU per upload). Elsewhere ``conn.execute``.
    """
    if not rows:
        return
    if conn.dialect.name != "postgresql":
        conn.execute(sa.insert(table), list(rows))
        return
    columns = list(rows[0])
    quote = conn.dialect.identifier_preparer.quote
    sql = f"COPY {quote(table.name)} ({', '.join(map(quote, columns))}) FROM STDIN"
    with _driver_cursor(conn, sql) as cursor, cursor.copy(sql) as copy:
        for row in rows:
            copy.write_row([row[name] for name in columns])


def dialect_insert(dialect: str, table: sa.Table) -> Any:
    """An INSERT that has ``on_conflict_do_nothing/do_update`` on this database (both have them)."""
    from sqlalchemy.dialects import postgresql, sqlite

    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def make_engine(url: str, *, pool_size: int = 10, max_overflow: int = 10, timeout_s: float = 5.0) -> Engine:
    """An engine for ``url``: ``sqlite:///path`` or ``postgresql+psycopg://...``.

    Its errors never carry the statement's values (a report, a token digest) into a log.

    ``postgresql://`` is taken to mean psycopg 3. SQLite's parent directory is created.
    """
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ConfigError(f"not a database URL: {url!r} (try sqlite:///path or postgresql://host/db)") from exc
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed, timeout_s, pool_size)
    if backend != "postgresql":
        raise ConfigError(f"unsupported database {backend!r}: use SQLite or PostgreSQL")
    try:
        return sa.create_engine(
            parsed, pool_size=pool_size, max_overflow=max_overflow, pool_timeout=timeout_s, hide_parameters=True,
            pool_recycle=3600,  # no pre-ping: the app retries once on a dropped connection
            connect_args={"connect_timeout": max(1, round(timeout_s)), "application_name": "netcheck-collector"},
        )
    except (ImportError, sa.exc.ArgumentError) as exc:
        raise ConfigError(f"cannot use database URL {parsed.render_as_string()}: {exc}") from exc


def _sqlite_engine(parsed: sa.engine.URL, timeout_s: float, pool_size: int) -> Engine:
    db = parsed.database
    if not db or db == ":memory:" or db.startswith("file:"):
        raise ConfigError("SQLite needs a file path: sqlite:///path/to/collector.db")
    _private_sqlite_file(Path(db).expanduser())
    engine = sa.create_engine(parsed, pool_size=pool_size, max_overflow=8, pool_timeout=timeout_s, hide_parameters=True,
                              connect_args={"timeout": timeout_s, "check_same_thread": False})
    busy_ms = int(timeout_s * 1000)

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (see _on_begin)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute(f"PRAGMA busy_timeout={busy_ms}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        if options.get(READS_ONLY):
            conn.exec_driver_sql("BEGIN")
            return
        # durable (FULL) unless the transaction is RELAXED; a PRAGMA only when it changes
        synchronous = "NORMAL" if options.get(RELAXED) else "FULL"
        info = conn.connection.info
        if info.get("synchronous") != synchronous:
            conn.exec_driver_sql(f"PRAGMA synchronous={synchronous}")
            info["synchronous"] = synchronous
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def no_commit_checkpoints(engine: Engine) -> None:
    """SQLite: this engine's commits no longer copy the write-ahead log into the database.

    By default the commit that takes the log past 1,000 pages does it (a checkpoint: 13-85 ms for
    a 16 MB log on the development host) before it returns, so an upload acknowledged after that
    commit waits for it, and so does every writer queued behind it in the collector's process
    (``app._Api._writing``). A collector calls ``checkpoint_wal`` on its own schedule instead.
    For connections made from now on (call it before the engine's first use)."""

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA wal_autocheckpoint=0")
        cur.close()


def checkpoint_wal(engine: Engine) -> None:
    """Copy SQLite's write-ahead log into the database, as far as no reader still needs it
    (``PASSIVE``: it neither waits for nor holds up writers), outside any transaction."""
    with engine.connect() as conn:
        raw: Any = conn.connection.driver_connection  # a PRAGMA outside the transaction SQLAlchemy would begin
        raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


def _private_sqlite_file(path: Path) -> None:
    """Make the database file (and, for the default location, its directory) readable by this
    user only: 0600, in a 0700 directory. SQLite gives its -wal and -shm files the database's
    mode. Only netcheck's own data directory is created; any other missing directory is an error
    (a typo in --database-url must not quietly start an empty fleet somewhere else)."""
    from netcheck.paths import data_dir

    parent = path.parent
    own_dir = parent == data_dir()
    if not parent.is_dir():
        if not own_dir:
            raise ConfigError(f"cannot create the SQLite database {path}: the directory {parent} does not exist "
                              "(create it, or correct --database-url)")
        try:
            parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the data directory {parent}: {exc.strerror or exc}") from exc
    try:
        if own_dir and parent.stat().st_uid == os.geteuid():
            parent.chmod(0o700)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_uid == os.geteuid():
                os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
    except OSError as exc:
        raise ConfigError(f"cannot open the SQLite database {path}: {exc.strerror or exc}") from exc


def _alembic_config(connection: Connection | None) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    cfg = _alembic_config(None)
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head


def current_revision(conn: Connection) -> str | None:
    """The schema revision recorded in the database, or None when it was never migrated."""
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one_or_none()


def migrate(engine: Engine, revision: str = "head", *, downgrade: bool = False) -> str:
    """Bring the schema to the newest revision (or up or down to ``revision``, for tests of a
    migration); returns the revision the database is at. Safe to run from several processes.

    All pending migrations run in one transaction, so that a collector never sees half of them
    and a failure leaves the schema as it was. Processes are kept apart by the database (an
    advisory lock on PostgreSQL, the write lock of ``BEGIN IMMEDIATE`` on SQLite), threads by a
    lock (Alembic's context is module-global). On SQLite, foreign keys are off while migrating:
    a migration that rebuilds a table (Alembic's batch mode) drops the old one, and with foreign
    keys on that drop would cascade into every row that refers to it. They are checked before
    the commit instead.
    """
    from alembic import command

    step = command.downgrade if downgrade else command.upgrade
    with _MIGRATE_THREADS, engine.connect() as conn:
        backend = conn.dialect.name
        raw: Any = conn.connection.driver_connection  # for PRAGMAs outside the transaction
        if backend == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _MIGRATION_LOCK})
            conn.commit()
        elif backend == "sqlite":
            raw.execute("PRAGMA foreign_keys=OFF")  # outside a transaction, or it is ignored
            busy_ms = raw.execute("PRAGMA busy_timeout").fetchone()[0]
            # wait for another process's migration as long as PostgreSQL's advisory lock would
            raw.execute(f"PRAGMA busy_timeout={_MIGRATION_WAIT_S * 1000}")
        try:
            with conn.begin():
                # Alembic sees the transaction is ours: it runs every step inside it, and never
                # commits between steps (which on SQLite would let another process in)
                step(_alembic_config(conn), revision)
                if backend == "sqlite" and conn.exec_driver_sql("PRAGMA foreign_key_check").first():
                    raise RuntimeError("migration left rows that refer to missing rows; rolled back")
                now = current_revision(conn)
        finally:
            if backend == "postgresql":
                conn.rollback()
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _MIGRATION_LOCK})
                conn.commit()
            elif backend == "sqlite":
                raw.execute("PRAGMA foreign_keys=ON")
                raw.execute(f"PRAGMA busy_timeout={busy_ms}")
    assert now is not None
    return now

#: each distinct set of facts once (laptops of one site and setup share them; migration 0008):
#: ``outage.facts`` and ``outage.sites`` as JSON, read by ``what_if``; ``device_states.facts_digest``
#: points at them
site_fact_sets = sa.Table(
    "site_fact_sets", metadata,
    sa.Column("digest", sa.String(64), primary_key=True),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

#: ``what_if``'s answer for one set of facts with some sites down (migration 0015), kept so that a
#: new worker process reads the Sites pages' predictions instead of computing them (200 fact sets:
#: about 300 ms): ``key`` digests every input (the code's inputs digest, the facts digest, the
#: sites down), so a changed input is a new key; the rows are ``what_if``'s, as JSON
site_predictions = sa.Table(
    "site_predictions", metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    #: the facts' digest (``site_fact_sets.digest``): forgotten with them (``site_facts.prune``)
    sa.Column("facts_digest", sa.String(64), nullable=False, index=True),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

#: the overview's 30-day chart (netcheck.collector.web.queries.FleetDays; migration 0011): per
#: finished UTC day (``YYYY-MM-DD``), the devices that reported that day, by the verdict of their
#: last report of the day; counted once, after the day ends, and kept (retention does not change it)
fleet_days = sa.Table(
    "fleet_days", metadata,
    sa.Column("day", sa.String(10), primary_key=True),
    sa.Column("ready", sa.Integer, nullable=False),
    sa.Column("at_risk", sa.Integer, nullable=False),
    sa.Column("not_ready", sa.Integer, nullable=False),
    sa.Column("unknown", sa.Integer, nullable=False),
    sa.Column("counted_at", UTCDateTime, nullable=False),
)
