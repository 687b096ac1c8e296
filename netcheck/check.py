"""One check of this laptop, end to end: catalog -> probes -> assessment -> report.

``perform_check`` is what both ``netcheck check`` and ``netcheck agent`` call.
"""

from __future__ import annotations

import asyncio
import math
import os
import platform
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from netcheck import __version__
from netcheck.assess.outage import Fate, ModelInput, OutageSection, assess_outage, pac_lost_now
from netcheck.assess.report import Report
from netcheck.assess.service_health import STATUS_PROBE_S, ServiceHealth, StatusSite, annotate, status_site_to_look
from netcheck.assess.site_cases import (
    known_sites,
    one_case,
    predict_case,
    settings_profile,
    site_cases,
    site_down_names,
)
from netcheck.assess.site_infer import infer_sites
from netcheck.assess.verdict import AssessContext, assess, combine, latency_to_confirm, setting_findings
from netcheck.deadline import Deadline
from netcheck.errors import ConfigError
from netcheck.files import PEM_BUNDLE_LIMIT, read_user_file
from netcheck.m365.catalog import Catalog, TargetPlan
from netcheck.models import (
    Assessment,
    CatalogInfo,
    Category,
    DetailValue,
    HostInfo,
    InterfaceInfo,
    ProbeKind,
    ProbeResult,
    ProbeSpec,
    Status,
    Target,
)
from netcheck.platform import Interface, Platform
from netcheck.platform import current as current_platform
from netcheck.policy import Policy, load_policy
from netcheck.proxy.decision import PacLookup, decide, evaluate_pac, find_pac, pac_facts, url_for
from netcheck.proxy.settings import ProxySettings, from_environment, unusable_proxy_settings
from netcheck.runner import (
    MediaProbe,
    RunSettings,
    planned_count,
    routable_families,
    run_plan,
    sample_addresses,
)
from netcheck.site_facts import gather
from netcheck.site_profile import SiteProfile, load_site_profiles, select_site_profile

T = TypeVar("T")
OnResult = Callable[[ProbeResult], None]
OnPlan = Callable[[int], None]


@dataclass(frozen=True)
class CheckOptions:
    instance: str = "Worldwide"
    tenant: str | None = None
    endpoints_file: Path | None = None
    deadline_s: float | None = None
    thorough: bool = False
    whoami_name: str | None = None
    teams_relay: str | None = None
    nameservers: tuple[str, ...] = ()
    public_roots: str | None = None
    #: User principal name (or just the domain) for sign-in realm discovery; never stored.
    user: str | None = None
    site_profile: Path | None = None
    #: Several profiles (the collector's policy), used only when ``site_profile`` is not given:
    #: the one :func:`choose_site_profile` picks is used exactly as a file profile is.
    site_profiles: tuple[SiteProfile, ...] = ()
    #: The device's ``site`` tag (from enrollment): picks a profile by name when no network matches.
    site_tag: str | None = None
    #: ``--site-down``: show just the case of these sites going down together.
    site_down: tuple[str, ...] = ()
    policy: Policy = field(default_factory=load_policy)
    #: Microsoft's service health from the collector's policy (None: none; the report then points
    #: to Microsoft's status page): see netcheck.assess.service_health
    service_health: ServiceHealth | None = None


def host_info() -> HostInfo:
    """The OS and its version; never the host name or the user."""
    system = sys.platform
    if system.startswith("linux"):
        os_name = "linux"
        try:
            info = platform.freedesktop_os_release()
            version = info.get("PRETTY_NAME") or info.get("NAME", "")
        except OSError:
            version = platform.release()
    elif system == "darwin":
        os_name, version = "macos", platform.mac_ver()[0]
    elif system == "win32":
        os_name = "windows"
        version = " ".join(x for x in platform.win32_ver()[:2] if x)
    else:
        os_name, version = "other", platform.platform(terse=True)
    return HostInfo(os_name, version[:200], platform.python_version())


def _validate_tenant(tenant: str | None) -> str | None:
    if tenant is None:
        return None
    name = tenant.strip().lower()
    if name.endswith(".onmicrosoft.com"):
        name = name[: -len(".onmicrosoft.com")]
    if not name or len(name) > 63 or not all(c.isalnum() or c == "-" for c in name) or name.startswith("-"):
        raise ConfigError(f"--tenant {tenant!r} is not a tenant name; give the part before "
                          ".onmicrosoft.com, e.g. --tenant contoso")
    return name


def select_catalog(options: CheckOptions) -> tuple[Catalog, str | None]:
    """The endpoint data a check uses, and a note when it fell back. Never touches the network."""
    from netcheck.m365 import webservice

    return webservice.current_catalog(options.instance, options.endpoints_file)


def probe_spec(options: CheckOptions) -> ProbeSpec:
    policy = options.policy
    public_roots = options.public_roots or os.environ.get("NETCHECK_PUBLIC_ROOTS") or None
    if public_roots:  # a user-given file: refuse a FIFO or a device here, before OpenSSL opens it
        read_user_file(public_roots, limit=PEM_BUNDLE_LIMIT, what="the public root bundle (NETCHECK_PUBLIC_ROOTS)")
    return ProbeSpec(
        nameservers=options.nameservers,
        tcp_samples=policy.tcp_samples_thorough if options.thorough else policy.tcp_samples,
        public_roots=public_roots,
        whoami_name=options.whoami_name or policy.whoami_name,
    )


def perform_check(options: CheckOptions, on_result: OnResult | None = None,
                  on_plan: OnPlan | None = None) -> Report:
    """Run one full check. Network failures become findings, never exceptions."""
    started = time.monotonic()
    measured_at = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    policy = options.policy
    tenant = _validate_tenant(options.tenant)
    deadline_s = options.deadline_s if options.deadline_s is not None else policy.deadline_s
    if not (math.isfinite(deadline_s) and deadline_s > 0):
        raise ConfigError(f"--deadline must be a positive number of seconds, not {deadline_s!r}")
    deadline = Deadline.after(deadline_s)
    file_profiles = load_site_profiles(options.site_profile) if options.site_profile else ()
    told = file_profiles or options.site_profiles
    # Told sites are checked before any probe; inferred ones (no profile) once the check has inferred them.
    down = site_down_names(options.site_down, told) if options.site_down and told else tuple(options.site_down)
    catalog, catalog_note = select_catalog(options)
    plat = current_platform()
    tenant_source = "option" if tenant else None
    if tenant is None:
        tenant = _tenant_from_onedrive(plat, catalog)
        tenant_source = "onedrive" if tenant else None
    plan = catalog.plan(tenant)
    spec = probe_spec(options)
    families, offline_reason = routable_families(sample_addresses(catalog.networks(Category.OPTIMIZE)))
    # The OS's proxy settings come from a tool (gsettings, kreadconfig) that the check waits on: it runs
    # while the options are checked and the probes' modules load (needed next anyway).
    proxies_read = _started(plat.proxy_settings, "netcheck-proxy-settings") if families else None
    given = options.teams_relay if options.teams_relay is not None else os.environ.get("NETCHECK_TEAMS_RELAY") or None
    relay = _validate_name(given, "--teams-relay (NETCHECK_TEAMS_RELAY)") or catalog.media_relay
    _validate_name(spec.whoami_name, "--whoami-name")
    settings = RunSettings(concurrency=policy.concurrency, dns_concurrency=policy.dns_concurrency,
                           families=families or ("ipv4",), media_relay=relay)
    user = _validate_user(options.user)
    if proxies_read is not None:
        import netcheck.probes  # noqa: F401, PLC0415 - loads while the proxy settings are read
    results: list[ProbeResult] = []
    network: dict[str, DetailValue] = {
        "online": bool(families), "families": list(families),
        "endpoints_tested": len(plan.hosts), "endpoints_not_testable": len(plan.not_testable),
        "optional_sets_skipped": plan.skipped_optional,
    }
    if tenant_source:
        network["tenant_source"] = tenant_source
    outage: OutageSection | None = None
    interfaces: tuple[InterfaceInfo, ...] = ()
    if proxies_read is not None:
        proxies = proxies_read()
        unusable = unusable_proxy_settings(from_environment(os.environ))
        if unusable:
            network["proxy_setting_error"] = list(unusable)
        pac = find_pac(proxies, lambda: plat.search_domains(), deadline)  # read only if WPAD is tried
        status_page = catalog.workloads.status_site.get(catalog.instance)  # the status page's request too
        spec = replace(spec, proxy_map=_proxy_map(plan, catalog.key_hosts(tenant), proxies, pac, deadline, network,
                                                  (status_page,) if status_page else ()))
        extra = _extra_probes(spec, deadline, catalog, tenant, user)
        if on_plan:
            on_plan(planned_count(plan, settings, len(extra)))
    ctx = AssessContext(
        workloads=catalog.workloads.workloads, key_hosts=catalog.key_hosts(tenant),
        optimize_networks=catalog.networks(Category.OPTIMIZE), not_testable=plan.not_testable,
        online=bool(families), offline_reason=offline_reason, settings=setting_findings(network))
    site: StatusSite | None = None
    if families:
        # The laptop's interfaces (ip, ifconfig, PowerShell) are read while the probes wait on the network.
        interfaces_read = _started(plat.interfaces, "netcheck-interfaces")
        health = options.service_health
        status_url = status_site_to_look(None, catalog.workloads, catalog.instance, health)
        results, now, site = asyncio.run(_probe(
            run_plan(plan, spec, deadline, settings, on_result or (lambda _: None),
                     media_probe=media_probe(options), extra=extra,
                     to_confirm=lambda first: latency_to_confirm(first, ctx, policy)),
            lambda done: assess(done, ctx, policy),
            (lambda: look_status_site(status_url, spec, deadline.sooner(STATUS_PROBE_S))) if status_url else None,
            lambda a: status_site_to_look(a.workloads, catalog.workloads, catalog.instance, health) is not None))
    else:
        now = assess(results, ctx, policy)
    if families:
        found = interfaces_read()  # once: the profile choice and the site facts both need them
        sites = file_profiles or options.site_profiles
        chosen = sites[0] if len(sites) == 1 else None
        if len(sites) > 1:
            chosen = choose_site_profile(replace(options, site_profiles=sites), found, results)
        profile = settings_profile(sites, chosen) if len(sites) > 1 else chosen or SiteProfile()
        outage, interfaces = _predict_outage(results, catalog, tenant, plat, found, profile, sites if len(sites) > 1
                                             else (), deadline, pac, proxies, network, now, down)
    if outage is not None and outage.model is not None:  # the realm answer named a server that does not resolve
        unresolved = tuple(d.host for d in outage.model.facts.dependencies if d.role == "federation" and not d.routes)
        pac_lost = pac_lost_now(outage.model)  # and a PAC file gone now: what the OS does without it is the site's
        if unresolved or pac_lost is not None:
            now = assess(results, replace(ctx, federation_unresolved=unresolved, pac_lost=pac_lost), policy)
    assessment = combine(now, outage)
    if families:  # is it us or Microsoft?
        assessment = annotate(assessment, catalog.workloads, catalog.instance, options.service_health,
                              lambda url: site if site is not None and site.url == url
                              else probe_status_site(url, spec, deadline.sooner(STATUS_PROBE_S)))
    if catalog_note:
        network["catalog_note"] = catalog_note[:4000]
    return Report(
        report_id=str(uuid.uuid4()), measured_at=measured_at,
        duration_s=time.monotonic() - started, tool_version=__version__,
        catalog=CatalogInfo(catalog.instance, catalog.version, catalog.source), tenant=tenant,
        host=host_info(), deadline_s=deadline_s, probes=tuple(_ordered(results, plan)),
        assessment=assessment, network=network, outage=outage, interfaces=interfaces)


def choose_site_profile(options: CheckOptions, interfaces: Sequence[Interface],
                        results: Sequence[ProbeResult]) -> SiteProfile | None:
    """Of ``options.site_profiles``, the one for this laptop: by its own addresses (loopback aside),
    else the public address the Teams relay saw (STUN), else by the device's site tag."""
    public = [str(r.detail["mapped_address"]) for r in results
              if r.kind is ProbeKind.STUN and r.detail.get("mapped_address")]
    # its own addresses first: a branch whose internet goes out through a datacentre has the datacentre's
    # public address, and is still the branch
    return (select_site_profile(options.site_profiles, own_addresses(interfaces))
            or select_site_profile(options.site_profiles, public, options.site_tag))


def own_addresses(interfaces: Sequence[Interface]) -> list[str]:
    """The laptop's own addresses (loopback aside), without their prefix lengths."""
    return [a.split("/")[0] for i in interfaces if i.kind != "loopback" for a in i.addresses]


def _started(read: Callable[[], T], name: str) -> Callable[[], T]:
    """Start ``read`` (an OS read that waits on a tool) in a thread of its own; the function returned
    waits for its value, or raises what it raised. A daemon thread: a check that fails before it
    wants the value does not wait for the tool at exit."""
    done: Future[T] = Future()

    def work() -> None:
        try:
            done.set_result(read())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller by done.result()
            done.set_exception(exc)

    threading.Thread(target=work, name=name, daemon=True).start()
    return done.result


def _validate_name(name: str | None, flag: str) -> str | None:
    """A host name given by the user, or ConfigError (exit 4) saying why it cannot be one."""
    if name is None:
        return None
    from netcheck.names import host_problem

    problem = host_problem(name)
    if problem is not None:
        shown = name if len(name) <= 60 else name[:57] + "..."
        raise ConfigError(f"{flag} {shown!r} is not a host name: {problem}")
    return name.strip()


def _validate_user(user: str | None) -> str | None:
    if not user:
        return None
    from netcheck.probes.realm import realm_domain

    if realm_domain(user) is None:
        raise ConfigError(f"--user {user!r} is not a user name or domain (e.g. alice@contoso.com)")
    return user.strip()


def _proxy_map(plan: TargetPlan, key_hosts: Mapping[str, tuple[str, ...]], proxies: ProxySettings,
               pac: PacLookup, deadline: Deadline, network: dict[str, DetailValue], pages: Sequence[str] = ()
               ) -> dict[str, tuple[str | None, str]]:
    """Per URL an HTTP or realm probe fetches (and each of ``pages``, e.g. the status page), the proxy
    the laptop's settings or PAC file choose (None: DIRECT) and where that was decided; the PAC file
    evaluated once for all of them. A URL left out would be decided from the settings alone, read again."""
    urls = [url_for("https" if p == 443 else "http", t.host, p) for t in plan.hosts for p in plan.ports.get(t.host, ())]
    urls += [url_for("https", h) for hosts in key_hosts.values() for h in hosts]
    urls += [url_for(parts.scheme or "https", parts.hostname or "", parts.port) for parts in map(urlsplit, pages)]
    evaluated = evaluate_pac(pac.fetch, urls, deadline)
    decisions = {u: decide(u, proxies, evaluated) for u in dict.fromkeys(urls)}
    network.update(pac_facts(pac, evaluated, decisions, proxies))
    return {u: (d.proxy, d.source) for u, d in decisions.items()}


def _predict_outage(results: list[ProbeResult], catalog: Catalog, tenant: str | None, plat: Platform,
                    found: Sequence[Interface], profile: SiteProfile, sites: tuple[SiteProfile, ...],
                    deadline: Deadline, pac: PacLookup,
                    proxies: ProxySettings, network: dict[str, DetailValue], now: Assessment,
                    down: tuple[str, ...] = ()) -> tuple[OutageSection | None, tuple[InterfaceInfo, ...]]:
    gathered = gather(results, catalog, tenant, plat, profile, deadline,
                      pac=pac.fetch, proxy_settings=proxies,
                      interfaces=found)
    interfaces = tuple(InterfaceInfo(i.name, i.kind, i.vpn_product, i.evidence[:16])
                       for i in gathered.interfaces if i.kind != "loopback")
    workloads = catalog.workloads.workloads
    names = {w.id: w.name.split(" (")[0] for w in workloads}
    left_out = [names[w] for w in catalog.tenant_workloads() if w in names] if tenant is None else []
    fate_of = {Status.OK: Fate.WORKS, Status.DEGRADED: Fate.DEGRADED, Status.FAILED: Fate.FAILS}
    current = {r.id: fate_of[r.status] for r in now.workloads if r.status in (Status.FAILED, Status.DEGRADED)}
    possible_now = {r.id: tuple(fate_of[s] for s in r.possible if s in fate_of) for r in now.workloads if r.possible}
    if not sites and not profile.from_file:
        sites = infer_sites(gathered.facts)  # several groups of site systems: inferred sites (else none)
    if gathered.facts.on_site and sites:  # which of several sites (told or inferred) the laptop stands in
        here = select_site_profile(sites, own_addresses(found))
        gathered = replace(gathered, facts=replace(gathered.facts, site_here=here.name if here else None))
    if down:  # the names as the sites spell them: told ones again, inferred ones ("unnamed site 10.20.0.0/16")
        down = site_down_names(down, sites or (profile,))
    model = ModelInput(gathered.facts, profile, sites, tuple(w.id for w in workloads), current,
                       gathered.assumptions, possible_now)
    prediction = predict_case(model, None)
    if left_out:
        prediction = replace(prediction, notes=(*prediction.notes, _left_out_note(left_out)))
    network["vpn"] = bool(gathered.facts.vpn_interfaces)
    network["on_site"] = gathered.facts.on_site
    network["identity"] = gathered.facts.identity
    section = assess_outage(prediction, {w.id: w.name for w in workloads}, [w.id for w in workloads if w.core],
                            gathered.split_tunnel, gathered.tunneled_optimize, gathered.identity_split_egress,
                            gathered.tunneled_by_workload, catalog.workloads.sign_in, several_sites=len(sites) > 1)
    if left_out:
        section = replace(section, summary=f"{section.summary} {_left_out_note(left_out)}")
    views = known_sites(model, prediction)
    core = [w.id for w in workloads if w.core]
    full = {w.id: w.name for w in workloads}
    cases = (one_case(model, down, full, core),) if down else site_cases(model, views, full, core, prediction)
    return replace(section, sites=views, model=model, cases=cases, asked=bool(down)), interfaces


def _left_out_note(names: Sequence[str]) -> str:
    return (f"Left out of this prediction: {', '.join(names)} (the host names depend on your tenant, which "
            "netcheck could not find; give --tenant NAME).")


def _tenant_from_onedrive(plat: Platform, catalog: Catalog) -> str | None:
    """The tenant the OneDrive client is signed in to on this laptop, if it is."""
    urls = plat.onedrive_urls()
    return _validate_tenant(catalog.tenant_from_urls(urls)) if urls else None


def _extra_probes(spec: ProbeSpec, deadline: Deadline, catalog: Catalog, tenant: str | None, user: str | None
                  ) -> list[tuple[ProbeKind, Target, Callable[[], Awaitable[ProbeResult]]]]:
    extra: list[tuple[ProbeKind, Target, Callable[[], Awaitable[ProbeResult]]]] = []
    if spec.whoami_name:
        from netcheck.probes.dns import resolver_identity

        extra.append((ProbeKind.WHOAMI, Target(host=spec.whoami_name), lambda: resolver_identity(spec, deadline)))
    sign_in = catalog.workloads.sign_in
    login = catalog.key_hosts(tenant).get(sign_in, ()) if sign_in else ()
    if user and login and sign_in:
        from netcheck.probes.realm import probe_realm

        realm = Target(host=login[0], port=443, scheme="https", category=Category.ALLOW, workloads=(sign_in,))
        extra.append((ProbeKind.REALM, realm, lambda: probe_realm(realm, spec, deadline, user=user)))
    return extra


def media_probe(options: CheckOptions) -> MediaProbe | None:
    try:
        from netcheck.probes.stun import GRACE_MOST_S, probe_stun
    except ImportError:
        return None
    from netcheck.assess.media import (
        clean_sample_size,
        needs_quiet_window,
        sample_plan,
        thresholds_of,
        with_quiet_window,
    )
    from netcheck.probes import _pace

    policy = options.policy
    thresholds = thresholds_of(policy)
    window = policy.media_window_s_thorough if options.thorough else policy.media_window_s
    interval, every = sample_plan(thresholds, window, policy.media_stride_ms / 1000)
    least = clean_sample_size(thresholds)  # a held-up sender stretches the window to get these out

    async def run(target: Target, spec: ProbeSpec, deadline: Deadline, ports: tuple[int, ...]) -> ProbeResult:
        """The window, beside the check's other probes; taken again once they are done when it would make
        the status degraded and may show their doing (:func:`needs_quiet_window`), if the deadline leaves
        room for a whole window. The report keeps both windows' figures; a window that wanted taking again
        and could not be says so (``quiet_window: false``), and the status hedges."""
        first = await probe_stun(target, spec, deadline, window_s=window, interval_s=interval, every=every,
                                 ports=ports, least=least)
        if not first.ok or not needs_quiet_window(first.detail, thresholds):
            return first
        unconfirmed = replace(first, detail={**first.detail, "quiet_window": False})
        room = deadline.remaining() - window - GRACE_MOST_S
        try:
            await asyncio.wait_for(_pace.current().burst_over.wait(), room)
        except TimeoutError:
            return unconfirmed
        if deadline.remaining() < window + GRACE_MOST_S:
            return unconfirmed
        port = first.detail.get("port")
        again = await probe_stun(first.target, spec, deadline, window_s=window, interval_s=interval, every=every,
                                 ports=(port,) if isinstance(port, int) and not isinstance(port, bool) else ports,
                                 least=least)
        if not again.ok:
            return unconfirmed
        return replace(again, phases=first.phases, detail=with_quiet_window(first.detail, again.detail))

    return run


def _ordered(results: list[ProbeResult], plan: TargetPlan) -> list[ProbeResult]:
    """Stable order for reports: by host as planned, then probe kind, port, family."""
    rank = {t.host: i for i, t in enumerate(plan.hosts)}
    kinds = list(ProbeKind)
    return sorted(results, key=lambda r: (rank.get(r.target.host, len(rank)), kinds.index(r.kind),
                                          r.target.port or 0, r.family or ""))


__all__ = ["CheckOptions", "choose_site_profile", "host_info", "media_probe", "perform_check"]


async def _probe(run: Awaitable[list[ProbeResult]], assess_now: Callable[[list[ProbeResult]], Assessment],
                 look: Callable[[], Awaitable[StatusSite]] | None, wanted: Callable[[Assessment], bool]
                 ) -> tuple[list[ProbeResult], Assessment, StatusSite | None]:
    """The probes, and beside them the status-page request the assessment may need (``look``).

    Asked after the probes, that request would add its own DNS, TCP, TLS and HTTP round trips to
    every check whose workloads fail or degrade (on a slow link: all of them). Its answer is kept
    only when the assessment of the probes asks for it; otherwise it is cancelled, not waited for.
    """
    early = asyncio.ensure_future(look()) if look is not None else None
    results = await run
    now = assess_now(results)
    if early is None:
        return results, now, None
    if wanted(now):
        return results, now, await early
    early.cancel()
    await asyncio.gather(early, return_exceptions=True)
    return results, now, None


def probe_status_site(url: str, spec: ProbeSpec, deadline: Deadline) -> StatusSite:
    """One HTTPS GET of Microsoft's status page (:func:`netcheck.assess.service_health.annotate` asks
    for it), as the check's HTTP probe does it (the laptop's proxy and trust store), within ``deadline``."""
    return asyncio.run(look_status_site(url, spec, deadline))


async def look_status_site(url: str, spec: ProbeSpec, deadline: Deadline) -> StatusSite:
    """:func:`probe_status_site` in a running event loop."""
    from netcheck.probes.http import probe_http

    if deadline.remaining() <= 0.2:
        return StatusSite(url)
    parts = urlsplit(url)
    target = Target(host=parts.hostname or "", port=parts.port or 443, scheme="https")
    result = await probe_http(target, spec, deadline)
    return StatusSite(url, result.reachable, "" if result.reachable else (result.reason or str(result.outcome))[:200])
