"""The prediction facts of each device's latest report, for the dashboard's Sites pages.

On ingest (``store.ingest``) a report's ``outage.facts`` and ``outage.sites`` are kept as one
canonical JSON text, once per distinct text (``site_fact_sets``, by SHA-256: laptops of one site
and setup share it), and the device points at its digest (``site_facts``; a report without facts
points at None). The text is made from the report already parsed for validation, so this costs an
upload a ``json.dumps`` and a hash of the facts (a few KiB) and two small statements; the Sites
pages never decompress the fleet's reports. Reports stored before migration 0008, or a late report
that took the row from the latest one, are read back by the pages (``web.sites.refresh``).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from netcheck.collector.db import dialect_insert, execute_hot, site_fact_sets, site_facts

#: (digest, canonical JSON of {"facts", "sites"}), or None: the report carries no facts
Entry = tuple[str, str] | None


def entry(report: Mapping[str, Any]) -> Entry:
    """What the Sites pages read of a report (``outage.facts`` and ``outage.sites``), with its digest."""
    outage = report.get("outage")
    if not isinstance(outage, Mapping) or not isinstance(outage.get("facts"), Mapping):
        return None
    sites = [s for s in outage.get("sites") or () if isinstance(s, Mapping)]
    body = json.dumps({"facts": outage["facts"], "sites": sites}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest(), body


@functools.cache
def _sql(dialect: str) -> tuple[Any, Any]:
    put_set = dialect_insert(dialect, site_fact_sets).on_conflict_do_nothing()
    point = dialect_insert(dialect, site_facts)
    point = point.on_conflict_do_update(index_elements=[site_facts.c.device_id],
                                        set_={"report_pk": point.excluded.report_pk, "digest": point.excluded.digest},
                                        where=site_facts.c.report_pk < point.excluded.report_pk)
    return put_set, point


def record(conn: Connection, device_id: str, report_pk: int, found: Entry, now: dt.datetime) -> None:
    """Point the device at its report's facts (kept once per distinct set)."""
    record_many(conn, [(device_id, report_pk, found)], now)


def record_many(conn: Connection, reports: Sequence[tuple[str, int, Entry]], now: dt.datetime) -> None:
    """``record`` for (device id, report pk, facts) of several reports, in order: one statement
    for the distinct sets of facts, one for the pointers."""
    if not reports:
        return
    put_set, point = _sql(conn.dialect.name)
    sets = {found[0]: found[1] for _, _, found in reports if found is not None}
    if sets:
        execute_hot(conn, put_set, [{"digest": digest, "body": body, "created_at": now}
                                    for digest, body in sorted(sets.items())])
    execute_hot(conn, point, [{"device_id": device_id, "report_pk": report_pk,
                               "digest": None if found is None else found[0]}
                              for device_id, report_pk, found in reports])


def prune(conn: Connection) -> int:
    """Forget the sets of facts no device points at any more; how many."""
    used = sa.select(site_facts.c.digest).where(site_facts.c.digest == site_fact_sets.c.digest).exists()
    return int(conn.execute(sa.delete(site_fact_sets).where(~used)).rowcount or 0)
