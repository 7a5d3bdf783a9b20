"""Browser sign-in for the console: a server-side session behind an HttpOnly cookie, and CSRF.

The API keeps its bearer tokens; these cookies are read by `/ui` routes only, so a page's
cookie never authorises an API call (and a stolen API token never opens the console).

CSRF: every state-changing `/ui` request must carry the session's synchronizer token, as the
`csrf_token` form field (plain forms, no JavaScript) or the `X-CSRF-Token` header (htmx sends it
from the page's `hx-headers`). The login form, before there is a session, is protected the same
way by a short-lived token in a cookie of its own (signed double submit: the token carries this
server's signature and time), so a third-party page cannot sign a browser in as someone else.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated
from urllib.parse import quote, urlsplit

from fastapi import Depends, Request
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from app.auth import policy
from app.auth.policy import Principal
from app.core.actors import Actor
from app.core.config import Settings
from app.core.deps import ClockDep, SessionDep
from app.core.logging import name_actor
from app.core.tokens import hash_token, new_long_token
from app.ui.models import UiSession
from app.users.models import Role, User

SESSION_COOKIE = "ims_session"
LOGIN_CSRF_COOKIE = "ims_login_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
LOGIN_CSRF_SECONDS = 3600


class LoginRequired(Exception):
    def __init__(self, next_path: str) -> None:
        self.next_path = next_path


class CsrfFailed(Exception):
    pass


class AdminRequired(Exception):
    pass


@dataclass
class Browser:
    """The signed-in user of a console request, with their session's CSRF token."""

    user: User  # for the request's own calls; the page reads the copies below
    user_id: int
    full_name: str
    is_admin: bool
    session_id: int
    csrf_token: str
    timezone: str = "UTC"  # the user's IANA zone: the console shows times in it
    # No private team hides anything from the user (read with the session): lists need no filter.
    sees_all: bool = False


def principal_of(browser: Browser) -> Principal:
    """The browser's user as the authorization policy sees them (from the copies taken at
    sign-in check, which a rollback does not expire)."""
    role = Role.admin.value if browser.is_admin else Role.user.value
    return Principal(
        user=browser.user, role=role, user_id=browser.user_id, sees_all=browser.sees_all
    )


def secure_cookies(settings: Settings) -> bool:
    return settings.is_production or settings.public_base_url.startswith("https://")


def set_cookie(
    response: Response, settings: Settings, name: str, value: str, *, max_age: int
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/ui",
        httponly=True,
        secure=secure_cookies(settings),
        samesite="lax",
    )


def clear_cookie(response: Response, settings: Settings, name: str) -> None:
    response.delete_cookie(
        name, path="/ui", httponly=True, secure=secure_cookies(settings), samesite="lax"
    )


async def start(
    session: AsyncSession, *, user: User, settings: Settings, now: datetime
) -> tuple[str, UiSession]:
    """A new session for `user`; returns the cookie's token (shown once, never stored)."""
    await session.execute(delete(UiSession).where(UiSession.expires_at <= now))
    token, token_hash = new_long_token()
    row = UiSession(
        token_hash=token_hash,
        user_id=user.id,
        token_version=user.token_version,
        csrf_token=secrets.token_urlsafe(32),
        created_at=now,
        expires_at=now + timedelta(hours=settings.ui_session_hours),
    )
    session.add(row)
    await session.flush()
    return token, row


async def end(session: AsyncSession, token: str | None) -> None:
    if token:
        token_hash = hash_token(token)
        await session.execute(delete(UiSession).where(UiSession.token_hash == token_hash))


async def lookup(session: AsyncSession, token: str, *, now: datetime) -> Browser | None:
    if len(token) > 128:
        return None
    row = (
        await session.execute(
            select(UiSession, User, policy.sees_all(User.id))
            .join(User, User.id == UiSession.user_id)
            .where(UiSession.token_hash == hash_token(token))
        )
    ).first()
    if row is None:
        return None
    ui_session, user, sees_all = row
    if ui_session.expires_at <= now or not user.is_active:
        return None
    if user.token_version != ui_session.token_version:
        return None
    return Browser(
        user=user,
        user_id=user.id,
        full_name=user.full_name,
        is_admin=user.is_admin,
        session_id=ui_session.id,
        csrf_token=ui_session.csrf_token,
        timezone=user.timezone,
        sees_all=bool(sees_all),
    )


def _path_with_query(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


async def current_browser(request: Request, session: SessionDep, clock: ClockDep) -> Browser:
    token = request.cookies.get(SESSION_COOKIE)
    browser = await lookup(session, token, now=clock.now()) if token else None
    if browser is None:
        raise LoginRequired(_path_with_query(request) if request.method == "GET" else "/ui/")
    name_actor(Actor.of(browser.user))
    request.state.browser = browser
    return browser


async def csrf_checked(
    request: Request, browser: Annotated[Browser, Depends(current_browser)]
) -> Browser:
    """The browser, for a state-changing request that carries its session's CSRF token."""
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        form = await request.form()
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if not sent or not hmac.compare_digest(sent.encode(), browser.csrf_token.encode()):
        raise CsrfFailed()
    return browser


async def admin_browser(browser: Annotated[Browser, Depends(current_browser)]) -> Browser:
    if not browser.is_admin:
        raise AdminRequired()
    return browser


async def admin_csrf_checked(browser: Annotated[Browser, Depends(csrf_checked)]) -> Browser:
    if not browser.is_admin:
        raise AdminRequired()
    return browser


def _login_csrf_signature(settings: Settings, nonce: str, issued: int) -> str:
    key = hashlib.sha256(f"login-csrf:{settings.secret_key}".encode()).digest()
    return hmac.new(key, f"{nonce}.{issued}".encode(), hashlib.sha256).hexdigest()[:32]


def new_login_csrf(settings: Settings, now: datetime) -> str:
    """The sign-in form's token, `nonce.issued.signature` (signed double submit): the same value
    goes in a cookie and in the form. The signature ties it to this server's SECRET_KEY and its
    time, so a cookie planted by someone else (a sibling subdomain can set one) is refused."""
    nonce, issued = secrets.token_urlsafe(24), int(now.timestamp())
    return f"{nonce}.{issued}.{_login_csrf_signature(settings, nonce, issued)}"


def posted_from_here(request: Request) -> bool:
    """Does the browser say the form was posted from this site? `Sec-Fetch-Site` and `Origin`
    are set by the browser, not by a page: a sibling subdomain that planted a token of ours in
    a cookie still posts from its own origin. Clients that send neither (not browsers) pass."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    if origin == "null":
        # What a browser sends for a page with `Referrer-Policy: no-referrer` (ours, and any
        # page's that wants to hide itself): then only Sec-Fetch-Site can tell.
        return site is not None
    settings: Settings = request.app.state.settings
    ours = {urlsplit(settings.public_base_url).netloc, request.headers.get("host", "")}
    return urlsplit(origin).netloc in ours - {""}


def login_csrf_valid(request: Request, sent: str | None, *, now: datetime) -> bool:
    """The form came from this site, and its token equals the cookie's and is one this server
    signed in the last hour."""
    if not posted_from_here(request):
        return False
    expected = request.cookies.get(LOGIN_CSRF_COOKIE)
    if not expected or not sent or not hmac.compare_digest(expected.encode(), sent.encode()):
        return False
    nonce, _, rest = sent.partition(".")
    issued, _, signature = rest.partition(".")
    if not issued.isdigit() or not 0 <= now.timestamp() - int(issued) <= LOGIN_CSRF_SECONDS:
        return False
    settings: Settings = request.app.state.settings
    wanted = _login_csrf_signature(settings, nonce, int(issued))
    return hmac.compare_digest(signature.encode(), wanted.encode())


# A console path and query: `/ui` or `/ui/…`, printable ASCII, no backslash, no `..` segment.
NEXT = re.compile(r"/ui(?:[/?][\x21-\x5b\x5d-\x7e]*)?")


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a console page only (never another site: `//evil`)."""
    if not target or not NEXT.fullmatch(target) or "/../" in target + "/":
        return "/ui/incidents"
    return target


def login_url(next_path: str) -> str:
    return "/ui/login?next=" + quote(safe_next(next_path), safe="/")


ViewerDep = Annotated[Browser, Depends(current_browser)]
ActorDep = Annotated[Browser, Depends(csrf_checked)]
AdminViewerDep = Annotated[Browser, Depends(admin_browser)]
AdminActorDep = Annotated[Browser, Depends(admin_csrf_checked)]
