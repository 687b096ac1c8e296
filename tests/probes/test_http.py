"""The HTTP probe: Microsoft's rule for answers, TLS, proxies, silence and refusal."""

from __future__ import annotations

from pathlib import Path

import pytest

from netcheck.deadline import Deadline
from netcheck.models import Outcome, ProbeKind, ProbeResult, ProbeSpec, Target
from netcheck.probes import PROBES
from netcheck.probes.http import choose_proxy, judge, looks_like_proxy, probe_http
from netcheck.proxy.settings import redact
from tests.probes.conftest import Servers, run
from tests.servers import INSPECTION_ORG, V4, V6, Pki, StreamServer, closed_port, http_answer


def get(server_port: int, spec: ProbeSpec | None = None, *, host: str = "web.test", scheme: str = "http",
        address: str | None = V4, seconds: float = 10.0) -> ProbeResult:
    target = Target(host, port=server_port, scheme=scheme, address=address)
    return run(probe_http(target, spec or ProbeSpec(), Deadline.after(seconds)))


def test_registered() -> None:
    assert PROBES[ProbeKind.HTTP] is probe_http


# --- direct, plain HTTP ----------------------------------------------------------------

def test_200(srv: Servers) -> None:
    r = get(srv.http_200.port)
    assert r.outcome is Outcome.OK and r.kind is ProbeKind.HTTP
    assert r.detail["status"] == 200 and r.detail["server"] == "test-web/1.0"
    assert r.detail["proxy"] is None and r.detail["via_proxy"] is False
    assert r.detail["remote_address"] == V4 and r.family == "ipv4"
    assert r.detail["received_bytes"] == len(b"hello\n")
    assert {"connect", "processing", "transfer"} <= set(r.phases)
    head = srv.http_200.requests[-1]
    assert head.startswith("GET / HTTP/1.1\r\n")
    assert f"Host: web.test:{srv.http_200.port}\r\n" in head  # the name, not the address
    assert "Connection: close" in head


def test_redirect_is_not_followed(srv: Servers) -> None:
    before = len(srv.http_301.requests)
    r = get(srv.http_301.port)
    assert r.outcome is Outcome.OK and r.detail["status"] == 301
    assert r.detail["location"] == "https://web.test/"
    assert len(srv.http_301.requests) == before + 1


def test_407_is_a_proxy_asking_for_credentials(srv: Servers) -> None:
    r = get(srv.http_407.port)
    assert r.outcome is Outcome.HTTP_PROXY_AUTH and r.detail["status"] == 407


def test_403_from_a_proxy(srv: Servers) -> None:
    r = get(srv.http_403_squid.port)
    assert r.outcome is Outcome.HTTP_PROXY_BLOCKED
    assert "squid/5.7" in r.reason and r.detail["server"] == "squid/5.7"


def test_403_with_via_header(srv: Servers) -> None:
    assert get(srv.http_403_via.port).outcome is Outcome.HTTP_PROXY_BLOCKED


def test_403_from_a_normal_server_is_an_answer(srv: Servers) -> None:
    r = get(srv.http_403_plain.port)
    assert r.outcome is Outcome.OK and r.detail["status"] == 403


def test_refused() -> None:
    r = get(closed_port())
    assert r.outcome is Outcome.CONNECT_REFUSED and r.detail["status"] is None


@pytest.mark.timeout(30)
def test_no_response_ends_by_the_deadline(srv: Servers) -> None:
    r = get(srv.silent.port, seconds=0.6)
    assert r.outcome is Outcome.HTTP_NO_RESPONSE
    assert "connect" in r.phases


@pytest.mark.timeout(30)
def test_no_response_ends_by_the_step_cap(srv: Servers) -> None:
    r = get(srv.silent.port, ProbeSpec(step_timeout_s=0.4), seconds=120)
    assert r.outcome is Outcome.HTTP_NO_RESPONSE


def test_deadline_already_passed(srv: Servers) -> None:
    assert get(srv.http_200.port, seconds=0).outcome is Outcome.TIMEOUT


def test_unsupported_scheme(srv: Servers) -> None:
    assert get(srv.http_200.port, scheme="ftp").outcome is Outcome.ERROR


def test_name_without_address(srv: Servers) -> None:
    import socket

    first = socket.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)[0][4][0]
    with StreamServer(http_answer(204, "No Content"), str(first)) as server:
        r = get(server.port, host="localhost", address=None)
    assert r.outcome is Outcome.OK and r.detail["status"] == 204
    assert r.detail["remote_address"] == first


def test_ipv6(need_ipv6: None) -> None:
    with StreamServer(http_answer(200, "OK"), V6) as server:
        r = get(server.port, address=V6)
        assert r.outcome is Outcome.OK and r.family == "ipv6"
        assert f"Host: web.test:{server.port}" in server.requests[-1]
        # An IPv6 literal as the name goes in brackets in Host.
        r = get(server.port, host=V6, address=None)
        assert r.outcome is Outcome.OK
        assert f"Host: [::1]:{server.port}" in server.requests[-1]


# --- HTTPS -------------------------------------------------------------------------------

def test_https_connects_to_the_address_with_the_name_as_sni(srv: Servers, pki: Pki) -> None:
    r = get(srv.https_200.port, ProbeSpec(system_roots=pki.system_roots), host="tls.test", scheme="https")
    assert r.outcome is Outcome.OK and r.detail["status"] == 200
    assert {"connect", "tls", "processing", "transfer"} <= set(r.phases)
    assert f"Host: tls.test:{srv.https_200.port}" in srv.https_200.requests[-1]


def test_a_loop_without_readiness_callbacks_gets_the_page(srv: Servers, pki: Pki) -> None:
    """Windows' proactor loop has no ``add_reader``: the request and TLS go through ``sock_recv`` /
    ``sock_sendall``, which every loop has."""
    from tests.probes.test_timing import run_without_add_reader

    for port, host, scheme in ((srv.https_200.port, "tls.test", "https"), (srv.http_200.port, "web.test", "http")):
        target = Target(host, port=port, scheme=scheme, address=V4)
        r = run_without_add_reader(probe_http(target, ProbeSpec(system_roots=pki.system_roots), Deadline.after(10)))
        assert r.outcome is Outcome.OK and r.detail["status"] == 200


def test_https_untrusted(srv: Servers, pki: Pki) -> None:
    r = get(srv.https_untrusted.port, ProbeSpec(system_roots=pki.system_roots), host="tls.test",
            scheme="https")
    assert r.outcome is Outcome.TLS_UNTRUSTED


def test_https_wrong_name(srv: Servers, pki: Pki) -> None:
    r = get(srv.https_wrong_name.port, ProbeSpec(system_roots=pki.system_roots), host="tls.test",
            scheme="https")
    assert r.outcome is Outcome.TLS_ERROR and "does not match" in r.reason


def test_https_uses_the_machine_store(srv: Servers, pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = ProbeSpec()
    assert get(srv.https_200.port, spec, host="tls.test", scheme="https").outcome is Outcome.TLS_UNTRUSTED
    monkeypatch.setenv("SSL_CERT_FILE", pki.system_roots)
    assert get(srv.https_200.port, spec, host="tls.test", scheme="https").outcome is Outcome.OK


@pytest.mark.timeout(30)
def test_https_handshake_that_never_finishes(srv: Servers, pki: Pki) -> None:
    r = get(srv.silent.port, ProbeSpec(system_roots=pki.system_roots), host="tls.test", scheme="https",
            seconds=0.6)
    assert r.outcome is Outcome.TIMEOUT and "TLS handshake" in r.reason
    r = get(srv.silent.port, ProbeSpec(system_roots=pki.system_roots, step_timeout_s=0.4), host="tls.test",
            scheme="https", seconds=120)
    assert r.outcome is Outcome.TIMEOUT and "TLS handshake" in r.reason


# --- proxies -----------------------------------------------------------------------------

def test_forward_proxy_for_http(srv: Servers) -> None:
    spec = ProbeSpec(proxy=f"http://{V4}:{srv.proxy.port}")
    r = get(srv.http_200.port, spec, host="web.test")
    assert r.outcome is Outcome.OK and r.detail["status"] == 200
    assert r.detail["via_proxy"] is True and r.detail["proxy"] == f"http://{V4}:{srv.proxy.port}"
    assert r.detail["proxy_source"] == "configured"
    assert "through the proxy" in r.reason
    assert srv.proxy.requests[-1].startswith(f"GET http://web.test:{srv.http_200.port}/ HTTP/1.1")


def test_connect_tunnel_for_https(srv: Servers, pki: Pki) -> None:
    spec = ProbeSpec(proxy=f"http://{V4}:{srv.proxy.port}", system_roots=pki.system_roots)
    r = get(srv.https_200.port, spec, host="tls.test", scheme="https")
    assert r.outcome is Outcome.OK and r.detail["via_proxy"] is True
    assert srv.proxy.requests[-1].startswith(f"CONNECT tls.test:{srv.https_200.port} HTTP/1.1")
    assert "tls" in r.phases


def test_tls_inspection_seen_through_a_proxy(srv: Servers, pki: Pki) -> None:
    """Through a proxy's CONNECT tunnel, a chain only a root added on this machine verifies is TLS inspection
    (the TLS probe goes direct and cannot see it); a publicly trusted chain is not."""
    spec = ProbeSpec(proxy=f"http://{V4}:{srv.proxy.port}", public_roots=pki.public_roots,
                     system_roots=pki.system_roots)
    r = get(srv.https_inspected.port, spec, host="tls.test", scheme="https")
    assert r.outcome is Outcome.OK and r.detail["tls_inspected"] is True
    assert r.detail["inspected_by"] == INSPECTION_ORG and "inspects TLS" in r.reason
    clean = get(srv.https_200.port, spec, host="tls.test", scheme="https")
    assert clean.outcome is Outcome.OK and "tls_inspected" not in clean.detail
    untrusted = get(srv.https_untrusted.port, spec, host="tls.test", scheme="https")
    assert untrusted.outcome is Outcome.TLS_UNTRUSTED and "tls_inspected" not in untrusted.detail
    direct = get(srv.https_inspected.port, ProbeSpec(public_roots=pki.public_roots, system_roots=pki.system_roots),
                 host="tls.test", scheme="https")
    assert direct.outcome is Outcome.OK and "tls_inspected" not in direct.detail  # the TLS probe's job


def test_proxy_that_wants_credentials(srv: Servers) -> None:
    spec = ProbeSpec(proxy=f"http://{V4}:{srv.proxy_407.port}")
    assert get(srv.http_200.port, spec).outcome is Outcome.HTTP_PROXY_AUTH
    assert get(443, spec, host="tls.test", scheme="https").outcome is Outcome.HTTP_PROXY_AUTH


def test_proxy_that_refuses_the_destination(srv: Servers) -> None:
    # The test proxy only reaches names it knows: it answers 403 for others.
    spec = ProbeSpec(proxy=f"http://{V4}:{srv.proxy.port}")
    r = get(443, spec, host="elsewhere.test", scheme="https")
    assert r.outcome is Outcome.HTTP_PROXY_BLOCKED


def test_proxy_unreachable() -> None:
    spec = ProbeSpec(proxy=f"http://{V4}:{closed_port()}")
    for scheme in ("http", "https"):
        r = get(443, spec, host="tls.test", scheme=scheme)
        assert r.outcome is Outcome.PROXY_UNREACHABLE, scheme
        assert r.detail["via_proxy"] is True
        assert "ran_out" not in r.detail  # refused: an answer, not a time that ran out


@pytest.mark.timeout(30)
def test_a_probe_that_ran_out_of_time_says_so(srv: Servers) -> None:
    """No answer in time is not a refusal: the verdict does not read it as a proxy that cannot be reached when
    the proxy accepted the check's other connections (netcheck.assess.verdict.reached_proxies)."""
    r = get(443, ProbeSpec(proxy=f"http://{V4}:{srv.silent.port}", step_timeout_s=0.4), host="tls.test",
            scheme="https", seconds=120)
    assert r.outcome is not Outcome.OK and r.detail["ran_out"] is True, r


def test_proxy_credentials_are_not_recorded(srv: Servers) -> None:
    spec = ProbeSpec(proxy=f"http://alice:s3cret@{V4}:{srv.proxy.port}")
    r = get(srv.http_200.port, spec)
    assert r.outcome is Outcome.OK
    assert "s3cret" not in repr(r) and "alice" not in repr(r)


def test_proxy_from_the_environment(srv: Servers, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://{V4}:{srv.proxy.port}")
    before = len(srv.proxy.requests)
    r = get(srv.http_200.port)
    assert r.outcome is Outcome.OK and r.detail["proxy_source"] == "environment"
    assert len(srv.proxy.requests) == before + 1
    # trust_env=False ignores it ...
    r = get(srv.http_200.port, ProbeSpec(trust_env=False))
    assert r.outcome is Outcome.OK and r.detail["via_proxy"] is False
    # ... and so does NO_PROXY for the host.
    monkeypatch.setenv("NO_PROXY", "web.test")
    r = get(srv.http_200.port)
    assert r.detail["via_proxy"] is False
    assert len(srv.proxy.requests) == before + 1


def test_all_proxy_and_missing_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALL_PROXY", "proxy.corp.example:3128")
    assert choose_proxy(ProbeSpec(), "https", "x.test") == ("http://proxy.corp.example:3128", "environment")
    monkeypatch.setenv("HTTPS_PROXY", "http://secure.corp.example:8080")
    assert choose_proxy(ProbeSpec(), "https", "x.test")[0] == "http://secure.corp.example:8080"
    assert choose_proxy(ProbeSpec(proxy="http://p:1"), "https", "x.test") == ("http://p:1", "configured")
    assert choose_proxy(ProbeSpec(trust_env=False), "https", "x.test") == (None, None)


def test_the_checks_decision_is_per_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check decides per URL (the scheme matters: HTTPS_PROXY is not HTTP_PROXY, and a PAC file sees
    it); a URL it decided is not decided again from the environment, and the source says who decided."""
    spec = ProbeSpec(proxy_map={"https://x.test/": ("http://p:1", "pac"), "http://x.test/": (None, "pac")})
    assert choose_proxy(spec, "https", "x.test", 443) == ("http://p:1", "pac")
    assert choose_proxy(spec, "http", "x.test", 80) == (None, None)
    monkeypatch.setenv("HTTP_PROXY", "http://e:1")
    assert choose_proxy(spec, "http", "X.test.", 80) == (None, None)
    assert choose_proxy(spec, "http", "y.test", 80) == ("http://e:1", "environment")
    assert choose_proxy(spec, "https", "y.test", 443) == (None, None)  # no HTTPS_PROXY: http's is not used


# --- the rule itself ---------------------------------------------------------------------

@pytest.mark.parametrize(("status", "headers", "outcome"), [
    (200, {}, Outcome.OK),
    (204, {"server": "squid/5.7"}, Outcome.OK),
    (301, {"location": "https://x/"}, Outcome.OK),
    (404, {}, Outcome.OK),
    (500, {}, Outcome.OK),
    (403, {"server": "Microsoft-IIS/10.0"}, Outcome.OK),
    (403, {"server": "squid/5.7"}, Outcome.HTTP_PROXY_BLOCKED),
    (403, {"server": "BlueCoat-Security-Appliance"}, Outcome.HTTP_PROXY_BLOCKED),
    (403, {"server": "Zscaler/6.2"}, Outcome.HTTP_PROXY_BLOCKED),
    (403, {"server": "McAfee Web Gateway 11"}, Outcome.HTTP_PROXY_BLOCKED),
    (403, {"server": "FortiGate"}, Outcome.HTTP_PROXY_BLOCKED),
    (403, {"via": "1.1 proxy"}, Outcome.HTTP_PROXY_BLOCKED),
    (403, {"x-squid-error": "ERR_ACCESS_DENIED 0"}, Outcome.HTTP_PROXY_BLOCKED),
    (403, {"proxy-agent": "gateway"}, Outcome.HTTP_PROXY_BLOCKED),
    (407, {}, Outcome.HTTP_PROXY_AUTH),
])
def test_judge(status: int, headers: dict[str, str], outcome: Outcome) -> None:
    got, reason = judge(status, "Reason", headers)
    assert got is outcome and str(status) in reason


def test_looks_like_proxy() -> None:
    assert looks_like_proxy({"server": "nginx"}) is None
    assert looks_like_proxy({"server": "squid"}) == "squid"
    assert looks_like_proxy({"via": "1.1 x"}) == "via: 1.1 x"


@pytest.mark.parametrize(("url", "shown"), [
    ("http://u:p@proxy:3128", "http://proxy:3128"), ("http://proxy:3128", "http://proxy:3128"),
    ("http://u@[::1]:8080/", "http://[::1]:8080/")])
def test_redact(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_unreadable_trust_store(srv: Servers, tmp_path: Path) -> None:
    r = get(srv.https_200.port, ProbeSpec(system_roots=str(tmp_path / "missing.pem")), host="tls.test",
            scheme="https")
    assert r.outcome is Outcome.ERROR and "trust store" in r.reason


def test_bad_proxy_url() -> None:
    r = get(80, ProbeSpec(proxy="ftp://proxy.test:21"))
    assert r.outcome is Outcome.ERROR


def test_a_socks_proxy_the_settings_chose_is_not_testable() -> None:
    """The PAC file said SOCKS: the laptop goes through it, netcheck cannot; neither pass nor fail."""
    port = closed_port()
    r = get(port, ProbeSpec(proxy_map={f"http://web.test:{port}/": ("socks5://192.0.2.9:1080", "pac")}))
    assert r.outcome is Outcome.NOT_TESTABLE and "SOCKS proxy socks5://192.0.2.9:1080" in (r.reason or "")
    assert r.detail["proxy_source"] == "pac" and r.detail["via_proxy"] is True
    assert get(port, ProbeSpec(proxy="socks5://192.0.2.9:1080")).outcome is Outcome.ERROR  # asked for by name


def test_sni_and_verification_use_the_name_not_the_address(pki: Pki) -> None:
    # The certificate names only tls.test (no IP): verifying it while connecting
    # to 127.0.0.1 works only if the name is sent as SNI and checked.
    ctx = pki.server_context(pki.public, "tls.test")
    seen: list[str | None] = []
    ctx.sni_callback = lambda _sock, name, _ctx: seen.append(name)
    with StreamServer(http_answer(200, "OK"), V4, ctx) as server:
        r = get(server.port, ProbeSpec(system_roots=pki.system_roots), host="tls.test", scheme="https")
    assert r.outcome is Outcome.OK
    assert seen == ["tls.test"]
