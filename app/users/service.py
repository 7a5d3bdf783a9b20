"""User accounts. Plain async functions: the session first, never a commit."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import lock_named
from app.core.errors import Conflict
from app.core.pagination import page_by_id
from app.users import passwords
from app.users.models import Role, User

ADMIN_LOCK = "users:admins"


async def get(session: AsyncSession, user_id: int) -> User | None:
    return await session.get(User, user_id)


async def get_by_email(session: AsyncSession, email: str) -> User | None:
    result = await session.execute(select(User).where(User.email == email.lower()))
    return result.scalar_one_or_none()


async def create(
    session: AsyncSession,
    *,
    email: str,
    password: str,
    full_name: str,
    now: datetime,
    role: Role = Role.user,
    is_active: bool = True,
    phone: str | None = None,
    timezone: str = "UTC",
) -> User:
    email = email.lower()
    if await get_by_email(session, email) is not None:
        raise Conflict(f"A user with email {email} already exists")
    user = User(
        email=email,
        full_name=full_name,
        role=role.value,
        is_active=is_active,
        phone=phone,
        timezone=timezone,
        hashed_password=passwords.hash_password(password),
        token_version=0,
        created_at=now,
        updated_at=now,
    )
    session.add(user)
    await _flush_unique_email(session, email)
    return user


async def none_yet(session: AsyncSession) -> bool:
    """No account at all: the next signup becomes the admin (see `signup`)."""
    return (await session.scalar(select(User.id).limit(1))) is None


async def signup(
    session: AsyncSession,
    *,
    email: str,
    password: str,
    full_name: str,
    timezone: str,
    now: datetime,
) -> User:
    """Self-service signup: the first account of an empty database becomes the admin."""
    await lock_named(session, ADMIN_LOCK)
    first = (await session.scalar(select(func.count()).select_from(User))) == 0
    return await create(
        session,
        email=email,
        password=password,
        full_name=full_name,
        role=Role.admin if first else Role.user,
        timezone=timezone,
        now=now,
    )


async def authenticate(session: AsyncSession, *, email: str, password: str) -> User | None:
    """The active user with these credentials, or None; costs the same for unknown emails."""
    user = await get_by_email(session, email) if len(email) <= 320 else None
    if len(password) > 128:  # longer than any password we accept: no need to hash it
        return None
    # A service account (an organisation API key's) has no password: it never signs in.
    usable = user is not None and not user.is_service_account
    if not passwords.verify_password(password, user.hashed_password if usable and user else None):
        return None
    if user is None or not user.is_active:
        return None
    return user


async def update(
    session: AsyncSession, *, user: User, changes: dict[str, Any], now: datetime
) -> User:
    """Apply the given fields. Refuses to leave the service without an active admin."""
    email = changes.get("email")
    if email is not None and email != user.email and await get_by_email(session, email):
        raise Conflict(f"A user with email {email} already exists")
    loses_admin = (changes.get("role") not in (None, Role.admin) and user.is_admin) or (
        changes.get("is_active") is False and user.is_admin and user.is_active
    )
    if loses_admin:
        await _ensure_another_active_admin(session, user)
    if "password" in changes:
        user.hashed_password = passwords.hash_password(changes.pop("password"))
        user.token_version += 1
    if changes.get("is_active") is False and user.is_active:
        user.token_version += 1
    for field, value in changes.items():
        setattr(user, field, value.value if isinstance(value, Role) else value)
    user.updated_at = now
    await _flush_unique_email(session, user.email)
    return user


async def lock(session: AsyncSession, user: User) -> None:
    """Hold the user's row until the end of the transaction (before checking what names them)."""
    await session.execute(select(User.id).where(User.id == user.id).with_for_update())


async def delete(session: AsyncSession, *, user: User) -> User:
    if user.is_admin and user.is_active:
        await _ensure_another_active_admin(session, user)
    await session.delete(user)
    await session.flush()
    return user


async def list_page(
    session: AsyncSession,
    *,
    limit: int,
    cursor: str | None,
    role: Role | None = None,
    is_active: bool | None = None,
    q: str | None = None,
) -> tuple[list[User], str | None]:
    # The people: organisation API keys' service accounts are listed with their keys.
    query = select(User).where(User.is_service_account.is_(False))
    if role is not None:
        query = query.where(User.role == role.value)
    if is_active is not None:
        query = query.where(User.is_active == is_active)
    if q:
        needle = q.lower()
        query = query.where(
            or_(
                User.email.contains(needle, autoescape=True),
                func.lower(User.full_name).contains(needle, autoescape=True),
            )
        )
    return await page_by_id(session, query, User.id, limit=limit, cursor=cursor)


async def _ensure_another_active_admin(session: AsyncSession, user: User) -> None:
    await lock_named(session, ADMIN_LOCK)
    others = await session.scalar(
        select(func.count())
        .select_from(User)
        .where(User.role == Role.admin.value, User.is_active.is_(True), User.id != user.id)
    )
    if not others:
        raise Conflict(f"{user.email} is the last active admin; promote another admin first")


async def _flush_unique_email(session: AsyncSession, email: str) -> None:
    # Two concurrent requests can both pass the lookup; the unique index decides.
    try:
        await session.flush()
    except IntegrityError as exc:
        raise Conflict(f"A user with email {email} already exists") from exc
