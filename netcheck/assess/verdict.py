"""From probe results to workload states, findings and the overall verdict.

Pure: no sockets, no OS calls. Everything it needs arrives as data, so every
rule here is tested with hand-built results (tests/test_verdict.py).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace

from netcheck.assess.media import (
    assess_media,
    loaded_note,
    loss_unshown,
    stats_from_detail,
    thresholds_of,
    unconfirmed_note,
)
from netcheck.assess.outage import OutageSection, PacLostNow
from netcheck.m365.catalog import Network, NotTestable, Workload, in_networks
from netcheck.models import (
    Assessment,
    Category,
    Finding,
    Outcome,
    ProbeKind,
    ProbeResult,
    Severity,
    Status,
    Target,
    Verdict,
    WorkloadResult,
)
from netcheck.policy import Policy, exchange_score


@dataclass(frozen=True)
class AssessContext:
    """The facts about the catalog and the laptop that the rules need."""

    workloads: tuple[Workload, ...]
    key_hosts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    optimize_networks: tuple[Network, ...] = ()
    not_testable: tuple[NotTestable, ...] = ()
    online: bool = True
    offline_reason: str = ""
    #: Findings about the laptop's settings (PAC file, proxy variables): see :func:`setting_findings`.
    settings: tuple[Finding, ...] = ()
    #: Federation servers sign-in is federated to (the realm answer) whose names do not resolve from here.
    federation_unresolved: tuple[str, ...] = ()
    #: A PAC file the settings name that cannot be fetched now, and what the OS does without it.
    pac_lost: PacLostNow | None = None


_DNS_FAIL = {Outcome.NXDOMAIN, Outcome.NO_ANSWER, Outcome.SERVFAIL, Outcome.DNS_REFUSED,
             Outcome.DNS_TIMEOUT, Outcome.NO_RESOLVER}
_BLOCKED = {Outcome.NETWORK_UNREACHABLE, Outcome.CONNECT_REFUSED, Outcome.CONNECT_TIMEOUT,
            Outcome.CONNECTION_RESET, Outcome.HTTP_NO_RESPONSE}
_PROXY = {Outcome.HTTP_PROXY_AUTH, Outcome.HTTP_PROXY_BLOCKED, Outcome.PROXY_UNREACHABLE}
_TLS = {Outcome.TLS_UNTRUSTED, Outcome.TLS_ERROR}

#: What to do, per kind of failure: plain words for the user, then for IT.
_REMEDIES: tuple[tuple[frozenset[Outcome], str, str], ...] = (
    (frozenset(_DNS_FAIL), "names could not be looked up (DNS)",
     "Check the DNS server this laptop uses: it must resolve Microsoft 365 names through an "
     "internet resolver. At home, restart the router; at work, ask IT to check the DNS forwarders."),
    (frozenset({Outcome.HTTP_PROXY_AUTH}), "a proxy asks for a password",
     "IT: exempt Microsoft 365 endpoints from proxy authentication; Microsoft states that proxy "
     "authentication is incompatible with Optimize and Allow endpoints."),
    (frozenset({Outcome.HTTP_PROXY_BLOCKED}), "a proxy blocks them",
     "IT: allow these endpoints on the proxy, or send them direct in the PAC file."),
    (frozenset({Outcome.PROXY_UNREACHABLE}), "the configured proxy cannot be reached",
     "Check the proxy settings; if the proxy is at the office, Microsoft 365 should not depend on it "
     "(send Microsoft 365 direct)."),
    (frozenset(_TLS), "their certificates are not trusted (something intercepts the connection)",
     "IT: exclude Microsoft 365 endpoints from TLS inspection, or fix the certificate trust."),
    (frozenset(_BLOCKED), "connections are blocked or get no answer",
     "Check the internet connection. IT: allow TCP 80 and 443 to these endpoints "
     "(list them with `netcheck endpoints show`)."),
    (frozenset({Outcome.TIMEOUT}), "they did not answer before the check's deadline",
     "The network is very slow or congested; run the check again, or with a longer --deadline."),
)


def _remedy(outcomes: Sequence[Outcome]) -> tuple[str, str]:
    for group, words, fix in _REMEDIES:
        if any(o in group for o in outcomes):
            return words, fix
    return "they could not be reached", "Check the network connection and run the check again."


@dataclass
class _Host:
    name: str
    category: Category
    workloads: tuple[str, ...]
    results: list[ProbeResult] = field(default_factory=list)

    def of(self, kind: ProbeKind) -> list[ProbeResult]:
        return [r for r in self.results if r.kind is kind]

    def failure(self, reached: Collection[str] = ()) -> ProbeResult | None:
        """The probe that shows the host unusable, or None if it works (or may: see :meth:`unsettled`)."""
        for r in self.of(ProbeKind.DNS):
            if not r.ok:
                return r
        decisive = self.of(ProbeKind.HTTP) or self.of(ProbeKind.TLS) or self.of(ProbeKind.TCP)
        for r in decisive:
            if not r.reachable and r.outcome is not Outcome.NOT_TESTABLE and not _ran_out_at(r, reached):
                return r
        return None

    def unsettled(self, reached: Collection[str]) -> ProbeResult | None:
        """A probe that ran out of time connecting to a proxy that ``reached`` shows accepting this check's
        other connections: whether the host can be used through it is not settled."""
        return next((r for r in self.of(ProbeKind.HTTP) if _ran_out_at(r, reached)), None)

    def tcp_median(self, key: str = "median_ms") -> float | None:
        """The median of this host's TCP probes' ``key``: ``median_ms`` (taken during the check's burst of
        probes) or ``quiet_median_ms`` (taken again after it, see :func:`latency_to_confirm`)."""
        values = [float(v) for r in self.of(ProbeKind.TCP)
                  if r.reachable and isinstance(v := r.detail.get(key), int | float)]
        return statistics.median(values) if values else None


def _ran_out_at(r: ProbeResult, reached: Collection[str]) -> bool:
    """The proxy did not accept this connection in time, but accepted others in the same check: a lossy or
    congested link (or the check's own burst of connections to it), not a proxy that cannot be reached."""
    return (r.outcome is Outcome.PROXY_UNREACHABLE and r.detail.get("ran_out") is True
            and r.detail.get("proxy") in reached)


def reached_proxies(results: Sequence[ProbeResult]) -> frozenset[str]:
    """The proxies that accepted a connection in this check (some HTTP probe got past connecting to them)."""
    return frozenset(str(r.detail["proxy"]) for r in results
                     if r.kind is ProbeKind.HTTP and r.detail.get("proxy") and (r.reachable or "connect" in r.phases))


def _hosts(results: Sequence[ProbeResult]) -> dict[str, _Host]:
    hosts: dict[str, _Host] = {}
    for r in results:
        if r.kind not in (ProbeKind.DNS, ProbeKind.TCP, ProbeKind.TLS, ProbeKind.HTTP):
            continue
        h = hosts.get(r.target.host)
        if h is None:
            h = hosts[r.target.host] = _Host(r.target.host, r.target.category, r.target.workloads)
        h.results.append(r)
    return hosts


def _evidence(r: ProbeResult) -> str:
    return f"{r.target.label} ({r.kind}): {r.reason or r.outcome}"


def _fmt_ms(value: float) -> str:
    return f"{value:.0f} ms"


def _assess_web(w: Workload, hosts: list[_Host], key: tuple[str, ...], policy: Policy,
                reached: Collection[str] = ()) -> tuple[WorkloadResult, list[Finding]]:
    findings: list[Finding] = []
    failures = {h.name: f for h in hosts if (f := h.failure(reached)) is not None}
    unsettled = {h.name: u for h in hosts if h.name not in failures and (u := h.unsettled(reached)) is not None}
    reasons: list[str] = []
    key_failed = [k for k in key if k in failures]
    status = Status.OK
    if failures and (key_failed or len(failures) == len(hosts)):
        status = Status.FAILED
    elif failures:
        status = Status.DEGRADED
    if failures:
        words, fix = _remedy([f.outcome for f in failures.values()])
        shown = key_failed or sorted(failures)
        reasons.append(f"{len(failures)} of {len(hosts)} endpoints unreachable ({', '.join(shown[:3])}"
                       f"{', ...' if len(shown) > 3 else ''}): {words}")
        findings.append(Finding(
            code=f"reach.{w.id}", severity=Severity.CRITICAL if status is Status.FAILED else Severity.WARNING,
            title=f"{w.name}: {len(failures)} required endpoint(s) unreachable",
            detail=f"{w.name} needs these Microsoft 365 endpoints, and {words}.",
            remediation=fix, workload=w.id, principle=None,
            evidence=tuple(_evidence(f) for f in failures.values())))
    latency, during = _latency(hosts)
    score: int | None = None
    slow_words = "" if during is None else (
        f", re-measured after the check's other probes; {_fmt_ms(during)} while they ran")
    if latency is not None:
        if w.id == "exchange":
            score = exchange_score(latency, policy.exchange_score_points)
            if score < policy.exchange_degraded_below:
                reasons.append(f"slow: Exchange network score {score}/100 (TCP latency {_fmt_ms(latency)}"
                               f"{slow_words})")
                findings.append(Finding(
                    code="latency.exchange", severity=Severity.WARNING,
                    title=f"Exchange latency is high: score {score}/100",
                    detail=(f"The median TCP connect time to Exchange front doors is {_fmt_ms(latency)}; "
                            f"on Microsoft's scale that scores {score}/100 (80 meets the recommendation)."),
                    remediation=("Microsoft 365 traffic should leave the network close to you. IT: avoid "
                                 "hairpins through a distant VPN, proxy or data centre for Optimize traffic."),
                    workload=w.id, principle=3))
                status = max(status, Status.DEGRADED, key=_severity)
        elif latency > policy.slow_latency_ms:
            reasons.append(f"slow: median TCP latency {_fmt_ms(latency)}{slow_words}")
            status = max(status, Status.DEGRADED, key=_severity)
    inspected = [r for h in hosts if h.category is not Category.DEFAULT for r in h.results if _inspected(r)]
    if inspected:
        by = sorted({str(r.detail.get("inspected_by") or "an unknown issuer") for r in inspected})
        reasons.append(f"TLS inspected by {', '.join(by)}")
        status = max(status, Status.DEGRADED, key=_severity)
    proxied = [r for h in hosts if h.category is Category.OPTIMIZE
               for r in h.of(ProbeKind.HTTP) if r.reachable and r.detail.get("via_proxy") is True]
    if proxied:
        reasons.append("Optimize traffic goes through a proxy")
        status = max(status, Status.DEGRADED, key=_severity)
    ok = sum(1 for h in hosts if h.name not in failures)
    possible: tuple[Status, ...] = ()
    if unsettled:  # had they failed: the status they would give
        worst = (Status.FAILED if any(k in unsettled for k in key) or len(failures) + len(unsettled) == len(hosts)
                 else Status.DEGRADED)
        if _severity(worst) > _severity(status):
            possible = (status, worst)
            shown = sorted(unsettled)
            reasons.append(f"{len(unsettled)} of {len(hosts)} endpoints not reached through the proxy in time "
                           f"({', '.join(shown[:3])}{', ...' if len(shown) > 3 else ''}), though it accepted this "
                           "check's other connections (a lossy or congested link): whether they can be reached is "
                           "not settled")
    return WorkloadResult(w.id, w.name, status, tuple(reasons), latency, score, ok, len(hosts),
                          possible), findings


#: Front doors of one slow workload re-measured after the check's burst (:func:`latency_to_confirm`): the
#: ones whose first medians lie nearest the workload's median, which is what the rule judges.
CONFIRM_HOSTS = 8


def _latency(hosts: Sequence[_Host]) -> tuple[float | None, float | None]:
    """A workload's TCP latency, the median over its front doors (Default endpoints aside) of each one's
    median connect: ``(latency, during)``. Where some were re-measured after the check's own burst of
    probes (:func:`latency_to_confirm`), the latency is theirs, and ``during`` the first samples' figure
    (taken while the check's own probes crowded the path); otherwise ``during`` is None."""
    doors = [h for h in hosts if h.category is not Category.DEFAULT]
    first = [m for h in doors if (m := h.tcp_median()) is not None]
    quiet = [m for h in doors if (m := h.tcp_median("quiet_median_ms")) is not None]
    latency = statistics.median(first) if first else None
    if quiet:
        return statistics.median(quiet), latency
    return latency, None


def _slow(w: Workload, latency: float, policy: Policy) -> bool:
    """The latency rule of :func:`_assess_web`: Exchange by Microsoft's score, every other workload by
    ``[latency] slow_ms``."""
    if w.id == "exchange":
        return exchange_score(latency, policy.exchange_score_points) < policy.exchange_degraded_below
    return latency > policy.slow_latency_ms


def latency_to_confirm(results: Sequence[ProbeResult], ctx: AssessContext, policy: Policy) -> tuple[Target, ...]:
    """The TCP probes to take again once the check's other probes have finished (pure).

    The first samples are taken during the check's own burst of up to a hundred concurrent probes; on a
    loaded laptop or a slow path (a userspace VPN client, a home router, a proxy) that burst queues them,
    and a fast path reads slow. Microsoft's own test measures latency without load (its buffer-bloat test
    is the latency under load minus that). So a workload whose first samples make it slow has up to
    :data:`CONFIRM_HOSTS` of its front doors measured again, after the burst; the rule then judges those
    (:func:`_latency`). A workload that is not slow costs nothing.
    """
    hosts = _hosts(results)
    out: dict[tuple[str, str | None, int | None], Target] = {}
    for w in ctx.workloads:
        if w.media:
            continue
        mine = [h for h in hosts.values() if w.id in h.workloads and h.category is not Category.DEFAULT]
        latency, _ = _latency(mine)
        if latency is None or not _slow(w, latency, policy):
            continue
        timed = sorted(((abs(m - latency), h.name, r) for h in mine for r in h.of(ProbeKind.TCP)
                        if r.reachable and isinstance(m := r.detail.get("median_ms"), int | float)),
                       key=lambda x: (x[0], x[1]))
        for _, _, r in timed[:CONFIRM_HOSTS]:
            out.setdefault((r.target.host, r.target.address, r.target.port), r.target)
    return tuple(out.values())


def _inspected(r: ProbeResult) -> bool:
    """TLS inspection seen by this probe: the TLS probe (direct), or the HTTP probe through a proxy's tunnel."""
    return (r.kind is ProbeKind.TLS and r.outcome is Outcome.TLS_INSPECTED) or (
        r.kind is ProbeKind.HTTP and r.detail.get("tls_inspected") is True)


def _severity(s: Status) -> int:
    return {Status.NOT_TESTED: 0, Status.OK: 1, Status.DEGRADED: 2, Status.FAILED: 3}[s]


def _assess_media(w: Workload, results: list[ProbeResult], signalling_ok: bool, policy: Policy
                  ) -> tuple[WorkloadResult, list[Finding]]:
    if not results:
        return WorkloadResult(w.id, w.name, Status.NOT_TESTED, ("not tested",)), []
    passed = [r for r in results if r.ok]
    if passed:
        r = passed[0]
        stats = stats_from_detail(r.detail)
        thresholds = thresholds_of(policy)
        good, problems = assess_media(stats, thresholds) if stats else (True, ())
        latency = stats.rtt_ms if stats else None
        unshown = loss_unshown(stats, thresholds) if stats else None
        if not good and (unconfirmed := unconfirmed_note(r.detail)):  # maybe the check's own doing
            return WorkloadResult(w.id, w.name, Status.OK, (*problems, unconfirmed), latency, None, len(passed),
                                  len(results), possible=(Status.OK, Status.DEGRADED)), []
        again = (note,) if (note := loaded_note(r.detail)) else ()
        if good and unshown:  # the sample cannot tell: OK on round trip and jitter, and it may be degraded
            return WorkloadResult(w.id, w.name, Status.OK, (unshown, *again), latency, None, len(passed),
                                  len(results), possible=(Status.OK, Status.DEGRADED)), []
        if good:
            return WorkloadResult(w.id, w.name, Status.OK, again, latency, None, len(passed), len(results)), []
        problems = (*problems, unshown) if unshown else problems
        problems = (*problems, *again)
        finding = Finding(
            code="media.quality", severity=Severity.WARNING, title="Teams calls may be poor",
            detail="Teams media over UDP: " + "; ".join(problems) + ".",
            remediation=("Use a wired connection or move closer to the Wi-Fi router; IT: send Teams media "
                         "(UDP 3478-3481 to the Optimize ranges) direct, not through the VPN."),
            workload=w.id, principle=3, evidence=tuple(_evidence(x) for x in results))
        return (WorkloadResult(w.id, w.name, Status.DEGRADED, problems, latency, None,
                               len(passed), len(results)), [finding])
    blocked = all(r.outcome is Outcome.UDP_BLOCKED for r in results)
    status = Status.DEGRADED if blocked and signalling_ok else Status.FAILED
    reason = ("UDP to the Teams media relays is blocked: Teams falls back to TCP, audio and video impaired"
              if blocked else "the Teams media relays could not be reached")
    finding = Finding(
        code="media.udp_blocked" if blocked else "media.unreachable",
        severity=Severity.WARNING if status is Status.DEGRADED else Severity.CRITICAL,
        title="Teams audio and video cannot use UDP" if blocked else "Teams media relays unreachable",
        detail=reason + ".",
        remediation="IT: allow UDP 3478-3481 to the Teams media ranges and keep it out of the VPN tunnel.",
        workload=w.id, principle=4, evidence=tuple(_evidence(x) for x in results))
    return WorkloadResult(w.id, w.name, status, (reason,), None, None, 0, len(results)), [finding]


def _federation_unresolved(rows: list[WorkloadResult], sign_in: Workload, hosts: tuple[str, ...]
                           ) -> tuple[list[WorkloadResult], Finding]:
    """Sign-in fails now when it is federated to a server whose name does not resolve from here: the realm
    answer is only the first step of signing in."""
    names = ", ".join(hosts)
    reason = f"sign-in is federated to {names}, whose name does not resolve from here"
    failed = [replace(r, status=Status.FAILED, reasons=(*r.reasons, reason)) if r.id == sign_in.id else r
              for r in rows]
    return failed, Finding(
        code=f"reach.{sign_in.id}.federation", severity=Severity.CRITICAL,
        title=f"{sign_in.name}: the federation server {names} cannot be found from here",
        detail=(f"Sign-in is federated to {names} (the realm answer), and this network's resolvers do not know "
                "the name: signing in stops there."),
        remediation=("IT: publish the federation server's name where this network can resolve it (or give this "
                     "network a resolver that knows it), or enable password hash sync as a backup sign-in method."),
        workload=sign_in.id, principle=None, evidence=hosts)


def _pac_lost(rows: list[WorkloadResult], lost: PacLostNow) -> list[WorkloadResult]:
    """The statuses with a PAC file that cannot be fetched now. The probes went where the laptop's settings
    go without it (as browsers do by default); a client that fails closed connects to nothing instead, so
    the workloads behind the PAC file fail now. Not stated, or a fetch that only ran out of time (not known
    to be gone): they may (the status hedges on it)."""
    if lost.unreachable not in (None, "fail"):
        return rows  # "direct" is what the probes did; "cached": the OS keeps a copy the check cannot read
    out: list[WorkloadResult] = []
    for r in rows:
        if r.id not in lost.workloads or r.status in (Status.FAILED, Status.NOT_TESTED):
            out.append(r)
        elif lost.unreachable == "fail" and lost.unread:
            out.append(replace(r, possible=tuple(dict.fromkeys((r.status, *r.possible, Status.FAILED))), reasons=(
                *r.reasons, f"the PAC file {lost.url} did not arrive in time (its fetch ran out of time before the "
                            "server answered, which does not show it is gone): if it is gone, the browser does not "
                            "connect (fail-closed, from the site profile)")))
        elif lost.unreachable == "fail":
            out.append(replace(r, status=Status.FAILED, possible=(), reasons=(
                *r.reasons, f"the PAC file {lost.url} cannot be fetched now, and without it the browser does "
                            "not connect (fail-closed, from the site profile)")))
        else:
            out.append(replace(r, possible=tuple(dict.fromkeys((r.status, *r.possible, Status.FAILED))), reasons=(
                *r.reasons, f"the PAC file {lost.url} cannot be fetched now: measured as the laptop's settings "
                            "go without it; a client that fails closed without its PAC file connects to nothing "
                            "(not stated: set pac_unreachable in the site profile)")))
    return out


def _network_findings(results: Sequence[ProbeResult], ctx: AssessContext, policy: Policy) -> list[Finding]:
    findings: list[Finding] = []
    inspected: dict[str, list[ProbeResult]] = defaultdict(list)
    for r in results:
        if _inspected(r) and r.target.category is not Category.DEFAULT:
            inspected[str(r.detail.get("inspected_by") or "an unknown issuer")].append(r)
    for issuer, rs in sorted(inspected.items()):
        findings.append(Finding(
            code="tls.inspected", severity=Severity.WARNING,
            title=f"Microsoft 365 traffic is decrypted and inspected by {issuer}",
            detail=(f"{len(rs)} Optimize/Allow endpoint(s) present a certificate issued by {issuer}, a "
                    "root added to this machine, not a public CA. Inspection slows Microsoft 365 down "
                    "and breaks some of it."),
            remediation="IT: exclude Microsoft 365 Optimize and Allow endpoints from TLS inspection.",
            principle=4, evidence=tuple(sorted({r.target.host for r in rs}))))
    proxied = sorted({r.target.host for r in results
                      if r.kind is ProbeKind.HTTP and r.reachable and r.detail.get("via_proxy") is True
                      and r.target.category is Category.OPTIMIZE})
    if proxied:
        findings.append(Finding(
            code="proxy.optimize", severity=Severity.WARNING,
            title="Optimize traffic goes through a proxy",
            detail=f"{len(proxied)} Optimize endpoint(s) are reached through a proxy.",
            remediation="IT: send Optimize endpoints direct (PAC file: return \"DIRECT\" for them).",
            principle=4, evidence=tuple(proxied)))
    outside: list[str] = []
    if ctx.optimize_networks:
        for r in results:
            if r.kind is not ProbeKind.DNS or not r.ok or r.target.category is not Category.OPTIMIZE:
                continue
            addrs = r.detail.get("addresses")
            for a in addrs if isinstance(addrs, list) else []:
                if not in_networks(str(a), ctx.optimize_networks):
                    outside.append(f"{r.target.host} -> {a}")
    if outside:
        findings.append(Finding(
            code="dns.optimize_outside_ranges", severity=Severity.WARNING,
            title="DNS answers for Optimize names fall outside Microsoft's Optimize ranges",
            detail=("Microsoft asks that DNS answers match the egress path; these answers are not in the "
                    "published Optimize ranges, so split-tunnel rules by IP will not catch them."),
            remediation=("Use a DNS resolver that answers from the internet (local DNS with local egress); "
                         "IT: check DNS forwarders and any DNS filtering."),
            principle=2, evidence=tuple(outside[:50])))
    dns_times = [float(v) for r in results if r.kind is ProbeKind.DNS and r.ok
                 and isinstance(v := r.phases.get("resolve"), int | float)]
    if dns_times and statistics.median(dns_times) > policy.slow_dns_ms:
        findings.append(Finding(
            code="dns.slow", severity=Severity.INFO, title="DNS lookups are slow",
            detail=f"The median lookup took {_fmt_ms(statistics.median(dns_times))}.",
            remediation="Use a DNS resolver close to you (Microsoft: local DNS with local egress).",
            principle=2))
    for r in results:
        if r.kind is ProbeKind.WHOAMI and r.ok and r.detail.get("resolver_address"):
            findings.append(Finding(
                code="dns.resolver", severity=Severity.INFO,
                title=f"Your DNS queries reach the internet from {r.detail['resolver_address']}",
                detail=("Microsoft picks front doors close to this recursive resolver; it should be near "
                        "you, not at a distant site."),
                remediation="Nothing to do if this resolver is your home or local internet provider's.",
                principle=2))
    if ctx.not_testable:
        findings.append(Finding(
            code="catalog.not_testable", severity=Severity.INFO,
            title=f"{len(ctx.not_testable)} wildcard endpoint(s) not testable",
            detail="Microsoft publishes these only as wildcards; there is no concrete host name to test.",
            remediation="Give --tenant NAME to test your tenant's SharePoint and OneDrive names.",
            principle=1, evidence=tuple(n.pattern for n in ctx.not_testable)))
    return findings


_PAC_FIX = ("IT: make the PAC file reachable from everywhere laptops work (not only from the site), and "
            "check that it loads; until then clients use {instead}.")


def setting_findings(network: Mapping[str, object]) -> tuple[Finding, ...]:
    """Findings about the proxy settings the check met, from its network facts (pure).

    A PAC file that cannot be fetched, does not load or gives no usable answer, and a
    proxy variable no client can use, are each one finding that says which proxy
    decision the check used instead (``pac_fallback``).
    """
    out: list[Finding] = []
    instead = str(network.get("pac_fallback") or "DIRECT (no proxy)")
    url = str(network.get("pac_url") or network.get("wpad") or "the PAC file")
    fetch = network.get("pac_fetch")
    if fetch is not None and fetch != "ok":
        why = str(network.get("pac_error") or fetch)
        timed_out = str(fetch) in {o.value for o in Outcome if o.ran_out}
        out.append(Finding(
            code="pac.timeout" if timed_out else "pac.fetch_failed", severity=Severity.WARNING,
            title="The PAC file did not arrive in time" if timed_out else "The PAC file could not be fetched",
            detail=f"{url}: {why}. The check used {instead} instead, as browsers and Windows do.",
            remediation=_PAC_FIX.format(instead=instead), principle=4, evidence=(f"{url}: {why}",)))
    load_error = network.get("pac_load_error")
    if load_error:
        out.append(Finding(
            code="pac.load_failed", severity=Severity.WARNING, title="The PAC file does not load",
            detail=f"{url}: {load_error}. The check used {instead} instead.",
            remediation=("IT: fix the PAC file (a JavaScript error stops every client from using it); "
                         f"until then clients use {instead}."), principle=4, evidence=(str(load_error),)))
    bad = network.get("pac_bad_results")
    if isinstance(bad, list) and bad:
        out.append(Finding(
            code="pac.bad_result", severity=Severity.WARNING,
            title=f"The PAC file gives no usable answer for {len(bad)} endpoint(s)",
            detail=("FindProxyForURL failed or returned something that is not a proxy list (a string such as "
                    f"\"DIRECT\" or \"PROXY host:port\"); for these the check used {instead}."),
            remediation="IT: make FindProxyForURL return a string for every Microsoft 365 host.",
            principle=4, evidence=tuple(str(b) for b in bad)))
    unusable = network.get("proxy_setting_error")
    if isinstance(unusable, list) and unusable:
        out.append(Finding(
            code="proxy.unusable_setting", severity=Severity.WARNING, title="A proxy setting cannot be used",
            detail=("; ".join(str(u) for u in unusable) + ". The check went direct for it; programs that read "
                    "this setting may fail or go direct too."),
            remediation="Fix or remove the setting: it must look like http://proxy.example.com:8080.",
            principle=4, evidence=tuple(str(u) for u in unusable)))
    return tuple(out)


def _summary(verdict: Verdict, workloads: Sequence[WorkloadResult], ctx: AssessContext) -> str:
    def names(status: Status | None = None) -> str:
        """The core workloads with this status; without one, those whose status is hedged (``possible``)."""
        return ", ".join(w.name.split(" (")[0] for w in workloads
                         if (w.status is status if status else w.possible and w.status is not Status.DEGRADED)
                         and any(x.id == w.id and x.core for x in ctx.workloads))
    if verdict is Verdict.UNKNOWN:
        return ("There is no network connection, so nothing could be tested. "
                + (ctx.offline_reason + " " if ctx.offline_reason else "")
                + "Connect to a network and run netcheck again.")
    if verdict is Verdict.NOT_READY:
        return f"Right now, from here, you cannot use {names(Status.FAILED)}."
    if verdict is Verdict.AT_RISK:
        degraded, hedged = names(Status.DEGRADED), names()
        return (f"Right now you can work from here, but {degraded} "
                f"{'is' if ',' not in degraded else 'are'} impaired." if degraded
                else f"Right now you can work from here, but {hedged} may not work well (this check could not "
                     "tell)." if hedged
                else "Right now you can work from here, but there are problems to fix.")
    return "Right now, from here, you can use Outlook, SharePoint and OneDrive, Teams and sign-in."


def _by_severity(finding: Finding) -> int:
    return {Severity.CRITICAL: 0, Severity.WARNING: 1, Severity.INFO: 2}[finding.severity]


#: A workload whose every probe hit a fault in netcheck: not tested, never failed (a crash is not a verdict).
FAULT_REASON = "not tested: a fault in netcheck stopped its probes"


def _fault_finding(faults: Sequence[ProbeResult], ctx: AssessContext) -> Finding:
    """What a user and IT are told when a fault in netcheck stopped some probes: which workloads lost them,
    that their results are missing (not failed), and what to do. A warning, so the verdict is AT RISK at
    best: what was not measured cannot be called ready."""
    names = {w.id: w.name for w in ctx.workloads}
    hit = [names[w] for w in names if any(w in r.target.workloads for r in faults)]
    errors = sorted({str(r.detail.get("netcheck_fault")) for r in faults})
    return Finding(
        code="netcheck.fault", severity=Severity.WARNING, title="netcheck could not run some of its tests",
        detail=(f"A fault in netcheck itself ({', '.join(errors)}) stopped {len(faults)} of its probes"
                + (f", for {', '.join(hit)}" if hit else "") + ". Their results are missing, not failed: they "
                "say nothing about the network."),
        remediation=("Run the check again. If this comes back, tell IT: it is a fault in netcheck, not in your "
                     "network (a crash log in netcheck's cache directory, under crashes/, has the details)."),
        evidence=tuple(sorted({f"{r.kind.value} {r.target.label}" for r in faults}))[:20])


def assess(results: Sequence[ProbeResult], ctx: AssessContext, policy: Policy) -> Assessment:
    """The verdict for one check."""
    if not ctx.online:
        none = tuple(WorkloadResult(w.id, w.name, Status.NOT_TESTED, ("no network connection",))
                     for w in ctx.workloads)
        return Assessment(Verdict.UNKNOWN, _summary(Verdict.UNKNOWN, none, ctx), none, ())
    faults = [r for r in results if r.faulted]  # a fault in netcheck measured nothing: left out, and said
    results = [r for r in results if not r.faulted]
    faulted = {wid for r in faults for wid in r.target.workloads}
    hosts = _hosts(results)
    reached = reached_proxies(results)
    rows: list[WorkloadResult] = []
    findings: list[Finding] = [_fault_finding(faults, ctx)] if faults else []
    for w in ctx.workloads:
        if w.media:
            continue
        mine = [h for h in hosts.values() if w.id in h.workloads]
        if not mine:
            rows.append(WorkloadResult(w.id, w.name, Status.NOT_TESTED,
                                       (FAULT_REASON if w.id in faulted else "no testable endpoint",)))
            continue
        row, fs = _assess_web(w, mine, ctx.key_hosts.get(w.id, ()), policy, reached)
        rows.append(row)
        findings.extend(fs)
    signalling = next((r for r in rows if r.id == "teams"), None)
    for w in ctx.workloads:
        if not w.media:
            continue
        stun = [r for r in results if r.kind is ProbeKind.STUN and w.id in r.target.workloads]
        if not stun and w.id in faulted:
            rows.append(WorkloadResult(w.id, w.name, Status.NOT_TESTED, (FAULT_REASON,)))
            continue
        row, fs = _assess_media(w, stun, signalling is not None and signalling.status in
                                (Status.OK, Status.DEGRADED), policy)
        rows.append(row)
        findings.extend(fs)
    sign_in = next((w for w in ctx.workloads if w.sign_in), None)
    if sign_in is not None and ctx.federation_unresolved:
        rows, finding = _federation_unresolved(rows, sign_in, ctx.federation_unresolved)
        findings.append(finding)
    if ctx.pac_lost is not None:
        rows = _pac_lost(rows, ctx.pac_lost)
    order = [w.id for w in ctx.workloads]
    rows.sort(key=lambda r: order.index(r.id))
    findings.extend(_network_findings(results, ctx, policy))
    findings.extend(ctx.settings)
    core = {w.id for w in ctx.workloads if w.core}
    core_rows = [r for r in rows if r.id in core]
    if any(r.status is Status.FAILED for r in core_rows):
        verdict = Verdict.NOT_READY
    elif any(r.status is Status.DEGRADED or r.possible for r in core_rows) or any(
            f.severity is not Severity.INFO for f in findings):  # a hedged status: AT RISK at best
        verdict = Verdict.AT_RISK
    else:
        verdict = Verdict.READY
    findings.sort(key=_by_severity)
    return Assessment(verdict, _summary(verdict, rows, ctx), tuple(rows), tuple(findings))


def combine(current: Assessment, outage: OutageSection | None) -> Assessment:
    """Fold the site-outage answer into the check's verdict: the worse of the two counts."""
    if outage is None or current.verdict is Verdict.UNKNOWN:
        return current
    rank = [Verdict.READY, Verdict.AT_RISK, Verdict.NOT_READY]
    verdict = max(current.verdict, outage.verdict, key=rank.index)
    findings = tuple(sorted((*current.findings, *outage.findings), key=_by_severity))
    return Assessment(verdict, f"{current.summary} {outage.summary}", current.workloads, findings)
