"""The data netcheck passes around: targets, probe specs and results, findings, media figures.

Pure data, the bottom layer: this module imports nothing from netcheck, so decisions and
renderers built on it can be tested without the network or the OS. The report that gathers
it all with the assessment is :class:`netcheck.assess.report.Report`.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

#: A JSON-serialisable detail value.
DetailValue = str | int | float | bool | None | list[str] | list[int] | list[float]
Detail = Mapping[str, DetailValue]


class Category(StrEnum):
    """Microsoft's endpoint categories, highest priority first."""

    OPTIMIZE = "Optimize"
    ALLOW = "Allow"
    DEFAULT = "Default"

    @property
    def rank(self) -> int:
        return {"Optimize": 0, "Allow": 1, "Default": 2}[self.value]


class ProbeKind(StrEnum):
    DNS = "dns"
    TCP = "tcp"
    TLS = "tls"
    HTTP = "http"
    ROUTE = "route"
    STUN = "stun"
    REALM = "realm"
    WHOAMI = "whoami"


class Outcome(StrEnum):
    """Every way a probe can end. A closed set: the collector groups by it."""

    OK = "ok"
    # DNS
    NXDOMAIN = "nxdomain"
    NO_ANSWER = "no_answer"
    SERVFAIL = "servfail"
    DNS_REFUSED = "dns_refused"
    DNS_TIMEOUT = "dns_timeout"
    NO_RESOLVER = "no_resolver"
    # transport
    NETWORK_UNREACHABLE = "network_unreachable"
    CONNECT_REFUSED = "connect_refused"
    CONNECT_TIMEOUT = "connect_timeout"
    CONNECTION_RESET = "connection_reset"
    # TLS
    TLS_INSPECTED = "tls_inspected"
    TLS_UNTRUSTED = "tls_untrusted"
    TLS_ERROR = "tls_error"
    # HTTP
    HTTP_PROXY_AUTH = "http_proxy_auth"
    HTTP_PROXY_BLOCKED = "http_proxy_blocked"
    HTTP_NO_RESPONSE = "http_no_response"
    HTTP_STATUS = "http_status"
    PROXY_UNREACHABLE = "proxy_unreachable"
    # UDP media
    UDP_BLOCKED = "udp_blocked"
    # routing
    WRONG_EGRESS = "wrong_egress"
    # bookkeeping
    TIMEOUT = "timeout"
    NOT_TESTABLE = "not_testable"
    SKIPPED = "skipped"
    ERROR = "error"

    @property
    def reachable(self) -> bool:
        """The service answered, even if through an inspecting middlebox."""
        return self in (Outcome.OK, Outcome.TLS_INSPECTED, Outcome.WRONG_EGRESS)

    @property
    def ran_out(self) -> bool:
        """The time ran out before an answer (a slow server, a lossy link or a laptop too busy to wait):
        nothing was read, which is no evidence that the other end is gone, unlike a name that does not
        resolve, a refused connection, no route or an HTTP error."""
        return self in (Outcome.TIMEOUT, Outcome.CONNECT_TIMEOUT, Outcome.DNS_TIMEOUT)


class Phase(StrEnum):
    RESOLVE = "resolve"
    CONNECT = "connect"
    TLS = "tls"
    PROCESSING = "processing"
    TRANSFER = "transfer"


@dataclass(frozen=True)
class Target:
    """What a probe is aimed at. ``address`` is set once DNS has answered."""

    host: str
    port: int | None = None
    scheme: str | None = None
    address: str | None = None
    category: Category = Category.DEFAULT
    workloads: tuple[str, ...] = ()
    endpoint_sets: tuple[int, ...] = ()
    required: bool = True

    def with_address(self, address: str) -> Target:
        return Target(self.host, self.port, self.scheme, address, self.category,
                      self.workloads, self.endpoint_sets, self.required)

    def with_port(self, port: int, scheme: str | None = None) -> Target:
        return Target(self.host, port, scheme, self.address, self.category,
                      self.workloads, self.endpoint_sets, self.required)

    @property
    def label(self) -> str:
        if self.scheme and self.port:
            return f"{self.scheme}://{self.host}:{self.port}/"
        if self.port:
            return f"{self.host}:{self.port}"
        return self.host


@dataclass(frozen=True)
class ProbeResult:
    """The outcome of one probe, with a plain-language reason and phase timings.

    ``phases`` are milliseconds keyed by :class:`Phase` values; ``detail`` holds
    probe-specific, JSON-serialisable facts (answers, certificate issuer, ...).
    """

    kind: ProbeKind
    target: Target
    outcome: Outcome
    reason: str = ""
    phases: Mapping[str, float] = field(default_factory=dict)
    detail: Detail = field(default_factory=dict)
    family: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK

    @property
    def reachable(self) -> bool:
        return self.outcome.reachable

    @property
    def faulted(self) -> bool:
        """The probe could not run because of a fault in netcheck itself (the runner caught what it raised,
        ``detail["netcheck_fault"]``): it measured nothing, so it says nothing about the network."""
        return self.outcome is Outcome.ERROR and "netcheck_fault" in self.detail


class Status(StrEnum):
    """A workload's state."""

    OK = "ok"
    DEGRADED = "degraded"
    FAILED = "failed"
    NOT_TESTED = "not_tested"


class Verdict(StrEnum):
    READY = "READY"
    AT_RISK = "AT_RISK"
    NOT_READY = "NOT_READY"
    UNKNOWN = "UNKNOWN"

    @property
    def exit_code(self) -> int:
        return {"READY": 0, "AT_RISK": 1, "NOT_READY": 2, "UNKNOWN": 3}[self.value]

    @property
    def words(self) -> str:
        return {"READY": "READY", "AT_RISK": "AT RISK", "NOT_READY": "NOT READY",
                "UNKNOWN": "COULD NOT ASSESS"}[self.value]


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True)
class Finding:
    """One thing worth telling the user, with its evidence and the fix."""

    code: str
    severity: Severity
    title: str
    detail: str
    remediation: str
    workload: str | None = None
    principle: int | None = None
    evidence: tuple[str, ...] = ()


@dataclass(frozen=True)
class WorkloadResult:
    id: str
    name: str
    status: Status
    reasons: tuple[str, ...] = ()
    latency_ms: float | None = None
    score: int | None = None
    probes_ok: int = 0
    probes_total: int = 0
    #: When the status hangs on something netcheck cannot read or tell from its sample: every status it
    #: could be, ``status`` (the one the verdict counts) first; empty when the status is certain.
    possible: tuple[Status, ...] = ()


@dataclass(frozen=True)
class Assessment:
    verdict: Verdict
    summary: str
    workloads: tuple[WorkloadResult, ...]
    findings: tuple[Finding, ...]


@dataclass(frozen=True)
class CatalogInfo:
    instance: str
    version: str
    source: str  # "bundled", "cache", "web" or "file"


@dataclass(frozen=True)
class HostInfo:
    os: str
    os_version: str
    python: str


@dataclass(frozen=True)
class InterfaceInfo:
    """A network interface as the report shows it: name, kind and why."""

    name: str
    kind: str
    vpn_product: str | None = None
    evidence: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProbeSpec:
    """How to probe (as opposed to what: that is the :class:`Target`).

    Defaults behave as the laptop would: the OS's resolvers, the OS trust store,
    proxies from the environment / OS settings.
    """

    #: Resolver addresses to use instead of the OS's (tests, the lab). Empty: the OS's.
    nameservers: tuple[str, ...] = ()
    nameserver_port: int = 53
    #: TCP connect samples per front door.
    tcp_samples: int = 3
    #: PEM bundle treated as the public root set (None: certifi's Mozilla bundle).
    public_roots: str | None = None
    #: PEM bundle for the machine's trust store (None: the OS default, honouring SSL_CERT_FILE).
    system_roots: str | None = None
    #: Proxy URL for HTTP probes; None: decided per URL from the environment/OS settings.
    proxy: str | None = None
    #: Read proxy settings from the environment (HTTPS_PROXY, NO_PROXY, ...).
    trust_env: bool = True
    #: Per URL (``netcheck.proxy.decision.url_for``), the proxy URL the laptop's settings or PAC file
    #: choose (None: DIRECT) and where that was decided ("environment", "os", "pac", "none").
    #: URLs not listed are decided from the settings alone (no PAC file) when ``trust_env``.
    proxy_map: Mapping[str, tuple[str | None, str]] = field(default_factory=dict)
    #: Name whose answer is the address of the recursive resolver that asked.
    whoami_name: str | None = None
    #: Per-attempt timeout cap for a single network operation (seconds).
    step_timeout_s: float = 5.0


@dataclass(frozen=True)
class MediaStats:
    """What one sampling window measured.

    ``samples_ms`` are round-trip times in order of arrival: of every answer, or
    (a window that sends several requests per Teams packet stride) of the answers
    to the requests sent at the stride, so fewer than ``received``. Round trip and
    jitter come from them; loss from ``sent`` and ``received``. ``sent`` counts
    the requests whose fate is known (answered, or unanswered for longer than the
    grace period).
    """

    sent: int
    received: int
    samples_ms: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.sent < 0 or self.received < 0 or self.received > self.sent:
            raise ValueError(f"impossible counts: sent {self.sent}, received {self.received}")
        if len(self.samples_ms) > self.received:
            raise ValueError(f"{self.received} answers but {len(self.samples_ms)} samples")

    @property
    def rtt_ms(self) -> float | None:
        return median_ms(self.samples_ms)

    @property
    def jitter_ms(self) -> float | None:
        return interarrival_jitter(self.samples_ms) if self.samples_ms else None

    @property
    def loss_pct(self) -> float | None:
        return loss_pct(self.sent, self.received)


def median_ms(samples: Sequence[float]) -> float | None:
    """The median, or None without samples."""
    return float(statistics.median(samples)) if samples else None


def interarrival_jitter(transits: Sequence[float]) -> float:
    """RFC 3550 interarrival jitter over transit times in order of arrival.

    Fewer than two samples give 0.0 (the estimator's starting value).
    """
    jitter = 0.0
    for previous, current in zip(transits, transits[1:], strict=False):
        jitter += (abs(current - previous) - jitter) / 16.0
    return jitter


def loss_pct(sent: int, received: int) -> float | None:
    """Percentage of requests never answered, or None when nothing was sent."""
    if sent <= 0:
        return None
    return 100.0 * (sent - received) / sent
