"""``netcheck check --upload``: spool the report, then try to send the spool.

The report is on disk before any upload is tried, so "the collector is down"
costs nothing: the running agent (or the next ``--upload``) sends it later.
Also the one place that wires an enrolled device's configuration into a
client and an uploader (used by ``netcheck agent`` too).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from netcheck.agent.config import AgentStore, available_secret
from netcheck.agent.spool import Spool
from netcheck.agent.transport import CollectorClient, Disposition, Timeouts
from netcheck.agent.uploader import DrainResult, Uploader, drain_with_retries
from netcheck.deadline import Deadline
from netcheck.errors import CollectorError, ConfigError
from netcheck.proxy.decision import proxy_choice

log = logging.getLogger(__name__)


def open_uploader(store: AgentStore, spool: Spool, *, timeouts: Timeouts | None = None,
                  wall: Callable[[], float] = time.time) -> tuple[CollectorClient, Uploader]:
    """Client and uploader for the enrolled device (ConfigError if not enrolled)."""
    from netcheck.agent.enrollment import reenroll

    config = store.load_config()
    client = CollectorClient(config.collector_url, token=store.load_token(), ca_bundle=config.ca_bundle,
                             timeouts=timeouts, chooser=proxy_choice)

    def renew() -> str | None:
        secret = available_secret(store.load_config())
        if secret is None:
            log.error("the collector keeps refusing the device token and no enrollment secret is available "
                      "(set NETCHECK_ENROLL_SECRET or enroll with --secret-file): run `netcheck enroll` again")
            return None
        try:
            return reenroll(store, store.load_config(), secret, client)
        except (CollectorError, ConfigError, OSError) as exc:
            log.error("re-enrollment failed (%s); keeping the current token", exc)
            return None

    return client, Uploader(spool, client, reenroll=renew, wall=wall)


class UploadStatus(StrEnum):
    UPLOADED = "uploaded"
    QUEUED = "queued"
    TLS_FAILED = "tls_failed"
    REJECTED = "rejected"
    UNAUTHORIZED = "unauthorized"
    BUSY = "busy"
    NOT_SPOOLED = "not_spooled"
    NOT_ENROLLED = "not_enrolled"


@dataclass(frozen=True)
class UploadSummary:
    status: UploadStatus
    report_id: str
    #: reports acknowledged by the collector in this call (this one and older ones)
    uploaded: int = 0
    #: reports still waiting in the spool
    pending: int = 0
    reason: str | None = None

    @property
    def message(self) -> str:
        """One line for the user."""
        s = self.status
        if s is UploadStatus.UPLOADED:
            extra = f" ({self.uploaded - 1} earlier report(s) sent too)" if self.uploaded > 1 else ""
            return f"Report uploaded.{extra}"
        if s is UploadStatus.QUEUED:
            return "Collector unreachable; the report is kept and will be sent later."
        if s is UploadStatus.TLS_FAILED:
            return (f"Collector's TLS connection was refused ({self.reason}); the report is kept and will be "
                    "sent later.")
        if s is UploadStatus.UNAUTHORIZED:
            return "The collector refused this device's token; the report is kept. Ask IT to re-enroll it."
        if s is UploadStatus.REJECTED:
            return f"The collector refused the report ({self.reason}); it was set aside, not uploaded."
        if s is UploadStatus.BUSY:
            return "The report is kept; the running agent is uploading and will send it."
        if s is UploadStatus.NOT_ENROLLED:
            return f"Not uploaded: {self.reason}"
        return f"The report could not be kept for upload ({self.reason})."


def summarise(report_id: str, got: DrainResult) -> UploadSummary:
    if report_id in got.acked_ids:
        return UploadSummary(UploadStatus.UPLOADED, report_id, got.acked, got.remaining)
    if got.busy:
        return UploadSummary(UploadStatus.BUSY, report_id, got.acked, got.remaining)
    fail = got.failure
    if fail is None and got.quarantined:
        return UploadSummary(UploadStatus.REJECTED, report_id, got.acked, got.remaining, "see the agent log")
    if fail is not None and fail.tls:
        return UploadSummary(UploadStatus.TLS_FAILED, report_id, got.acked, got.remaining, fail.reason)
    if fail is not None and fail.disposition is Disposition.UNAUTHORIZED:
        return UploadSummary(UploadStatus.UNAUTHORIZED, report_id, got.acked, got.remaining, fail.reason)
    return UploadSummary(UploadStatus.QUEUED, report_id, got.acked, got.remaining,
                         fail.reason if fail else "no time left")


def spool_and_upload(report: dict[str, Any], *, deadline_s: float, store: AgentStore | None = None,
                     spool: Spool | None = None, timeouts: Timeouts | None = None,
                     sleep: Callable[[float], None] | None = None) -> UploadSummary:
    """Spool ``report`` durably, then drain the spool until ``deadline_s`` runs out.

    Never raises for network trouble; a missing enrollment is reported in the summary.
    """
    report_id = str(report.get("report_id", ""))
    if store is None:
        store = AgentStore()
    if not store.enrolled():
        return UploadSummary(UploadStatus.NOT_ENROLLED, report_id,
                             reason="this laptop is not enrolled; run `netcheck enroll https://COLLECTOR "
                                    "--secret-file FILE` first")
    deadline = Deadline.after(deadline_s)
    if spool is None:
        spool = Spool()
    got = spool.append(report)
    if not got.spooled:
        return UploadSummary(UploadStatus.NOT_SPOOLED, report_id, reason=got.reason)
    try:
        client, uploader = open_uploader(store, spool, timeouts=timeouts)
    except ConfigError as exc:
        return UploadSummary(UploadStatus.NOT_ENROLLED, report_id, pending=len(spool.pending()), reason=str(exc))
    with client:
        drained = drain_with_retries(uploader, deadline, sleep=sleep or time.sleep)
    return summarise(report_id, drained)
