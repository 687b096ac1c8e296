"""The versioned JSON wire format: the contract with the fleet collector.

Changing the shape means bumping ``SCHEMA_VERSION`` and the schema file in
``netcheck/schema/``; ``tests/golden/`` holds the expected output.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from netcheck.models import ProbeResult, Report

if TYPE_CHECKING:
    from netcheck.outage import OutageSection

SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schema" / f"report-v{SCHEMA_VERSION}.schema.json"


def _round(value: float | None, digits: int = 2) -> float | None:
    """Rounded; None for None, NaN and infinities (JSON has no such numbers)."""
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


def probe_to_dict(p: ProbeResult) -> dict[str, Any]:
    t = p.target
    return {
        "kind": str(p.kind), "host": t.host, "port": t.port, "scheme": t.scheme,
        "address": t.address, "family": p.family, "category": str(t.category),
        "workloads": list(t.workloads), "endpoint_sets": list(t.endpoint_sets),
        "outcome": str(p.outcome), "reason": p.reason,
        "phases": {k: _round(v) for k, v in p.phases.items()},
        "detail": {k: (_round(v) if isinstance(v, float) else v) for k, v in p.detail.items()},
    }


def report_to_dict(report: Report) -> dict[str, Any]:
    a = report.assessment
    return {
        "schema_version": SCHEMA_VERSION,
        "report_id": report.report_id,
        "measured_at": report.measured_at,
        "duration_s": _round(report.duration_s, 3),
        "deadline_s": _round(report.deadline_s, 3),
        "tool": {"name": "netcheck", "version": report.tool_version},
        "host": {"os": report.host.os, "os_version": report.host.os_version,
                 "python": report.host.python},
        "catalog": {"instance": report.catalog.instance, "version": report.catalog.version,
                    "source": report.catalog.source},
        "tenant": report.tenant,
        "verdict": str(a.verdict),
        "exit_code": a.verdict.exit_code,
        "summary": a.summary,
        "workloads": [
            {"id": w.id, "name": w.name, "status": str(w.status), "reasons": list(w.reasons),
             "latency_ms": _round(w.latency_ms), "score": w.score,
             "probes_ok": w.probes_ok, "probes_total": w.probes_total}
            for w in a.workloads
        ],
        "findings": [
            {"code": f.code, "severity": str(f.severity), "title": f.title, "detail": f.detail,
             "remediation": f.remediation, "workload": f.workload, "principle": f.principle,
             "evidence": list(f.evidence)}
            for f in a.findings
        ],
        "probes": [probe_to_dict(p) for p in report.probes],
        "network": dict(report.network),
        "interfaces": [{"name": i.name, "kind": i.kind, "vpn_product": i.vpn_product, "evidence": list(i.evidence)}
                       for i in report.interfaces],
        "outage": None if report.outage is None else outage_to_dict(report.outage),
    }


def outage_to_dict(section: OutageSection) -> dict[str, Any]:
    p = section.prediction
    return {
        "verdict": str(section.verdict),
        "summary": section.summary,
        "on_site": p.on_site,
        "behaviours": list(p.behaviours),
        "workloads": [{"id": w.id, "if_vpn_stays": str(w.if_vpn_stays), "if_vpn_drops": str(w.if_vpn_drops),
                       "evidence": list(w.evidence),
                       **({"possible": {b: [str(f) for f in fs] for b, fs in w.possible.items()},
                           "assumptions": list(w.assumptions)} if w.possible else {})} for w in p.workloads],
        "site_systems": [{"kind": s.kind, "name": s.name, "evidence": s.evidence} for s in p.site_systems],
        "paths": [{"workload": d.workload, "role": d.role, "host": d.host, "proxy": d.proxy.proxy,
                   "proxy_source": d.proxy.source, "pac_url": d.proxy.pac_url,
                   "routes": [{"address": r.address, "interface": r.interface, "kind": r.kind} for r in d.routes]}
                  for d in p.dependencies],
        "split_tunnel": [{"workload": r.workload, "ipv4": r.ipv4, "ipv6": r.ipv6,
                          "tunneled_prefixes": list(r.tunneled_prefixes)} for r in section.split_tunnel],
        "remediation": list(section.remediation),
        "notes": list(p.notes),
    }


def render_json(report: Report, *, pretty: bool = False) -> str:
    """One JSON document. Compact by default: the C encoder is used only without
    indentation, and a full report is ~0.2 s of CPU to indent in pure Python."""
    data = report_to_dict(report)
    if pretty:
        return json.dumps(data, indent=2, allow_nan=False) + "\n"
    return json.dumps(data, separators=(",", ":"), allow_nan=False) + "\n"
