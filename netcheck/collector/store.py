"""What the collector does with its database: enroll, authenticate, ingest, sweeps, policy, admin.

Every function takes an open ``Connection`` inside a transaction the caller owns (the web app
commits before it acknowledges anything; the admin CLI commits per command). Nothing here knows
about HTTP: refusals are the exceptions at the top of this module.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import json
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from netcheck import fleet_policy
from netcheck.collector import auth, compact, export, site_facts
from netcheck.collector.db import (
    EXPORT_TEXTS,
    Kept,
    answer_tails,
    device_catalogs,
    device_states,
    device_tags,
    device_tokens,
    devices,
    dialect_insert,
    enroll_secrets,
    execute_hot,
    export_lines,
    insert_rows,
    plain,
    policy,
    rate_counters,
    report_findings,
    report_workloads,
    reports,
    sweep_responses,
    sweeps,
)
from netcheck.errors import ConfigError

log = logging.getLogger(__name__)


class Unauthorized(Exception):
    """Wrong, unknown or revoked credential (secret or token)."""


class DeviceRevoked(Exception):
    """An administrator revoked this device: it cannot enroll again until it is re-admitted."""


class ReportConflict(Exception):
    """The same report id was already stored for this device with a different body."""


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


#: a NULL text in the expressions of the devices' export lines (``db.export_lines``)
_NO_TEXT = sa.null().cast(sa.String)


def _insert(conn: Connection, table: sa.Table) -> Any:
    return dialect_insert(conn.dialect.name, table)


# --- enrollment and tokens -------------------------------------------------------------------

@dataclass(frozen=True)
class Enrolled:
    device_id: str
    token: str
    created: bool


def _secret_row(conn: Connection, secret: str) -> sa.Row[Any]:
    d = auth.digest(secret)
    row = conn.execute(sa.select(enroll_secrets).where(enroll_secrets.c.digest == d)).first()
    if row is None or row.revoked_at is not None or not auth.same_digest(row.digest, d):
        raise Unauthorized
    return row


def enroll(conn: Connection, secret: str, device: Mapping[str, Any], now: dt.datetime) -> Enrolled:
    """Exchange a valid secret for a new device token; the same hardware id is the same device.
    A revoked device is refused (``DeviceRevoked``), whatever secret it brings.

    The previous tokens of a re-enrolled device stay valid until the new one is first used
    (acquire, then replace: see ``authenticate``).
    """
    sec = _secret_row(conn, secret)
    hardware_id = str(device["hardware_id"]).lower()
    tags = {str(k): str(v) for k, v in (device.get("tags") or {}).items()}
    if sec.site:
        tags["site"] = sec.site
    shown = {"name": device.get("name"), "os": device["os"], "agent_version": device["agent_version"]}
    texts = export_texts({**shown, "tags": tags})
    fields = {**shown, "secret_id": sec.id, "updated_at": now, "tags": pairs_text(tags.items()), **texts}
    # the export lines: of a new device, from these texts alone; of one enrolling again, with the
    # texts it keeps of its last contact and verdict
    changed = {c: Kept(sa.literal(texts[f"{c}_csv"]), sa.literal(texts[f"{c}_json"])) for c in EXPORT_TEXTS}
    new_id = str(uuid.uuid4())
    fresh = {**changed, "device_id": plain(sa.literal(new_id)),
             **{c: plain(_NO_TEXT) for c in ("last_seen_at", "last_verdict", "revoked_at")}}
    inserted = conn.execute(
        _insert(conn, devices).values(id=new_id, hardware_id=hardware_id, enrolled_at=now, dropped_total=0,
                                      **fields, **export_lines(fresh))
        .on_conflict_do_nothing(index_elements=[devices.c.hardware_id]).returning(devices.c.id)
    ).scalar_one_or_none()
    if inserted is None:
        device_id, revoked_at = conn.execute(sa.select(devices.c.id, devices.c.revoked_at)
                                             .where(devices.c.hardware_id == hardware_id)).one()
        if revoked_at is not None:
            raise DeviceRevoked(device_id)
        conn.execute(sa.update(devices).where(devices.c.id == device_id).values(**fields, **export_lines(changed)))
        conn.execute(sa.delete(device_tags).where(device_tags.c.device_id == device_id))
    else:
        device_id = inserted
    if tags:
        conn.execute(sa.insert(device_tags), [{"device_id": device_id, "key": k, "value": v}
                                              for k, v in sorted(tags.items())])
    token = auth.new_token()
    conn.execute(sa.insert(device_tokens).values(device_id=device_id, digest=auth.digest(token), created_at=now))
    return Enrolled(device_id, token, inserted is not None)


_DUMMY = sa.select(sa.literal(1).label("one")).subquery("one_row")
_TOKEN_COLUMNS = (
    device_tokens.c.id, device_tokens.c.device_id, device_tokens.c.digest, device_tokens.c.first_used_at,
    device_tokens.c.revoked_at,
    sa.select(rate_counters.c.count).where(rate_counters.c.bucket == sa.bindparam("b_bucket"),
                                           rate_counters.c.minute == sa.bindparam("b_minute"))
    .scalar_subquery().label("failures"),
)
_TOKEN_FROM = _DUMMY.outerjoin(device_tokens, device_tokens.c.digest == sa.bindparam("b_digest"))
#: the token by digest, and in the same round trip the failures counted for the client's address
_TOKEN_AND_FAILURES = sa.select(*_TOKEN_COLUMNS).select_from(_TOKEN_FROM)
#: the same, and (PostgreSQL) ``SET LOCAL synchronous_commit = off`` in that round trip too
_TOKEN_AND_FAILURES_RELAXED = sa.select(
    *_TOKEN_COLUMNS, sa.func.set_config("synchronous_commit", "off", True).label("relaxed"),
).select_from(_TOKEN_FROM)


@dataclass(frozen=True)
class TokenLookup:
    #: the token's device when the token is known and not revoked
    device_id: str | None
    #: failed authentications counted for ``bucket`` in this window so far
    failures: int
    row: Any


def lookup_token(conn: Connection, token: str | None, bucket: str, window: int, *,
                 relax: bool = False) -> TokenLookup:
    """Look a token up (by digest, then compared in constant time); a read, no side effects.

    ``relax``: the transaction need not wait for its commit to reach the disk, as with
    ``db.relax_durability`` (which only means something on PostgreSQL), but set by the lookup
    itself to save a round trip.
    """
    return lookup_tokens(conn, [(token, bucket)], window, relax=relax)[0]


def lookup_tokens(conn: Connection, requests: Sequence[tuple[str | None, str]], window: int, *,
                  relax: bool = False) -> list[TokenLookup]:
    """``lookup_token`` of (token, bucket) pairs, in one statement (on PostgreSQL one round trip)."""
    digests = [auth.digest(token or "-") for token, _ in requests]  # malformed and unknown cost the same
    stmt = _TOKEN_AND_FAILURES_RELAXED if relax and conn.dialect.name == "postgresql" else _TOKEN_AND_FAILURES
    found = execute_hot(conn, stmt, [{"b_digest": d, "b_bucket": bucket[:160], "b_minute": window}
                                     for d, (_, bucket) in zip(digests, requests, strict=True)], each=True)
    out = []
    for (token, _), d, ((row,)) in zip(requests, digests, found, strict=True):
        failures = int(row.failures or 0)
        if token is None or row.id is None or row.revoked_at is not None or not auth.same_digest(row.digest, d):
            out.append(TokenLookup(None, failures, None))
        else:
            out.append(TokenLookup(str(row.device_id), failures, row))
    return out


def mark_used(conn: Connection, found: TokenLookup, now: dt.datetime) -> None:
    """First use of a token revokes the device's older tokens (acquire, then replace)."""
    row = found.row
    if row is None or row.first_used_at is not None:
        return
    conn.execute(sa.update(device_tokens).where(device_tokens.c.id == row.id).values(first_used_at=now))
    conn.execute(sa.update(device_tokens)
                 .where(device_tokens.c.device_id == row.device_id, device_tokens.c.id < row.id,
                        device_tokens.c.revoked_at.is_(None))
                 .values(revoked_at=now))


def authenticate(conn: Connection, token: str | None, now: dt.datetime) -> str | None:
    """The device a token belongs to, or None (and the first use of a token recorded)."""
    found = lookup_token(conn, token, "-", 0)
    mark_used(conn, found, now)
    return found.device_id


def revoke_device(conn: Connection, device_id: str, now: dt.datetime) -> int | None:
    """Revoke a device (a lost laptop): every token, and any new enrollment of the same hardware
    until ``readmit_device``. Returns how many tokens were active, None if there is no such device."""
    revoked_iso = sa.func.coalesce(devices.c.revoked_iso, sa.literal(iso(now)))
    found = conn.execute(sa.update(devices).where(devices.c.id == device_id)
                         .values(revoked_at=sa.func.coalesce(devices.c.revoked_at, now), revoked_iso=revoked_iso,
                                 **export_lines({"revoked_at": plain(revoked_iso)})))
    if not found.rowcount:
        return None
    result = conn.execute(sa.update(device_tokens)
                          .where(device_tokens.c.device_id == device_id, device_tokens.c.revoked_at.is_(None))
                          .values(revoked_at=now))
    return int(result.rowcount)


def readmit_device(conn: Connection, device_id: str) -> bool | None:
    """Let a revoked device enroll again (its old tokens stay revoked: it enrolls for a new one).
    Returns True if it was revoked, False if it was not, None if there is no such device."""
    row = conn.execute(sa.select(devices.c.revoked_at).where(devices.c.id == device_id)).first()
    if row is None:
        return None
    conn.execute(sa.update(devices).where(devices.c.id == device_id)
                 .values(revoked_at=None, revoked_iso=None, **export_lines({"revoked_at": plain(_NO_TEXT)})))
    return row.revoked_at is not None


# --- reports ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Incoming:
    """A validated report upload, reduced to what is stored.

    It holds no reference to the parsed report: the tens of thousands of objects a report parses
    into are freed before the upload waits for the database, so a worker keeps one parsed report
    alive at a time, not one per upload in flight.
    """

    report_id: str
    verdict: str
    exit_code: int
    tool_version: str
    #: (workload id, status, score, latency_ms), the first entry of each workload id
    workloads: tuple[tuple[str, str, int | None, float | None], ...]
    #: ``encode_report`` of the report's canonical JSON
    report_lz4: bytes
    body_sha256: str
    measured_at: dt.datetime
    sent_at: dt.datetime
    seq: int
    dropped: int
    spool_full: bool
    sweep_id: str | None
    #: ``finding_rows`` of the report: (code, severity, workload id, title, remediation)
    findings: tuple[tuple[str, str, str | None, str, str], ...] = ()
    #: the endpoint data the report was tested against: (instance, version)
    catalog: tuple[str, str] | None = None
    #: ``outage.verdict``, when the report has an outage assessment
    outage_verdict: str | None = None
    #: the report's prediction facts for the Sites pages (``site_facts.entry``); False: not computed
    #: (the device's state then has no facts: only for callers that never show the Sites pages)
    facts_entry: site_facts.Entry | Literal[False] = False
    #: the form ``report_lz4`` is in (``compact.FORM_LZ4``, or ``FORM_REDUCED`` for a reduced upload)
    form: str = compact.FORM_LZ4


@dataclass(frozen=True)
class _IngestSql:
    """The statements of ``ingest``, built once per dialect (building them costs more than running)."""

    insert_report: Any
    existing: Any
    upsert_catalog: Any
    update_device: Any


_REPORT_FIELDS = ("device_id", "report_id", "body_sha256", "measured_at", "received_at", "sent_at", "skew_s",
                  "seq", "dropped", "spool_full", "verdict", "exit_code", "tool_version", "sweep_id", "report_lz4",
                  "outage_verdict", "form")
#: the device's site tag, copied onto each report as it arrives (for the dashboard's per-site queries)
_SITE = (sa.select(device_tags.c.value)
         .where(device_tags.c.device_id == sa.bindparam("device_id"), device_tags.c.key == "site")
         .scalar_subquery())


@functools.cache
def _ingest_sql(dialect: str) -> _IngestSql:
    newer = sa.or_(devices.c.last_seq.is_(None), devices.c.last_seq <= sa.bindparam("b_seq"))
    seen = sa.bindparam("b_seen", type_=sa.String)
    verdict = sa.case((newer, sa.bindparam("b_verdict", type_=sa.String)), else_=devices.c.last_verdict)
    return _IngestSql(
        insert_report=dialect_insert(dialect, reports)
        .values({**{name: sa.bindparam(name) for name in _REPORT_FIELDS}, "site": _SITE})
        .on_conflict_do_nothing(index_elements=[reports.c.device_id, reports.c.report_id])
        .returning(reports.c.id),
        existing=sa.select(reports.c.body_sha256).where(reports.c.device_id == sa.bindparam("b_device"),
                                                        reports.c.report_id == sa.bindparam("b_report")),
        upsert_catalog=_upsert_catalog(dialect),
        update_device=sa.update(devices).where(devices.c.id == sa.bindparam("b_device")).values(
            last_seen_at=sa.bindparam("b_now", type_=devices.c.last_seen_at.type),
            last_seen_iso=seen,
            dropped_total=devices.c.dropped_total + sa.bindparam("b_dropped", type_=sa.BigInteger),
            last_report_pk=sa.case((newer, sa.bindparam("b_pk", type_=sa.BigInteger)),
                                   else_=devices.c.last_report_pk),
            last_verdict=verdict,
            last_seq=sa.case((newer, sa.bindparam("b_seq", type_=sa.BigInteger)), else_=devices.c.last_seq),
            # as ``record_latest`` keeps the state's (the same rule)
            facts_digest=sa.case((newer, sa.bindparam("b_digest", type_=sa.String)), else_=devices.c.facts_digest),
            # the export lines, with the new last contact and verdict (one more text per report)
            **export_lines({"last_seen_at": plain(seen), "last_verdict": plain(verdict)}),
        ),
    )


def _upsert_catalog(dialect: str) -> Any:
    stmt = dialect_insert(dialect, device_catalogs).values(
        {name: sa.bindparam(name) for name in ("device_id", "instance", "version", "report_pk")})
    return stmt.on_conflict_do_update(
        index_elements=[device_catalogs.c.device_id],
        set_={"instance": stmt.excluded.instance, "version": stmt.excluded.version,
              "report_pk": stmt.excluded.report_pk},
        where=device_catalogs.c.report_pk < stmt.excluded.report_pk)


def ingest(conn: Connection, device_id: str, item: Incoming, now: dt.datetime) -> str:
    """Store a report once; returns "stored" or "duplicate", raises ``ReportConflict``."""
    return ingest_many(conn, [(device_id, item)], now)[0]


def ingest_many(conn: Connection, uploads: Sequence[tuple[str, Incoming]], now: dt.datetime) -> list[str]:
    """``ingest`` for uploads that go in one transaction (group commit), in the order given: the
    same rows and answers as ``ingest`` one after the other, but each statement runs once for all
    of them (on PostgreSQL an ``executemany``: one round trip for the reports' rows, their ids back,
    and one for each kind of row that depends on them), not once per report. Raises
    ``ReportConflict`` for the first report id reused with another body."""
    sql = _ingest_sql(conn.dialect.name)
    inserted = execute_hot(conn, sql.insert_report, [{
        "device_id": device_id, "report_id": item.report_id, "body_sha256": item.body_sha256,
        "measured_at": item.measured_at, "received_at": now, "sent_at": item.sent_at,
        "skew_s": (now - item.sent_at).total_seconds(), "seq": item.seq, "dropped": item.dropped,
        "spool_full": item.spool_full, "verdict": item.verdict, "exit_code": item.exit_code,
        "tool_version": item.tool_version, "sweep_id": item.sweep_id, "report_lz4": item.report_lz4,
        "outage_verdict": item.outage_verdict, "form": item.form,
    } for device_id, item in uploads], each=True)
    answers: list[str] = []
    stored: list[tuple[str, Incoming, int]] = []
    for (device_id, item), rows in zip(uploads, inserted, strict=True):
        if rows:
            answers.append("stored")
            stored.append((device_id, item, rows[0].id))
            continue
        existing = conn.execute(sql.existing, {"b_device": device_id, "b_report": item.report_id}).scalar_one()
        if not auth.same_digest(existing, item.body_sha256):
            log.warning("report id %s reused by device %s with a different body", item.report_id, device_id)
            raise ReportConflict(item.report_id)
        answers.append("duplicate")
    if stored:
        _store_rows(conn, sql, stored, now)
    return answers


def _store_rows(conn: Connection, sql: _IngestSql, stored: list[tuple[str, Incoming, int]],
                now: dt.datetime) -> None:
    """The rows of newly stored reports (``report_pk``), each kind in one statement for all."""
    workloads = [{"report_pk": pk, "workload_id": wid, "device_id": device_id, "status": status, "score": score,
                  "latency_ms": latency}
                 for device_id, item, pk in stored for wid, status, score, latency in item.workloads]
    insert_rows(conn, report_workloads, workloads)
    findings = [{"report_pk": pk, "code": code, "device_id": device_id, "severity": severity,
                 "workload_id": workload, "title": title, "remediation": remediation}
                for device_id, item, pk in stored for code, severity, workload, title, remediation in item.findings]
    insert_rows(conn, report_findings, findings)
    catalogs = [{"device_id": device_id, "instance": item.catalog[0], "version": item.catalog[1], "report_pk": pk}
                for device_id, item, pk in stored if item.catalog is not None]
    if catalogs:
        execute_hot(conn, sql.upsert_catalog, catalogs)
    execute_hot(conn, sql.update_device, [
        {"b_device": device_id, "b_now": now, "b_seen": iso(now), "b_dropped": item.dropped, "b_pk": pk,
         "b_verdict": item.verdict, "b_seq": item.seq, "b_digest": facts_digest(item)}
        for device_id, item, pk in stored])
    site_facts.keep_sets(conn, (item.facts_entry for _, item, _ in stored if item.facts_entry is not False), now)
    for device_id, item, pk in stored:
        if item.sweep_id is not None:
            tails = answer_tails(item.verdict, iso(now))
            target = (sa.select(sweeps.c.id, sa.literal(device_id), sa.literal(pk),
                                sa.literal(now, type_=sweeps.c.created_at.type), sa.literal(item.verdict),
                                *(sa.literal(text, sa.Text) for text in tails.values()))
                      .where(sweeps.c.id == item.sweep_id, _targets_device(device_id)))
            conn.execute(_insert(conn, sweep_responses)
                         .from_select(["sweep_id", "device_id", "report_pk", "received_at", "verdict", *tails], target)
                         .on_conflict_do_nothing())
    record_latest(conn, stored, now)


def facts_digest(item: Incoming) -> str | None:
    """The digest of the report's prediction facts (``site_fact_sets``; None: it carries none)."""
    return item.facts_entry[0] if isinstance(item.facts_entry, tuple) else None


def export_texts(values: Mapping[str, Any]) -> dict[str, str]:
    """The export texts ``devices`` keeps of a device's ``db.EXPORT_TEXTS`` columns (``values``: the
    tags a mapping, as the dashboard's lists read them, ``tags_of``): each one's CSV cell and JSON
    value, by column name (``name_csv``, ``name_json``...)."""
    tags = values["tags"]
    shown = {**values, "tags": dict(sorted(tags.items()))}
    return {**{f"{c}_csv": export.csv_cell(shown[c]) for c in EXPORT_TEXTS},
            **{f"{c}_json": export.json_value(shown[c]) for c in EXPORT_TEXTS}}


def pairs_text(pairs: Iterable[tuple[str, str]]) -> str:
    """(key, value) pairs as one canonical text, a JSON object by key: the form
    ``device_states.workloads``, ``sweep_responses.workloads`` (workload id, status) and
    ``devices.tags`` (tag key, value) keep them in."""
    return json.dumps(dict(sorted(pairs)), separators=(",", ":"))


def findings_text(codes: Iterable[str]) -> str:
    """Finding codes as one canonical text, a sorted JSON list (``device_states.findings``)."""
    return json.dumps(sorted(set(codes)), separators=(",", ":"))


_STATE_FIELDS = ("device_id", "seq", "report_pk", "received_at", "verdict", "outage_verdict", "facts_digest",
                 "workloads", "findings")


@functools.cache
def _latest_sql(dialect: str) -> tuple[Any, Any]:
    upsert = dialect_insert(dialect, device_states).values(
        {**{name: sa.bindparam(name) for name in _STATE_FIELDS}, "site": _SITE})
    upsert = upsert.on_conflict_do_update(
        index_elements=[device_states.c.device_id],
        set_={name: upsert.excluded[name] for name in (*_STATE_FIELDS[1:], "site")},
        where=device_states.c.seq <= upsert.excluded.seq)
    answer = (sa.update(sweep_responses)
              .where(sweep_responses.c.sweep_id == sa.bindparam("b_sweep"),
                     sweep_responses.c.device_id == sa.bindparam("b_device"),
                     sweep_responses.c.report_pk == sa.bindparam("b_pk"))
              .values(workloads=sa.bindparam("b_workloads", type_=sa.Text)))
    return upsert, answer


def record_latest(conn: Connection, stored: Sequence[tuple[str, Incoming, int]], now: dt.datetime) -> None:
    """Keep each device's latest state (``device_states``) from reports just stored (device id,
    report, ``report_pk``), in order: a report replaces the state only if its ``seq`` is not older
    (one that arrives late, from a spool, leaves the newer state alone); and for a report that
    answers a sweep, the answer's workloads. One statement for all the states, one for the answers."""
    upsert, answer = _latest_sql(conn.dialect.name)
    texts = [pairs_text((wid, status) for wid, status, _, _ in item.workloads) for _, item, _ in stored]
    execute_hot(conn, upsert, [{
        "device_id": device_id, "seq": item.seq, "report_pk": pk, "received_at": now, "verdict": item.verdict,
        "outage_verdict": item.outage_verdict,
        "facts_digest": facts_digest(item),
        "workloads": workloads, "findings": findings_text(code for code, *_ in item.findings)}
        for (device_id, item, pk), workloads in zip(stored, texts, strict=True)])
    answers = [{"b_sweep": item.sweep_id, "b_device": device_id, "b_pk": pk, "b_workloads": workloads}
               for (device_id, item, pk), workloads in zip(stored, texts, strict=True) if item.sweep_id is not None]
    if answers:
        execute_hot(conn, answer, answers)


def encode_report(canonical_json: bytes, *, reduced: bool = False) -> bytes:
    """How ingest stores a report: its canonical JSON in one LZ4 frame (``compact.FORM_LZ4``; a
    real report: 237 -> 29 KiB), which the compaction pass rewrites later (``compact_all``); a
    report uploaded in the reduced form, in its lasting form at once (``compact.FORM_REDUCED``, zlib
    with its preset dictionary: 8 KiB of JSON, a fraction of a millisecond)."""
    return compact.encode(canonical_json, compact.FORM_REDUCED if reduced else compact.FORM_LZ4)


def decode_report(stored: bytes) -> dict[str, Any]:
    """A stored report (``reports.report_lz4``, in any ``reports.form``) as the report the agent
    sent, or its reduction for an older one (``compact.FORM_REDUCED``: see ``compact.REDUCED_KEY``)."""
    return compact.decode(stored)


def workload_rows(workloads: Iterable[Mapping[str, Any]]) -> tuple[tuple[str, str, int | None, float | None], ...]:
    """A report's workload entries as ``Incoming.workloads``: the first entry of each id counts
    (the schema does not forbid repeats)."""
    first: dict[str, tuple[str, str, int | None, float | None]] = {}
    for w in workloads:
        if w["id"] not in first:
            first[w["id"]] = (str(w["id"]), str(w["status"]), None if w["score"] is None else int(w["score"]),
                              None if w["latency_ms"] is None else float(w["latency_ms"]))
    return tuple(first.values())


def finding_rows(findings: Iterable[Mapping[str, Any]]) -> tuple[tuple[str, str, str | None, str, str], ...]:
    """A report's findings as ``Incoming.findings``: the first of each code counts; the title is cut
    to its column's 255 characters."""
    first: dict[str, tuple[str, str, str | None, str, str]] = {}
    for f in findings:
        code = str(f["code"])
        if code not in first:
            workload = f.get("workload")
            first[code] = (code, str(f["severity"]), None if workload is None else str(workload),
                           str(f["title"])[:255], str(f.get("remediation") or ""))
    return tuple(first.values())


# --- retention -------------------------------------------------------------------------------

#: reports deleted per statement: short transactions that never hold up uploads for long
PRUNE_BATCH = 1000


def prune_reports(conn: Connection, received_before: dt.datetime, limit: int = PRUNE_BATCH) -> int:
    """Delete up to ``limit`` reports received before ``received_before``; returns how many.

    A device's latest report is always kept, however old (it is what the fleet view shows for a
    laptop that stopped reporting). A report's workload rows go with it (foreign key cascade).
    """
    latest = sa.select(devices.c.id).where(devices.c.last_report_pk == reports.c.id)
    doomed = (sa.select(reports.c.id).where(reports.c.received_at < received_before, ~latest.exists())
              .order_by(reports.c.id).limit(limit))
    ids = [row[0] for row in conn.execute(doomed)]
    if not ids:
        return 0
    return int(conn.execute(sa.delete(reports).where(reports.c.id.in_(ids))).rowcount)


def _in_batches(engine: Engine, step: Callable[[Connection], int], batch: int) -> int:
    """``step`` in a transaction of its own until it does less than ``batch``; returns the sum."""
    total = 0
    while True:
        with engine.begin() as conn:
            done = step(conn)
        total += done
        if done < batch:
            return total


def prune_all(engine: Engine, received_before: dt.datetime) -> int:
    """``prune_reports`` until nothing is left to delete, a transaction per batch (uploads are
    never held up for long), then the sets of prediction facts no device uses; returns how many
    reports were deleted."""
    total = _in_batches(engine, lambda conn: prune_reports(conn, received_before), PRUNE_BATCH)
    with engine.begin() as conn:
        site_facts.prune(conn)
    return total


# --- compaction ------------------------------------------------------------------------------

#: devices looked at, and reports rewritten at most, per transaction: rewriting one costs about
#: 7 ms of CPU, so a transaction (which on SQLite holds the write lock uploads wait for) stays short
COMPACT_DEVICES = 50
COMPACT_ROWS = 20


def compact_reports(conn: Connection, full_history: int, devices_per_batch: int = COMPACT_DEVICES,
                    limit: int = COMPACT_ROWS) -> int:
    """Rewrite up to ``limit`` stored reports of up to ``devices_per_batch`` devices that received
    reports since the last pass into their lasting form; returns how many were rewritten.

    A device's newest ``full_history`` reports (by arrival), and always the one the fleet view
    shows (``devices.last_report_pk``), keep their full detail (``compact.FORM_FULL``, zlib);
    older ones are reduced (``compact.FORM_REDUCED``). Ingest writes ``compact.FORM_LZ4``, cheap to
    write and larger, which this turns into one or the other: only a device with such a report
    (found through a partial index that holds those alone) can have a report to rewrite. Each row
    is updated only if its form is still the one read, so processes compacting at once never undo
    each other.
    """
    fresh = (sa.select(reports.c.device_id).where(reports.c.form == compact.FORM_LZ4).distinct()
             .limit(devices_per_batch))
    rank = sa.func.row_number().over(partition_by=reports.c.device_id, order_by=reports.c.id.desc())
    ranked = (sa.select(reports.c.id, reports.c.form, rank.label("rank"))
              .where(reports.c.device_id.in_(fresh), reports.c.form != compact.FORM_REDUCED).subquery())
    latest = sa.select(devices.c.id).where(devices.c.last_report_pk == ranked.c.id)
    keep_full = sa.or_(ranked.c.rank <= full_history, latest.exists())
    todo = (sa.select(ranked.c.id, ranked.c.form, keep_full.label("keep_full"))
            .where(sa.or_(ranked.c.form == compact.FORM_LZ4, ~keep_full)).order_by(ranked.c.id).limit(limit))
    done = 0
    for row in conn.execute(todo).all():
        blob = conn.execute(sa.select(reports.c.report_lz4).where(reports.c.id == row.id)).scalar_one()
        if row.keep_full:
            form, new = compact.FORM_FULL, compact.recompress(blob)
        else:
            form, new = compact.FORM_REDUCED, compact.reduce_blob(blob)
        done += conn.execute(sa.update(reports).where(reports.c.id == row.id, reports.c.form == row.form)
                             .values(form=form, report_lz4=new)).rowcount
    return done


def compact_all(engine: Engine, full_history: int) -> int:
    """``compact_reports`` until no device is left with a report to rewrite, a short transaction
    per batch of devices; returns how many reports were rewritten."""
    return _in_batches(engine, lambda conn: compact_reports(conn, full_history), 1)


# --- sweeps ----------------------------------------------------------------------------------

def _targets_device(device_id: str) -> sa.ColumnElement[bool]:
    tag = sa.select(device_tags.c.device_id).where(
        device_tags.c.device_id == device_id, device_tags.c.key == sweeps.c.tag_key,
        device_tags.c.value == sweeps.c.tag_value)
    return sa.or_(sweeps.c.tag_key.is_(None), tag.exists())


def iso(value: dt.datetime | None) -> str | None:
    """A UTC time as ISO 8601 with ``Z`` (None stays None)."""
    return None if value is None else value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def pending_sweeps(conn: Connection, device_id: str, now: dt.datetime) -> list[dict[str, Any]]:
    answered = sa.select(sweep_responses.c.sweep_id).where(
        sweep_responses.c.sweep_id == sweeps.c.id, sweep_responses.c.device_id == device_id)
    rows = conn.execute(
        sa.select(sweeps.c.id, sweeps.c.created_at, sweeps.c.expires_at, sweeps.c.thorough)
        .where(sweeps.c.expires_at > now, _targets_device(device_id), ~answered.exists())
        .order_by(sweeps.c.created_at, sweeps.c.id)
    ).all()
    return [{"id": r.id, "created_at": iso(r.created_at), "expires_at": iso(r.expires_at),
             "thorough": bool(r.thorough)} for r in rows]


def create_sweep(conn: Connection, now: dt.datetime, expires_in: dt.timedelta, *, thorough: bool = False,
                 tag: tuple[str, str] | None = None, note: str | None = None) -> dict[str, Any]:
    sweep_id = str(uuid.uuid4())
    conn.execute(sa.insert(sweeps).values(
        id=sweep_id, created_at=now, expires_at=now + expires_in, thorough=thorough,
        tag_key=tag[0] if tag else None, tag_value=tag[1] if tag else None, note=note))
    return {"id": sweep_id, "created_at": iso(now), "expires_at": iso(now + expires_in), "thorough": thorough,
            "tag": f"{tag[0]}={tag[1]}" if tag else None, "note": note}


def list_sweeps(conn: Connection) -> list[dict[str, Any]]:
    answers = (sa.select(sa.func.count()).select_from(sweep_responses)
               .where(sweep_responses.c.sweep_id == sweeps.c.id).scalar_subquery())
    rows = conn.execute(sa.select(sweeps, answers.label("answers")).order_by(sweeps.c.created_at)).all()
    return [{"id": r.id, "created_at": iso(r.created_at), "expires_at": iso(r.expires_at),
             "thorough": bool(r.thorough), "tag": f"{r.tag_key}={r.tag_value}" if r.tag_key else None,
             "note": r.note, "answers": int(r.answers)} for r in rows]


# --- policy ----------------------------------------------------------------------------------

#: the policy document and its schema belong to the agent side (netcheck.fleet_policy)
POLICY_DEFAULTS = fleet_policy.DEFAULTS
POLICY_SCHEMA = fleet_policy.SCHEMA
POLICY_KEYS = fleet_policy.KEYS


def get_policy(conn: Connection) -> dict[str, Any]:
    merged = json.loads(json.dumps(POLICY_DEFAULTS))
    for row in conn.execute(sa.select(policy.c.key, policy.c.value_json)):
        if row.key in merged:
            try:  # what set_policy stored; anything else (a hand edit) must not break GET /policy
                merged[row.key] = json.loads(row.value_json, parse_constant=_refuse_constant)
            except (ValueError, ConfigError):
                log.warning("ignoring the stored policy value of %s: not JSON a policy can hold", row.key)
    return dict(merged)


def set_policy(conn: Connection, key: str, raw_value: str, now: dt.datetime) -> dict[str, Any]:
    """Set one policy key (``schedule.jitter_s``, ``thresholds.check.concurrency``...) from the
    command line; VALUE is JSON, or a plain string. The whole document must then fit the schema
    (``fleet_policy.document_problem``), or nothing is stored."""
    if key not in POLICY_KEYS:
        raise ConfigError(f"unknown policy key {key!r}; known keys: {', '.join(POLICY_KEYS)}")
    try:
        value: Any = json.loads(raw_value, parse_constant=_refuse_constant)
    except ValueError:
        value = raw_value
    current = get_policy(conn)
    top, *path = key.split(".")
    if path:
        node = current[top] = copy.deepcopy(current[top]) if isinstance(current[top], dict) else {}
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = value
    else:
        current[top] = value
    found = fleet_policy.document_problem(current)
    if found:
        raise ConfigError(f"invalid policy value for {key}: {found}")
    encoded = json.dumps(current[top], sort_keys=True, allow_nan=False)
    stmt = _insert(conn, policy).values(key=top, value_json=encoded, updated_at=now)
    conn.execute(stmt.on_conflict_do_update(index_elements=[policy.c.key],
                                            set_={"value_json": encoded, "updated_at": now}))
    return current


def _refuse_constant(name: str) -> Any:
    raise ConfigError(f"invalid policy value: {name} is not a number a policy can hold")


# --- secrets ---------------------------------------------------------------------------------

def create_secret(conn: Connection, now: dt.datetime, site: str | None = None,
                  note: str | None = None) -> tuple[str, str]:
    """A new enrollment secret; returns (id, secret). Only its digest is stored."""
    secret = auth.new_secret()
    secret_id = auth.new_secret_id()
    conn.execute(sa.insert(enroll_secrets).values(id=secret_id, digest=auth.digest(secret), site=site,
                                                  note=note, created_at=now))
    return secret_id, secret


def revoke_secret(conn: Connection, secret_id: str, now: dt.datetime) -> bool:
    result = conn.execute(sa.update(enroll_secrets)
                          .where(enroll_secrets.c.id == secret_id, enroll_secrets.c.revoked_at.is_(None))
                          .values(revoked_at=now))
    return bool(result.rowcount)


def list_secrets(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(sa.select(enroll_secrets.c.id, enroll_secrets.c.site, enroll_secrets.c.note,
                                  enroll_secrets.c.created_at, enroll_secrets.c.revoked_at)
                        .order_by(enroll_secrets.c.created_at)).all()
    return [{"id": r.id, "site": r.site, "note": r.note, "created_at": iso(r.created_at),
             "revoked_at": iso(r.revoked_at)} for r in rows]


# --- devices and export ----------------------------------------------------------------------

def _tags_by_device(conn: Connection, device_ids: Sequence[str] | None = None) -> dict[str, dict[str, str]]:
    """Each device's tags by key, in code point order (not the database's collation: the same order
    on any database, the one ``export_texts`` keeps)."""
    query = sa.select(device_tags.c.device_id, device_tags.c.key, device_tags.c.value)
    if device_ids is not None:
        query = query.where(device_tags.c.device_id.in_(device_ids))
    out: dict[str, dict[str, str]] = {}
    for r in conn.execute(query):
        out.setdefault(r.device_id, {})[r.key] = r.value
    return {device: dict(sorted(tags.items())) for device, tags in out.items()}


def tags_of(conn: Connection, device_ids: Sequence[str] | None) -> dict[str, dict[str, str]]:
    """The tags of these devices (None: of every device), by device id."""
    return _tags_by_device(conn, device_ids)


def list_devices(conn: Connection) -> list[dict[str, Any]]:
    active = (sa.select(sa.func.count()).select_from(device_tokens)
              .where(device_tokens.c.device_id == devices.c.id, device_tokens.c.revoked_at.is_(None))
              .scalar_subquery())
    rows = conn.execute(sa.select(devices, active.label("active_tokens")).order_by(devices.c.enrolled_at)).all()
    tags = _tags_by_device(conn)
    return [{"device_id": r.id, "name": r.name, "os": r.os, "agent_version": r.agent_version,
             "tags": tags.get(r.id, {}), "enrolled_at": iso(r.enrolled_at), "last_seen_at": iso(r.last_seen_at),
             "last_verdict": r.last_verdict, "dropped_total": int(r.dropped_total),
             "active_tokens": int(r.active_tokens), "revoked_at": iso(r.revoked_at)} for r in rows]


def export_rows(conn: Connection) -> list[dict[str, Any]]:
    """The latest report (highest sequence number) of every device, with its workload statuses."""
    rows = conn.execute(
        sa.select(devices.c.id, devices.c.name, devices.c.last_seen_at, devices.c.last_report_pk,
                  reports.c.verdict, reports.c.measured_at, reports.c.report_id)
        .select_from(devices.outerjoin(reports, reports.c.id == devices.c.last_report_pk))
        .order_by(devices.c.enrolled_at, devices.c.id)
    ).all()
    tags = _tags_by_device(conn)
    statuses: dict[int, dict[str, str]] = {}
    latest = (sa.select(report_workloads.c.report_pk, report_workloads.c.workload_id, report_workloads.c.status)
              .select_from(report_workloads.join(devices, devices.c.last_report_pk == report_workloads.c.report_pk))
              .order_by(report_workloads.c.workload_id))
    for w in conn.execute(latest):
        statuses.setdefault(w.report_pk, {})[w.workload_id] = w.status
    return [{"device_id": r.id, "name": r.name, "tags": tags.get(r.id, {}), "last_seen_at": iso(r.last_seen_at),
             "report_id": r.report_id, "measured_at": iso(r.measured_at), "verdict": r.verdict,
             "workloads": statuses.get(r.last_report_pk, {}) if r.last_report_pk is not None else {}}
            for r in rows]
