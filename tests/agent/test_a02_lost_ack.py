"""A2 lost acknowledgement: the collector commits, then the answer is lost (20 % of uploads).

A fault proxy forwards each upload to the real collector, waits for its complete
answer (so the report is committed), and then resets the agent's connection
instead of passing the answer on. Scaled for CI: 200 reports (the anchor: 1,000).

Pass: 200 rows, 0 duplicates in the database, and every report whose answer was
lost was sent again with the same report_id (and the very same report) and
acknowledged as "duplicate".
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable

from netcheck.agent.uploader import drain_with_retries
from netcheck.deadline import Deadline
from tests.agent.conftest import Real, Rig
from tests.agent.helpers import fake_report
from tests.collector.conftest import sql
from tests.faultproxy import DropResponse, FaultProxy, Forward, HttpRequest, RequestFault

REPORTS = 200
LOSS = 0.2


def test_a2_lost_acks_are_resent_with_the_same_id_and_stored_once(real: Callable[..., Real],
                                                                  rigs: Callable[..., Rig]) -> None:
    collector = real()
    rng = random.Random(2)

    def lose_some(req: HttpRequest) -> RequestFault:
        if req.method == "POST" and req.path == "/api/v1/reports" and rng.random() < LOSS:
            return DropResponse()
        return Forward()

    with FaultProxy(("127.0.0.1", int(collector.url.rsplit(":", 1)[1]))) as proxy:
        proxy.request_fault = lose_some
        rig = rigs(collector.url, collector.secret, upload_url=proxy.url)
        ids = [rig.spool.append(fake_report()).report_id for _ in range(REPORTS)]
        rounds = 0
        while rig.spool.pending() and rounds < 10 * REPORTS:
            drain_with_retries(rig.uploader, Deadline.after(60), sleep=lambda s: None)
            rounds += 1
        uploads = [r for r in proxy.requests if r.path == "/api/v1/reports"]

    rows = sql(collector.database_url, "SELECT report_id, count(*) AS n FROM reports GROUP BY report_id")
    by_id: dict[str, list[HttpRequest]] = {}
    for req in uploads:
        by_id.setdefault(json.loads(req.content)["report"]["report_id"], []).append(req)
    lost = {rid for rid, reqs in by_id.items() if any(r.fault == "dropresponse" for r in reqs)}
    statuses = {rid: [json.loads(r.response_body)["status"] for r in reqs] for rid, reqs in by_id.items()}
    duplicate_acks = sum(s.count("duplicate") for s in statuses.values())
    print(f"\nA2: reports={REPORTS} uploads={len(uploads)} answers_lost={proxy.dropped_responses} "
          f"db_rows={len(rows)} duplicate_acks={duplicate_acks}")

    assert proxy.dropped_responses >= REPORTS * LOSS / 2  # the fault really happened
    assert not rig.spool.pending()
    assert sorted(r.report_id for r in rows) == sorted(ids)
    assert all(r.n == 1 for r in rows)  # 0 duplicates in the database
    for rid, reqs in by_id.items():
        reports = {json.dumps(json.loads(r.content)["report"], sort_keys=True) for r in reqs}
        assert len(reports) == 1  # every resend carried the same report
        assert statuses[rid][0] == "stored" and set(statuses[rid][1:]) <= {"duplicate"}
    for rid in lost:
        assert len(by_id[rid]) >= 2 and "duplicate" in statuses[rid]  # resent with the same id
    assert rig.spool.counters().quarantined == 0
