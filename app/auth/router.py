from __future__ import annotations

import logging
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Path, Query, Request, status
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import ValidationError

from app.auth import security
from app.auth.dependencies import CurrentUser
from app.auth.signin import account_bucket, authenticate_limited, client_bucket
from app.core import ratelimit
from app.core.config import Settings
from app.core.db import WAKE_WORKER, session_scope
from app.core.deps import ClockDep, SessionDep, SettingsDep
from app.core.errors import Forbidden, Unauthorized, Unprocessable
from app.core.schemas import Message
from app.flows import recovery as recovery_flow
from app.flows import users as user_flow
from app.users.schemas import PasswordReset, Token, UserRead, UserSignup

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/auth", tags=["auth"])

RECOVERY_MESSAGE = "If an active account uses that email, a password recovery email has been sent"
LIMITED: dict[int | str, dict[str, Any]] = {
    429: {"description": "Too many attempts: wait the `Retry-After` seconds"}
}


@router.post(
    "/signup",
    response_model=UserRead,
    status_code=status.HTTP_201_CREATED,
    responses={403: {"description": "Signup is turned off"}, 409: {"description": "Email taken"}},
)
async def signup(
    body: UserSignup, session: SessionDep, settings: SettingsDep, clock: ClockDep
) -> object:
    """Create an account; the first account of an empty database becomes an admin.

    A later account's email is sent notifications once verified
    (`POST /v1/notification-preferences/me/email/verify`, then `…/confirm`)."""
    if not settings.allow_signup:
        raise Forbidden("Signup is turned off; ask an admin to create your account")
    return await user_flow.signup(
        session,
        email=body.email,
        password=body.password,
        full_name=body.full_name,
        timezone=settings.default_timezone,
        now=clock.now(),
    )


@router.post(
    "/login/access-token",
    response_model=Token,
    responses={**LIMITED, 401: {"description": "Wrong credentials or inactive account"}},
)
async def login_access_token(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    clock: ClockDep,
) -> Token:
    """OAuth2 password flow: `username` is the email address.

    Limited per client address and per account: LOGIN_LOCKOUT_FAILURES attempts without a
    success lock the account's logins for LOGIN_LOCKOUT_MINUTES (429 with `Retry-After`, the same
    for an email that has no account); a success clears its count."""
    user = await authenticate_limited(
        request, session, settings, email=form.username, password=form.password,
        now=clock.now(), detail="Too many login attempts",
    )  # fmt: skip
    if user is None:
        raise Unauthorized("Incorrect email or password, or inactive account")
    issued = security.create_access_token(
        settings, user_id=user.id, token_version=user.token_version, now=clock.now()
    )
    return Token(access_token=issued.token, expires_in=issued.expires_in)


@router.post("/login/test-token", response_model=UserRead)
async def test_token(user: CurrentUser) -> object:
    """Check a bearer token and return its user."""
    return user


@router.post("/password-recovery/{email}", response_model=Message, responses=LIMITED)
async def password_recovery(
    email: Annotated[str, Path(max_length=320)],
    request: Request,
    background: BackgroundTasks,
    settings: SettingsDep,
    clock: ClockDep,
) -> Message:
    """Email a single-use reset token. Answers the same whether or not the account exists.

    The email goes through the notification outbox (retried like any notification); without
    SMTP_HOST, development writes it to the log.
    """
    buckets = {
        f"recovery:ip:{client_bucket(request)}": _recovery_per_ip(settings),
        f"recovery:account:{account_bucket(settings, email)}": ratelimit.Limit.per(
            settings.rate_limit_recovery_per_account_per_hour, 3600
        ),
    }
    await ratelimit.check(
        request.app.state.sessionmaker,
        buckets,
        now=clock.now(),
        detail="Too many recovery requests",
    )
    # The account is looked up, and the token and mail stored, after the answer is sent: the
    # answer takes the same time whether the account exists or not (otherwise measurable).
    lifetime = timedelta(minutes=settings.password_reset_token_expire_minutes)
    background.add_task(
        _start_recovery, request, email=email, now=clock.now(), lifetime=lifetime,
        secret_key=settings.secret_key,
    )  # fmt: skip
    return Message(message=RECOVERY_MESSAGE)


async def _start_recovery(request: Request, **what: Any) -> None:
    sessionmaker = request.app.state.sessionmaker
    try:
        async with session_scope(sessionmaker) as session:
            await recovery_flow.start(session, **what)
            wake = bool(session.info.get(WAKE_WORKER))
    except Exception:
        logger.exception("password recovery could not be started")
        return
    if wake:
        request.app.state.worker.wake()


@router.post(
    "/reset-password/",
    response_model=Message,
    responses={**LIMITED, 400: {"description": "Bad, used or expired token"}},
)
async def reset_password(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    clock: ClockDep,
    body: PasswordReset | None = None,
    token: Annotated[
        str | None, Query(max_length=256, description="The original API's form; prefer the body")
    ] = None,
    new_password: Annotated[
        str | None, Query(max_length=1000, description="The original API's form; prefer the body")
    ] = None,
) -> Message:
    """Set a new password with a recovery token; every token issued before stops working.

    The token and password come in the JSON body, or (as clients of the original API send them)
    as the query parameters `token` and `new_password`; neither is ever logged. Counts against
    the same per-address limit as recovery requests."""
    if body is None:
        if token is None or new_password is None:
            raise Unprocessable(
                "token and new_password are required, in the JSON body (or both in the query)"
            )
        try:
            body = PasswordReset(token=token, new_password=new_password)
        except ValidationError as exc:
            raise Unprocessable(
                "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            ) from exc
    elif token is not None or new_password is not None:
        raise Unprocessable("give token and new_password in the body or in the query, not both")
    await ratelimit.check(
        request.app.state.sessionmaker,
        {f"recovery:ip:{client_bucket(request)}": _recovery_per_ip(settings)},
        now=clock.now(),
        detail="Too many recovery attempts",
    )
    await recovery_flow.reset_password(
        session, token=body.token, new_password=body.new_password, now=clock.now()
    )
    return Message(message="Password updated")


def _recovery_per_ip(settings: Settings) -> ratelimit.Limit | None:
    return ratelimit.Limit.per(settings.rate_limit_recovery_per_ip_per_hour, 3600)
