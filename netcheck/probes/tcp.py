"""TCP probe: connect latency to one front door, sampled several times.

``spec.tcp_samples`` sequential connects to ``target.address`` (or the name,
resolved by the OS, when no address is given) on ``target.port``. Detail:
every sample, median, jitter (mean absolute difference between consecutive
samples), loss and the local address the OS chose (which interface/egress).

A sample is the kernel's own RTT of the handshake where the OS gives one
(:func:`netcheck.probes._timing.handshake_rtt_ms`): a wall-clock sample also
counts the time the busy event loop took to notice the connect completing.
The wall clock is used where the kernel has no figure, and for a handshake
whose SYN was retransmitted (the retransmission timeout is part of that
connect). ``rtt_source`` says which: ``kernel``, ``wall`` or ``mixed``.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import statistics
import time
from dataclasses import replace

from netcheck.deadline import Deadline
from netcheck.models import DetailValue, Outcome, ProbeKind, ProbeResult, ProbeSpec, Target
from netcheck.probes._connect import connect_socket
from netcheck.probes._errors import classify, failure, too_late
from netcheck.probes._timing import handshake_rtt_ms, pick, rtt_source


@functools.lru_cache(maxsize=1024)
def family_of(address: str | None) -> str | None:
    """``"ipv4"`` or ``"ipv6"`` for an IP literal, else None (cached: a check asks ~600 times of ~200 addresses)."""
    if not address:
        return None
    try:
        return "ipv6" if ipaddress.ip_address(address.split("%", 1)[0]).version == 6 else "ipv4"
    except ValueError:
        return None


async def socket_address(host: str, port: int, deadline: Deadline, cap: float
                         ) -> tuple[socket.AddressFamily, tuple[str, int] | tuple[str, int, int, int]]:
    """The (family, sockaddr) to connect to; resolves names through the OS (getaddrinfo)."""
    family = family_of(host)
    if family == "ipv4":
        return socket.AF_INET, (host, port)
    if family == "ipv6" and "%" not in host:
        return socket.AF_INET6, (host, port, 0, 0)
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(deadline.step(cap)):
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not infos:  # pragma: no cover - getaddrinfo raises rather than answer nothing
        raise socket.gaierror(socket.EAI_NONAME, "no address")
    fam, _, _, _, sockaddr = infos[0]
    return fam, sockaddr  # type: ignore[return-value]


async def _connect_once(family: socket.AddressFamily, sockaddr: tuple[str, int] | tuple[str, int, int, int],
                        timeout: float, kernel_clock: bool) -> tuple[float, bool, str]:
    """One connect: (sample in ms, whether the kernel timed it, local address)."""
    async with asyncio.timeout(timeout):
        sock, start = await connect_socket(family, sockaddr)
    try:
        wall_ms = (time.perf_counter() - start) * 1000.0
        sample, from_kernel = pick(wall_ms, handshake_rtt_ms(sock) if kernel_clock else None)
        return round(sample, 2), from_kernel, str(sock.getsockname()[0])
    finally:
        sock.close()


def _jitter(samples: list[float]) -> float | None:
    if len(samples) < 2:
        return None
    return round(statistics.fmean(abs(b - a) for a, b in zip(samples, samples[1:], strict=False)), 2)


async def probe_tcp(target: Target, spec: ProbeSpec, deadline: Deadline, *,
                    kernel_clock: bool = True) -> ProbeResult:
    """``spec.tcp_samples`` connects; OK if at least one connected.

    ``kernel_clock=False`` times every connect on the wall clock (for comparison).
    """
    kind = ProbeKind.TCP
    host = target.address or target.host
    family = family_of(target.address)
    if target.port is None:
        return ProbeResult(kind, target, Outcome.ERROR, "no port to connect to", family=family)
    if deadline.expired:
        return too_late(kind, target)
    try:
        sock_family, sockaddr = await socket_address(host, target.port, deadline, spec.step_timeout_s)
    except Exception as exc:
        return failure(kind, target, exc, family=family)
    family = family_of(sockaddr[0])
    samples: list[float] = []
    from_kernel = 0
    local: str | None = None
    attempted = 0
    last_error: BaseException | None = None
    for _ in range(max(1, spec.tcp_samples)):
        timeout = deadline.step(spec.step_timeout_s)
        if timeout <= 0:
            break
        attempted += 1
        try:
            sample, kernel_timed, local = await _connect_once(sock_family, sockaddr, timeout, kernel_clock)
        except Exception as exc:
            last_error = exc
            continue
        samples.append(sample)
        from_kernel += kernel_timed
    median = round(statistics.median(samples), 2) if samples else None
    detail: dict[str, DetailValue] = {
        "samples_ms": samples,
        "median_ms": median,
        "jitter_ms": _jitter(samples),
        "loss_pct": round(100.0 * (attempted - len(samples)) / attempted, 1) if attempted else None,
        "attempted": attempted,
        "rtt_source": rtt_source(from_kernel, len(samples)),
        "local_address": local,
        "remote_address": str(sockaddr[0]),
    }
    phases = {"connect": median} if median is not None else {}
    if samples:
        lost = attempted - len(samples)
        reason = f"connected {len(samples)} of {attempted} times" + (
            f" (last failure: {classify(last_error)[1]})" if lost and last_error else "")
        return ProbeResult(kind, target, Outcome.OK, reason, phases, detail, family)
    if last_error is None:
        return ProbeResult(kind, target, Outcome.TIMEOUT, "the check ran out of time before a connect",
                           {}, detail, family)
    outcome, reason = classify(last_error)
    if outcome is Outcome.TIMEOUT:
        outcome, reason = Outcome.CONNECT_TIMEOUT, "the connection attempt timed out"
    return ProbeResult(kind, target, outcome, reason, {}, detail, family)


async def probe_tcp_quiet(result: ProbeResult, spec: ProbeSpec, deadline: Deadline) -> ProbeResult:
    """``result`` (a TCP probe's) with its connects taken again: ``spec.tcp_samples`` of them at once,
    each on its own socket, so a confirmation costs one round trip, not one per sample. Meant for after
    the check's own burst of probes (see :func:`netcheck.assess.verdict.latency_to_confirm`). The first
    samples stay as they were; the new ones are ``quiet_samples_ms`` and ``quiet_median_ms`` (None when
    none connected)."""
    once = replace(spec, tcp_samples=1)
    again = await asyncio.gather(*(probe_tcp(result.target, once, deadline)
                                   for _ in range(max(1, spec.tcp_samples))))
    samples = [float(s) for r in again if isinstance(got := r.detail.get("samples_ms"), list)
               for s in got if isinstance(s, int | float)]
    detail = dict(result.detail)
    detail["quiet_samples_ms"] = samples
    detail["quiet_median_ms"] = round(statistics.median(samples), 2) if samples else None
    return replace(result, detail=detail)
