"""Microsoft service health on the dashboard (issue 15): failures that coincide with an active
Microsoft incident or advisory for the affected service are marked, and the incidents of the
trend's 30 days are drawn as a timeline under the fleet's failure curve (devices AT RISK or NOT
READY per day; same x axis).

Reads ``netcheck.collector.health`` (the polled issues) and summary rows only: a device's mark
comes from its latest report's ``report_workloads`` rows and the issues active when it was measured.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from netcheck.collector import health
from netcheck.collector.db import devices, report_workloads, reports
from netcheck.collector.web import charts

#: the workload statuses a Microsoft incident can explain
FAILING = ("failed", "degraded")


def label(issue: Mapping[str, Any]) -> str:
    """"Exchange Online: Microsoft incident EX123456 active"."""
    return f"{issue['service']}: Microsoft {issue['classification']} {issue['id']} active"


def _epoch(text: str | None) -> float | None:
    return None if text is None else dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def overview(conn: Connection, now: dt.datetime, trend: Sequence[Mapping[str, Any]],
             workloads: Mapping[str, Mapping[str, int]]) -> dict[str, Any]:
    """The overview's block: the workloads failing now (latest reports) that have an active issue,
    the poller's status, and the failure curve (devices AT RISK or NOT READY per day) over the trend's days
    with the issues of those days under it."""
    marked = []
    for wid, issues in sorted(health.incidents_by_workload(conn, now).items()):
        counts = workloads.get(wid, {})
        failing = {s: counts.get(s, 0) for s in FAILING}
        if sum(failing.values()):
            marked.append({"workload": wid, "failing": failing, "issues": issues, "labels": [label(i) for i in issues]})
    first = dt.datetime.fromisoformat(str(trend[0]["day"])).replace(tzinfo=dt.UTC) if trend else now
    start, end = first.timestamp(), now.timestamp()
    timeline = health.issue_timeline(conn, first, now)
    failures = [(i * 86400.0, int(r["NOT_READY"]) + int(r["AT_RISK"])) for i, r in enumerate(trend)]
    top = max([y for _, y in failures] + [1])
    curve = charts.line(failures + [(end - start, failures[-1][1])] if failures else [], top)
    lanes = charts.spans([{"start": _epoch(i["start"]) or start, "end": _epoch(i["end"]),
                           "label": f"{i['id']} {i['service']}", "series": i["classification"],
                           "title": f"{i['service']}: {i['id']}, '{i['title']}' ({i['status']})"}
                          for i in timeline], start, end)
    return {"marked": marked, "poll": health.poll_status(conn), "curve": curve, "lanes": lanes, "timeline": timeline}


def device_marks(conn: Connection, device_id: str) -> list[dict[str, Any]]:
    """The device's latest report's failing workloads that coincide (at its measurement time) with
    an active Microsoft issue for their service."""
    latest = conn.execute(sa.select(reports.c.id, reports.c.measured_at)
                          .select_from(devices.join(reports, reports.c.id == devices.c.last_report_pk))
                          .where(devices.c.id == device_id)).first()
    if latest is None:
        return []
    failing = conn.execute(sa.select(report_workloads.c.workload_id, report_workloads.c.status)
                           .where(report_workloads.c.report_pk == latest.id,
                                  report_workloads.c.status.in_(FAILING))).all()
    if not failing:
        return []
    active = health.incidents_by_workload(conn, latest.measured_at)
    return [{"workload": wid, "status": status, "issue": i, "label": label(i)}
            for wid, status in failing for i in active.get(wid, [])]
