"""The dashboard's reads: summary columns and rows only (``devices.last_verdict``, each device's
latest state in ``device_states``, ``report_workloads``, ``report_findings``, ``sweep_responses``,
``device_tags``); the one page that needs a report's body (a device's report) decompresses that
one report. Fleet-wide counts read ``device_states`` (one row per device, kept at ingest), never
every device's latest per-report rows.

Every function takes an open ``Connection``; lists take a ``Filters`` and a page and return
``Page`` (the rows, and whether there is a next page).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from netcheck.collector import store
from netcheck.collector.db import (
    DEVICE_EXPORT_COLUMNS,
    DEVICE_EXPORT_KEYS,
    Kept,
    UTCDateTime,
    device_catalogs,
    device_states,
    device_tags,
    devices,
    dialect_insert,
    enroll_secrets,
    fleet_days,
    joined,
    report_findings,
    report_workloads,
    reports,
    sweep_responses,
    sweeps,
)

T = TypeVar("T")
log = logging.getLogger(__name__)
VERDICTS = ("READY", "AT_RISK", "NOT_READY", "UNKNOWN")
#: how IT reads the report's verdicts
VERDICT_LABELS = {"READY": "READY", "AT_RISK": "AT RISK", "NOT_READY": "NOT READY", "UNKNOWN": "COULD NOT ASSESS",
                  None: "NO REPORT YET"}
PAGE_SIZE = 50
#: a device not seen for this long counts as offline in a sweep's coverage (the agent polls for
#: sweeps at every upload, and checks every few hours)
OFFLINE_AFTER = dt.timedelta(hours=24)
TREND_DAYS = 30


@dataclass(frozen=True)
class Filters:
    verdict: str | None = None
    tag: tuple[str, str] | None = None
    finding: str | None = None
    workload: tuple[str, str] | None = None
    stale_days: int | None = None
    name: str | None = None
    revoked: bool = False


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    page: int
    more: bool
    columns: Sequence[str] = field(default_factory=tuple)


def _page(rows: Sequence[Any], page: int, size: int, columns: Sequence[str]) -> Page:
    return Page([dict(r._mapping) for r in rows[:size]], page, len(rows) > size, columns)


def _limit(query: Any, page: int, size: int) -> Any:
    return query.limit(size + 1).offset((page - 1) * size)


def _no_finish(conn: Connection, rows: list[dict[str, Any]]) -> None:
    return None


@dataclass(frozen=True)
class Listing:
    """A list the dashboard shows a page of and exports whole: its rows' query (filters, no order),
    the unique column an export walks it by (``key``, named ``key_name`` in the rows), its columns,
    and what each batch of rows needs added (``finish``: tags, states). For the exports PostgreSQL
    writes (``copy_export``): ``derived``, those additions in SQL (a function of the query as a
    subquery); or ``lines``, each row's whole CSV line and JSON object, kept (``devices.export_csv``,
    ``export_json``) or joined from kept pieces (``devices.row_*``, ``sweep_responses.tail_*``)."""

    query: Any
    key: Any
    key_name: str
    columns: Sequence[str]
    finish: Callable[[Connection, list[dict[str, Any]]], None] = _no_finish
    #: columns joined equal to ``key`` (the other side of a join): given the same lower bound, so
    #: that the database starts each index there (PostgreSQL does not carry the bound across a join);
    #: inside a subquery (``EXISTS``), such a column is bounded by ``key_bounds`` instead
    twins: Sequence[Any] = ()
    derived: Mapping[str, Callable[[Any], Any]] = field(default_factory=dict)
    lines: Kept | None = None
    #: keys (ascending) where an export may cut the list into ranges it writes at once
    #: (``copy_export``): ``UUID_SPLITS`` for a list keyed by a device id
    splits: Sequence[str] = ()

    def after(self, last: Any) -> Listing:
        """The rows after key ``last`` (and ``after_key`` set to it)."""
        return replace(self, query=self.query.where(*(k > last for k in (self.key, *self.twins)))
                       .params(after_key=last))

    def within(self, low: str | None, high: str | None) -> Listing:
        """The rows whose key is at least ``low`` and below ``high`` (None: unbounded), and
        ``after_key`` and ``before_key`` set to them: one of the ranges ``splits`` cut."""
        keys = (self.key, *self.twins)
        query = self.query.where(*(k >= low for k in keys if low is not None),
                                 *(k < high for k in keys if high is not None))
        return replace(self, query=query.params(after_key=low or "", before_key=high))

    def page(self, conn: Connection, order: Sequence[Any], page: int, size: int) -> Page:
        result = _page(conn.execute(_limit(self.query.order_by(*order), page, size)).all(), page, size,
                       self.columns)
        self.finish(conn, result.rows)
        return result


def key_bounds(column: Any) -> sa.ColumnElement[bool]:
    """``column`` (a device id in a subquery that a list of devices tests for each device) from the
    list's last key so far (``Listing.after``) or the start of its range (``Listing.within``), to
    the end of that range (at first: anywhere): without them, PostgreSQL reads the subquery's table
    from its start for each batch of an export (each batch of 10,000 devices a scan of 100,000
    states, or a hash of 58,000 answers), or on to its end for each range (a sweep's missing devices
    at 100,000 devices: 118 ms of the database's time against 63). From, not after, the last key:
    the subquery also matches the device itself, so the bounds only tell the database where to
    start and stop. No end (``before_key`` None) is a test PostgreSQL drops as it plans the batch."""
    end = sa.bindparam("before_key", None, type_=sa.String)
    bound: sa.ColumnElement[bool] = sa.and_(column >= sa.bindparam("after_key", "", type_=sa.String),
                                            sa.or_(end.is_(None), column < end))
    return bound


#: where an export cuts a list keyed by a device id (``store.enroll``: a random UUID, written in
#: lower-case hex, so each range of its first digit holds an equal share of any fleet): eight ranges
UUID_SPLITS = ("2", "4", "6", "8", "a", "c", "e")


#: rows an export reads per query (each in its own short transaction)
EXPORT_BATCH = 5000


def export_batches(connect: Callable[[], AbstractContextManager[Connection]], listing: Listing,
                   batch: int = EXPORT_BATCH) -> Iterator[list[dict[str, Any]]]:
    """The whole list in ``key`` order, ``batch`` rows at a time: keyset pagination (each batch starts
    after the last key, found through the key's index), so memory stays constant, the first batch
    comes at once, and no transaction or pooled connection is held while the client downloads."""
    last = None
    while True:
        query = (listing if last is None else listing.after(last)).query
        with connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(query.order_by(listing.key).limit(batch))]
            listing.finish(conn, rows)
        if rows:
            yield rows
        if len(rows) < batch:
            return
        last = rows[-1][listing.key_name]


# --- overview ----------------------------------------------------------------------------------

def _day_start(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)


_DAY_COLUMNS = {"READY": "ready", "AT_RISK": "at_risk", "NOT_READY": "not_ready", "UNKNOWN": "unknown"}


def devices_by_day(conn: Connection, start: dt.datetime, end: dt.datetime) -> dict[str, dict[str, int]]:
    """Per UTC day (``YYYY-MM-DD``) from ``start`` (a day's start) to ``end``: the devices that
    reported that day, by the verdict of their last report of the day."""
    day = (sa.func.date(reports.c.received_at) if conn.dialect.name == "sqlite"
           else sa.func.date_trunc("day", reports.c.received_at))
    last = sa.func.row_number().over(partition_by=(reports.c.device_id, day),
                                     order_by=(reports.c.received_at.desc(), reports.c.id.desc()))
    ranked = (sa.select(day.label("day"), reports.c.verdict, last.label("n"))
              .where(reports.c.received_at >= start, reports.c.received_at < end).subquery())
    rows = conn.execute(sa.select(ranked.c.day, ranked.c.verdict, sa.func.count()).where(ranked.c.n == 1)
                        .group_by(ranked.c.day, ranked.c.verdict)).all()
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        out.setdefault(str(r[0])[:10], {})[r[1]] = int(r[2])
    return out


def devices_today(conn: Connection, today: dt.datetime) -> dict[str, int]:
    """Today's part of the chart: the devices that reported since ``today`` (a day's start), by their
    latest report's verdict (``devices.last_verdict``: a scan of the devices, not of today's reports)."""
    rows = conn.execute(sa.select(devices.c.last_verdict, sa.func.count())
                        .where(devices.c.last_seen_at >= today, devices.c.last_verdict.is_not(None))
                        .group_by(devices.c.last_verdict)).all()
    return {r[0]: int(r[1]) for r in rows}


#: a day counts as finished this long after it ends: an upload stamped before midnight may still be
#: committing just after it
DAY_SETTLED = dt.timedelta(minutes=1)
#: the PostgreSQL advisory lock (class, day as YYYYMMDD) held while a day is counted: two ``serve``
#: workers never count the same day at once
_DAY_LOCK = 0x6E63


def _finished_days(now: dt.datetime, days: int) -> tuple[list[str], int]:
    """The trend's ``days`` UTC days ending today, and how many of them (from the first) are finished."""
    today = _day_start(now)
    wanted = [(today - dt.timedelta(days=days - 1 - i)).date().isoformat() for i in range(days)]
    settled = days - 1 if now - today >= DAY_SETTLED else days - 2
    return wanted, max(0, settled)


def fleet_trend(conn: Connection, now: dt.datetime, days: int = TREND_DAYS,
                today: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """The overview's chart: the devices per day and verdict over the last ``days`` UTC days. A finished
    day is read from ``fleet_days`` (``count_day`` keeps it there); one not counted yet (and yesterday,
    for ``DAY_SETTLED`` after midnight) is marked ``counting`` with no devices; today comes from the
    devices' latest verdicts (``devices_today``, unless given). Never counts a past day: a few rows
    read."""
    wanted, _ = _finished_days(now, days)
    kept = {r.day: {v: getattr(r, c) for v, c in _DAY_COLUMNS.items()}
            for r in conn.execute(sa.select(fleet_days).where(fleet_days.c.day.in_(wanted[:-1])))}
    kept[wanted[-1]] = devices_today(conn, _day_start(now)) if today is None else today
    return [{"day": d, "counting": d not in kept, **{v: kept.get(d, {}).get(v, 0) for v in VERDICTS}}
            for d in wanted]


def uncounted_days(conn: Connection, now: dt.datetime, days: int = TREND_DAYS) -> list[str]:
    """The finished days of the trend not in ``fleet_days`` yet, oldest first."""
    wanted, settled = _finished_days(now, days)
    finished = wanted[:settled]
    kept = set(conn.execute(sa.select(fleet_days.c.day).where(fleet_days.c.day.in_(finished))).scalars())
    return [d for d in finished if d not in kept]


def day_counts(conn: Connection, day: str) -> dict[str, int] | None:
    """Count finished ``day`` (``YYYY-MM-DD``) from its reports (one window over that day's reports:
    0.9-1.8 s at 100,000 devices on PostgreSQL), by verdict; None when another connection is
    counting it (PostgreSQL: for as long as this transaction lasts) or it is kept already."""
    if conn.dialect.name == "postgresql" and not conn.execute(
            sa.select(sa.func.pg_try_advisory_xact_lock(_DAY_LOCK, int(day.replace("-", ""))))).scalar_one():
        return None
    if conn.execute(sa.select(fleet_days.c.day).where(fleet_days.c.day == day)).first() is not None:
        return None
    start = dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC)
    return devices_by_day(conn, start, start + dt.timedelta(days=1)).get(day, {})


def keep_day(conn: Connection, day: str, counts: dict[str, int], now: dt.datetime) -> None:
    """Keep a finished day's counts in ``fleet_days`` (a day kept already stays as it was)."""
    conn.execute(dialect_insert(conn.dialect.name, fleet_days).values(
        day=day, counted_at=now, **{c: counts.get(v, 0) for v, c in _DAY_COLUMNS.items()})
        .on_conflict_do_nothing())


def count_day(conn: Connection, day: str, now: dt.datetime) -> bool:
    """Count finished ``day`` once and keep it; False when it was not counted (see ``day_counts``)."""
    counts = day_counts(conn, day)
    if counts is None:
        return False
    keep_day(conn, day, counts, now)
    return True


class FleetDays:
    """The overview's finished days, counted off the page: ``trend`` reads what is kept and, when
    finished days are missing (a new database's first view: 29 days, 45-52 s at 100,000 devices
    on PostgreSQL when a view counted them; after midnight: yesterday), starts one background
    thread that counts them one at a time, each in its own transaction on its own connection
    (``connect``; on SQLite counted in a reading transaction, ``read``), oldest first. The page
    shows those days as being counted meanwhile. Thread-safe."""

    def __init__(self, connect: Callable[[], AbstractContextManager[Connection]],
                 read: Callable[[], AbstractContextManager[Connection]] | None = None) -> None:
        self.connect = connect
        #: SQLite: transactions that only read (``db.READS_ONLY``): a day is counted in one of them
        #: and kept in a short writing one, so the count never holds the write lock
        self.read = read
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def trend(self, conn: Connection, now: dt.datetime, days: int = TREND_DAYS,
              today: dict[str, int] | None = None) -> list[dict[str, Any]]:
        """``fleet_trend`` (``today``: its last day's counts, when made already: ``device_counts``)."""
        rows = fleet_trend(conn, now, days, today)
        if any(r["counting"] for r in rows[:-1]):
            self.start(now, days)
        return rows

    def start(self, now: dt.datetime, days: int = TREND_DAYS) -> None:
        """Count the missing finished days in the background, unless a count is running."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._thread = threading.Thread(target=self._count, args=(now, days), daemon=True,
                                            name="netcheck-ui-days")
            self._thread.start()

    def join(self, timeout_s: float | None = None) -> None:
        """Wait for the running count, if any (tests, shutdown)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout_s)

    def _count(self, now: dt.datetime, days: int) -> None:
        try:
            with (self.read or self.connect)() as conn:
                missing = uncounted_days(conn, now, days)
            for day in missing:
                if self.read is None:
                    with self.connect() as conn:
                        count_day(conn, day, now)
                    continue
                with self.read() as conn:
                    counts = day_counts(conn, day)
                if counts is not None:
                    with self.connect() as conn:
                        keep_day(conn, day, counts, now)
        except Exception:  # the days stay missing; the next view starts another count
            log.exception("counting the overview's finished days failed")


class Recent:
    """Values reused for ``keep_s`` seconds (fleet-wide counts: a page view should not recount 100,000
    devices when the previous view did it a moment ago). Older than that (up to ``STALE_TIMES`` times
    ``keep_s``), a view still gets the value at once while one background thread counts it afresh on
    its own connection (``connect``; without one, the view counts): a page view waits for a
    fleet-wide count only when none was made recently. Thread-safe."""

    STALE_TIMES = 10

    def __init__(self, keep_s: float, clock: Callable[[], float] = time.monotonic,
                 connect: Callable[[], AbstractContextManager[Connection]] | None = None) -> None:
        self.keep_s = keep_s
        self.clock = clock
        self.connect = connect
        self._values: dict[Hashable, tuple[float, Any]] = {}
        self._counting: set[Hashable] = set()
        self._lock = threading.Lock()

    def get(self, key: Hashable, conn: Connection, make: Callable[[Connection], T]) -> T:
        now = self.clock()
        with self._lock:
            found = self._values.get(key)
            if found is not None:
                kept: T = found[1]
                if now - found[0] < self.keep_s:
                    return kept
                if now - found[0] < self.keep_s * self.STALE_TIMES and self.connect is not None:
                    if key not in self._counting:
                        self._counting.add(key)
                        threading.Thread(target=self._recount, args=(key, make), daemon=True,
                                         name="netcheck-ui-recount").start()
                    return kept
        value = make(conn)
        self._keep(key, value)
        return value

    def _keep(self, key: Hashable, value: Any) -> None:
        if self.keep_s <= 0:
            return
        now = self.clock()
        with self._lock:
            self._values = {k: v for k, v in self._values.items() if now - v[0] < self.keep_s * self.STALE_TIMES}
            self._values[key] = (now, value)

    def _recount(self, key: Hashable, make: Callable[[Connection], Any]) -> None:
        try:
            assert self.connect is not None
            with self.connect() as conn:
                self._keep(key, make(conn))
        except Exception:  # a failed recount leaves the old value to age out; the next view counts
            log.exception("recounting %r for the dashboard failed", key)
        finally:
            with self._lock:
                self._counting.discard(key)


def states_counted(*columns: Any) -> Any:
    """``columns`` of ``device_states`` and how many devices (not revoked) have each set of values:
    one scan of the latest states (the few revoked devices left out through their index), no join."""
    revoked = sa.select(devices.c.id).where(devices.c.revoked_at.is_not(None))
    return (sa.select(*columns, sa.func.count()).where(device_states.c.device_id.not_in(revoked))
            .group_by(*columns))


def _add_statuses(out: dict[str, dict[str, int]], text: str | None, count: int) -> None:
    for wid, status in json.loads(text or "{}").items():
        per = out.setdefault(wid, {})
        per[status] = per.get(status, 0) + count


def workload_counts(conn: Connection) -> dict[str, dict[str, int]]:
    """Per workload, the devices whose latest report has each status (``device_states.workloads``)."""
    return _per_workload(conn.execute(states_counted(device_states.c.workloads)))


def _per_workload(counted: Iterable[Any]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for text, count in counted:
        _add_statuses(out, text, int(count))
    return dict(sorted(out.items()))


def latest_counts(conn: Connection, limit: int = 10) -> tuple[dict[str, dict[str, int]], list[dict[str, Any]]]:
    """The overview's counts of the devices' latest states in one scan of them, grouped by statuses'
    and findings' texts (a few dozen pairs): ``workload_counts`` and ``top_findings`` (two scans of
    100,000 states made one)."""
    grouped = conn.execute(states_counted(device_states.c.workloads, device_states.c.findings)).all()
    return (_per_workload((w, n) for w, _, n in grouped),
            _top_findings(conn, ((f, n) for _, f, n in grouped), limit))


def tag_counts(conn: Connection, limit: int = 200) -> list[dict[str, Any]]:
    """Per tag (site=paris, ...), the devices by latest verdict: one scan of the devices, grouped by
    their tags' text (``devices.tags``) and verdict, each distinct text parsed once."""
    rows = conn.execute(sa.select(devices.c.tags, devices.c.last_verdict, sa.func.count())
                        .where(devices.c.revoked_at.is_(None)).group_by(devices.c.tags, devices.c.last_verdict))
    return _per_tag([(text, verdict, int(count)) for text, verdict, count in rows], limit)


def _per_tag(grouped: Sequence[tuple[str, str | None, int]], limit: int) -> list[dict[str, Any]]:
    out: dict[tuple[str, str], dict[str | None, int]] = {}
    for text, verdict, count in grouped:
        for key, value in json.loads(text).items():
            per = out.setdefault((key, value), {})
            per[verdict] = per.get(verdict, 0) + count
    ordered = sorted(out.items(), key=lambda kv: (kv[0][0] != "site", kv[0][0], -sum(kv[1].values()), kv[0][1]))
    return [{"key": k, "value": v, "total": sum(c.values()), **{x: c.get(x, 0) for x in VERDICTS}}
            for (k, v), c in ordered[:limit]]


def device_counts(conn: Connection, now: dt.datetime, stale_days: int, limit: int = 200
                  ) -> tuple[dict[str | None, int], list[dict[str, Any]], int, dict[str, int]]:
    """The overview's counts of the devices in one scan of them, grouped by tags' text, verdict,
    staleness, whether revoked and whether seen today: of the devices not revoked, by latest verdict,
    ``tag_counts``, and how many were not seen for ``stale_days``; and the chart's today
    (``devices_today``: every device). Four scans of 100,000 devices made one."""
    stale = _stale(now, stale_days)
    revoked = devices.c.revoked_at.is_not(None)
    seen = devices.c.last_seen_at >= _day_start(now)
    rows = [(text, verdict, bool(old), bool(gone), bool(today), int(count))
            for text, verdict, old, gone, today, count in conn.execute(
                sa.select(devices.c.tags, devices.c.last_verdict, stale, revoked, seen, sa.func.count())
                .group_by(devices.c.tags, devices.c.last_verdict, stale, revoked, seen))]
    verdicts: dict[str | None, int] = {}
    per_text: dict[tuple[str, str | None], int] = {}
    today: dict[str, int] = {}
    for text, verdict, _, gone, seen_today, count in rows:
        if seen_today and verdict is not None:
            today[verdict] = today.get(verdict, 0) + count
        if gone:
            continue
        verdicts[verdict] = verdicts.get(verdict, 0) + count
        per_text[(text, verdict)] = per_text.get((text, verdict), 0) + count
    tags = _per_tag([(text, verdict, n) for (text, verdict), n in per_text.items()], limit)
    return verdicts, tags, sum(count for _, _, old, gone, _, count in rows if old and not gone), today


def _stale(now: dt.datetime, days: int) -> sa.ColumnElement[bool]:
    cutoff = now - dt.timedelta(days=days)
    return sa.or_(devices.c.last_seen_at.is_(None), devices.c.last_seen_at < cutoff)


def top_findings(conn: Connection, limit: int = 10) -> list[dict[str, Any]]:
    """The most common findings in the devices' latest reports (``device_states.findings``), with how
    many devices and the fix (read from one latest report that has it)."""
    return _top_findings(conn, conn.execute(states_counted(device_states.c.findings)), limit)


def _top_findings(conn: Connection, counted: Iterable[Any], limit: int) -> list[dict[str, Any]]:
    """``top_findings`` from the devices counted per findings' text."""
    counts: dict[str, int] = {}
    for text, count in counted:
        for code in json.loads(text):
            counts[code] = counts.get(code, 0) + int(count)
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
    out = []
    for code, count in top:
        # one latest report that has the finding: found by scanning the states' texts, stopping at the first
        holder = (sa.select(device_states.c.report_pk)
                  .where(device_states.c.findings.contains(json.dumps(code), autoescape=True)).limit(1)
                  .scalar_subquery())
        sample = conn.execute(
            sa.select(report_findings.c.severity, report_findings.c.workload_id, report_findings.c.title,
                      report_findings.c.remediation)
            .where(report_findings.c.report_pk == holder, report_findings.c.code == code)).first()
        if sample is not None:
            out.append({"code": code, "devices": count, **sample._mapping})
    return out


# --- devices -----------------------------------------------------------------------------------

DEVICE_COLUMNS = DEVICE_EXPORT_COLUMNS


def not_revoked(conn: Connection) -> sa.ColumnElement[bool]:
    """Not revoked; on SQLite through an expression no index serves: for a list with a correlated
    test, its planner would otherwise read every device through ``devices (revoked_at)`` and sort
    them, not walk the list's order (100,000 devices: 0.2-1.3 s against 2-80 ms). PostgreSQL plans
    the plain test well, and the wrapped one badly."""
    if conn.dialect.name == "sqlite":
        return sa.func.coalesce(devices.c.revoked_at, None).is_(None)
    return devices.c.revoked_at.is_(None)


def devices_listing(f: Filters, now: dt.datetime, conn: Connection | None = None) -> Listing:
    # tags: the kept text (``store.pairs_text``), replaced by a mapping by ``_add_tags``; the keys in
    # the order of the lines the devices keep (``db.DEVICE_EXPORT_KEYS``), which the exports
    # PostgreSQL writes join
    query = sa.select(*(devices.c.id.label(c) if c == "device_id" else devices.c[c] for c in DEVICE_EXPORT_KEYS))
    query = query.where(devices.c.revoked_at.is_not(None) if f.revoked else
                        not_revoked(conn) if conn is not None and (f.finding or f.workload) else
                        devices.c.revoked_at.is_(None))
    if f.verdict == "none":
        query = query.where(devices.c.last_verdict.is_(None))
    elif f.verdict:
        query = query.where(devices.c.last_verdict == f.verdict)
    if f.tag:
        query = query.where(sa.select(device_tags.c.device_id).where(
            device_tags.c.device_id == devices.c.id, device_tags.c.key == f.tag[0],
            device_tags.c.value == f.tag[1]).exists())
    # a finding or workload status of the latest report: its state, probed by key in the list's order
    if f.finding:
        query = query.where(_state_has(device_states.c.findings, json.dumps(f.finding)))
    if f.workload:
        query = query.where(_state_has(device_states.c.workloads,
                                       store.pairs_text([f.workload])[1:-1]))  # '"id":"status"'
    if f.stale_days:
        query = query.where(_stale(now, f.stale_days))
    if f.name:
        query = query.where(devices.c.name.contains(f.name, autoescape=True))
    return Listing(query, devices.c.id, "device_id", DEVICE_COLUMNS, _add_tags,
                   lines=Kept(devices.c.export_csv, devices.c.export_json), splits=UUID_SPLITS)


def _state_has(column: Any, text: str) -> sa.ColumnElement[bool]:
    """The device's latest state's ``column`` (canonical JSON) holds ``text``, a quoted member."""
    return sa.select(device_states.c.device_id).where(device_states.c.device_id == devices.c.id,
                                                      column.contains(text, autoescape=True)).exists()


def _add_tags(conn: Connection, rows: list[dict[str, Any]]) -> None:
    tags = store.tags_of(conn, [r["device_id"] for r in rows])
    for r in rows:
        r["tags"] = tags.get(r["device_id"], {})


def devices_page(conn: Connection, f: Filters, now: dt.datetime, page: int = 1,
                 size: int = PAGE_SIZE) -> Page:
    return devices_listing(f, now, conn).page(conn, (devices.c.name, devices.c.id), page, size)


def device(conn: Connection, device_id: str) -> dict[str, Any] | None:
    row = conn.execute(sa.select(devices).where(devices.c.id == device_id)).first()
    if row is None:
        return None
    out = dict(row._mapping)
    out["tags"] = store.tags_of(conn, [device_id]).get(device_id, {})
    return out


HISTORY_COLUMNS = ("received_at", "measured_at", "verdict", "tool_version", "sweep_id", "report_id")


def history_listing(device_id: str) -> Listing:
    query = (sa.select(reports.c.id.label("pk"), *(reports.c[c] for c in HISTORY_COLUMNS))
             .where(reports.c.device_id == device_id))
    return Listing(query, reports.c.id, "pk", HISTORY_COLUMNS)


def history_page(conn: Connection, device_id: str, page: int = 1, size: int = PAGE_SIZE) -> Page:
    return history_listing(device_id).page(conn, (reports.c.received_at.desc(), reports.c.id.desc()), page, size)


def report_body(conn: Connection, device_id: str, report_pk: int | None) -> dict[str, Any] | None:
    """One stored report (the device's latest when ``report_pk`` is None), decoded."""
    pk = report_pk
    if pk is None:
        pk = conn.execute(sa.select(devices.c.last_report_pk).where(devices.c.id == device_id)).scalar_one_or_none()
        if pk is None:
            return None
    blob = conn.execute(sa.select(reports.c.report_lz4).where(reports.c.id == pk,
                                                              reports.c.device_id == device_id)).scalar_one_or_none()
    return None if blob is None else store.decode_report(blob)


# --- sweeps ------------------------------------------------------------------------------------

SWEEP_COLUMNS = ("id", "created_at", "expires_at", "tag", "thorough", "note", "answers")


def _sweep_tags(conn: Connection, rows: list[dict[str, Any]]) -> None:
    for r in rows:
        r["tag"] = f"{r['tag_key']}={r['tag_value']}" if r["tag_key"] else None


def sweeps_listing() -> Listing:
    answers = (sa.select(sa.func.count()).select_from(sweep_responses)
               .where(sweep_responses.c.sweep_id == sweeps.c.id).scalar_subquery())
    return Listing(sa.select(sweeps, answers.label("answers")), sweeps.c.id, "id", SWEEP_COLUMNS, _sweep_tags,
                   derived={"tag": _sweep_tag})


def _sweep_tag(sub: Any) -> Any:
    """``_sweep_tags`` in SQL."""
    pair = sub.c.tag_key.op("||")(sa.literal("=")).op("||")(sa.func.coalesce(sub.c.tag_value, "None"))
    return sa.case((sub.c.tag_key != "", pair), else_=sa.null()).label("tag")


def sweeps_page(conn: Connection, page: int = 1, size: int = PAGE_SIZE) -> Page:
    return sweeps_listing().page(conn, (sweeps.c.created_at.desc(), sweeps.c.id), page, size)


def known_sites(conn: Connection) -> list[str]:
    """The sites a sweep can target: the values of the devices' ``site`` tags and the enrollment
    secrets' sites (which become that tag), sorted."""
    tagged = sa.select(device_tags.c.value).where(device_tags.c.key == "site").distinct()
    secret = sa.select(enroll_secrets.c.site).where(enroll_secrets.c.site.is_not(None)).distinct()
    return sorted({r[0] for r in conn.execute(sa.union(tagged, secret))})


def _targeted(sweep: Any) -> list[sa.ColumnElement[bool]]:
    """Conditions on ``devices`` for the devices a sweep asks: every device not revoked, or those with its tag."""
    where: list[sa.ColumnElement[bool]] = [devices.c.revoked_at.is_(None)]
    if sweep.tag_key is not None:
        where.append(sa.select(device_tags.c.device_id).where(
            device_tags.c.device_id == devices.c.id, device_tags.c.key == sweep.tag_key,
            device_tags.c.value == sweep.tag_value).exists())
    return where


def sweep(conn: Connection, sweep_id: str) -> Any:
    return conn.execute(sa.select(sweeps).where(sweeps.c.id == sweep_id)).first()


def sweep_coverage(conn: Connection, sw: Any, now: dt.datetime, answered: int | None = None) -> dict[str, Any]:
    """Targeted, answered (counted unless given: ``sweep_answers`` counts it); of the rest: seen in
    the last ``OFFLINE_AFTER`` (pending) or not (offline, since its last contact, listed with the devices)."""
    targeted = int(conn.execute(sa.select(sa.func.count()).select_from(devices).where(*_targeted(sw))).scalar_one())
    if answered is None:
        answered = int(conn.execute(sa.select(sa.func.count()).select_from(sweep_responses)
                                    .where(sweep_responses.c.sweep_id == sw.id)).scalar_one())
    not_answered = _not_answered(sw)
    offline = int(conn.execute(sa.select(sa.func.count()).select_from(
        not_answered.where(_offline(now)).subquery())).scalar_one())
    return {"targeted": targeted, "answered": answered, "pending": max(0, targeted - answered - offline),
            "offline": offline, "expired": sw.expires_at <= now}


def _offline(now: dt.datetime) -> sa.ColumnElement[bool]:
    return sa.or_(devices.c.last_seen_at.is_(None), devices.c.last_seen_at < now - OFFLINE_AFTER)


def sweep_answers(conn: Connection, sw: Any, now: dt.datetime, points: int = 48
                  ) -> tuple[int, dict[str, dict[str, int]], list[tuple[float, int]]]:
    """The sweep's answers in one scan of them, grouped by (interval of the chart, statuses' text):
    how many (``sweep_coverage``'s answered), per workload the answers with each status
    (``sweep_workloads``), and the cumulative answers over its life so far (``sweep_timeline``)."""
    end = min(now, sw.expires_at)
    span = max(1.0, (end - sw.created_at).total_seconds())
    step = span / points
    start = sa.literal(sw.created_at, UTCDateTime)
    if conn.dialect.name == "sqlite":
        elapsed: Any = (sa.func.julianday(sweep_responses.c.received_at) - sa.func.julianday(start)) * 86400.0
        interval: Any = sa.cast(elapsed / step, sa.Integer)  # truncated: the floor, as elapsed >= 0
    else:
        elapsed = sa.extract("epoch", sweep_responses.c.received_at - start)
        interval = sa.func.floor(elapsed / step)
    # the database counts the answers per interval between two points (no row per answer); an
    # answer outside the sweep's life so far is counted, not charted
    charted = sa.case((sa.and_(elapsed >= 0, elapsed <= span), interval), else_=sa.null())
    grouped = [(i, text, int(count)) for i, text, count in conn.execute(
        sa.select(charted, sweep_responses.c.workloads, sa.func.count())
        .where(sweep_responses.c.sweep_id == sw.id).group_by(charted, sweep_responses.c.workloads))]
    per: dict[int, int] = {}
    texts: dict[str | None, int] = {}
    for i, text, count in grouped:
        texts[text] = texts.get(text, 0) + count
        if i is not None:
            last = min(int(i), points - 1)  # an answer at the very end is in the last interval
            per[last] = per.get(last, 0) + count
    # an answer in interval i (after point i, up to point i + 1) counts from point i + 1 on
    timeline, total = [], 0
    for k in range(points + 1):
        total += int(per.get(k - 1, 0))
        timeline.append((span * k / points, total))
    return sum(texts.values()), _statuses(conn, sw.id, texts.items()), timeline


def sweep_timeline(conn: Connection, sw: Any, now: dt.datetime, points: int = 48) -> list[tuple[float, int]]:
    """Cumulative answers over the sweep's life so far: (seconds since start, answers)."""
    return sweep_answers(conn, sw, now, points)[2]


def sweep_workloads(conn: Connection, sweep_id: str) -> dict[str, dict[str, int]]:
    """Per workload, the sweep's answers with each status: grouped by the statuses kept with each
    answer (``sweep_responses.workloads``); an answer stored without them is read from its report's rows."""
    return _statuses(conn, sweep_id, conn.execute(
        sa.select(sweep_responses.c.workloads, sa.func.count()).where(sweep_responses.c.sweep_id == sweep_id)
        .group_by(sweep_responses.c.workloads)))


def _statuses(conn: Connection, sweep_id: str, counted: Iterable[Any]) -> dict[str, dict[str, int]]:
    """``sweep_workloads`` from the answers counted per statuses' text (None: stored without them)."""
    out: dict[str, dict[str, int]] = {}
    unrecorded = 0
    for text, count in counted:
        if text is None:
            unrecorded += int(count)
        else:
            _add_statuses(out, text, int(count))
    if unrecorded:
        stored = (sa.select(sweep_responses.c.report_pk)
                  .where(sweep_responses.c.sweep_id == sweep_id, sweep_responses.c.workloads.is_(None)))
        for wid, status in conn.execute(sa.select(report_workloads.c.workload_id, report_workloads.c.status)
                                        .where(report_workloads.c.report_pk.in_(stored))):
            per = out.setdefault(wid, {})
            per[status] = per.get(status, 0) + 1
    return dict(sorted(out.items()))


def _not_answered(sw: Any) -> Any:
    answered = sa.select(sweep_responses.c.device_id).where(sweep_responses.c.sweep_id == sw.id,
                                                           sweep_responses.c.device_id == devices.c.id,
                                                           key_bounds(sweep_responses.c.device_id))
    return (sa.select(devices.c.id.label("device_id"), devices.c.name, devices.c.last_seen_at,
                      devices.c.last_verdict)
            .where(*_targeted(sw), ~answered.exists()))


SWEEP_DEVICE_COLUMNS = ("device_id", "name", "state", "last_seen_at", "last_verdict", "verdict", "received_at")


def sweep_devices_listing(sw: Any, answered: bool, now: dt.datetime) -> Listing:
    """The devices that answered (with their answer's verdict, ``sweep_responses.verdict``), or those
    that have not (pending or offline). Exported as the devices' kept pieces (``db.row_pieces``)
    around the row's own cells: an answer's, kept with it (``sweep_responses.tail_*``), or a missing
    device's state, the one cell that depends on the time of the export."""
    if answered:
        query = (sa.select(sweep_responses.c.device_id, devices.c.name, devices.c.last_seen_at,
                           devices.c.last_verdict, sweep_responses.c.verdict, sweep_responses.c.received_at)
                 .select_from(sweep_responses.join(devices, devices.c.id == sweep_responses.c.device_id))
                 .where(sweep_responses.c.sweep_id == sw.id))
        key, twins = sweep_responses.c.device_id, [devices.c.id]
        state: Any = sa.literal("answered", sa.Text)
        tails = Kept(sweep_responses.c.tail_csv, sweep_responses.c.tail_json)
    else:
        query, key, twins = _not_answered(sw), devices.c.id, []
        state = sa.case((devices.c.last_seen_at >= sa.literal(now - OFFLINE_AFTER, UTCDateTime), "pending"),
                        else_="offline")
        tails = Kept(sa.literal(",,\r\n", sa.Text), joined([
            sa.literal(', "state": "', sa.Text), state, sa.literal('", "verdict": null, "received_at": null}')]))
    lines = Kept(joined([devices.c.row_head_csv, state, devices.c.row_seen_csv, tails.csv]),
                 joined([devices.c.row_head_json, devices.c.row_seen_json, tails.json]))

    def states(conn: Connection, rows: list[dict[str, Any]]) -> None:
        for r in rows:
            seen = r.get("last_seen_at")
            r["state"] = ("answered" if answered else
                          "pending" if seen is not None and seen >= now - OFFLINE_AFTER else "offline")
            r.setdefault("verdict", None)
            r.setdefault("received_at", None)

    return Listing(query, key, "device_id", SWEEP_DEVICE_COLUMNS, states, twins, lines=lines, splits=UUID_SPLITS)


def sweep_devices_page(conn: Connection, sw: Any, answered: bool, now: dt.datetime, after: str | None = None,
                       size: int = PAGE_SIZE) -> Page:
    """A page of the list in device id order, starting after the device ``after`` (keyset: read
    through the key's index, however deep the page; no sort of 100,000 devices per view)."""
    listing = sweep_devices_listing(sw, answered, now)
    if after is not None:
        listing = listing.after(after)
    return listing.page(conn, (listing.key,), 1, size)


# --- administration ----------------------------------------------------------------------------

SECRET_COLUMNS = ("id", "site", "note", "created_at", "revoked_at")


def secrets_page(conn: Connection, page: int = 1, size: int = PAGE_SIZE) -> Page:
    query = (sa.select(*(enroll_secrets.c[c] for c in SECRET_COLUMNS))
             .order_by(enroll_secrets.c.created_at.desc(), enroll_secrets.c.id))
    return _page(conn.execute(_limit(query, page, size)).all(), page, size, SECRET_COLUMNS)


# --- endpoint data -----------------------------------------------------------------------------

def catalog_versions(conn: Connection) -> list[dict[str, Any]]:
    """How many devices (not revoked) had their newest report tested against each (instance, version),
    newest first: one scan of ``device_catalogs``, the few revoked devices left out through their
    index, no join to the devices."""
    revoked = sa.select(devices.c.id).where(devices.c.revoked_at.is_not(None))
    rows = conn.execute(
        sa.select(device_catalogs.c.instance, device_catalogs.c.version, sa.func.count().label("devices"))
        .where(device_catalogs.c.device_id.not_in(revoked))
        .group_by(device_catalogs.c.instance, device_catalogs.c.version)
        .order_by(device_catalogs.c.instance, device_catalogs.c.version.desc())).all()
    return [dict(r._mapping) for r in rows]
