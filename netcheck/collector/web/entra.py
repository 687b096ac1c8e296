"""The dashboard's "Sign in with Microsoft" pages (OpenID Connect with Entra ID, ``web.oidc``).

``/ui/login/entra`` starts a sign-in: a random state, nonce and PKCE verifier are kept in
``ui_oidc_states`` (the state as its SHA-256 digest) for ``STATE_FOR``, bound to this browser by a
random cookie (SameSite=Lax: the identity provider's redirect back is a cross-site navigation,
which carries no SameSite=Strict cookie), then the browser goes to the authorize endpoint.
``/ui/login/entra/callback`` takes the state once (a second use finds nothing; a refused one is spent too), checks the
browser's cookie and the expiry, redeems the code and opens the same database session as a
local sign-in. The session cookie is SameSite=Strict, so the browser is not redirected from
the callback (still the identity provider's cross-site navigation, it would not send the cookie)
but shown a short page that moves on by itself.

Every failure is the sign-in page with one sentence saying what to do, and a log line without
secrets.
"""

from __future__ import annotations

import datetime as dt
import hmac
import logging
import secrets
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from netcheck.collector import auth, store
from netcheck.collector.db import ui_oidc_states
from netcheck.collector.web import accounts
from netcheck.collector.web.oidc import Identity, Provider, SignInError, authorize_url, pkce_pair
from netcheck.collector.web.views import Dashboard, _safe_next

log = logging.getLogger(__name__)

STATE_FOR = dt.timedelta(minutes=10)
#: the longest page to return to that is kept (``ui_oidc_states.next``); a longer one returns to the overview
NEXT_MAX = 512
#: sign-ins under way at most (each kept ``STATE_FOR``); then new ones are refused until some end
MAX_PENDING = 10_000
_START_AGAIN = "Start the sign-in again from this page."


def begin(conn: Connection, state: str, browser: str, nonce: str, verifier: str, next_path: str,
          now: dt.datetime) -> SignInError | None:
    """Keep a new sign-in under way; refused (returned) while ``MAX_PENDING`` are (anyone may start
    one: the table stays bounded, and local accounts still sign in)."""
    conn.execute(sa.delete(ui_oidc_states).where(ui_oidc_states.c.expires_at <= now))
    if conn.execute(sa.select(sa.func.count()).select_from(ui_oidc_states)).scalar_one() >= MAX_PENDING:
        return SignInError("Too many sign-ins with Microsoft are under way just now: try again in a few minutes, "
                           "or sign in with a local account.", f"{MAX_PENDING} sign-ins under way", 503)
    conn.execute(sa.insert(ui_oidc_states).values(digest=auth.digest(state), browser=auth.digest(browser),
                                                  nonce=nonce, verifier=verifier, next=next_path,
                                                  expires_at=now + STATE_FOR))
    return None


def take(conn: Connection, state: str, browser: str, now: dt.datetime) -> tuple[str, str, str] | SignInError:
    """(nonce, verifier, next) of a sign-in under way, else why not; either way the state is spent
    (returned, not raised, so that the transaction that deletes it commits)."""
    digest = auth.digest(state)
    row = conn.execute(sa.select(ui_oidc_states).where(ui_oidc_states.c.digest == digest)).first()
    # deleting it is what makes it single use (two callbacks at once: one deletes the row)
    if row is None or conn.execute(sa.delete(ui_oidc_states).where(ui_oidc_states.c.digest == digest)).rowcount != 1:
        return SignInError("This sign-in link was already used or is unknown. " + _START_AGAIN,
                           "unknown or replayed state")
    if not hmac.compare_digest(row.browser, auth.digest(browser)):
        return SignInError("This sign-in was started in another browser. " + _START_AGAIN,
                           "the state belongs to another browser")
    if row.expires_at <= now:
        return SignInError("This sign-in took too long (over 10 minutes). " + _START_AGAIN, "expired state")
    return row.nonce, row.verifier, row.next


class EntraSignIn:
    """The Entra ID pages of one dashboard (``Dashboard.entra``)."""

    def __init__(self, dashboard: Dashboard, provider: Provider | None = None) -> None:
        self.dashboard = dashboard
        self.provider = provider or Provider(dashboard.settings)
        tls = dashboard.settings.tls
        self.cookie = "__Host-netcheck_oidc" if tls else "netcheck_oidc"

    def _forget(self, response: Response) -> None:
        """Drop the browser's sign-in cookie (its sign-in is over, one way or the other)."""
        response.delete_cookie(self.cookie, path="/", secure=self.dashboard.settings.tls, httponly=True,
                               samesite="lax")

    def _failed(self, request: Request, exc: SignInError) -> Response:
        log.warning("sign-in with Entra ID failed: %s", self.provider.scrub(exc.detail))
        response = self.dashboard.login_page(request, exc.message, exc.status)
        self._forget(response)
        return response

    async def start(self, request: Request) -> Response:
        try:
            found = await self.provider.discovery()
        except SignInError as exc:
            return self._failed(request, exc)
        state, nonce, browser = (secrets.token_urlsafe(32) for _ in range(3))
        verifier, challenge = pkce_pair()
        back = _safe_next(request.query_params.get("next"))
        back = back if len(back) <= NEXT_MAX else _safe_next(None)
        refused = await self.dashboard._db(begin, state, browser, nonce, verifier, back, store.utcnow())
        if refused is not None:
            return self._failed(request, refused)
        target = authorize_url(found, self.provider.client_id, self.dashboard.settings.oidc_callback, state, nonce,
                               challenge)
        response = self.dashboard._headers(RedirectResponse(target, 303))
        response.set_cookie(self.cookie, browser, max_age=int(STATE_FOR.total_seconds()), path="/",
                            secure=self.dashboard.settings.tls, httponly=True, samesite="lax")
        return response

    async def callback(self, request: Request) -> Response:
        q = request.query_params
        try:
            state, browser = q.get("state", ""), request.cookies.get(self.cookie, "")
            if not state or len(state) > 200:
                raise SignInError("The answer from Microsoft had no sign-in state. " + _START_AGAIN, "no state")
            if not browser:
                raise SignInError("This sign-in did not start in this browser, or took over 10 minutes. "
                                  + _START_AGAIN, "no browser cookie")
            taken = await self.dashboard._db(take, state, browser[:100], store.utcnow())
            if isinstance(taken, SignInError):
                raise taken
            nonce, verifier, next_path = taken
            if q.get("error"):
                said = " ".join(q.get("error_description", "").split())[:300]
                raise SignInError(f"Microsoft Entra ID did not sign you in ({q['error'][:60]}): "
                                  f"{said or 'no reason given'}", f"the provider said {q['error'][:60]}: {said}", 403)
            code = q.get("code", "")
            if not code or len(code) > 4096:
                raise SignInError("The answer from Microsoft had no authorization code. " + _START_AGAIN, "no code")
            who = await self.provider.redeem(code, verifier, nonce)
        except SignInError as exc:
            return self._failed(request, exc)
        cookie = await self.dashboard._db(self._open, who)
        log.info("%s signed in with Entra ID as %s", who.name, who.role)
        response = self.dashboard.render("signed_in.html", session=None, next=next_path)
        self.dashboard._set_cookie(response, self.dashboard.cookie, cookie, int(accounts.SESSION_FOR.total_seconds()))
        self._forget(response)
        return response

    @staticmethod
    def _open(conn: Connection, who: Identity) -> str:
        return accounts.sign_in_external(conn, who.subject, who.name, who.role, store.utcnow())[0]

    async def sign_out_url(self, session: accounts.Session) -> str | None:
        """The provider's end-session URL after signing out an Entra user, if configured."""
        if not self.dashboard.settings.oidc_sign_out_everywhere or not session.user.external:
            return None
        parts = urlsplit(self.dashboard.settings.oidc_callback)
        return await self.provider.sign_out_url(f"{parts.scheme}://{parts.netloc}/ui/login")

    def routes(self) -> list[Any]:
        return [Route("/login/entra", self.start, methods=["GET"]),
                Route("/login/entra/callback", self.callback, methods=["GET"])]

