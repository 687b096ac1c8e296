"""The versioned JSON wire format: the contract with the fleet collector.

Changing the shape means bumping ``SCHEMA_VERSION`` and the schema file in
``netcheck/schema/``; ``tests/golden/`` holds the expected output.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from netcheck.assess.report import Report
from netcheck.models import ProbeResult

if TYPE_CHECKING:
    from netcheck.assess.outage import OutageSection, WorkloadOutage

SCHEMA_VERSION = 2
#: The versions the collector accepts (their schema files are all in netcheck/schema/).
ACCEPTED_VERSIONS = (1, 2)


def schema_path(version: int) -> Path:
    """The JSON Schema file of report schema ``version``."""
    return Path(__file__).resolve().parent.parent / "schema" / f"report-v{version}.schema.json"


SCHEMA_PATH = schema_path(SCHEMA_VERSION)


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
             "probes_ok": w.probes_ok, "probes_total": w.probes_total,
             **({"possible": [str(s) for s in w.possible]} if w.possible else {})}
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
    from netcheck.assess.outage import address_sites
    from netcheck.assess.what_if import facts_to_dict

    p = section.prediction
    return {
        "verdict": str(section.verdict),
        "summary": section.summary,
        "on_site": p.on_site,
        "behaviours": list(p.behaviours),
        "workloads": [_outage_row(w) for w in p.workloads],
        "site_systems": [{"kind": s.kind, "name": s.name, "evidence": s.evidence} for s in p.site_systems],
        "paths": [{"workload": d.workload, "role": d.role, "host": d.host, "proxy": d.proxy.proxy,
                   "proxy_source": d.proxy.source, "pac_url": d.proxy.pac_url,
                   "routes": [{"address": r.address, "interface": r.interface, "kind": r.kind} for r in d.routes]}
                  for d in p.dependencies],
        "split_tunnel": [{"workload": r.workload, "ipv4": r.ipv4, "ipv6": r.ipv6,
                          "tunneled_prefixes": list(r.tunneled_prefixes)} for r in section.split_tunnel],
        "remediation": list(section.remediation),
        "notes": list(p.notes),
        "sites": [{"name": s.name, "told": s.told, "networks": list(s.networks),
                   "systems": [{"kind": k, "name": n} for k, n in s.systems]} for s in section.sites],
        "cases": [{"down": list(c.down), "verdict": str(c.verdict), "answer": c.answer,
                   "workloads": [{**_outage_row(w), "causes": _causes(w)} for w in c.prediction.workloads]}
                  for c in section.cases],
        "facts": None if section.model is None else facts_to_dict(section.model, address_sites(section.model)),
    }


def _outage_row(w: WorkloadOutage) -> dict[str, Any]:
    return {"id": w.id, "if_vpn_stays": str(w.if_vpn_stays), "if_vpn_drops": str(w.if_vpn_drops),
            "evidence": list(w.evidence),
            **({"possible": {b: [str(f) for f in fs] for b, fs in w.possible.items()},
                "assumptions": list(w.assumptions)} if w.possible else {})}


def _causes(w: WorkloadOutage) -> list[dict[str, str | None]]:
    return [c.as_dict() for b in ("stays", "drops") for c in w.causes_by.get(b, ())]


def render_json(report: Report, *, pretty: bool = False) -> str:
    """One JSON document. Compact by default: the C encoder is used only without
    indentation, and a full report is ~0.2 s of CPU to indent in pure Python."""
    data = report_to_dict(report)
    if pretty:
        return json.dumps(data, indent=2, allow_nan=False) + "\n"
    return json.dumps(data, separators=(",", ":"), allow_nan=False) + "\n"
