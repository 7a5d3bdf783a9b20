"""Services: what breaks. Plain async functions, never a commit."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import lock_named
from app.core.errors import Conflict, Unprocessable
from app.core.pagination import page_by_id
from app.escalation.models import EscalationPolicy
from app.incidents.models import Incident
from app.services.models import Service


async def get(session: AsyncSession, service_id: int) -> Service | None:
    return await session.get(Service, service_id)


async def get_by_name(session: AsyncSession, name: str) -> Service | None:
    return await session.scalar(select(Service).where(Service.name_key == name.lower()))


async def create(
    session: AsyncSession,
    *,
    name: str,
    now: datetime,
    description: str = "",
    is_active: bool = True,
    escalation_policy_id: int | None = None,
    slack_channel: str | None = None,
    team_id: int | None = None,
) -> Service:
    if await get_by_name(session, name) is not None:
        raise Conflict(f"A service named {name!r} already exists")
    await _check_policy(session, escalation_policy_id)
    service = Service(
        name=name,
        name_key=name.lower(),
        description=description,
        is_active=is_active,
        escalation_policy_id=escalation_policy_id,
        slack_channel=slack_channel,
        team_id=team_id,
        created_at=now,
        updated_at=now,
    )
    session.add(service)
    await _flush_unique_name(session, name)
    return service


async def get_or_create(session: AsyncSession, *, name: str, now: datetime) -> Service:
    """The service with this name (any case), created when there is none."""
    await lock_named(session, f"services:name:{name.lower()}")
    return await get_by_name(session, name) or await create(session, name=name, now=now)


async def update(
    session: AsyncSession, *, service: Service, changes: dict[str, Any], now: datetime
) -> Service:
    name = changes.get("name")
    if name is not None and name.lower() != service.name_key:
        if await get_by_name(session, name) is not None:
            raise Conflict(f"A service named {name!r} already exists")
        service.name_key = name.lower()
    if "escalation_policy_id" in changes:
        await _check_policy(session, changes["escalation_policy_id"])
    for field, value in changes.items():
        setattr(service, field, value)
    service.updated_at = now
    await _flush_unique_name(session, service.name)
    return service


async def delete(session: AsyncSession, *, service: Service) -> Service:
    """Delete a service that no incident belongs to (incidents are never deleted)."""
    used = await session.scalar(
        select(func.count()).select_from(Incident).where(Incident.service_id == service.id)
    )
    if used:
        raise Conflict(
            f"Service {service.id} has {used} incident(s) and cannot be deleted; "
            "deactivate it instead (is_active: false)"
        )
    await session.delete(service)
    await session.flush()
    return service


async def list_page(
    session: AsyncSession,
    *,
    limit: int,
    cursor: str | None,
    is_active: bool | None = None,
    q: str | None = None,
    team_id: int | None = None,
    visible: ColumnElement[bool] | None = None,
) -> tuple[list[Service], str | None]:
    """A page of services in id order; `visible`: the rows the caller may read."""
    query = select(Service)
    if visible is not None:
        query = query.where(visible)
    if team_id is not None:
        query = query.where(Service.team_id == team_id)
    if is_active is not None:
        query = query.where(Service.is_active == is_active)
    if q:
        query = query.where(Service.name_key.contains(q.lower(), autoescape=True))
    return await page_by_id(session, query, Service.id, limit=limit, cursor=cursor)


async def _check_policy(session: AsyncSession, policy_id: int | None) -> None:
    if policy_id is None:
        return
    # A key-share lock: a concurrent delete of the policy waits for us, then sees the service.
    found = await session.scalar(
        select(EscalationPolicy.id)
        .where(EscalationPolicy.id == policy_id)
        .with_for_update(read=True, key_share=True)
    )
    if found is None:
        raise Unprocessable(f"Escalation policy {policy_id} does not exist")


async def _flush_unique_name(session: AsyncSession, name: str) -> None:
    try:
        await session.flush()
    except IntegrityError as exc:
        raise Conflict(f"A service named {name!r} already exists") from exc
