"""The console under /ui: sign-in, live updates, and the pages' routers put together."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Form, Query, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.staticfiles import StaticFiles

from app.auth.signin import authenticate_limited
from app.core import ratelimit, serving
from app.core.config import Settings
from app.core.deps import ClockDep, SessionDep, SettingsDep
from app.core.errors import DomainError
from app.ui import admin, analytics, auth, directory, incidents, live, me, teams
from app.ui.auth import ViewerDep
from app.ui.live import ChangeFeed
from app.ui.render import STATIC, page
from app.users import service as user_service

router = APIRouter(prefix="/ui", include_in_schema=False)
router.include_router(incidents.router)
router.include_router(analytics.router)
router.include_router(admin.router)
router.include_router(directory.router)
router.include_router(me.router)
router.include_router(teams.router)

# An open page's stream ends after this long and the browser opens a new one (EventSource does
# by itself), so a stream never outlives its session's checks for long, and a process that is
# stopping is not held open by pages.
STREAM_SECONDS = 60
KEEPALIVE_SECONDS = 15


@router.get("")
@router.get("/")
async def home() -> Response:
    return RedirectResponse("/ui/incidents", status_code=303)


async def _login_page(
    request: Request,
    session: AsyncSession,
    *,
    error: str | None = None,
    email: str = "",
    next_path: str,
    status: int,
) -> Response:
    settings: Settings = request.app.state.settings
    token = auth.new_login_csrf(settings, request.app.state.clock.now())
    # On an empty database, how the first account (the admin) is made: there is none to sign in.
    first_account = None
    if await user_service.none_yet(session):
        first_account = {
            "signup": settings.allow_signup,
            "signup_url": f"{settings.public_base_url}/v1/auth/signup",
        }
    response = page(
        request,
        "login.html",
        browser=None,
        status_code=status,
        login_csrf=token,
        error=error,
        email=email,
        next_path=auth.safe_next(next_path),
        first_account=first_account,
    )
    auth.set_cookie(
        response,
        settings,
        auth.LOGIN_CSRF_COOKIE,
        token,
        max_age=auth.LOGIN_CSRF_SECONDS,
    )
    return response


@router.get("/login", response_class=HTMLResponse)
async def login_form(
    request: Request,
    session: SessionDep,
    next: Annotated[str, Query(max_length=2000)] = "/ui/incidents",
) -> Response:
    return await _login_page(request, session, next_path=next, status=200)


@router.post("/login", response_class=HTMLResponse)
async def login(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    clock: ClockDep,
    email: Annotated[str, Form(max_length=320)] = "",
    password: Annotated[str, Form(max_length=1000)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/ui/incidents",
) -> Response:
    """Sign in: the API's checks (the same rate limits and lockout), then a session cookie."""
    if not auth.login_csrf_valid(request, csrf_token, now=clock.now()):
        return await _login_page(
            request,
            session,
            error="The form expired; please sign in again.",
            email=email,
            next_path=next,
            status=400,
        )
    now = clock.now()
    try:
        user = await authenticate_limited(
            request, session, settings, email=email, password=password, now=now,
            detail="Too many sign-in attempts; wait a few minutes",
        )  # fmt: skip
    except ratelimit.TooManyRequests as exc:
        return await _login_page(
            request, session, error=exc.detail, email=email, next_path=next, status=429
        )
    if user is None:
        return await _login_page(
            request,
            session,
            error="Incorrect email or password, or the account is inactive.",
            email=email,
            next_path=next,
            status=401,
        )
    token, _ = await auth.start(session, user=user, settings=settings, now=now)
    response = RedirectResponse(auth.safe_next(next), status_code=303)
    auth.set_cookie(
        response, settings, auth.SESSION_COOKIE, token, max_age=settings.ui_session_hours * 3600
    )
    auth.clear_cookie(response, settings, auth.LOGIN_CSRF_COOKIE)
    return response


@router.post("/logout")
async def logout(
    request: Request, session: SessionDep, settings: SettingsDep, _: auth.ActorDep
) -> Response:
    """Sign out: the session is deleted on the server, not only forgotten by the browser."""
    await auth.end(session, request.cookies.get(auth.SESSION_COOKIE))
    response = RedirectResponse("/ui/login", status_code=303)
    auth.clear_cookie(response, settings, auth.SESSION_COOKIE)
    return response


@router.get("/events")
async def events(request: Request, browser: ViewerDep) -> Response:
    """Server-Sent Events: `change` with the ids of incidents that changed since the last one."""
    feed: ChangeFeed = request.app.state.change_feed
    token = request.cookies.get(auth.SESSION_COOKIE, "")
    clock = request.app.state.clock

    async def still_signed_in() -> bool:
        async with request.app.state.sessionmaker() as session:
            return await auth.lookup(session, token, now=clock.now()) is not None

    async def stream() -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        ends = loop.time() + STREAM_SECONDS
        async with feed.listen() as listener:
            # `ready` only once this stream is listening: the page fetches its live part then,
            # so whatever is committed before that fetch is in it, and whatever after it is
            # announced here. (Fetching on the connection's `open` instead could fall between
            # the two and miss a change for good.)
            if listener.closed:  # the process is stopping: reconnect to another one
                yield "retry: 1000\n\n"
                return
            yield "retry: 1000\nevent: ready\ndata: {}\n\n"
            while not listener.closed:
                left = ends - loop.time()
                if left <= 0:
                    return
                try:
                    await asyncio.wait_for(
                        listener.changed.wait(), timeout=min(KEEPALIVE_SECONDS, left)
                    )
                except TimeoutError:
                    # Still signed in? (Signed out, expired or deactivated: the stream ends.)
                    if not await still_signed_in():
                        return
                    yield ": keep-alive\n\n"
                    continue
                if listener.closed:
                    return
                ids = listener.take()
                yield f"event: change\ndata: {json.dumps({'incidents': ids})}\n\n"

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def _is_console(request: Request) -> bool:
    return request.url.path.startswith("/ui")


def _message_page(request: Request, *, status: int, title: str, message: str) -> Response:
    browser = getattr(request.state, "browser", None)
    return page(
        request, "message.html", browser=browser, status_code=status, title=title, message=message
    )


Handler = Callable[[Request, Any], Response | Awaitable[Response]]


async def _answer(result: Response | Awaitable[Response]) -> Response:
    return result if isinstance(result, Response) else await result


def install(app: FastAPI) -> None:
    """Add the console to the app: its routes, its static files, and HTML answers for its
    errors (the API's own errors stay JSON)."""
    app.include_router(router)
    # A stop signal ends the console's live streams at once (see app.core.serving).
    serving.on_exit_signal(live.on_exit_signal)
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")

    async def login_required(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, auth.LoginRequired)
        if request.headers.get("HX-Request") == "true" and request.method != "GET":
            # htmx: send the whole window to the login page, not a form into a fragment.
            return Response(status_code=204, headers={"HX-Redirect": auth.login_url(exc.next_path)})
        return RedirectResponse(auth.login_url(exc.next_path), status_code=303)

    async def csrf_failed(request: Request, _: Exception) -> Response:
        return _message_page(
            request,
            status=403,
            title="Please try again",
            message="This form was not sent from a page of this console (or the page is old). "
            "Reload the page and try again.",
        )

    async def admin_required(request: Request, _: Exception) -> Response:
        return _message_page(
            request,
            status=403,
            title="Admins only",
            message="This page is for administrators.",
        )

    api_domain: Handler = app.exception_handlers[DomainError]
    api_invalid: Handler = app.exception_handlers[RequestValidationError]

    async def domain_error(request: Request, exc: Exception) -> Response:
        if not _is_console(request):
            return await _answer(api_domain(request, exc))
        assert isinstance(exc, DomainError)
        detail = exc.detail if isinstance(exc.detail, str) else "That request was refused"
        titles = {404: "Not found", 403: "Not allowed", 409: "Conflict"}
        return _message_page(
            request,
            status=exc.status_code,
            title=titles.get(exc.status_code, "Not possible"),
            message=detail,
        )

    async def invalid(request: Request, exc: Exception) -> Response:
        if not _is_console(request):
            return await _answer(api_invalid(request, exc))
        return _message_page(
            request,
            status=400,
            title="Bad request",
            message="Part of that request was not valid. Go back and check the form or the link.",
        )

    api_http: Handler = app.exception_handlers[StarletteHTTPException]

    async def http_error(request: Request, exc: Exception) -> Response:
        if not _is_console(request) or request.url.path.startswith("/ui/static/"):
            return await _answer(api_http(request, exc))
        assert isinstance(exc, StarletteHTTPException)
        titles = {404: "Not found", 405: "Not possible"}
        messages = {404: "There is no such page.", 405: "That address does not take this request."}
        return _message_page(
            request,
            status=exc.status_code,
            title=titles.get(exc.status_code, "Not possible"),
            message=messages.get(exc.status_code, str(exc.detail)),
        )

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(auth.LoginRequired, login_required)
    app.add_exception_handler(auth.CsrfFailed, csrf_failed)
    app.add_exception_handler(auth.AdminRequired, admin_required)
    app.add_exception_handler(DomainError, domain_error)
    app.add_exception_handler(RequestValidationError, invalid)
