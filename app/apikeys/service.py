"""API keys: made, listed, revoked, and checked on every request that sends one. Plain async
functions: the session first, never a commit."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Update, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.apikeys.models import KEY_MARK, KEY_RANK, PREFIX_LENGTH, ApiKey, KeyKind, KeyRole
from app.core.errors import Conflict, Unprocessable
from app.core.pagination import page_by_id
from app.teams.models import Team, TeamRole
from app.users.models import Role, User

# Last use is written at most this often per key: most requests write nothing.
LAST_USED_EVERY = timedelta(seconds=60)
# A key's whole length: the prefix, "_", and 43 characters of secret (token_urlsafe(32)).
KEY_LENGTH = PREFIX_LENGTH + 1 + 43
# Where service accounts' addresses live: `.invalid` can never receive mail (RFC 2606).
SERVICE_DOMAIN = "api-keys.invalid"
# No password hash: nothing verifies against it (see app.users.service.authenticate).
NO_PASSWORD = "!service-account"  # noqa: S105  (not a password: matches no hash)


def is_api_key(token: str) -> bool:
    """Whether a bearer token is an API key (else it is an access token)."""
    return token.startswith(KEY_MARK)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _new_key() -> tuple[str, str]:
    """(the whole key, its prefix)."""
    prefix = KEY_MARK + secrets.token_urlsafe(6)  # 8 characters
    return f"{prefix}_{secrets.token_urlsafe(32)}", prefix


def effective_role(key: ApiKey, user: User) -> KeyRole:
    """What the key may do now: its own role, but never more than its user's current role (an
    admin demoted later loses admin through their keys too)."""
    own, users = KeyRole(key.role), KeyRole(user.role)
    return own if KEY_RANK[own] <= KEY_RANK[users] else users


def may_carry(owner_role: str, asked: KeyRole) -> bool:
    """May someone whose role is `owner_role` make a key with role `asked`?"""
    return KEY_RANK[asked] <= KEY_RANK[KeyRole(owner_role)]


async def create(
    session: AsyncSession,
    *,
    kind: KeyKind,
    name: str,
    role: KeyRole,
    owner: User | None,
    created_by: User,
    expires_at: datetime | None,
    team_id: int | None,
    team_role: TeamRole | None,
    now: datetime,
) -> tuple[ApiKey, str]:
    """A new key and its secret (shown once, never stored). A personal key belongs to `owner`;
    an organisation key (owner None) gets a service account of its own, made here."""
    if expires_at is not None and expires_at <= now:
        raise Unprocessable("expires_at must be in the future")
    if team_id is not None and await session.get(Team, team_id) is None:
        raise Unprocessable(f"Team {team_id} not found")
    key, prefix = _new_key()
    if owner is None:
        owner = User(
            email=f"apikey-{prefix.lower()}@{SERVICE_DOMAIN}",
            full_name=f"API key: {name}"[:255],
            role=Role.admin.value if role is KeyRole.admin else Role.user.value,
            is_active=True,
            timezone="UTC",
            hashed_password=NO_PASSWORD,
            token_version=0,
            is_service_account=True,
            created_at=now,
            updated_at=now,
        )
        session.add(owner)
        await session.flush()
    api_key = ApiKey(
        name=name,
        prefix=prefix,
        key_hash=key_hash(key),
        kind=kind.value,
        user_id=owner.id,
        role=role.value,
        team_id=team_id,
        team_role=team_role.value if team_role is not None else None,
        expires_at=expires_at,
        created_by=created_by.id,
        created_at=now,
    )
    session.add(api_key)
    await session.flush()
    return api_key, key


async def get(session: AsyncSession, key_id: int) -> ApiKey | None:
    return await session.get(ApiKey, key_id)


async def list_page(
    session: AsyncSession,
    *,
    limit: int,
    cursor: str | None,
    user_id: int | None = None,
    kind: KeyKind | None = None,
) -> tuple[list[ApiKey], str | None]:
    """Keys in id order: `user_id`'s own (personal keys, and organisation keys they made), or
    every key when `user_id` is None."""
    query = select(ApiKey)
    if user_id is not None:
        query = query.where(
            or_(
                ApiKey.user_id == user_id,
                (ApiKey.created_by == user_id) & (ApiKey.kind == KeyKind.organisation.value),
            )
        )
    if kind is not None:
        query = query.where(ApiKey.kind == kind.value)
    return await page_by_id(session, query, ApiKey.id, limit=limit, cursor=cursor)


async def revoke(session: AsyncSession, *, key: ApiKey, now: datetime) -> ApiKey:
    """Stop the key at once (every process looks the key up on every request). An organisation
    key's service account is deactivated with it. Revoking twice is a conflict: nothing changes."""
    if key.revoked_at is not None:
        raise Conflict(f"API key {key.prefix} was already revoked")
    key.revoked_at = now
    if key.kind == KeyKind.organisation.value:
        account = await session.get(User, key.user_id)
        if account is not None and account.is_service_account and account.is_active:
            account.is_active = False
            account.token_version += 1
            account.updated_at = now
    await session.flush()
    return key


@dataclass(frozen=True, slots=True)
class Checked:
    """A key that may be used now, with its user."""

    key: ApiKey
    user: User
    role: KeyRole


async def check(session: AsyncSession, token: str, *, now: datetime) -> Checked | None:
    """The key `token` names, if it may be used now (not revoked, not expired, its user active):
    one statement, the key and its user."""
    if len(token) != KEY_LENGTH or token[PREFIX_LENGTH] != "_":
        return None
    row = (
        await session.execute(
            select(ApiKey, User)
            .join(User, User.id == ApiKey.user_id)
            .where(ApiKey.prefix == token[:PREFIX_LENGTH])
        )
    ).first()
    if row is None:
        return None
    key, user = row[0], row[1]
    if not hmac.compare_digest(key.key_hash, key_hash(token)):
        return None
    if key.revoked_at is not None or not user.is_active:
        return None
    if key.expires_at is not None and key.expires_at <= now:
        return None
    return Checked(key, user, effective_role(key, user))


def due_for_last_use(key: ApiKey, *, now: datetime) -> bool:
    return key.last_used_at is None or key.last_used_at <= now - LAST_USED_EVERY


def last_use_statement(key_id: int, *, address: str | None, now: datetime) -> Update:
    """The UPDATE noting a use, conditional so that concurrent requests (other processes too)
    write it once a minute at most. Bookkeeping, not a configuration change: not audited."""
    return (
        update(ApiKey)
        .where(
            ApiKey.id == key_id,
            or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at <= now - LAST_USED_EVERY),
        )
        .values(last_used_at=now, last_used_from=address[:64] if address else None)
        .execution_options(synchronize_session=False)
    )
