from __future__ import annotations

import logging
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Path, status
from fastapi.security import OAuth2PasswordRequestForm

from app.auth import security
from app.auth import service as auth_service
from app.auth.dependencies import CurrentUser
from app.deps import ClockDep, SessionDep, SettingsDep
from app.errors import Forbidden, Unauthorized
from app.schemas import Message
from app.users import service as user_service
from app.users.schemas import PasswordReset, Token, UserRead, UserSignup

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/auth", tags=["auth"])

RECOVERY_MESSAGE = "If an active account uses that email, a password recovery email has been sent"


@router.post(
    "/signup",
    response_model=UserRead,
    status_code=status.HTTP_201_CREATED,
    responses={403: {"description": "Signup is turned off"}, 409: {"description": "Email taken"}},
)
async def signup(
    body: UserSignup, session: SessionDep, settings: SettingsDep, clock: ClockDep
) -> object:
    """Create an account; the first account of an empty database becomes an admin."""
    if not settings.allow_signup:
        raise Forbidden("Signup is turned off; ask an admin to create your account")
    return await user_service.signup(
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
    responses={401: {"description": "Wrong credentials or inactive account"}},
)
async def login_access_token(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    session: SessionDep,
    settings: SettingsDep,
    clock: ClockDep,
) -> Token:
    """OAuth2 password flow: `username` is the email address."""
    user = await user_service.authenticate(session, email=form.username, password=form.password)
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


@router.post("/password-recovery/{email}", response_model=Message)
async def password_recovery(
    email: Annotated[str, Path(max_length=320)],
    session: SessionDep,
    settings: SettingsDep,
    clock: ClockDep,
) -> Message:
    """Email a single-use reset token. Answers the same whether or not the account exists.

    The email goes through the notification outbox (retried like any notification); without
    SMTP_HOST, development writes it to the log.
    """
    lifetime = timedelta(minutes=settings.password_reset_token_expire_minutes)
    await auth_service.start_recovery(
        session, email=email, now=clock.now(), lifetime=lifetime, secret_key=settings.secret_key
    )
    return Message(message=RECOVERY_MESSAGE)


@router.post(
    "/reset-password/",
    response_model=Message,
    responses={400: {"description": "Bad, used or expired token"}},
)
async def reset_password(body: PasswordReset, session: SessionDep, clock: ClockDep) -> Message:
    """Set a new password with a recovery token; every token issued before stops working."""
    await auth_service.reset_password(
        session, token=body.token, new_password=body.new_password, now=clock.now()
    )
    return Message(message="Password updated")
