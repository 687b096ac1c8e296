"""Draining the spool to the collector, oldest first, one report at a time.

A report leaves the spool only when the collector acknowledges *that* report in
JSON (``{"status": "stored"|"duplicate", "report_id": <the same id>}``). Lost
acknowledgements are therefore resent with the same ``report_id``, and the
collector answers "duplicate": at-least-once delivery, exactly-once storage.

On a retryable failure the drain stops and the caller backs off (see
``schedule.Backoff``); sending in sequence order and stopping at the first
failure keeps each device's reports in order. A refused report (400, 409, 413,
422, other 4xx) is moved to ``quarantine/``, counted, and the drain goes on.

401/403: one refusal never costs the credential. The agent re-enrolls only after
``auth_failures`` consecutive refusals spread over at least ``auth_window_s``,
and only when IT left the enrollment secret available; the new token is stored
before the old one is replaced. The count survives restarts (spool state).

A report goes in the reduced form (``netcheck.render.reduced``: every fact and verdict, the
probes that failed in full, the successful ones counted; 8 KiB of JSON instead of 237 for the
lab's report) unless it answers a thorough sweep, or the collector has had no full report from
this device for ``full_every_s`` (a day): so the collector has each device's full detail at least
daily and on a thorough sweep (an ordinary sweep wants the fleet's verdicts fast), and the cost
of an upload to both ends is mostly that of its facts. A collector that does not take the
reduced form (415 ``unsupported_media_type``) gets full reports.

At most one upload is in flight per device: ``drain`` holds the spool's upload
lock (a lock file), and returns ``busy`` when another process or thread has it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from netcheck.agent.spool import Counters, LockBusy, RecordRef, Spool, SpoolRecord
from netcheck.agent.transport import CollectorClient, Disposition, Exchange
from netcheck.deadline import Deadline
from netcheck.render.reduced import reduce_report

log = logging.getLogger(__name__)

DEFAULT_AUTH_FAILURES = 5
DEFAULT_AUTH_WINDOW_S = 30 * 60.0
#: a report goes in full (every probe's detail) when the collector has had none from this device for
#: this long; the others go reduced
DEFAULT_FULL_EVERY_S = 24 * 3600.0

#: called after enough 401s; returns the new token, or None if re-enrollment is impossible or failed
Reenroll = Callable[[], str | None]


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def upload_body(record: SpoolRecord, counters: Counters, sent_at: float, *, reduced: bool = False) -> bytes:
    """The POST /reports body for one spooled record; ``reduced``: its report in the reduced form
    (``netcheck.render.reduced``)."""
    body: dict[str, Any] = {
        "report": reduce_report(record.report) if reduced else record.report,
        "agent": {"seq": record.seq, "dropped": counters.dropped, "spool_full": counters.spool_full,
                  "sent_at": rfc3339(sent_at)},
        "sweep_id": record.sweep_id,
    }
    return encode_upload(body)


def _measured_at(record: SpoolRecord) -> float | None:
    """When the record's report was measured (seconds since the epoch), None if it does not say."""
    try:
        return datetime.fromisoformat(str(record.report["measured_at"])).timestamp()
    except (KeyError, TypeError, ValueError):
        return None


def encode_upload(body: dict[str, Any]) -> bytes:
    """An upload as canonical JSON (sorted keys, compact, UTF-8): the collector stores reports in
    that form, and checks a body already in it with one comparison instead of a scan."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, sort_keys=True,
                      allow_nan=False).encode("utf-8")


def is_ack(ex: Exchange, report_id: str) -> str | None:
    """"stored" or "duplicate" if ``ex`` acknowledges ``report_id``, else None."""
    if not ex.ok or not isinstance(ex.body, dict):
        return None
    status = ex.body.get("status")
    if status in ("stored", "duplicate") and ex.body.get("report_id") == report_id:
        return str(status)
    return None


@dataclass
class DrainResult:
    sent: int = 0
    stored: int = 0
    duplicates: int = 0
    quarantined: int = 0
    remaining: int = 0
    #: another upload was in flight: nothing was attempted
    busy: bool = False
    #: the failure that stopped the drain (None: the spool was emptied or the deadline hit)
    failure: Exchange | None = None
    acked_ids: list[str] = field(default_factory=list)
    reenrolled: bool = False

    @property
    def acked(self) -> int:
        return self.stored + self.duplicates

    @property
    def retry_after_s(self) -> float | None:
        return self.failure.retry_after_s if self.failure else None


class Uploader:
    def __init__(self, spool: Spool, client: CollectorClient, *, reenroll: Reenroll | None = None,
                 auth_failures: int = DEFAULT_AUTH_FAILURES, auth_window_s: float = DEFAULT_AUTH_WINDOW_S,
                 full_every_s: float = DEFAULT_FULL_EVERY_S, wall: Callable[[], float] = time.time) -> None:
        self.spool = spool
        self.full_every_s = full_every_s
        self.client = client
        self.reenroll = reenroll
        self.auth_failures = auth_failures
        self.auth_window_s = auth_window_s
        self.wall = wall

    def drain(self, deadline: Deadline, max_records: int | None = None) -> DrainResult:
        """Send spooled reports, oldest first, until empty, a failure, or the deadline."""
        result = DrainResult()
        try:
            self.spool.upload_lock.acquire(blocking=False)
        except LockBusy:
            result.busy = True
            result.remaining = len(self.spool.pending())
            return result
        try:
            self._drain_locked(deadline, max_records, result)
        finally:
            self.spool.upload_lock.release()
        result.remaining = len(self.spool.pending())
        return result

    def _drain_locked(self, deadline: Deadline, max_records: int | None, result: DrainResult) -> None:
        self.spool.prune()
        for ref in self.spool.pending():
            if deadline.expired or (max_records is not None and result.sent >= max_records):
                return
            record = self.spool.load(ref)
            if record is None:  # corrupt: quarantined by load(), never sent, never retried
                result.quarantined += 1
                continue
            outcome = self._send(ref, record, deadline, result)
            if outcome == "stop":
                return

    def _full_due(self, record: SpoolRecord) -> bool:
        """Whether this report goes in full: a thorough sweep's answer, or measured ``full_every_s`` or more after
        the last full report the collector acknowledged (or before it: a clock that went back; or none
        yet). Decided on measurement times, not on the time of sending, so a report resent after a
        lost acknowledgement goes in the same form and the collector sees the same report."""
        if record.thorough or not self.client.reduced_uploads:
            return True
        last = self.spool.get_value("last_full_measured_at")
        measured = _measured_at(record)
        if not isinstance(last, int | float) or measured is None:
            return True
        return not 0 <= measured - last < self.full_every_s

    def _post(self, record: SpoolRecord, counters: Counters, deadline: Deadline) -> tuple[Exchange, bool]:
        """Send the report reduced unless a full one is due (``_full_due``); a collector that does
        not take the reduced form gets the full report. Returns the answer and whether it was full."""
        now = self.wall()
        if not self._full_due(record):
            ex = self.client.post_report(upload_body(record, counters, now, reduced=True), deadline, reduced=True)
            if ex.status != 415 or ex.error_code != "unsupported_media_type":
                return ex, False
            log.info("the collector does not take reduced reports; sending them in full")
            self.client.reduced_uploads = False
        return self.client.post_report(upload_body(record, counters, now), deadline), True

    def _send(self, ref: RecordRef, record: SpoolRecord, deadline: Deadline, result: DrainResult) -> str:
        counters = self.spool.counters()
        ex, full = self._post(record, counters, deadline)
        result.sent += 1
        ack = is_ack(ex, record.report_id)
        if ack is not None:
            self.spool.acknowledge(ref, counters)
            if full:
                self.spool.set_values(last_full_measured_at=_measured_at(record))
            self._auth_ok()
            result.acked_ids.append(record.report_id)
            if ack == "stored":
                result.stored += 1
            else:
                result.duplicates += 1
            return "next"
        if ex.ok:
            ex = Exchange(Disposition.RETRY, f"HTTP {ex.status} but not an acknowledgement of report "
                          f"{record.report_id} (a proxy or portal?)", ex.status)
        if ex.disposition is Disposition.REJECT:
            log.warning("collector refused report %s (%s); set aside in %s", record.report_id, ex.reason,
                        self.spool.quarantine_dir)
            self.spool.quarantine(ref, f"http{ex.status}" + (f"_{ex.error_code}" if ex.error_code else ""))
            result.quarantined += 1
            return "next"
        if ex.disposition is Disposition.UNAUTHORIZED:
            if self._auth_failed(ex, result):
                return self._send(ref, record, deadline, result)
            result.failure = ex
            return "stop"
        log.info("upload of report %s failed: %s; kept in the spool", record.report_id, ex.reason)
        result.failure = ex
        return "stop"

    # -- 401 tracking ----------------------------------------------------------

    def _auth_ok(self) -> None:
        if self.spool.get_value("auth_401_count"):
            self.spool.set_values(auth_401_count=None, auth_401_first=None)

    def _auth_failed(self, ex: Exchange, result: DrainResult) -> bool:
        """Count a refusal; re-enroll when they are many and old enough. True: retry with the new token."""
        now = self.wall()
        count = int(self.spool.get_value("auth_401_count") or 0) + 1
        first = self.spool.get_value("auth_401_first")
        first = float(first) if isinstance(first, int | float) else now
        self.spool.set_values(auth_401_count=count, auth_401_first=first)
        spread = now - first
        if count < self.auth_failures or spread < self.auth_window_s:
            log.warning("collector refused the device token (%s); keeping it (%d consecutive refusal(s) "
                        "over %.0f s)", ex.reason, count, spread)
            return False
        if self.reenroll is None:
            log.error("collector has refused the device token %d times over %.0f min and no enrollment "
                      "secret is available: run `netcheck enroll` again", count, spread / 60)
            return False
        token = self.reenroll()
        if token is None:
            return False
        self.client.token = token
        self.spool.set_values(auth_401_count=None, auth_401_first=None)
        result.reenrolled = True
        return True


def drain_with_retries(uploader: Uploader, deadline: Deadline, *, sleep: Callable[[float], None] = time.sleep,
                       retry_pause_s: float = 2.0) -> DrainResult:
    """Drain within ``deadline``, retrying a failed exchange while time is left (``check --upload``).

    Waits honour ``Retry-After`` but never run past the deadline; what is left stays spooled.
    """
    total = DrainResult()
    pause = retry_pause_s
    while True:
        got = uploader.drain(deadline)
        total.sent += got.sent
        total.stored += got.stored
        total.duplicates += got.duplicates
        total.quarantined += got.quarantined
        total.acked_ids += got.acked_ids
        total.reenrolled = total.reenrolled or got.reenrolled
        total.remaining, total.busy, total.failure = got.remaining, got.busy, got.failure
        if got.busy or got.remaining == 0 or got.failure is None \
                or got.failure.disposition is Disposition.UNAUTHORIZED or got.failure.tls:
            return total
        wait = got.retry_after_s if got.retry_after_s is not None else pause
        if deadline.remaining() <= wait + 1.0:
            return total
        sleep(wait)
        pause *= 2
