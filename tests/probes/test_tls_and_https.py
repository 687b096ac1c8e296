"""A front door's TLS and HTTPS probes on one connection: the same two results, one connect and handshake."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from netcheck.deadline import Deadline
from netcheck.models import Outcome, ProbeKind, ProbeResult, ProbeSpec, Target
from netcheck.probes import trust
from netcheck.probes._connect import SocketConn
from netcheck.probes.http import probe_http, probe_tls_and_https
from netcheck.probes.tls import probe_tls
from tests.probes.conftest import Servers, checked, eventually, run
from tests.servers import INSPECTION_ORG, V4, Pki, StreamServer, closed_port


def spec_of(pki: Pki, **kw: object) -> ProbeSpec:
    return ProbeSpec(public_roots=pki.public_roots, system_roots=pki.system_roots, **kw)  # type: ignore[arg-type]


def targets(port: int, host: str = "tls.test") -> tuple[Target, Target]:
    return (Target(host, port=port, address=V4),
            Target(host, port=port, scheme="https", address=V4))


def pair(port: int, spec: ProbeSpec, seconds: float = 10.0) -> tuple[ProbeResult, ProbeResult]:
    tls, https = targets(port)
    a, b = asyncio.run(probe_tls_and_https(tls, https, spec, Deadline.after(seconds)))
    return checked(a), checked(b)


def apart(port: int, spec: ProbeSpec, seconds: float = 10.0) -> tuple[ProbeResult, ProbeResult]:
    tls, https = targets(port)
    return (run(probe_tls(tls, spec, Deadline.after(seconds))),
            run(probe_http(https, spec, Deadline.after(seconds))))


def connections(server: StreamServer, before: int, expected: int) -> bool:
    """``server`` accepted exactly ``expected`` connections since ``before`` (its thread counts them a
    little after the client has connected: wait for them, then a little longer for any more)."""
    return eventually(lambda: server.accepted - before >= expected) and \
        not eventually(lambda: server.accepted - before > expected, within=0.3)


def same(a: ProbeResult, b: ProbeResult) -> None:
    """The same result but for times and the connection's own facts."""
    ignore = {"local_address", "remote_address", "shared_connection"}
    assert (a.kind, a.target, a.outcome, a.reason, a.family) == (b.kind, b.target, b.outcome, b.reason, b.family)
    assert {k: v for k, v in a.detail.items() if k not in ignore} == \
        {k: v for k, v in b.detail.items() if k not in ignore}
    assert set(a.phases) == set(b.phases)


def test_a_publicly_trusted_front_door_is_one_connection(srv: Servers, pki: Pki) -> None:
    spec = spec_of(pki)
    before = srv.https_200.accepted
    tls, https = pair(srv.https_200.port, spec)
    assert connections(srv.https_200, before, 1)
    assert tls.kind is ProbeKind.TLS and tls.outcome is Outcome.OK and tls.detail["verified_by"] == "public"
    assert https.kind is ProbeKind.HTTP and https.outcome is Outcome.OK and https.detail["status"] == 200
    assert https.detail["shared_connection"] is True
    assert https.phases["connect"] == tls.phases["connect"] and https.phases["tls"] == tls.phases["tls"]
    assert {"processing", "transfer"} <= set(https.phases)
    assert https.detail["local_address"] == tls.detail["local_address"]
    assert f"Host: tls.test:{srv.https_200.port}" in srv.https_200.requests[-1]
    tls_alone, https_alone = apart(srv.https_200.port, spec)
    same(tls, tls_alone)
    same(https, https_alone)
    assert "shared_connection" not in https_alone.detail


@pytest.mark.parametrize("server", ["https_inspected", "https_untrusted", "https_wrong_name"])
def test_a_certificate_the_public_roots_reject_is_judged_by_each_probe_as_alone(
        srv: Servers, pki: Pki, server: str) -> None:
    """The HTTPS probe then verifies against the machine's store on a connection of its own."""
    port = getattr(srv, server).port
    tls, https = pair(port, spec_of(pki))
    tls_alone, https_alone = apart(port, spec_of(pki))
    same(tls, tls_alone)
    same(https, https_alone)
    assert "shared_connection" not in https.detail
    if server == "https_inspected":
        assert tls.outcome is Outcome.TLS_INSPECTED and tls.detail["inspected_by"] == INSPECTION_ORG
        assert https.outcome is Outcome.OK


def test_no_sharing_when_the_machine_store_lacks_a_public_root(srv: Servers, pki: Pki, tmp_path: Path) -> None:
    """The HTTPS probe's answer would differ from the TLS probe's handshake: each has its own connection."""
    machine = tmp_path / "machine.pem"
    machine.write_bytes(pki.inspection_root.cert_pem.bytes())
    spec = ProbeSpec(public_roots=pki.public_roots, system_roots=str(machine))
    assert not trust.machine_holds_public(spec)
    before = srv.https_200.accepted
    tls, https = pair(srv.https_200.port, spec)
    assert connections(srv.https_200, before, 2)
    assert tls.outcome is Outcome.OK and https.outcome is Outcome.TLS_UNTRUSTED
    assert "shared_connection" not in https.detail


def test_machine_holds_public(pki: Pki, tmp_path: Path) -> None:
    assert trust.machine_holds_public(spec_of(pki))
    reversed_ = ProbeSpec(public_roots=pki.system_roots, system_roots=pki.public_roots)
    assert not trust.machine_holds_public(reversed_)
    missing = ProbeSpec(public_roots=str(tmp_path / "none.pem"), system_roots=pki.system_roots)
    assert not trust.machine_holds_public(missing)


def test_a_refused_connect_is_each_probes_own_failure(pki: Pki) -> None:
    port = closed_port()
    tls, https = pair(port, spec_of(pki))
    tls_alone, https_alone = apart(port, spec_of(pki))
    same(tls, tls_alone)
    same(https, https_alone)
    assert https.outcome is Outcome.CONNECT_REFUSED and https.detail["shared_connection"] is True


@pytest.mark.timeout(30)
def test_a_handshake_that_never_finishes_times_out_once_for_both(srv: Servers, pki: Pki) -> None:
    spec = spec_of(pki, step_timeout_s=0.4)
    before = srv.silent.accepted
    tls, https = pair(srv.silent.port, spec)
    assert connections(srv.silent, before, 1)
    assert tls.outcome is Outcome.TIMEOUT and "TLS handshake" in tls.reason
    assert https.outcome is Outcome.TIMEOUT and "TLS handshake" in https.reason


def test_through_a_proxy_the_probes_go_apart(srv: Servers, pki: Pki) -> None:
    """The HTTPS probe goes through the proxy's tunnel, the TLS probe direct: nothing to share."""
    spec = spec_of(pki, proxy=f"http://{V4}:{srv.proxy.port}")
    tls, https = pair(srv.https_200.port, spec)
    assert tls.outcome is Outcome.OK and https.outcome is Outcome.OK and https.detail["via_proxy"] is True
    assert srv.proxy.requests[-1].startswith(f"CONNECT tls.test:{srv.https_200.port} HTTP/1.1")
    assert "shared_connection" not in https.detail


def test_different_addresses_go_apart(srv: Servers, pki: Pki) -> None:
    tls = Target("tls.test", port=srv.https_200.port, address=V4)
    https = Target("tls.test", port=srv.https_200.port, scheme="https", address="127.0.0.2")
    a, b = asyncio.run(probe_tls_and_https(tls, https, spec_of(pki), Deadline.after(10)))
    assert a.outcome is Outcome.OK and "shared_connection" not in b.detail


def test_a_deadline_already_passed(srv: Servers, pki: Pki) -> None:
    tls, https = pair(srv.https_200.port, spec_of(pki), seconds=0)
    assert tls.outcome is Outcome.TIMEOUT and https.outcome is Outcome.TIMEOUT


def test_a_loop_without_readiness_callbacks_shares_the_connection_too(srv: Servers, pki: Pki) -> None:
    """Windows' proactor loop has no ``add_reader``: the shared connection is read with ``sock_recv``."""
    from tests.probes.test_timing import run_without_add_reader

    tls, https = run_without_add_reader(probe_tls_and_https(*targets(srv.https_200.port), spec_of(pki),
                                                            Deadline.after(10)))
    assert tls.outcome is Outcome.OK and https.outcome is Outcome.OK and https.detail["shared_connection"] is True


def test_the_finished_goes_with_the_request(srv: Servers, pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    """TLS 1.3's client Finished waits for the request and goes in the same send (one packet less), as
    browsers send it: two sends for the pair's one connection, the ClientHello and Finished + GET."""
    sent: list[bytes] = []
    real = SocketConn.send

    async def counted(self: SocketConn, data: bytes) -> None:
        sent.append(data)
        await real(self, data)

    monkeypatch.setattr(SocketConn, "send", counted)
    tls, https = pair(srv.https_200.port, spec_of(pki))
    assert tls.detail["protocol"] == "TLSv1.3" and https.detail["status"] == 200
    assert len(sent) == 2
    sent.clear()
    alone = run(probe_http(targets(srv.https_200.port)[1], spec_of(pki), Deadline.after(10)))
    assert alone.outcome is Outcome.OK and len(sent) == 2
