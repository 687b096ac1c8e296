"""Is it us or Microsoft? Microsoft's service health in a report.

When a workload fails or degrades, the report says whether Microsoft reports an incident or an
advisory for the services behind it (``health_services`` in ``endpoints/workloads.toml``):

- with the collector's ``service_health`` (from Graph, served with the policy, at most
  :data:`STALE_AFTER` old): the matching incident, "Exchange Online: incident EX123456, 'Users
  can't access email', since 14:02 UTC", and that it is not this network; or that Microsoft
  reports nothing for it (so the cause is more likely on this side);
- without it (no collector, or its information is missing or old): where to look (Microsoft's
  status page, ``[status_site]`` in ``endpoints/workloads.toml``) and whether that page can be
  reached from here, by one HTTP probe with a short deadline inside the check's.

The findings are added to the assessment; the verdict is not changed (an incident explains a
failure, it does not make the laptop any more or less able to work). :func:`health_findings` is
pure; :func:`annotate` adds the probe.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from netcheck.m365.catalog import WorkloadMap
from netcheck.models import Assessment, Finding, Severity, Status, WorkloadResult
from netcheck.names import url_host

#: older service health than this (the collector's last good poll) is not trusted to say "no incident"
STALE_AFTER = dt.timedelta(hours=2)
#: the status page probe's own deadline (within the check's)
STATUS_PROBE_S = 3.0
#: issues shown per report at most
MAX_SHOWN = 5
#: the report schema's longest text (a summary, a title)
MAX_TEXT = 4000
_STATUS_WORDS = {
    "investigating": "Microsoft is investigating", "serviceDegradation": "service degraded",
    "serviceInterruption": "service interrupted", "restoringService": "Microsoft is restoring the service",
    "extendedRecovery": "extended recovery", "verifyingService": "Microsoft is verifying the fix",
    "confirmed": "confirmed", "reported": "reported",
}


@dataclass(frozen=True)
class Issue:
    id: str
    service: str
    title: str
    classification: str  # incident or advisory
    status: str
    start: dt.datetime
    feature: str | None = None


@dataclass(frozen=True)
class ServiceHealth:
    """What the collector said: its last good poll of Graph (None: never) and the active issues."""

    as_of: dt.datetime | None
    issues: tuple[Issue, ...] = ()


@dataclass(frozen=True)
class StatusSite:
    url: str
    #: None: not probed (no time left)
    reachable: bool | None = None
    reason: str = ""


def _when(value: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)


def _line(value: object) -> str:
    """One printable line: a title from Graph, through the collector, reaches a terminal."""
    return " ".join("".join(c if c.isprintable() else " " for c in str(value)).split())


def from_policy(value: object) -> ServiceHealth | None:
    """The policy's ``service_health`` (already checked against the schema by
    ``fleet_policy.usable_policy``), or None; an entry that still cannot be read is left out."""
    if not isinstance(value, dict):
        return None
    try:
        as_of = _when(value["as_of"]) if isinstance(value.get("as_of"), str) else None
    except ValueError:
        as_of = None
    issues: list[Issue] = []
    for raw in value.get("issues") or ():
        try:
            feature = _line(raw["feature"]) if isinstance(raw.get("feature"), str) else None
            issues.append(Issue(_line(raw["id"]), _line(raw["service"]), _line(raw["title"]),
                                _line(raw["classification"]), _line(raw["status"]), _when(str(raw["start"])),
                                feature or None))
        except (KeyError, TypeError, ValueError):
            continue
    return ServiceHealth(as_of, tuple(issues))


def agent_policy_path() -> Path:
    """Where the agent keeps the collector's last policy (``Spool().root / loop.POLICY_FILE``; a
    test ties them together: importing the agent here would slow every ``netcheck check`` down)."""
    from netcheck.paths import data_dir

    return data_dir() / "spool" / "policy.json"


def last_service_health(path: Path | None = None) -> ServiceHealth | None:
    """For ``netcheck check`` on an enrolled laptop: Microsoft's service health from the policy
    the agent last received, without asking the collector; None when there is none (the report
    then points to Microsoft's status page)."""
    from netcheck.errors import NetcheckError
    from netcheck.files import load_user_json
    from netcheck.fleet_policy import usable_policy

    path = path or agent_policy_path()
    try:
        if not path.is_file():
            return None
        doc = load_user_json(path, limit=4 * 1024 * 1024, what="the agent's copy of the collector's policy")
    except (NetcheckError, OSError):  # e.g. the agent's directory is not this user's: there is none to use
        return None
    return from_policy(usable_policy(doc)[0].get("service_health"))


def _time_words(at: dt.datetime, now: dt.datetime) -> str:
    at = at.astimezone(dt.UTC)
    clock = at.strftime("%H:%M")
    return f"{clock} UTC" if at.date() == now.astimezone(dt.UTC).date() else f"{at.day} {at:%b} {clock} UTC"


def _short(name: str) -> str:
    return name.split(" (")[0]


def _incident_finding(issue: Issue, hit: Sequence[WorkloadResult], others_fail: bool, as_of: dt.datetime,
                      now: dt.datetime) -> Finding:
    incident = issue.classification == "incident"
    failed = any(w.status is Status.FAILED for w in hit)
    names = ", ".join(_short(w.name) for w in hit)
    status = _STATUS_WORDS.get(issue.status, issue.status)
    what = f"{issue.service}{', ' + issue.feature if issue.feature else ''}"
    if incident:
        detail = (f"Microsoft reports an incident for {what} ({status}), which is why {names} "
                  f"{'does' if len(hit) == 1 else 'do'} not work properly from here. This is not your network: "
                  "nothing on this laptop or this connection needs fixing for it.")
    else:
        detail = (f"Microsoft reports an advisory (a limited problem) for {what} ({status}); it may explain "
                  f"why {names} {'is' if len(hit) == 1 else 'are'} impaired, rather than your network.")
    if others_fail:
        detail += " Other Microsoft 365 services fail from here too, so check your connection as well."
    return Finding(
        code=f"service_health.{'incident' if incident else 'advisory'}",
        severity=Severity.CRITICAL if incident and failed else Severity.WARNING,
        title=f"{issue.service}: {issue.classification} {issue.id}, '{issue.title}', since "
              f"{_time_words(issue.start, now)}",
        detail=detail,
        remediation=("Nothing to fix on your side: wait for Microsoft to restore the service (it posts updates "
                     "about hourly); IT follows it in the Microsoft 365 admin center, Service health."),
        workload=hit[0].id,
        evidence=(f"Microsoft service health as of {_time_words(as_of, now)}, through your organisation's "
                  f"collector: {issue.id} ({issue.classification}, {issue.status}) for {issue.service}",))


def _hits(issue: Issue, affected: Sequence[WorkloadResult], services: Mapping[str, tuple[str, ...]]
          ) -> list[WorkloadResult]:
    return [w for w in affected if issue.service in services.get(w.id, ())]


def _troubled(rows: Sequence[WorkloadResult]) -> list[WorkloadResult]:
    return [w for w in rows if w.status in (Status.FAILED, Status.DEGRADED)]


def status_site_to_look(rows: Sequence[WorkloadResult] | None, workloads: WorkloadMap, instance: str,
                        health: ServiceHealth | None, now: dt.datetime | None = None) -> str | None:
    """The status page :func:`annotate` asks about (``look(url)``): only when a workload of ``rows``
    fails or degrades, there is no recent word from the collector and the catalog names a page.

    ``rows=None`` asks whether it could: the check then starts that request beside its probes
    (rather than after them, four round trips more) and keeps its answer only if it is needed."""
    url = workloads.status_site.get(instance)
    if not url or _fresh(health, now or dt.datetime.now(dt.UTC)) is not None:
        return None
    return url if rows is None or _troubled(rows) else None


def _fresh(health: ServiceHealth | None, now: dt.datetime) -> ServiceHealth | None:
    return health if health is not None and health.as_of is not None and now - health.as_of <= STALE_AFTER else None


def health_findings(rows: Sequence[WorkloadResult], services: Mapping[str, tuple[str, ...]],
                    health: ServiceHealth | None, site: StatusSite | None, now: dt.datetime) -> tuple[Finding, ...]:
    """The findings about Microsoft's service health for the workloads that fail or degrade."""
    affected = _troubled(rows)
    if not affected:
        return ()
    if _fresh(health, now) is not None:
        assert health is not None and health.as_of is not None
        out: list[Finding] = []
        tested = [w for w in rows if w.status is not Status.NOT_TESTED]
        for issue in health.issues:
            hit = _hits(issue, affected, services)
            if hit and len(out) < MAX_SHOWN:
                others_fail = len(tested) > len(hit) and all(w.status is Status.FAILED for w in tested)
                out.append(_incident_finding(issue, hit, others_fail, health.as_of, now))
        if out:
            return tuple(out)
        names = ", ".join(_short(w.name) for w in affected)
        return (Finding(
            code="service_health.none", severity=Severity.INFO,
            title=f"Microsoft reports no incident for {names}",
            detail=(f"As of {_time_words(health.as_of, now)}, Microsoft's service health lists no active incident "
                    f"or advisory for the services behind {names}: the cause is more likely on this side (this "
                    "network, the VPN, a proxy or DNS)."),
            remediation="Follow the other findings; if they do not explain it, tell IT."),)
    why = ("your organisation's collector has no recent word from Microsoft"
           if health is not None else "netcheck has no word from Microsoft about its services here")
    if site is None:
        return (Finding(
            code="service_health.unknown", severity=Severity.WARNING,
            title="Is it Microsoft? Ask IT whether Microsoft reports an incident",
            detail=f"{why}, and no status page is known for this cloud.",
            remediation="IT sees Microsoft's incidents in the Microsoft 365 admin center, Service health."),)
    host = url_host(site.url) or site.url
    state = "reachable" if site.reachable else "not tested" if site.reachable is None else "unreachable"
    if site.reachable:
        reach = "That page can be reached from here."
    elif site.reachable is None:
        reach = "There was no time left to test whether that page can be reached from here."
    else:
        reach = (f"That page cannot be reached from here ({site.reason}): look from another connection, "
                 "such as a phone.")
    return (Finding(
        code="service_health.status_site", severity=Severity.WARNING,
        title=f"Is it Microsoft? See Microsoft's status page, {site.url}",
        detail=f"{why}. Microsoft posts major incidents on {site.url}. {reach}",
        remediation=(f"Open {site.url}: if it names an incident for the failing service, the problem is not your "
                     "network; if not, follow the other findings."),
        evidence=(f"{host}: {state}" + (f" ({site.reason})" if site.reason else ""),)),)


def annotate(assessment: Assessment, workloads: WorkloadMap, instance: str, health: ServiceHealth | None,
             look: Callable[[str], StatusSite], now: dt.datetime | None = None) -> Assessment:
    """``assessment`` with the service-health findings (the verdict unchanged). Probes the status
    page (``look(url)``, the check's HTTP probe) only when a workload fails or degrades and there is
    no recent word from the collector."""
    now = now or dt.datetime.now(dt.UTC)
    services = {w.id: w.health_services for w in workloads.workloads}
    fresh = _fresh(health, now)
    site: StatusSite | None = None
    troubled = _troubled(assessment.workloads)
    url = status_site_to_look(assessment.workloads, workloads, instance, health, now)
    if url:
        site = look(url)
    found = health_findings(assessment.workloads, services, health, site, now)
    if not found:
        return assessment
    # the reachability findings of a workload Microsoft reports an incident for: their fix waits
    explained = {w.id for i in (fresh.issues if fresh else ()) if i.classification == "incident"
                 for w in _hits(i, troubled, services)}
    others = tuple(replace(f, remediation=f"If it still fails once Microsoft's incident (above) is over: "
                                          f"{f.remediation}")
                   if f.workload in explained and f.code.startswith("reach.") else f for f in assessment.findings)
    order = {Severity.CRITICAL: 0, Severity.WARNING: 1, Severity.INFO: 2}
    findings = tuple(sorted((*found, *others), key=lambda f: order[f.severity]))
    summary = assessment.summary
    incidents = [f for f in found if f.code == "service_health.incident"]
    if incidents:
        service, _, rest = incidents[0].title.partition(": incident ")
        line = f" Microsoft reports an incident for {service} ({rest.split(',')[0]}): this is not your network."
        if len(summary) + len(line) <= MAX_TEXT:
            summary += line
    return replace(assessment, findings=findings, summary=summary)
