"""Probes: ``(target, spec, deadline) -> ProbeResult`` coroutines, one per kind.

Every probe is an asyncio coroutine that never raises for a network failure
(the outcome and a plain-language reason come from :mod:`netcheck.probes._errors`),
never prints, and derives every timeout from the :class:`~netcheck.deadline.Deadline`
it is given, so it ends by that deadline.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType

from netcheck.deadline import Deadline
from netcheck.models import ProbeKind, ProbeResult, ProbeSpec, Target
from netcheck.probes._errors import classify
from netcheck.probes.dns import probe_dns, resolver_identity
from netcheck.probes.http import probe_http
from netcheck.probes.tcp import probe_tcp
from netcheck.probes.tls import probe_tls

ProbeFn = Callable[[Target, ProbeSpec, Deadline], Awaitable[ProbeResult]]

PROBES: Mapping[ProbeKind, ProbeFn] = MappingProxyType({
    ProbeKind.DNS: probe_dns,
    ProbeKind.TCP: probe_tcp,
    ProbeKind.TLS: probe_tls,
    ProbeKind.HTTP: probe_http,
})

__all__ = ["PROBES", "ProbeFn", "classify", "probe_dns", "probe_http", "probe_tcp", "probe_tls",
           "resolver_identity"]
