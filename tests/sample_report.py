"""A hand-built report used by renderer golden tests and as collector test data."""

from __future__ import annotations

from netcheck.assess.report import Report
from netcheck.models import (
    Assessment,
    CatalogInfo,
    Category,
    Finding,
    HostInfo,
    Outcome,
    ProbeKind,
    ProbeResult,
    Severity,
    Status,
    Target,
    Verdict,
    WorkloadResult,
)


def sample_report() -> Report:
    dns_t = Target("outlook.office365.com", category=Category.OPTIMIZE, workloads=("exchange",),
                   endpoint_sets=(1, 2))
    t = Target("outlook.office365.com", 443, "https", "198.18.0.10", Category.OPTIMIZE, ("exchange",), (1, 2))
    sp = Target("contoso.sharepoint.com", 443, None, "198.18.1.10", Category.OPTIMIZE, ("sharepoint",), (31,))
    probes = (
        ProbeResult(ProbeKind.DNS, dns_t, Outcome.OK, "Resolved to 1 address.", {"resolve": 12.5},
                    {"addresses": ["198.18.0.10"], "cname_chain": ["outlook.ms-acdc.office.com"], "rcode": "NOERROR"}),
        ProbeResult(ProbeKind.TLS, t, Outcome.OK, "TLS 1.3 handshake; certificate from a public CA.",
                    {"connect": 20.1, "tls": 25.3}, {"protocol": "TLSv1.3", "issuer": "Lab Public CA"}, "ipv4"),
        ProbeResult(ProbeKind.HTTP, t, Outcome.OK, "HTTP 200.", {"connect": 20.0, "tls": 24.0, "processing": 21.0},
                    {"status": 200, "via_proxy": False, "proxy": None}, "ipv4"),
        ProbeResult(ProbeKind.TLS, sp, Outcome.TLS_INSPECTED, "Certificate issued by Corp Inspection CA.",
                    {"connect": 19.0, "tls": 30.2}, {"inspected_by": "Corp Inspection CA"}, "ipv4"),
    )
    summary = "Mostly: you can work from here, but SharePoint and OneDrive is impaired."
    assessment = Assessment(Verdict.AT_RISK, summary, (
        WorkloadResult("exchange", "Exchange Online (Outlook, mail, calendar)", Status.OK, (), 21.0, 82, 1, 1),
        WorkloadResult("sharepoint", "SharePoint and OneDrive (files)", Status.DEGRADED,
                       ("TLS inspected by Corp Inspection CA",), 19.0, None, 1, 1),
        WorkloadResult("teams_media", "Teams audio and video", Status.NOT_TESTED, ("not tested",)),
    ), (
        Finding("tls.inspected", Severity.WARNING,
                "Microsoft 365 traffic is decrypted and inspected by Corp Inspection CA",
                "1 Optimize/Allow endpoint(s) present a certificate issued by Corp Inspection CA.",
                "IT: exclude Microsoft 365 Optimize and Allow endpoints from TLS inspection.", None, 4,
                ("contoso.sharepoint.com",)),
        Finding("catalog.not_testable", Severity.INFO, "1 wildcard endpoint(s) not testable",
                "Microsoft publishes these only as wildcards.", "Give --tenant NAME.", None, 1, ("*.lync.com",)),
    ))
    return Report("2f1c7a52-8d3e-4b4a-9c55-0d7a1e2b3c4d", "2026-11-28T16:00:00Z", 2.345, "0.1.0",
                  CatalogInfo("Worldwide", "2026081400", "bundled"), "contoso",
                  HostInfo("linux", "Debian 12", "3.11.7"),
                  30.0, probes, assessment, {"online": True, "families": ["ipv4"]})
