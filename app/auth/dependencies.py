from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from fastapi.security import OAuth2PasswordBearer

from app.auth import policy, security
from app.auth.policy import NO_TEAM, Action, Principal
from app.core.actors import Actor
from app.core.deps import ClockDep, SessionDep, SettingsDep
from app.core.errors import Unauthorized
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


async def get_principal(session: SessionDep, claims: TokenClaims) -> Principal:
    """Who asks: the user of the request's token, checked against the database (a password
    change or a deactivation ends every token at once). The one way every route that needs a
    signed-in caller learns who it is; `app.auth.policy` decides what they may do."""
    user = await user_service.get(session, claims.user_id)
    if user is None or not user.is_active or user.token_version != claims.token_version:
        raise Unauthorized("Invalid or expired token")
    name_actor(Actor.of(user))
    return Principal.of(user)


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


async def get_current_user(principal: CurrentPrincipal) -> User:
    return principal.user


def for_the_logs(user_id: int) -> None:
    """Name the user in the request's log lines."""
    info = REQUEST.get()
    if info is not None:
        info.user_id = user_id


async def get_admin(principal: CurrentPrincipal) -> Principal:
    policy.check(principal, Action.administer, NO_TEAM, missing="")
    return principal


async def get_admin_user(principal: Annotated[Principal, Depends(get_admin)]) -> User:
    return principal.user


CurrentUser = Annotated[User, Depends(get_current_user)]
AdminUser = Annotated[User, Depends(get_admin_user)]
AdminPrincipal = Annotated[Principal, Depends(get_admin)]
