from __future__ import annotations

import logging
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, Path, status
from fastapi.security import OAuth2PasswordRequestForm

from app.auth import security
from app.auth import service as auth_service
from app.auth.dependencies import CurrentUser
from app.config import Settings
from app.deps import ClockDep, SessionDep, SettingsDep
from app.errors import Forbidden, Unauthorized
from app.mail import build_message, send
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
    background: BackgroundTasks,
) -> Message:
    """Email a single-use reset token. Answers the same whether or not the account exists."""
    lifetime = timedelta(minutes=settings.password_reset_token_expire_minutes)
    started = await auth_service.start_recovery(
        session, email=email, now=clock.now(), lifetime=lifetime
    )
    if started is not None:
        # The token must be stored before anyone can receive it; mail leaves after the commit.
        await session.commit()
        user, token = started
        background.add_task(_deliver_recovery, settings, user.email, token)
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


async def _deliver_recovery(settings: Settings, email: str, token: str) -> None:
    if not settings.smtp_host:
        if settings.is_production:
            logger.warning("password recovery requested but SMTP_HOST is not set; no email sent")
        else:
            logger.info("password recovery token for %s (SMTP_HOST unset): %s", email, token)
        return
    minutes = settings.password_reset_token_expire_minutes
    text = (
        f"Someone asked to reset the password of your {settings.project_name} account.\n\n"
        f"Your reset token (valid for {minutes} minutes, usable once):\n\n    {token}\n\n"
        "Set a new password with:\n\n"
        f"    curl -X POST {settings.public_base_url}/v1/auth/reset-password/ \\\n"
        "      -H 'Content-Type: application/json' \\\n"
        f'      -d \'{{"token": "{token}", "new_password": "…"}}\'\n\n'
        "If you did not ask for this, ignore this email; your password stays as it is.\n"
    )
    message = build_message(
        settings, to=email, subject=f"{settings.project_name}: password recovery", text=text
    )
    try:
        await send(settings, message)
    except Exception:
        logger.exception("could not send the password recovery email")
