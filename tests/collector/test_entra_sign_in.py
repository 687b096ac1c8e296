"""Sign-in with Entra ID (OpenID Connect, code flow with PKCE) on a real collector (SQLite and
PostgreSQL) against a real local OpenID Connect provider (``tests.oidc_provider``, HTTPS on
loopback): the happy path, and every way it must fail: state (unknown, replayed, another
browser), code (replayed), id token (audience, issuer, expiry, signature, unknown key, nonce,
algorithm), roles, the provider's own refusal or absence; the roles once signed in; sign-out."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
import trustme

from netcheck.collector.db import make_engine, migrate, ui_oidc_states
from netcheck.collector.settings import Settings
from netcheck.collector.web import entra, oidc
from netcheck.errors import ConfigError
from tests.collector.conftest import check_log, sql
from tests.collector.dashboard import admin_cli, csrf_of
from tests.collector.harness import CollectorProcess
from tests.oidc_provider import OidcProvider, User

CLIENT_ID = str(uuid.uuid4())
SECRET = "s3cr3t~" + uuid.uuid4().hex
GROUP = str(uuid.uuid4())


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("oidc") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture(scope="module")
def idp(ca: trustme.CA) -> Iterator[OidcProvider]:
    with OidcProvider(ca, CLIENT_ID, SECRET) as provider:
        yield provider


def entra_env(idp: OidcProvider, ca_file: Path, **more: str) -> dict[str, str]:
    return {"NETCHECK_OIDC_TENANT": idp.tenant, "NETCHECK_OIDC_CLIENT_ID": CLIENT_ID,
            "NETCHECK_OIDC_CLIENT_SECRET": SECRET, "NETCHECK_OIDC_AUTHORITY": idp.authority,
            "NETCHECK_OIDC_CA_BUNDLE": str(ca_file),
            "NETCHECK_OIDC_ROLES": f"Netcheck.Admin=admin,Netcheck.ReadOnly=read-only,group:{GROUP}=read-only",
            **more}


@pytest.fixture(scope="module")
def collector(new_database: Any, idp: OidcProvider, ca_file: Path,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    proc = CollectorProcess(new_database(), env=entra_env(idp, ca_file), workdir=tmp_path_factory.mktemp("entra"))
    yield proc
    proc.stop()
    check_log(proc)
    assert SECRET not in proc.log()


@pytest.fixture(autouse=True)
def _fresh_user(idp: OidcProvider) -> None:
    idp.user = User()
    idp.deny = False


@pytest.fixture
def browser(ca_file: Path, collector: CollectorProcess) -> Iterator[httpx.Client]:
    """An HTTP client as a browser: a cookie jar, trusting the provider's CA."""
    with httpx.Client(base_url=collector.url, verify=ssl.create_default_context(cafile=str(ca_file)),
                      timeout=30.0) as client:
        yield client


def start(client: httpx.Client) -> str:
    """The provider's answer (the collector's callback URL) to a sign-in started in ``client``."""
    begun = client.get("/ui/login/entra", params={"next": "/ui/devices"})
    assert begun.status_code == 303, begun.text
    asked = parse_qs(urlsplit(begun.headers["location"]).query)
    assert asked["code_challenge_method"] == ["S256"] and asked["response_mode"] == ["query"]
    assert len(asked["code_challenge"][0]) == 43 and asked["nonce"][0] and asked["state"][0]
    answered = client.get(begun.headers["location"])
    assert answered.status_code == 302, answered.text
    return answered.headers["location"]


def finish(client: httpx.Client, callback: str) -> httpx.Response:
    return client.get(callback)


def sign_in(client: httpx.Client) -> httpx.Response:
    return finish(client, start(client))


def refused(response: httpx.Response, status: int, words: str) -> None:
    assert response.status_code == status, response.text[:2000]
    assert "Traceback" not in response.text
    message = re.search(r'<p class="error" role="alert">(.*?)</p>', response.text, re.S)
    assert message is not None, response.text[:2000]
    assert words in message.group(1), message.group(1)
    assert "Sign in with Microsoft" in response.text  # a way to start again


def signed_in_as(client: httpx.Client, name: str, role: str) -> str:
    page = client.get("/ui/devices")
    assert page.status_code == 200, page.text[:500]
    assert f"{name} ({role})" in page.text
    return csrf_of(page.text)


def test_the_login_page_offers_microsoft(browser: httpx.Client) -> None:
    page = browser.get("/ui/login")
    assert 'href="/ui/login/entra?next=%2Fui%2F"' in page.text


def test_sign_in_with_microsoft_opens_a_dashboard_session(browser: httpx.Client, idp: OidcProvider,
                                                          collector: CollectorProcess) -> None:
    idp.user = User(preferred_username="alice@contoso.example", roles=["Netcheck.Admin"])
    done = sign_in(browser)
    assert done.status_code == 200
    assert '<meta http-equiv="refresh" content="0; url=/ui/devices">' in done.text
    assert "netcheck_oidc" not in str(browser.cookies)  # the sign-in's cookie is gone
    signed_in_as(browser, "entra/alice@contoso.example", "admin")
    rows = sql(collector.database_url, "SELECT name, role, subject, password_hash FROM ui_users WHERE subject = :s",
               s=f"entra:{idp.tenant}:{idp.user.oid}")
    assert [tuple(r) for r in rows] == [("entra/alice@contoso.example", "admin", f"entra:{idp.tenant}:{idp.user.oid}",
                                         "!external")]
    assert sql(collector.database_url, "SELECT count(*) FROM ui_oidc_states")[0][0] == 0  # taken once, gone
    # the account cannot be used with a password, whatever is typed
    form = browser.get("/ui/login")
    done = browser.post("/ui/login", data={"csrf": csrf_of(form.text), "name": "entra/alice@contoso.example",
                                           "password": "!external", "next": "/ui/"})
    assert done.status_code == 401


def test_the_role_follows_entra_at_each_sign_in(browser: httpx.Client, idp: OidcProvider,
                                               collector: CollectorProcess) -> None:
    idp.user = User(preferred_username="bob@contoso.example", roles=["Netcheck.Admin"])
    sign_in(browser)
    signed_in_as(browser, "entra/bob@contoso.example", "admin")
    idp.user.roles = []
    idp.user.groups = [str(uuid.uuid4()), GROUP]
    sign_in(browser)
    signed_in_as(browser, "entra/bob@contoso.example", "read-only")
    listed = admin_cli(collector.database_url, "user", "list")
    assert "entra/bob@contoso.example" in listed.stdout and "read-only" in listed.stdout
    assert admin_cli(collector.database_url, "user", "remove", "entra/bob@contoso.example").returncode == 0
    assert browser.get("/ui/").status_code == 303  # its session ended with it


def test_read_only_cannot_do_admin_actions(browser: httpx.Client, idp: OidcProvider) -> None:
    idp.user = User(preferred_username="reader@contoso.example", roles=["Netcheck.ReadOnly"])
    sign_in(browser)
    csrf = signed_in_as(browser, "entra/reader@contoso.example", "read-only")
    made = browser.post("/ui/sweeps", data={"csrf": csrf, "expires": "48h"})
    assert made.status_code == 403 and "needs the admin role" in made.text
    made = browser.post("/ui/admin/secrets", data={"csrf": csrf})
    assert made.status_code == 403


def test_a_user_without_a_role_is_refused(browser: httpx.Client, idp: OidcProvider) -> None:
    idp.user = User(preferred_username="eve@contoso.example", roles=["Something.Else"], groups=[str(uuid.uuid4())])
    refused(sign_in(browser), 403, "eve@contoso.example has no role in the netcheck dashboard")
    assert browser.get("/ui/").status_code == 303  # no session


def test_too_many_groups_says_so(browser: httpx.Client, idp: OidcProvider) -> None:
    idp.user = User(roles=[])
    with idp.misbehaving(_claim_names={"groups": "src1"}):
        refused(sign_in(browser), 403, "too many groups")


def test_an_unknown_state_is_refused(browser: httpx.Client) -> None:
    callback = start(browser)
    forged = re.sub(r"state=[^&]+", "state=forged", callback)
    refused(finish(browser, forged), 400, "already used or is unknown")


def test_a_state_is_used_once(browser: httpx.Client) -> None:
    callback = start(browser)
    binding = browser.cookies["netcheck_oidc"]
    assert finish(browser, callback).status_code == 200
    refused(finish(browser, callback), 400, "did not start in this browser")  # its cookie is gone
    browser.cookies.set("netcheck_oidc", binding)  # and with it back, the state is spent
    refused(finish(browser, callback), 400, "already used or is unknown")


def test_a_state_from_another_browser_is_refused(browser: httpx.Client, collector: CollectorProcess,
                                                 ca_file: Path) -> None:
    callback = start(browser)
    with httpx.Client(base_url=collector.url, timeout=30.0) as other:
        other.cookies.set("netcheck_oidc", "not-the-same")
        refused(other.get(callback), 400, "started in another browser")
        refused(other.get(callback), 400, "already used")  # and it is spent
    with httpx.Client(base_url=collector.url, timeout=30.0) as bare:  # no cookie at all
        refused(bare.get(start(browser)), 400, "did not start in this browser")


def test_a_replayed_code_is_refused(browser: httpx.Client) -> None:
    first = start(browser)
    assert finish(browser, first).status_code == 200
    code = parse_qs(urlsplit(first).query)["code"][0]
    second = start(browser)  # a fresh state, the old code: the provider refuses to redeem it again
    replay = re.sub(r"code=[^&]+", f"code={code}", second)
    refused(finish(browser, replay), 502, "could not be trusted")


def test_a_long_return_path_returns_to_the_overview(browser: httpx.Client) -> None:
    begun = browser.get("/ui/login/entra", params={"next": "/ui/devices?name=" + "x" * 600})
    done = browser.get(browser.get(begun.headers["location"]).headers["location"])
    assert '<meta http-equiv="refresh" content="0; url=/ui/">' in done.text


@pytest.mark.parametrize(("claims", "signing"), [
    ({"aud": str(uuid.uuid4())}, "RS256"),  # another app's token
    ({"iss": f"https://127.0.0.1:1/{uuid.uuid4()}/v2.0"}, "RS256"),  # another issuer
    ({"exp": 1_000_000_000, "iat": 999_990_000, "nbf": 999_990_000}, "RS256"),  # expired
    ({"nbf": 4_000_000_000}, "RS256"),  # not yet valid
    ({"nonce": "another-sign-in"}, "RS256"),
    ({}, "wrong-key"),  # the key id of the provider's key, another key's signature
    ({}, "unknown-kid"),  # not in the key set, even read again
    ({}, "none"),
    ({}, "HS256"),  # keyed with the public key
], ids=["audience", "issuer", "expired", "not-yet", "nonce", "signature", "unknown-key", "alg-none", "alg-hs256"])
def test_a_bad_id_token_is_refused(browser: httpx.Client, idp: OidcProvider, collector: CollectorProcess,
                                   claims: dict[str, Any], signing: str) -> None:
    with idp.misbehaving(signing=signing, **claims):
        refused(sign_in(browser), 400, "could not be trusted")
    assert browser.get("/ui/").status_code == 303
    last = collector.log().rstrip().splitlines()[-1]  # why, in one line, without the token
    assert "sign-in with Entra ID failed: the id token" in last and "eyJ" not in last, last


def test_a_token_of_another_tenant_is_refused(browser: httpx.Client, idp: OidcProvider) -> None:
    with idp.misbehaving(tid=str(uuid.uuid4())):
        refused(sign_in(browser), 400, "could not be trusted")


def test_keys_rolled_over_are_read_again(browser: httpx.Client, idp: OidcProvider) -> None:
    assert sign_in(browser).status_code == 200
    before = idp.count("/keys")
    idp.rotate()
    assert sign_in(browser).status_code == 200
    assert idp.count("/keys") == before + 1
    assert sign_in(browser).status_code == 200
    assert idp.count("/keys") == before + 1  # kept until the next rollover
    assert idp.count("/openid-configuration") <= 2  # discovery is cached (once per worker)


def test_the_provider_refusing_ends_on_a_clear_page(browser: httpx.Client, idp: OidcProvider) -> None:
    idp.deny = True
    done = sign_in(browser)
    refused(done, 403, "did not sign you in (access_denied)")
    assert "&lt;b&gt;is&lt;/b&gt;" in done.text  # the provider's words, as text


def test_another_user_with_a_name_already_taken(browser: httpx.Client, idp: OidcProvider) -> None:
    idp.user = User(preferred_username="carol@contoso.example")
    sign_in(browser)
    signed_in_as(browser, "entra/carol@contoso.example", "admin")
    idp.user = User(preferred_username="carol@contoso.example")  # another object id: another person
    sign_in(browser)
    signed_in_as(browser, f"entra/{idp.user.oid}", "admin")


def test_sign_out_ends_the_session(browser: httpx.Client, idp: OidcProvider) -> None:
    idp.user = User(preferred_username="dave@contoso.example")
    sign_in(browser)
    csrf = signed_in_as(browser, "entra/dave@contoso.example", "admin")
    out = browser.post("/ui/logout", data={"csrf": csrf})
    assert out.status_code == 303 and out.headers["location"] == "/ui/login"
    assert browser.get("/ui/").status_code == 303


def test_sign_out_everywhere_and_a_wrong_secret(new_database: Any, idp: OidcProvider, ca_file: Path,
                                                tmp_path: Path) -> None:
    env = entra_env(idp, ca_file, NETCHECK_OIDC_SIGN_OUT_EVERYWHERE="1")
    proc = CollectorProcess(new_database(), env=env, workdir=tmp_path)
    try:
        with httpx.Client(base_url=proc.url, verify=ssl.create_default_context(cafile=str(ca_file)),
                          timeout=30.0) as client:
            sign_in(client)
            csrf = signed_in_as(client, f"entra/{idp.user.preferred_username}", "admin")
            out = client.post("/ui/logout", data={"csrf": csrf})
            back = urlencode({"post_logout_redirect_uri": f"{proc.url}/ui/login"})
            target = f"{idp.issuer.removesuffix('/v2.0')}/oauth2/v2.0/logout?{back}"
            assert out.status_code == 200 and f'content="0; url={target}"' in out.text
            assert client.get("/ui/").status_code == 303
    finally:
        proc.stop()
    check_log(proc)
    wrong = f"wrong-{SECRET}"
    proc = CollectorProcess(new_database(), env={**env, "NETCHECK_OIDC_CLIENT_SECRET": wrong}, workdir=tmp_path)
    try:
        with httpx.Client(base_url=proc.url, verify=ssl.create_default_context(cafile=str(ca_file)),
                          timeout=30.0) as client:
            refused(sign_in(client), 502, "could not be trusted")
    finally:
        proc.stop()
    check_log(proc)
    assert "invalid_client" in proc.log() and "make a new one in Entra ID" in proc.log()
    assert wrong not in proc.log()


def test_an_unreachable_provider_ends_on_a_clear_page(new_database: Any, idp: OidcProvider, ca_file: Path,
                                                     tmp_path: Path) -> None:
    env = entra_env(idp, ca_file, NETCHECK_OIDC_AUTHORITY="https://127.0.0.1:9/{tenant}/v2.0")
    proc = CollectorProcess(new_database(), env=env, workdir=tmp_path)
    try:
        with httpx.Client(base_url=proc.url, timeout=30.0) as client:
            refused(client.get("/ui/login/entra"), 502, "cannot be reached")
            assert client.get("/ui/login").status_code == 200  # local accounts still work
    finally:
        proc.stop()
    check_log(proc)
    assert "ConnectError" in proc.log()


def test_a_failed_discovery_is_not_asked_again_at_once(new_database: Any, idp: OidcProvider, ca_file: Path,
                                                       tmp_path: Path) -> None:
    proc = CollectorProcess(new_database(), env=entra_env(idp, ca_file, NETCHECK_OIDC_TENANT=str(uuid.uuid4())),
                            workdir=tmp_path)  # a tenant the provider does not know: 404
    try:
        with httpx.Client(base_url=proc.url, timeout=30.0) as client:
            before = idp.count("/openid-configuration")
            refused(client.get("/ui/login/entra"), 502, "could not be trusted")
            refused(client.get("/ui/login/entra"), 502, "could not be trusted")
            assert idp.count("/openid-configuration") == before + 1
    finally:
        proc.stop()
    check_log(proc)
    assert "HTTP 404" in proc.log()


def test_the_secret_is_required_at_start(idp: OidcProvider, ca_file: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in entra_env(idp, ca_file).items() if k != "NETCHECK_OIDC_CLIENT_SECRET"}
    with pytest.raises(RuntimeError, match="client secret is missing"):
        CollectorProcess(f"sqlite:///{tmp_path}/c.db", env=env, workdir=tmp_path)


@pytest.mark.parametrize(("changes", "message"), [
    ({"oidc_tenant": "t"}, "needs both oidc_tenant and oidc_client_id"),
    ({"oidc_tenant": "common", "oidc_client_id": "c"}, "one tenant only"),
    ({"oidc_tenant": "contoso.example", "oidc_client_id": "c", "oidc_authority": "http://x/{tenant}"}, "https://"),
    ({"oidc_tenant": "contoso.example", "oidc_client_id": "c", "oidc_roles": "Admin=root"}, "is not a pair"),
    ({"oidc_tenant": "contoso.example", "oidc_client_id": "c", "oidc_roles": ""}, "grants no role"),
    ({"oidc_tenant": "contoso.example", "oidc_client_id": "c", "oidc_redirect_uri": "http://example.com/cb"},
     "must be https://"),
    ({"oidc_tenant": "contoso.example", "oidc_client_id": "c", "host": "0.0.0.0"}, "set oidc_redirect_uri"),
])
def test_settings_are_checked_at_load(changes: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        Settings(**changes)  # type: ignore[arg-type]


def test_the_role_map_reads_app_roles_and_groups() -> None:
    settings = Settings(oidc_tenant="contoso.example", oidc_client_id="c",
                        oidc_roles=f" Netcheck.Admin = admin , group:{GROUP}=read-only,")
    assert settings.oidc_role_map() == {"role:Netcheck.Admin": "admin", f"group:{GROUP}": "read-only"}
    assert settings.oidc_issuer_base == "https://login.microsoftonline.com/contoso.example/v2.0"
    assert settings.oidc_callback == "http://127.0.0.1:8443/ui/login/entra/callback"


TENANT = str(uuid.uuid4())
_DOC = {"issuer": f"https://login.microsoftonline.com/{TENANT}/v2.0",
        "authorization_endpoint": f"https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/authorize",
        "token_endpoint": f"https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token",
        "jwks_uri": f"https://login.microsoftonline.com/{TENANT}/discovery/v2.0/keys"}


@pytest.mark.parametrize(("tenant", "changes", "message"), [
    (TENANT, {}, None),
    ("contoso.example", {}, None),  # a domain: discovery names the tenant's id
    (TENANT, {"issuer": "https://login.microsoftonline.com/{tenantid}/v2.0"}, "multi-tenant"),
    (TENANT, {"issuer": f"https://login.microsoftonline.com/{uuid.uuid4()}/v2.0"}, "not the configured tenant"),
    ("contoso.example", {"issuer": f"https://evil.example/{TENANT}/v2.0"}, "not at the configured authority"),
    (TENANT, {"token_endpoint": "http://login.microsoftonline.com/t"}, "token_endpoint is missing or not an https"),
    (TENANT, {"jwks_uri": None}, "jwks_uri is missing"),
])
def test_discovery_must_be_the_tenants(tenant: str, changes: dict[str, Any], message: str | None) -> None:
    settings = Settings(oidc_tenant=tenant, oidc_client_id="c")
    doc = {**_DOC, **changes}
    if message is None:
        found = oidc.parse_discovery(doc, settings)
        assert found.issuer == _DOC["issuer"] and found.end_session_endpoint is None
    else:
        with pytest.raises(ValueError, match=re.escape(message)):
            oidc.parse_discovery(doc, settings)


def test_pkce_pair_is_s256() -> None:
    verifier, challenge = oidc.pkce_pair()
    assert 43 <= len(verifier) <= 128 and re.fullmatch(r"[A-Za-z0-9_-]+", verifier)
    digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    assert challenge == digest and oidc.pkce_pair()[0] != verifier


def test_sign_ins_under_way_are_bounded(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/c.db")
    try:
        migrate(engine)
        now = dt.datetime.now(dt.UTC)
        with engine.begin() as conn:
            conn.execute(ui_oidc_states.insert(), [
                {"digest": f"{i:064x}", "browser": "b", "nonce": "n", "verifier": "v", "next": "/ui/",
                 "expires_at": now + dt.timedelta(minutes=5)} for i in range(entra.MAX_PENDING - 1)])
            conn.execute(ui_oidc_states.insert(), [{"digest": "old", "browser": "b", "nonce": "n", "verifier": "v",
                                                    "next": "/ui/", "expires_at": now}])  # expired: dropped
            assert entra.begin(conn, "s1", "b", "n", "v", "/ui/", now) is None
            refused = entra.begin(conn, "s2", "b", "n", "v", "/ui/", now)
            assert refused is not None and refused.status == 503 and "local account" in refused.message
            assert entra.begin(conn, "s3", "b", "n", "v", "/ui/", now + entra.STATE_FOR) is None  # they expired
    finally:
        engine.dispose()
