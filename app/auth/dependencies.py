from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from fastapi.security import OAuth2PasswordBearer

from app.auth import security
from app.core.actors import Actor
from app.core.deps import ClockDep, SessionDep, SettingsDep
from app.core.errors import Forbidden, Unauthorized
from app.core.logging import REQUEST, name_actor
from app.users import service as user_service
from app.users.models import User

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/v1/auth/login/access-token", auto_error=False)


async def get_token_claims(
    settings: SettingsDep,
    clock: ClockDep,
    token: Annotated[str | None, Depends(oauth2_scheme)],
) -> security.TokenClaims:
    """The claims of the request's access token, read without the database: whose token it is
    must still be checked against the user (see `get_current_user`)."""
    if not token:
        raise Unauthorized("Not authenticated")
    claims = security.decode_access_token(settings, token, now=clock.now())
    if claims is None:
        raise Unauthorized("Invalid or expired token")
    return claims


TokenClaims = Annotated[security.TokenClaims, Depends(get_token_claims)]


async def get_current_user(session: SessionDep, claims: TokenClaims) -> User:
    user = await user_service.get(session, claims.user_id)
    if user is None or not user.is_active or user.token_version != claims.token_version:
        raise Unauthorized("Invalid or expired token")
    name_actor(Actor.of(user))
    return user


def for_the_logs(user_id: int) -> None:
    """Name the user in the request's log lines."""
    info = REQUEST.get()
    if info is not None:
        info.user_id = user_id


async def get_admin_user(user: Annotated[User, Depends(get_current_user)]) -> User:
    if not user.is_admin:
        raise Forbidden("Admin role required")
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]
AdminUser = Annotated[User, Depends(get_admin_user)]
