"""The reduced form of a report: what the agent uploads between full reports, and what the collector
keeps of older ones.

Every member of the report as it is (verdict, summary, workloads, findings, outage with its facts
and sites, network, interfaces, and any member a later schema adds) except ``probes``, of which
only the probes that did not succeed are kept, whole; the successful ones are counted by kind
under ``REDUCED_KEY`` (``{"probes_total": n, "dropped": {"<kind>:ok": n}}``). So the verdict and
every fact the report states come out of it unchanged; the per-probe detail of successful probes
(addresses, timings, certificates) does not. The lab's worldwide report: 237 KiB of JSON in full,
about 8 KiB reduced.

On the wire a reduced upload is sent as ``REDUCED_CONTENT_TYPE`` (a collector that does not know it
answers 415, and the agent sends the full report instead); the collector checks it against the
report's schema with ``REDUCED_KEY`` allowed (``reduced_schema``) and stores it as it came.
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

#: the member a reduced report carries to say so: what was dropped, counted
REDUCED_KEY = "_reduced"
#: the media type of an upload whose report is in the reduced form
REDUCED_CONTENT_TYPE = "application/vnd.netcheck.reduced+json"

_COUNT = {"type": "integer", "minimum": 0, "maximum": 9007199254740991}
#: the schema of ``REDUCED_KEY`` (closed, as every object of a report)
REDUCED_MEMBER_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["probes_total", "dropped"],
    "properties": {
        "probes_total": _COUNT,
        "dropped": {"type": "object", "maxProperties": 64, "additionalProperties": False,
                    "patternProperties": {"^[a-z0-9_]{1,32}:ok$": _COUNT}},
    },
}


def _succeeded(probe: Any) -> bool:
    return isinstance(probe, dict) and probe.get("outcome") == "ok"


def reduce_report(report: dict[str, Any]) -> dict[str, Any]:
    """The report without the detail of its successful probes (see the module); idempotent."""
    if REDUCED_KEY in report:
        return report
    probes = report.get("probes")
    if not isinstance(probes, list):
        return {**report, REDUCED_KEY: {"probes_total": 0, "dropped": {}}}
    dropped = Counter(f"{p.get('kind')}:ok" for p in probes if _succeeded(p))
    kept = [p for p in probes if not _succeeded(p)]
    return {**report, "probes": kept,
            REDUCED_KEY: {"probes_total": len(probes), "dropped": dict(sorted(dropped.items()))}}


def reduced_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A report schema that takes the reduced form of its reports: ``REDUCED_KEY`` required, the rest
    as ``schema`` says (the probes kept are whole probes)."""
    out = copy.deepcopy(schema)
    out["properties"][REDUCED_KEY] = REDUCED_MEMBER_SCHEMA
    out["required"] = [*out.get("required", ()), REDUCED_KEY]
    return out
