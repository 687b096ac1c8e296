"""`netcheck check --upload`: spool first, then drain within the deadline, and say what happened."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from netcheck.agent.config import AgentStore
from netcheck.agent.enrollment import enroll
from netcheck.agent.spool import Spool
from netcheck.agent.transport import Timeouts
from netcheck.agent.upload import UploadStatus, spool_and_upload
from netcheck.collector.store import decode_report
from netcheck.deadline import Deadline
from netcheck.render.reduced import REDUCED_CONTENT_TYPE, REDUCED_KEY, reduce_report
from tests.agent.collector_double import Canned, CollectorDouble
from tests.agent.conftest import Real, Rig
from tests.agent.helpers import fake_report
from tests.collector.conftest import sql


def _enrolled(url: str, secret: str) -> AgentStore:
    store = AgentStore()
    enroll(store, url, secret, tags={})
    return store


def test_uploaded_to_the_real_collector(real: Callable[..., Real]) -> None:
    collector = real()
    _enrolled(collector.url, collector.secret)
    report = fake_report()
    summary = spool_and_upload(report, deadline_s=20)
    assert summary.status is UploadStatus.UPLOADED and summary.message == "Report uploaded."
    assert [r.report_id for r in sql(collector.database_url, "SELECT report_id FROM reports")] == \
        [report["report_id"]]
    assert not Spool().pending()


def test_uploads_are_gzipped_and_stored_as_sent(real: Callable[..., Real], double: CollectorDouble) -> None:
    """The agent sends the report gzipped; the real collector stores exactly the report (its
    canonical JSON); the wire body is smaller."""
    collector = real()
    _enrolled(collector.url, collector.secret)
    report = fake_report()
    assert spool_and_upload(report, deadline_s=20).status is UploadStatus.UPLOADED
    (row,) = sql(collector.database_url, "SELECT report_lz4 FROM reports")
    assert decode_report(row.report_lz4) == report
    # what went on the wire, seen by the double
    _enrolled(double.url, double.secret)
    assert spool_and_upload(fake_report(), deadline_s=20).status is UploadStatus.UPLOADED
    (sent,) = [r for r in double.seen if r.path == "/api/v1/reports"]
    assert sent.headers["Content-Encoding"] == "gzip" and sent.wire_size < len(sent.body)
    # the same spool sent a full report minutes ago: this one, measured the same day, goes reduced
    assert sent.headers["Content-Type"] == REDUCED_CONTENT_TYPE


def test_a_collector_that_refuses_gzip_gets_the_upload_plain(real: Callable[..., Real]) -> None:
    collector = real(env={"NETCHECK_ACCEPT_GZIP": "0"})
    _enrolled(collector.url, collector.secret)
    first, second = fake_report(), fake_report()
    assert spool_and_upload(first, deadline_s=20).status is UploadStatus.UPLOADED
    assert spool_and_upload(second, deadline_s=20).status is UploadStatus.UPLOADED
    assert sorted(r.report_id for r in sql(collector.database_url, "SELECT report_id FROM reports")) == \
        sorted([first["report_id"], second["report_id"]])


def test_collector_down_keeps_the_report(double: CollectorDouble) -> None:
    store = _enrolled(double.url, double.secret)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    store.save(replace(store.load_config(), collector_url=dead), store.load_token())
    sleeps: list[float] = []
    summary = spool_and_upload(fake_report(), deadline_s=10, sleep=sleeps.append)
    assert summary.status is UploadStatus.QUEUED
    assert summary.message == "Collector unreachable; the report is kept and will be sent later."
    assert summary.pending == 1 and len(Spool().pending()) == 1
    assert sleeps  # it retried within the deadline
    # back online: the next upload sends both, oldest first
    store.save(replace(store.load_config(), collector_url=double.url), store.load_token())
    summary = spool_and_upload(fake_report(), deadline_s=10)
    assert summary.status is UploadStatus.UPLOADED and summary.uploaded == 2
    assert "1 earlier report" in summary.message


def test_retry_after_within_the_deadline_is_honoured(double: CollectorDouble) -> None:
    _enrolled(double.url, double.secret)
    double.canned.append(Canned(503, b'{"error":{"code":"busy","message":"later"}}', {"Retry-After": "2"}))
    sleeps: list[float] = []
    summary = spool_and_upload(fake_report(), deadline_s=10, sleep=sleeps.append)
    assert summary.status is UploadStatus.UPLOADED and sleeps == [2.0]


def test_not_enrolled_is_said_plainly_and_nothing_is_spooled() -> None:
    summary = spool_and_upload(fake_report(), deadline_s=5)
    assert summary.status is UploadStatus.NOT_ENROLLED and "netcheck enroll" in summary.message
    assert not Spool().pending()


def test_tls_failure_says_tls(double: CollectorDouble) -> None:
    store = _enrolled(double.url, double.secret)
    store.save(replace(store.load_config(), collector_url=double.url.replace("http", "https")),
               store.load_token())
    summary = spool_and_upload(fake_report(), deadline_s=10, timeouts=Timeouts(2, 2, 2, 4))
    assert summary.status is UploadStatus.TLS_FAILED and "TLS" in summary.message
    assert "kept" in summary.message and len(Spool().pending()) == 1


def test_another_upload_in_flight(double: CollectorDouble) -> None:
    _enrolled(double.url, double.secret)
    spool = Spool()
    with spool.upload_lock.held():
        summary = spool_and_upload(fake_report(), deadline_s=5, spool=Spool())
    assert summary.status is UploadStatus.BUSY and "agent" in summary.message


def test_refused_report_is_set_aside(double: CollectorDouble) -> None:
    _enrolled(double.url, double.secret)
    double.canned.append(Canned(422, b'{"error":{"code":"invalid","message":"report.x"}}'))
    summary = spool_and_upload(fake_report(), deadline_s=5)
    assert summary.status is UploadStatus.REJECTED and "set aside" in summary.message
    assert len(Spool().quarantined()) == 1


def test_unusable_spool_is_reported_not_raised(double: CollectorDouble, tmp_path: Path) -> None:
    _enrolled(double.url, double.secret)
    spool = Spool(tmp_path / "sp", max_bytes=100)
    summary = spool_and_upload(fake_report(), deadline_s=5, spool=spool)
    assert summary.status is UploadStatus.NOT_SPOOLED and "larger than the spool" in summary.message


def _reports_sent(double: CollectorDouble) -> list[tuple[str, dict[str, Any]]]:
    """(content type, report) of every report upload the double saw, in order."""
    return [(r.headers["Content-Type"], json.loads(r.body)["report"]) for r in double.seen
            if r.path == "/api/v1/reports"]


def test_reports_go_reduced_between_full_ones(double: CollectorDouble, rigs: Callable[..., Rig]) -> None:
    """The first report goes in full; the next ones measured within a day reduced (an ordinary
    sweep's answer too); one measured a day after the last full one in full again, and so does a
    thorough sweep's answer."""
    rig = rigs(double.url, double.secret)
    day = 24 * 3600.0
    t0 = 1_800_000_000.0
    for measured, sweep, thorough in ((t0, None, False), (t0 + 60, "sweep-1", False), (t0 + day - 1, None, False),
                                      (t0 + day, None, False), (t0 + day + 60, "sweep-2", True),
                                      (t0 + day + 120, None, False)):
        rig.spool.append(fake_report(measured_at=measured), sweep_id=sweep, thorough=thorough)
    assert rig.uploader.drain(Deadline.after(30)).stored == 6
    sent = _reports_sent(double)
    full = "application/json"
    assert [media for media, _ in sent] == [full, REDUCED_CONTENT_TYPE, REDUCED_CONTENT_TYPE, full, full,
                                            REDUCED_CONTENT_TYPE]
    original = fake_report()
    for media, report in sent:
        if media == full:
            assert REDUCED_KEY not in report and report["probes"] == original["probes"]
        else:
            assert report == reduce_report({**original, "report_id": report["report_id"],
                                            "measured_at": report["measured_at"]})


def test_a_resent_report_goes_in_the_same_form(double: CollectorDouble, rigs: Callable[..., Rig]) -> None:
    """An acknowledgement lost for a reduced report: the resend, a day later, is the same reduced
    report (the form follows measurement times, not the clock), so the collector sees a duplicate."""
    clock = [1_800_000_000.0]
    rig = rigs(double.url, double.secret, wall=lambda: clock[0])
    rig.spool.append(fake_report(measured_at=clock[0]))
    assert rig.uploader.drain(Deadline.after(30)).stored == 1
    rig.spool.append(fake_report(measured_at=clock[0] + 60))
    double.canned.append(Canned(503, b'{"error":{"code":"busy","message":"x"}}'))
    assert rig.uploader.drain(Deadline.after(30)).failure is not None
    clock[0] += 2 * 24 * 3600
    assert rig.uploader.drain(Deadline.after(30)).stored == 1
    assert [media for media, _ in _reports_sent(double)] == ["application/json", *[REDUCED_CONTENT_TYPE] * 2]


def test_a_collector_without_the_reduced_form_gets_full_reports(double: CollectorDouble,
                                                                 rigs: Callable[..., Rig]) -> None:
    double.accept_reduced = False
    rig = rigs(double.url, double.secret)
    for _ in range(3):
        rig.spool.append(fake_report())
    assert rig.uploader.drain(Deadline.after(30)).stored == 3
    assert [media for media, _ in _reports_sent(double)] == \
        ["application/json", REDUCED_CONTENT_TYPE, "application/json", "application/json"]
    assert all(REDUCED_KEY not in report for _, report in _reports_sent(double)[2:])


def test_the_real_collector_stores_reduced_uploads_reduced(real: Callable[..., Real],
                                                           rigs: Callable[..., Rig]) -> None:
    collector = real()
    rig = rigs(collector.url, collector.secret)
    first, second = fake_report(), fake_report()
    rig.spool.append(first)
    rig.spool.append(second)
    assert rig.uploader.drain(Deadline.after(30)).stored == 2
    rows = sql(collector.database_url, "SELECT report_id, form, report_lz4 FROM reports ORDER BY id")
    assert [(r.report_id, r.form) for r in rows] == [(first["report_id"], "lz4"), (second["report_id"], "reduced")]
    assert decode_report(rows[1].report_lz4) == reduce_report(second)
