"""Sign-in with Microsoft in Debian's headless Chromium (Playwright): the dashboard's button, the
local OpenID Connect provider (``tests.oidc_provider``, HTTPS on [::1], so another site) and its
"Accept" button, back
on the page first asked for with a session (its cookie is SameSite=Strict, which a redirect from
the provider would not carry: the collector's own page moves on), then sign-out. Every request goes
to the collector or the provider. Screenshots: ``build/screenshots/<backend>-entra-login.png`` and
``<backend>-entra-signed-in.png``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.browser import Browser
from tests.collector.conftest import check_log
from tests.collector.harness import CollectorProcess
from tests.collector.test_dashboard_browser import SHOTS, browser  # noqa: F401 - its Chromium fixture
from tests.collector.test_entra_sign_in import CLIENT_ID, SECRET, entra_env
from tests.oidc_provider import OidcProvider, User

pytestmark = pytest.mark.chromium


def test_sign_in_with_microsoft_in_chromium(browser: Browser, backend: str,  # noqa: F811 - the fixture
                                            new_database: Any, tmp_path: Path) -> None:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with OidcProvider(ca, CLIENT_ID, SECRET, host="::1") as idp:  # another site than the collector's
        idp.user = User(preferred_username="it.lead@contoso.example", roles=["Netcheck.ReadOnly"])
        idp.interactive = True
        env = entra_env(idp, ca_file, NETCHECK_OIDC_SIGN_OUT_EVERYWHERE="1")
        proc = CollectorProcess(new_database(), env=env, workdir=tmp_path)
        page = browser.new_page(ignore_https_errors=True)
        try:
            page.goto(f"{proc.url}/ui/sites")
            assert "/ui/login" in page.url
            SHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SHOTS / f"{backend}-entra-login.png"), full_page=True)
            page.click("#entra")
            page.click("#approve")  # on the provider's page, another site: its redirect back is cross-site
            page.wait_for_url(f"{proc.url}/ui/sites")
            assert "entra/it.lead@contoso.example (read-only)" in page.inner_text("header")
            page.screenshot(path=str(SHOTS / f"{backend}-entra-signed-in.png"), full_page=True)
            assert idp.count("/authorize") == 2 and idp.count("/token") == 1  # the page, "Accept"
            page.click("header button[type=submit]")  # sign out, of Microsoft too: through its end-session page
            page.wait_for_url(f"{proc.url}/ui/login")
            assert idp.count("/logout") == 1
            page.goto(f"{proc.url}/ui/")
            assert "/ui/login" in page.url
            assert all(u.startswith((proc.url, idp.origin)) for u in page.requests_seen), page.requests_seen
        finally:
            page.context.close()
            proc.stop()
    check_log(proc)
