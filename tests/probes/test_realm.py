"""User realm discovery against a real loopback HTTPS double (trustme CA)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from netcheck.deadline import Deadline
from netcheck.models import Outcome, ProbeKind, ProbeResult, ProbeSpec, Target
from netcheck.probes.realm import parse_realm, probe_realm, realm_domain
from tests.probes.conftest import checked
from tests.realm_server import FED_HOST, RealmDouble
from tests.servers import closed_port, forward_proxy, serving

LOGIN_HOST = "login.example.test"
SECRET = "zq.private-person"  # the local part: must never reach a result
USER = f"{SECRET}@fabrikam.example"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("realm") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def realm(ca: trustme.CA) -> Iterator[RealmDouble]:
    with RealmDouble(ca, LOGIN_HOST) as server:
        yield server


def _target(port: int) -> Target:
    return Target(LOGIN_HOST, port=port, scheme="https", address="127.0.0.1", workloads=("identity",))


def _probe(port: int, ca_file: str | None, user: str = USER, seconds: float = 10.0,
           **spec: object) -> ProbeResult:
    s = ProbeSpec(system_roots=ca_file, **spec)  # type: ignore[arg-type]
    return checked(asyncio.run(probe_realm(_target(port), s, Deadline.after(seconds), user=user)))


def _assert_private(result: ProbeResult) -> None:
    everything = repr(result) + json.dumps(dict(result.detail)) + result.reason
    assert SECRET not in everything.lower()
    assert SECRET.replace(".", "%2E") not in everything


# --- answers ------------------------------------------------------------------------

def test_managed(realm: RealmDouble, ca_file: str) -> None:
    result = _probe(realm.port, ca_file)
    assert result.kind is ProbeKind.REALM
    assert result.outcome is Outcome.OK, result.reason
    d = result.detail
    assert d["account_type"] == "managed"
    assert d["domain"] == "fabrikam.example"
    assert d["federation_host"] is None and d["federation_url"] is None
    assert d["cloud_instance_name"] == "microsoftonline.com"
    assert d["endpoint"] == "userrealm"
    assert "managed" in result.reason
    # The question as MSAL asks it, to the right name.
    [seen] = realm.requests
    assert seen.path == f"/common/userrealm/{USER}"
    assert seen.query == {"api-version": ["1.0"]}
    assert seen.headers["accept"] == "application/json"
    assert seen.headers["host"] == f"{LOGIN_HOST}:{realm.port}"
    assert realm.sni == [LOGIN_HOST]
    assert {"connect", "tls", "processing"} <= set(result.phases)
    _assert_private(result)


def test_federated_names_the_sign_in_host(realm: RealmDouble, ca_file: str) -> None:
    realm.mode = "federated"
    result = _probe(realm.port, ca_file)
    d = result.detail
    assert result.outcome is Outcome.OK
    assert d["account_type"] == "federated"
    assert d["federation_host"] == FED_HOST
    assert d["federation_url"] == f"https://{FED_HOST}/adfs/services/trust/2005/usernamemixed"
    assert d["federation_metadata_host"] == FED_HOST
    assert d["federation_protocol"] == "WSTrust"
    assert FED_HOST in result.reason
    _assert_private(result)


def test_falls_back_to_getuserrealm_and_strips_the_user_from_auth_url(realm: RealmDouble,
                                                                      ca_file: str) -> None:
    realm.mode = "srf_only"
    result = _probe(realm.port, ca_file)
    d = result.detail
    assert result.outcome is Outcome.OK, result.reason
    assert d["endpoint"] == "getuserrealm"
    assert d["account_type"] == "federated"
    assert d["federation_host"] == FED_HOST
    assert d["federation_url"] == f"https://{FED_HOST}/adfs/ls/"
    first, second = realm.requests
    assert first.path.startswith("/common/userrealm/")
    assert second.path == "/getuserrealm.srf"
    assert second.query == {"login": [USER], "json": ["1"]}
    _assert_private(result)


def test_unknown_domain(realm: RealmDouble, ca_file: str) -> None:
    realm.mode = "unknown"
    result = _probe(realm.port, ca_file)
    assert result.outcome is Outcome.OK
    assert result.detail["account_type"] == "unknown"
    assert "does not know fabrikam.example" in result.reason


def test_a_bare_domain_is_enough(realm: RealmDouble, ca_file: str) -> None:
    result = _probe(realm.port, ca_file, user="Fabrikam.Example")
    assert result.outcome is Outcome.OK
    assert result.detail["domain"] == "fabrikam.example"
    assert realm.requests[0].path == "/common/userrealm/Fabrikam.Example"


# --- failures -----------------------------------------------------------------------

def test_404_is_no_realm_discovery(realm: RealmDouble, ca_file: str) -> None:
    realm.mode = "404"
    result = _probe(realm.port, ca_file)
    assert result.outcome is Outcome.HTTP_STATUS
    assert result.detail["http_status"] == 404
    assert "no realm discovery" in result.reason
    assert len(realm.requests) == 2  # the fallback was tried too
    _assert_private(result)


def test_malformed_json_is_an_unreadable_answer(realm: RealmDouble, ca_file: str) -> None:
    realm.mode = "malformed"
    result = _probe(realm.port, ca_file)
    assert result.outcome is Outcome.ERROR
    assert "unreadable answer" in result.reason
    _assert_private(result)


def test_slow_server_stops_at_the_deadline(realm: RealmDouble, ca_file: str) -> None:
    realm.mode = "slow"
    deadline = Deadline.after(1.0)
    result = checked(asyncio.run(probe_realm(_target(realm.port), ProbeSpec(system_roots=ca_file),
                                             deadline, user=USER)))
    assert result.outcome is Outcome.HTTP_NO_RESPONSE, result.reason
    assert deadline.expired
    assert "in time" in result.reason
    _assert_private(result)


def test_expired_deadline_asks_nothing(realm: RealmDouble, ca_file: str) -> None:
    result = _probe(realm.port, ca_file, seconds=0)
    assert result.outcome is Outcome.TIMEOUT
    assert realm.requests == []


def test_certificate_from_another_ca_is_untrusted(realm: RealmDouble, tmp_path: Path) -> None:
    other = tmp_path / "other.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    result = _probe(realm.port, str(other))
    assert result.outcome is Outcome.TLS_UNTRUSTED
    assert "not trusted" in result.reason


def test_wrong_name_in_the_certificate_is_a_tls_error(ca: trustme.CA, ca_file: str) -> None:
    with RealmDouble(ca, "other.example.test") as server:
        result = _probe(server.port, ca_file)
    assert result.outcome is Outcome.TLS_ERROR
    assert "does not match" in result.reason


def test_closed_port_is_refused(ca_file: str) -> None:
    result = _probe(closed_port(), ca_file)
    assert result.outcome is Outcome.CONNECT_REFUSED
    _assert_private(result)


def test_machine_trust_store_from_ssl_cert_file(realm: RealmDouble, ca_file: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", ca_file)
    assert _probe(realm.port, None).outcome is Outcome.OK


def test_unreadable_trust_store(realm: RealmDouble, tmp_path: Path) -> None:
    result = _probe(realm.port, str(tmp_path / "missing.pem"))
    assert result.outcome is Outcome.ERROR
    assert "trust store" in result.reason


def test_through_a_proxy(realm: RealmDouble, ca_file: str) -> None:
    with serving(forward_proxy({LOGIN_HOST: "127.0.0.1"})) as proxy:
        result = _probe(realm.port, ca_file, proxy=f"http://127.0.0.1:{proxy.port}")
    assert result.outcome is Outcome.OK, result.reason
    assert result.detail["via_proxy"] is True and result.detail["proxy_source"] == "configured"
    assert proxy.requests[0].startswith(f"CONNECT {LOGIN_HOST}:{realm.port} ")
    assert realm.sni == [LOGIN_HOST]


def test_environment_proxy_only_when_trust_env(realm: RealmDouble, ca_file: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    with serving(forward_proxy({LOGIN_HOST: "127.0.0.1"})) as proxy:
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
        direct = _probe(realm.port, ca_file, trust_env=False)
        assert proxy.requests == []
        proxied = _probe(realm.port, ca_file, trust_env=True)
    assert direct.outcome is proxied.outcome is Outcome.OK
    assert direct.detail["via_proxy"] is False
    assert proxied.detail["proxy_source"] == "environment"
    assert len(proxy.requests) == 1


def test_proxy_asking_for_credentials(realm: RealmDouble, ca_file: str) -> None:
    with serving(forward_proxy(require_auth=True)) as proxy:
        result = _probe(realm.port, ca_file, proxy=f"http://127.0.0.1:{proxy.port}")
    assert result.outcome is Outcome.HTTP_PROXY_AUTH
    assert realm.requests == []


def test_unreachable_proxy(realm: RealmDouble, ca_file: str) -> None:
    port = closed_port()
    result = _probe(realm.port, ca_file, proxy=f"http://someone:pw@127.0.0.1:{port}")
    assert result.outcome is Outcome.PROXY_UNREACHABLE
    assert result.detail["proxy"] == f"http://127.0.0.1:{port}"
    assert "pw" not in repr(result)


@pytest.mark.parametrize("user", ["", "   ", "@fabrikam.example", "alice@", "alice@localhost",
                                  "alice@fabrikam.example/../x", "alice smith@fabrikam.example",
                                  "alice@-bad-.example", "a?b@fabrikam.example"])
def test_bad_user_is_refused_without_echo(realm: RealmDouble, ca_file: str, user: str) -> None:
    result = _probe(realm.port, ca_file, user=user)
    assert result.outcome is Outcome.ERROR
    assert realm.requests == []
    if user.strip():
        assert user not in result.reason


@pytest.mark.parametrize("mode", ["managed", "federated", "srf_only", "unknown", "404", "malformed"])
def test_user_name_never_reaches_the_result(realm: RealmDouble, ca_file: str, mode: str) -> None:
    realm.mode = mode
    result = _probe(realm.port, ca_file)
    _assert_private(result)
    assert all(SECRET not in str(v).lower() for v in result.detail.values())


# --- parsing (pure) -------------------------------------------------------------------

def test_realm_domain() -> None:
    assert realm_domain("Alice@Contoso.COM") == "contoso.com"
    assert realm_domain("contoso.com") == "contoso.com"
    assert realm_domain("a@b@contoso.com") == "contoso.com"
    assert realm_domain("bücher.example") == "xn--bcher-kva.example"
    assert realm_domain("contoso") is None
    assert realm_domain("a@contoso..com") is None


def test_account_type_is_case_insensitive() -> None:
    realm = parse_realm(b'{"Account_Type": "FEDERATED", "federation_active_auth_url": '
                        b'"https://user:pw@STS.Contoso.com:8443/adfs/ls/?x=1#frag"}')
    assert realm is not None and realm.account_type == "federated"
    assert realm.federation_host == "sts.contoso.com"
    assert realm.federation_url == "https://sts.contoso.com:8443/adfs/ls/"


@pytest.mark.parametrize("body", [b"", b"[]", b'"Managed"', b"{}", b'{"ver": "1.0"}', b"\xff\xfe",
                                  b'{"account_type": 3}'])
def test_not_a_realm_answer(body: bytes) -> None:
    assert parse_realm(body) is None


def test_metadata_host_stands_in_when_there_is_no_sign_in_url() -> None:
    realm = parse_realm(b'{"account_type": "Federated", '
                        b'"federation_metadata_url": "https://mex.contoso.com/adfs/services/trust/mex", '
                        b'"federation_active_auth_url": "not a url"}')
    assert realm is not None
    assert realm.federation_host == "mex.contoso.com" and realm.federation_url is None


def test_byte_order_mark_is_accepted() -> None:
    realm = parse_realm('\ufeff{"NameSpaceType": "Managed"}'.encode())
    assert realm is not None and realm.account_type == "managed"
