"""The report: everything one check produced, the measurements (:mod:`netcheck.models`) and the
assessment made of them, the outage prediction included. Rendered to text, JSON and HTML."""

from __future__ import annotations

from dataclasses import dataclass, field

from netcheck.assess.outage import OutageSection
from netcheck.models import Assessment, CatalogInfo, Detail, HostInfo, InterfaceInfo, ProbeResult


@dataclass(frozen=True)
class Report:
    """Everything one check produced. Rendered to text, JSON and HTML."""

    report_id: str
    measured_at: str
    duration_s: float
    tool_version: str
    catalog: CatalogInfo
    tenant: str | None
    host: HostInfo
    deadline_s: float
    probes: tuple[ProbeResult, ...]
    assessment: Assessment
    network: Detail = field(default_factory=dict)
    outage: OutageSection | None = None
    interfaces: tuple[InterfaceInfo, ...] = ()
