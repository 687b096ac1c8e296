"""How much CPU one probe costs: ``python -m tests.probes.cost`` (prints; not a test).

Runs batches of probes concurrently, as a check does, against the loopback
servers in this process's threads, and reports the CPU time of the event-loop
thread (``time.thread_time``: the servers' threads are not counted) per probe.
"""

from __future__ import annotations

import asyncio
import ssl
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import certifi

from netcheck.deadline import Deadline
from netcheck.models import ProbeResult, ProbeSpec, Target
from netcheck.probes import probe_dns, probe_http, probe_tcp, probe_tls, trust
from tests import servers
from tests.servers import V4, DnsServer, Pki, StreamServer


async def batch(label: str, count: int, make: Callable[[], Awaitable[ProbeResult]]) -> None:
    wall, cpu = time.perf_counter(), time.thread_time()
    results = await asyncio.gather(*(make() for _ in range(count)))
    cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    outcomes = sorted({str(r.outcome) for r in results})
    print(f"{label:<34} {count:>4} probes  {1000 * cpu / count:6.2f} ms CPU each  "
          f"{1000 * cpu:7.1f} ms CPU in all  {wall:5.2f} s wall  outcomes={outcomes}")


async def main() -> None:
    pki = Pki(Path(tempfile.mkdtemp()))
    spec = ProbeSpec(public_roots=pki.public_roots, system_roots=pki.system_roots)
    ctx = pki.server_context(pki.public, "tls.test")
    ok = servers.http_answer(200, "OK", [("Server", "bench")], b"x" * 2000)
    with DnsServer() as dns_server, StreamServer(servers.tls_only, V4, ctx) as tls, \
            StreamServer(ok, V4, ctx) as https, StreamServer(ok, V4) as http:
        dspec = ProbeSpec(nameservers=(V4,), nameserver_port=dns_server.port)
        cpu = time.thread_time()
        trust.public_context(spec)
        trust.system_context(spec)
        trust.http_context(spec)
        print(f"{'loading the test trust stores':<34} {1000 * (time.thread_time() - cpu):7.1f} ms CPU")
        await probe_http(Target("tls.test", 443), spec, Deadline.after(0))  # imports, first-use costs
        for _ in range(2):  # the second round shows the steady state
            await one_round(Deadline.after(60), spec, dspec, tls.port, https.port, http.port)
    cpu = time.thread_time()
    ssl.create_default_context(cafile=certifi.where())
    print(f"{'loading certifi (real public roots)':<34} {1000 * (time.thread_time() - cpu):7.1f} ms CPU")
    cpu = time.thread_time()
    ssl.create_default_context()
    print(f"{'loading the OS store':<34} {1000 * (time.thread_time() - cpu):7.1f} ms CPU")


async def one_round(d: Deadline, spec: ProbeSpec, dspec: ProbeSpec, tls: int, https: int, http: int) -> None:
    await batch("DNS (A+AAAA)", 100, lambda: probe_dns(Target("www.test"), dspec, d))
    await batch("TCP (3 connect samples)", 100,
                lambda: probe_tcp(Target("t.test", tls, address=V4), ProbeSpec(), d))
    await batch("TLS (one handshake)", 100, lambda: probe_tls(Target("tls.test", tls, address=V4), spec, d))
    await batch("HTTPS GET", 165, lambda: probe_http(Target("tls.test", https, "https", address=V4), spec, d))
    await batch("HTTP GET", 165, lambda: probe_http(Target("web.test", http, "http", address=V4), spec, d))
    print()


if __name__ == "__main__":
    asyncio.run(main())
