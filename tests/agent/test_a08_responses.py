"""A8 response classification, against a real collector behind the fault proxy.

Kept and retried: refused, reset, DNS failure, timeout, 408, 429, 500, 502, 503,
504, a captive portal's 200 with HTML, a 200 that is not an acknowledgement.
Each time the report stays in the spool, and once the fault is gone the same
report is delivered (one row).
Set aside: 400, 409, 422 (canned, and the collector's own 422 for a schema
violation and for a report-id conflict) and 413 (the collector's own, body over
its limit): quarantined after exactly one attempt, counted, kept on disk, never
retried, and the reports behind it are still delivered.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from netcheck.agent.transport import CollectorClient, Timeouts
from netcheck.agent.uploader import Uploader
from netcheck.deadline import Deadline
from netcheck.render.reduced import reduce_report
from tests.agent.conftest import Real, Rig
from tests.agent.helpers import fake_report
from tests.collector.conftest import sql
from tests.faultproxy import (
    Blackhole,
    ConnFault,
    FaultProxy,
    Forward,
    HttpRequest,
    RequestFault,
    Respond,
    http_response,
)

ERROR = json.dumps({"error": {"code": "x", "message": "injected"}})


@dataclass
class Env:
    collector: Real
    proxy: FaultProxy
    rig: Rig
    fault: dict[str, RequestFault]

    def uploads(self, report_id: str) -> list[HttpRequest]:
        return [r for r in self.proxy.requests
                if r.path == "/api/v1/reports" and json.loads(r.content)["report"]["report_id"] == report_id]

    def rows(self) -> list[str]:
        return [r.report_id for r in sql(self.collector.database_url, "SELECT report_id FROM reports")]


@pytest.fixture
def env(real: Callable[..., Real], rigs: Callable[..., Rig]) -> Iterator[Env]:
    collector = real()
    fault: dict[str, RequestFault] = {}

    def decide(req: HttpRequest) -> RequestFault:
        return fault.get("reports", Forward()) if req.path == "/api/v1/reports" else Forward()

    with FaultProxy(("127.0.0.1", int(collector.url.rsplit(":", 1)[1]))) as proxy:
        proxy.request_fault = decide
        rig = rigs(collector.url, collector.secret, upload_url=proxy.url,
                   timeouts=Timeouts(connect_s=2, read_s=2, write_s=2, total_s=5))
        yield Env(collector, proxy, rig, fault)


CANNED_RETRY = {
    "408": http_response(408, ERROR),
    "429": http_response(429, ERROR, headers={"Retry-After": "30"}),
    "500": http_response(500, ERROR),
    "502": http_response(502, "<html>Bad Gateway</html>", content_type="text/html"),
    "503": http_response(503, ERROR, headers={"Retry-After": "120"}),
    "504": http_response(504, ""),
    "captive portal 200 html": http_response(200, "<html><form>Accept the terms</form></html>",
                                             content_type="text/html"),
    "200 json but no ack": http_response(200, '{"ok": true}'),
    "200 ack for another report": http_response(200, json.dumps(
        {"status": "stored", "report_id": "00000000-0000-4000-8000-000000000000", "device_id": "x"})),
}


def test_a8_transient_answers_keep_the_report_and_it_is_delivered_later(env: Env) -> None:
    for name, raw in CANNED_RETRY.items():
        rid = env.rig.spool.append(fake_report()).report_id
        env.fault["reports"] = Respond(raw)
        got = env.rig.uploader.drain(Deadline.after(10))
        assert (got.stored, got.quarantined, got.remaining) == (0, 0, 1), name
        assert got.failure is not None and got.failure.disposition.value == "retry", name
        if name.startswith("4") or name.startswith("5"):
            assert f"HTTP {name}" in got.failure.reason
        if name in ("429", "503"):
            assert got.failure.retry_after_s in (30, 120)
        if "html" in name:
            assert "captive portal" in got.failure.reason
        env.fault.clear()
        got = env.rig.uploader.drain(Deadline.after(10))
        assert got.stored == 1 and got.remaining == 0, name
        assert env.rows().count(rid) == 1
    assert env.rig.spool.counters().quarantined == 0


def _transient(env: Env, name: str, breaker: Callable[[], None], healer: Callable[[], None],
               expect: str | tuple[str, ...], uploader: Uploader | None = None) -> None:
    rid = env.rig.spool.append(fake_report()).report_id
    breaker()
    got = (uploader or env.rig.uploader).drain(Deadline.after(15))
    wanted = (expect,) if isinstance(expect, str) else expect
    assert got.failure is not None and any(w in got.failure.reason for w in wanted), (name, got.failure)
    assert got.remaining == 1 and got.quarantined == 0
    healer()
    got = env.rig.uploader.drain(Deadline.after(15))
    assert got.stored == 1, (name, got.failure)
    assert env.rows().count(rid) == 1


def test_a8_transport_failures_keep_the_report(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    p = env.proxy
    _transient(env, "refused", p.refuse, p.accept, "refused")

    def reset() -> None:
        p.connection_fault = ConnFault.RESET
        p.drop_all_connections()

    def heal() -> None:
        p.connection_fault = ConnFault.PASS
        env.fault.clear()

    # The RST races the request: if it lands while the agent is still writing, the write takes the reset and the
    # read that follows sees a closed socket. Both are the same fault and both readings keep the report.
    _transient(env, "reset", reset, heal, ("reset", "closed the connection without a complete answer"))

    def half_open() -> None:
        env.fault["reports"] = Blackhole()

    _transient(env, "timeout", half_open, heal, "timed out")

    # DNS: a name that cannot be resolved (resolution fails inside this process: nothing leaves the host)
    real_getaddrinfo = socket.getaddrinfo

    def fake_getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
        if host == "collector.invalid":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real_getaddrinfo(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    with CollectorClient("https://collector.invalid", token=env.rig.client.token) as bad:
        _transient(env, "dns", lambda: None, lambda: None, "DNS", Uploader(env.rig.spool, bad))


def _quarantined(env: Env, name: str, make: Callable[[], dict[str, object]], fault: RequestFault | None,
                 expect_status: int) -> None:
    victim = make()
    seq = env.rig.spool.append(victim).seq
    behind = env.rig.spool.append(fake_report()).report_id
    before = env.rig.spool.counters().quarantined
    if fault is not None:
        env.fault["reports"] = fault
        got = env.rig.uploader.drain(Deadline.after(10), max_records=1)
        env.fault.clear()
        got2 = env.rig.uploader.drain(Deadline.after(10))
        got.stored += got2.stored
    else:
        got = env.rig.uploader.drain(Deadline.after(10))
    assert got.quarantined == 1 and got.stored == 1, (name, got)
    assert env.rig.spool.counters().quarantined == before + 1
    sent_as = (victim, reduce_report(victim))  # in full or reduced (the uploader's choice)
    attempts = [r for r in env.uploads(str(victim["report_id"])) if json.loads(r.content)["report"] in sent_as]
    assert len(attempts) == 1, name  # exactly one attempt
    aside = [p.name for p in env.rig.spool.quarantined() if p.name.startswith(f"{seq:012d}-")]
    assert len(aside) == 1 and f".http{expect_status}" in aside[0], (name, aside)  # kept, with the reason
    assert env.rig.uploader.drain(Deadline.after(10)).sent == 0  # never retried
    assert behind in env.rows()


def test_a8_refusals_are_quarantined_after_one_attempt(env: Env) -> None:
    for status in (400, 409, 422):
        _quarantined(env, f"canned {status}", fake_report, Respond(http_response(status, ERROR)), status)
    # the collector's own refusals
    _quarantined(env, "schema: a field outside the allow-list",
                 lambda: fake_report(username="alice"), None, 400)
    first = fake_report()
    env.rig.spool.append(first)
    env.rig.uploader.drain(Deadline.after(10))
    conflict = dict(first, summary="same id, different body")
    _quarantined(env, "report_id conflict", lambda: conflict, None, 422)
    assert any("report_id_conflict" in p.name for p in env.rig.spool.quarantined())


def test_a8_413_from_the_collector_is_quarantined(real: Callable[..., Real], rigs: Callable[..., Rig]) -> None:
    collector = real(args=("--max-body", "2048"))
    rig = rigs(collector.url, collector.secret)
    rig.spool.append(fake_report())
    got = rig.uploader.drain(Deadline.after(10))
    assert got.quarantined == 1 and got.sent == 1
    assert [p.name.rsplit(".", 1)[1] for p in rig.spool.quarantined()] == ["http413_body_too_large"]
