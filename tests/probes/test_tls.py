"""The TLS probe: public, inspected, untrusted, wrong name, expired, not TLS, silent."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtensionOID, NameOID

from netcheck.deadline import Deadline
from netcheck.models import Outcome, ProbeKind, ProbeResult, ProbeSpec, Target
from netcheck.probes import PROBES
from netcheck.probes.tls import MAX_NAMES, cert_facts, probe_tls
from tests.probes.conftest import NAMES, Servers, eventually, run
from tests.servers import (
    INSPECTION_ORG,
    PUBLIC_ORG,
    UNTRUSTED_ORG,
    V4,
    V6,
    Connection,
    Pki,
    StreamServer,
    closed_port,
    tls_only,
)


def spec_of(pki: Pki, **kw: object) -> ProbeSpec:
    return ProbeSpec(public_roots=pki.public_roots, system_roots=pki.system_roots, **kw)  # type: ignore[arg-type]


def probe(server: StreamServer, spec: ProbeSpec, host: str = "tls.test", seconds: float = 10.0,
          address: str = V4) -> ProbeResult:
    return run(probe_tls(Target(host, port=server.port, address=address), spec, Deadline.after(seconds)))


def test_registered() -> None:
    assert PROBES[ProbeKind.TLS] is probe_tls


def test_a_loop_without_readiness_callbacks_shakes_hands_too(srv: Servers, pki: Pki) -> None:
    """Windows' proactor loop has no ``add_reader``: the handshake reads and writes the socket with
    ``sock_recv`` / ``sock_sendall``, which every loop has (it used to fail every TLS probe there)."""
    from tests.probes.test_timing import run_without_add_reader

    for server, outcome in ((srv.tls_public, Outcome.OK), (srv.tls_inspected, Outcome.TLS_INSPECTED),
                            (srv.tls_untrusted, Outcome.TLS_UNTRUSTED)):
        r = run_without_add_reader(probe_tls(Target("tls.test", port=server.port, address=V4), spec_of(pki),
                                             Deadline.after(10)))
        assert r.outcome is outcome and r.detail["subject"] == "tls.test"


def test_publicly_trusted_in_one_handshake(srv: Servers, pki: Pki) -> None:
    before = srv.tls_public.accepted
    r = probe(srv.tls_public, spec_of(pki))
    assert r.outcome is Outcome.OK and r.kind is ProbeKind.TLS and r.family == "ipv4"
    d = r.detail
    assert d["protocol"] in ("TLSv1.2", "TLSv1.3")
    assert isinstance(d["cipher"], str) and d["cipher"]
    assert d["subject"] == "tls.test"
    assert d["issuer_org"] == PUBLIC_ORG and d["issuer"] == PUBLIC_ORG
    assert d["san"] == list(NAMES)
    assert d["not_after"] == "3000-01-01T00:00:00Z"
    assert d["verified_by"] == "public" and d["sni"] == "tls.test"
    assert "inspected_by" not in d
    assert set(r.phases) == {"connect", "tls"}
    assert eventually(lambda: srv.tls_public.accepted - before == 1)  # one handshake


def test_inspected_by_a_locally_added_root(srv: Servers, pki: Pki) -> None:
    r = probe(srv.tls_inspected, spec_of(pki))
    assert r.outcome is Outcome.TLS_INSPECTED
    assert r.reachable
    assert r.detail["inspected_by"] == INSPECTION_ORG
    assert r.reason.startswith(f"inspected by {INSPECTION_ORG}")
    assert r.detail["verified_by"] == "system"
    assert r.detail["issuer_org"] == INSPECTION_ORG
    assert r.detail["subject"] == "tls.test"


def test_untrusted_names_the_issuer(srv: Servers, pki: Pki) -> None:
    r = probe(srv.tls_untrusted, spec_of(pki))
    assert r.outcome is Outcome.TLS_UNTRUSTED
    assert UNTRUSTED_ORG in r.reason
    assert r.detail["issuer_org"] == UNTRUSTED_ORG and r.detail["verified_by"] is None


def test_wrong_hostname(srv: Servers, pki: Pki) -> None:
    r = probe(srv.tls_wrong_name, spec_of(pki))
    assert r.outcome is Outcome.TLS_ERROR
    assert "other.test" in r.reason and "tls.test" in r.reason
    assert r.detail["san"] == ["other.test", "www.other.test"]


def test_a_certificate_with_many_names_is_reported_by_its_first_few(pki: Pki) -> None:
    names = [f"n{i:02d}.other.test" for i in range(40)]
    with StreamServer(tls_only, tls=pki.server_context(pki.public, *names)) as server:
        r = probe(server, spec_of(pki))
        ok = probe(server, spec_of(pki), host="n39.other.test")
    assert r.outcome is Outcome.TLS_ERROR
    assert r.detail["san"] == names[:MAX_NAMES] and r.detail["san_count"] == 40
    assert f"the certificate is for {', '.join(names[:MAX_NAMES])} and {40 - MAX_NAMES} more, not tls.test" \
        in r.reason
    assert ok.outcome is Outcome.OK and ok.detail["san"] == names[:MAX_NAMES]  # every name still verifies


def test_right_name_on_the_same_server(srv: Servers, pki: Pki) -> None:
    assert probe(srv.tls_wrong_name, spec_of(pki), host="www.other.test").outcome is Outcome.OK


def test_expired(srv: Servers, pki: Pki) -> None:
    r = probe(srv.tls_expired, spec_of(pki))
    assert r.outcome is Outcome.TLS_ERROR
    assert "expired" in r.reason
    assert r.detail["not_after"] == "2001-01-01T00:00:00Z"


def test_server_that_does_not_speak_tls(srv: Servers, pki: Pki) -> None:
    r = probe(srv.not_tls, spec_of(pki))
    assert r.outcome is Outcome.TLS_ERROR
    assert "connect" in r.phases


def test_a_server_that_hangs_up_during_the_handshake(pki: Pki) -> None:
    def hang_up(c: Connection) -> None:
        c.sock.recv(1)  # the ClientHello's first byte; then the connection closes

    with StreamServer(hang_up) as server:
        r = probe(server, spec_of(pki))
    assert r.outcome is Outcome.CONNECTION_RESET and "tls" not in r.phases and "connect" in r.phases


def test_refused(pki: Pki) -> None:
    r = run(probe_tls(Target("tls.test", port=closed_port(), address=V4), spec_of(pki), Deadline.after(5)))
    assert r.outcome is Outcome.CONNECT_REFUSED


@pytest.mark.timeout(30)
def test_silent_server_ends_by_the_deadline(srv: Servers, pki: Pki) -> None:
    r = probe(srv.silent, spec_of(pki), seconds=0.6)
    assert r.outcome is Outcome.TIMEOUT
    assert "TLS handshake" in r.reason
    assert "connect" in r.phases


@pytest.mark.timeout(30)
def test_silent_server_ends_by_the_step_cap(srv: Servers, pki: Pki) -> None:
    r = probe(srv.silent, spec_of(pki, step_timeout_s=0.4), seconds=120)
    assert r.outcome is Outcome.TIMEOUT


def test_deadline_already_passed(srv: Servers, pki: Pki) -> None:
    assert probe(srv.tls_public, spec_of(pki), seconds=0).outcome is Outcome.TIMEOUT


def test_public_roots_from_the_environment(srv: Servers, pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NETCHECK_PUBLIC_ROOTS", pki.public_roots)
    r = probe(srv.tls_public, ProbeSpec(system_roots=pki.system_roots))
    assert r.outcome is Outcome.OK


def test_default_public_roots_are_mozillas(srv: Servers, pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    # The test CA is not in certifi's bundle: without public_roots even the
    # "public" test server counts as inspected (trusted only by this machine).
    monkeypatch.setenv("SSL_CERT_FILE", pki.system_roots)
    r = probe(srv.tls_public, ProbeSpec())
    assert r.outcome is Outcome.TLS_INSPECTED
    assert r.detail["inspected_by"] == PUBLIC_ORG


def test_machine_store_honours_ssl_cert_file(srv: Servers, pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = ProbeSpec(public_roots=pki.public_roots)
    monkeypatch.setenv("SSL_CERT_FILE", pki.public_roots)
    assert probe(srv.tls_inspected, spec).outcome is Outcome.TLS_UNTRUSTED
    monkeypatch.setenv("SSL_CERT_FILE", pki.system_roots)
    assert probe(srv.tls_inspected, spec).outcome is Outcome.TLS_INSPECTED


def test_unreadable_trust_store(srv: Servers, tmp_path: Path) -> None:
    r = probe(srv.tls_public, ProbeSpec(public_roots=str(tmp_path / "missing.pem")))
    assert r.outcome is Outcome.ERROR and "trust store" in r.reason


def test_the_machine_store_is_read_only_when_the_public_roots_reject(srv: Servers, pki: Pki,
                                                                      tmp_path: Path) -> None:
    """Loading the OS store costs ~25 ms of CPU: a publicly trusted server does not need it."""
    missing = str(tmp_path / "missing.pem")
    assert probe(srv.tls_public, ProbeSpec(public_roots=pki.public_roots, system_roots=missing)).outcome \
        is Outcome.OK
    r = probe(srv.tls_inspected, ProbeSpec(public_roots=pki.public_roots, system_roots=missing))
    assert r.outcome is Outcome.ERROR and "trust store" in r.reason


def test_ipv6(need_ipv6: None, pki: Pki) -> None:
    ctx = pki.server_context(pki.public, "tls.test")
    with StreamServer(tls_only, V6, ctx) as server:
        r = probe(server, spec_of(pki), address=V6)
    assert r.outcome is Outcome.OK and r.family == "ipv6" and r.detail["local_address"] == V6


# --- the certificate reader -------------------------------------------------------------

def test_cert_facts_match_cryptography() -> None:
    ca = trustme.CA(organization_name="Ünïcode Roots Ltd")
    leaf = ca.issue_cert("a.test", "*.b.test", "192.0.2.7", "2001:db8::7", common_name="a.test",
                         not_after=datetime.datetime(2049, 12, 31, 23, 59, 58))
    parsed = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
    facts = cert_facts(parsed.public_bytes(Encoding.DER))
    san = parsed.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    expected_san = [*san.get_values_for_type(x509.DNSName),
                    *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))]
    assert facts.subject == parsed.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert facts.issuer_org == "Ünïcode Roots Ltd"
    assert facts.issuer_cn is None
    assert sorted(facts.san) == sorted(expected_san)
    assert str(ipaddress.ip_address("2001:db8::7")) in facts.san
    assert facts.not_after == "2049-12-31T23:59:58Z"  # UTCTime before 2050


def test_cert_facts_generalized_time() -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("late.test", not_after=datetime.datetime(2051, 6, 1, 12, 0, 0))
    parsed = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
    assert cert_facts(parsed.public_bytes(Encoding.DER)).not_after == "2051-06-01T12:00:00Z"


@pytest.mark.parametrize("der", [b"", b"\x30", b"\x30\x85\x00\x00\x00\x00\x00", b"\x30\x03\x02\x01"])
def test_cert_facts_rejects_garbage(der: bytes) -> None:
    with pytest.raises((ValueError, IndexError)):
        cert_facts(der)


def test_sni_is_the_name(pki: Pki) -> None:
    ctx = pki.server_context(pki.public, "tls.test")
    seen: list[str | None] = []
    ctx.sni_callback = lambda _sock, name, _ctx: seen.append(name)
    with StreamServer(tls_only, V4, ctx) as server:
        r = probe(server, spec_of(pki))
    assert r.outcome is Outcome.OK and seen == ["tls.test"]
