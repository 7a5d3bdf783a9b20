"""Integrations: create, rotate and look up alert-source keys."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.pagination import page_by_id
from app.core.tokens import hash_token, new_token
from app.integrations.models import Integration

PREFIX_LENGTH = 8


def _set_key(integration: Integration) -> str:
    key = new_token()
    integration.key_hash = hash_token(key)
    integration.key_prefix = key[:PREFIX_LENGTH]
    return key


async def create(
    session: AsyncSession,
    *,
    service_id: int,
    name: str,
    kind: str,
    created_by: int | None,
    now: datetime,
) -> tuple[Integration, str]:
    integration = Integration(
        service_id=service_id, name=name, kind=kind, created_by=created_by,
        created_at=now, updated_at=now,
    )  # fmt: skip
    key = _set_key(integration)
    session.add(integration)
    await session.flush()
    return integration, key


async def rotate(session: AsyncSession, *, integration: Integration, now: datetime) -> str:
    """A new key; the old one stops working when this commits."""
    key = _set_key(integration)
    integration.rotated_at = now
    integration.updated_at = now
    await session.flush()
    return key


async def get(session: AsyncSession, *, service_id: int, integration_id: int) -> Integration | None:
    found = await session.get(Integration, integration_id)
    return found if found is not None and found.service_id == service_id else None


async def list_page(
    session: AsyncSession, *, service_id: int, limit: int, cursor: str | None
) -> tuple[list[Integration], str | None]:
    query = select(Integration).where(Integration.service_id == service_id)
    return await page_by_id(session, query, Integration.id, limit=limit, cursor=cursor)


MAX_KEY_LENGTH = 256


async def by_key(session: AsyncSession, key: str) -> Integration | None:
    """The integration a presented key belongs to (compared by hash, so in constant time)."""
    return (await by_keys(session, [key])).get(key)


async def by_keys(session: AsyncSession, keys: Iterable[str]) -> dict[str, Integration]:
    """`by_key` for many presented keys at once (one query): key -> integration, for known keys."""
    hashed = {hash_token(key): key for key in keys if 0 < len(key) <= MAX_KEY_LENGTH}
    if not hashed:
        return {}
    found = await session.scalars(select(Integration).where(Integration.key_hash.in_(hashed)))
    return {hashed[integration.key_hash]: integration for integration in found}
