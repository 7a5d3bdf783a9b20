from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.apikeys import service as apikey_service
from app.apikeys.models import KeyKind, KeyRole
from app.auth import policy, security
from app.auth.policy import NO_TEAM, Action, Principal
from app.core.actors import Actor
from app.core.db import READ_ONLY, session_scope
from app.core.deps import READING_METHODS, ClockDep, SessionDep, SettingsDep
from app.core.errors import Forbidden, Unauthorized
from app.core.logging import REQUEST, current_source, name_actor
from app.teams.models import TeamRole
from app.users.models import User

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/v1/auth/login/access-token", auto_error=False)


async def get_bearer(token: Annotated[str | None, Depends(oauth2_scheme)]) -> str:
    if not token:
        raise Unauthorized("Not authenticated")
    return token


Bearer = Annotated[str, Depends(get_bearer)]
BAD_KEY = "Invalid, expired or revoked API key"
# POSTs that only read: a read-only key may send them.
READING_POSTS = frozenset({"/v1/auth/login/test-token"})


async def _key_principal(
    request: Request, session: AsyncSession, token: str, *, now: datetime
) -> Principal:
    """The principal of an API key: one statement (the key with its user), no cache, so that a
    revocation, an expiry or the user's deactivation stops the key on every process at once."""
    checked = await apikey_service.check(session, token, now=now)
    if checked is None:
        raise Unauthorized(BAD_KEY)
    key, user = checked.key, checked.user
    if apikey_service.due_for_last_use(key, now=now):
        await _note_use(session, key.id, now=now)
    teams: dict[int, TeamRole] | None = None
    if key.kind == KeyKind.organisation.value:
        # Its own scope, never the memberships of anyone.
        teams = {key.team_id: TeamRole(key.team_role)} if key.team_id and key.team_role else {}
    principal = Principal(
        user=user,
        role=checked.role.value,
        read_only=checked.role is KeyRole.read_only,
        teams=teams,
        key_id=key.id,
        user_id=user.id,
    )
    name_actor(Actor.of_key(key.id, key.prefix, user))
    if (
        principal.read_only
        and request.method not in READING_METHODS
        and request.url.path.rstrip("/") not in READING_POSTS
    ):
        raise Forbidden("This API key is read-only")
    return principal


async def _note_use(session: AsyncSession, key_id: int, *, now: datetime) -> None:
    """Note the key's use (at most once a minute, see `apikey_service.last_use_statement`). A
    reading request's session on PostgreSQL refuses writes (app.core.deps): a short autocommit
    connection of its own writes it then. Elsewhere the request's transaction does (on SQLite it
    already holds the one write lock, which another connection would wait for)."""
    statement = apikey_service.last_use_statement(key_id, address=current_source(), now=now)
    connection = await session.connection()
    options = (
        connection.sync_connection.get_execution_options() if connection.sync_connection else {}
    )
    if not options.get(READ_ONLY):
        await session.execute(statement)
        return
    async with connection.engine.connect() as own:
        await own.execution_options(isolation_level="AUTOCOMMIT")
        await own.execute(statement)


async def get_principal(
    request: Request, session: SessionDep, settings: SettingsDep, clock: ClockDep, token: Bearer
) -> Principal:
    """Who asks: the user of the request's access token or API key, checked against the
    database on every request (a password change, a deactivation or a key's revocation ends
    access at once). The one way every route that needs a signed-in caller learns who it is;
    `app.auth.policy` decides what they may do."""
    if apikey_service.is_api_key(token):
        return await _key_principal(request, session, token, now=clock.now())
    claims = security.decode_access_token(settings, token, now=clock.now())
    if claims is None:
        raise Unauthorized("Invalid or expired token")
    # The user and whether a private team hides anything from them, in one statement.
    row = (
        await session.execute(
            select(User, policy.sees_all(User.id)).where(User.id == claims.user_id)
        )
    ).first()
    user = row[0] if row is not None else None
    if user is None or not user.is_active or user.token_version != claims.token_version:
        raise Unauthorized("Invalid or expired token")
    name_actor(Actor.of(user))
    return Principal.of(user, sees_all=bool(row is not None and row[1]))


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asks, as a request that holds no session of its own knows it (`POST /v1/incidents/`,
    written in batches): an access token's claims, checked in the batch, or an API key's user,
    checked here."""

    user_id: int
    # The access token's version, checked in the batch; None: an API key, already checked.
    token_version: int | None
    # An API key's principal (its role and teams), for the policy in the batch.
    key_principal: Principal | None = None


async def get_caller(
    request: Request, settings: SettingsDep, clock: ClockDep, token: Bearer
) -> Caller:
    if not apikey_service.is_api_key(token):
        claims = security.decode_access_token(settings, token, now=clock.now())
        if claims is None:
            raise Unauthorized("Invalid or expired token")
        return Caller(claims.user_id, claims.token_version)
    async with session_scope(request.app.state.sessionmaker) as session:
        principal = await _key_principal(request, session, token, now=clock.now())
    return Caller(principal.user_id, None, principal)


CurrentCaller = Annotated[Caller, Depends(get_caller)]


def refuse_keys(principal: Principal, what: str) -> None:
    """Some things only a person signed in may do: keys must not mint keys, nor change passwords."""
    if principal.key_id is not None:
        raise Forbidden(f"An API key cannot {what}; sign in")


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
