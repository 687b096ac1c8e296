"""The prediction facts of each device's latest report, for the dashboard's Sites pages.

On ingest (``store.ingest``) a report's ``outage.facts`` and ``outage.sites`` are kept as one
canonical JSON text, once per distinct text (``site_fact_sets``, by SHA-256: laptops of one site
and setup share it), and the device's latest state points at its digest
(``device_states.facts_digest``, kept by ``store.record_latest``; None: the report carries no facts).
The text is made from the report already parsed for validation, so this costs an upload a
``json.dumps`` and a hash of the facts (a few KiB) and one small statement; the Sites pages never
decompress the fleet's reports. (Migrations 0008-0013 also kept a pointer per device in
``site_facts``, with its own idea of "latest"; 0014 dropped it: ``device_states`` follows the
report ``devices.last_report_pk`` names.)
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from netcheck.collector.db import device_states, dialect_insert, execute_hot, site_fact_sets, site_predictions

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
def _put_sets(dialect: str) -> Any:
    return dialect_insert(dialect, site_fact_sets).on_conflict_do_nothing()


def keep_sets(conn: Connection, found: Iterable[Entry], now: dt.datetime) -> None:
    """Keep each distinct set of facts among ``found`` (the reports' entries) once: one statement."""
    sets = {f[0]: f[1] for f in found if f is not None}
    if sets:
        execute_hot(conn, _put_sets(conn.dialect.name), [{"digest": digest, "body": body, "created_at": now}
                                                         for digest, body in sorted(sets.items())])


def prune(conn: Connection) -> int:
    """Forget the sets of facts no device's latest state points at any more, and the predictions
    made from them (``site_predictions``); how many sets."""
    used = sa.select(device_states.c.device_id).where(device_states.c.facts_digest == site_fact_sets.c.digest)
    forgotten = int(conn.execute(sa.delete(site_fact_sets).where(~used.exists())).rowcount or 0)
    kept = sa.select(site_fact_sets.c.digest).where(site_fact_sets.c.digest == site_predictions.c.facts_digest)
    conn.execute(sa.delete(site_predictions).where(~kept.exists()))
    return forgotten
