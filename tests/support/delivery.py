"""Paging a user and reading the delivery log, as the notification tests do."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select

from app.core.db import session_scope
from app.notifications.models import Notification
from tests.support.harness import Harness

POLICIES = "/v1/escalation/policies/"


async def page_policy(client: httpx.AsyncClient, *user_ids: int, **fields: Any) -> None:
    """A policy whose one step pages these users at once (the new incidents' default)."""
    step = {
        "delay_minutes": 0,
        "targets": [{"type": "user", "id": uid} for uid in user_ids],
        "actions": [{"type": "notify"}],
    }
    response = await client.post(POLICIES, json={"name": "page", "steps": [step]} | fields)
    assert response.status_code == 201, response.text


async def delivery_log(harness: Harness, **where: Any) -> list[Notification]:
    """The delivery log's rows with these column values, oldest first."""
    sessionmaker = harness.app.state.sessionmaker  # type: ignore[attr-defined]
    async with session_scope(sessionmaker) as session:
        query = select(Notification).order_by(Notification.id)
        for name, value in where.items():
            query = query.where(getattr(Notification, name) == value)
        return list(await session.scalars(query))


async def vouch(
    client: httpx.AsyncClient, user_id: int, channel: str, address: str | None = None
) -> None:
    """An admin's client marks the address verified (nothing else is sent to one that is not)."""
    response = await client.post(
        f"/v1/notification-preferences/{user_id}/{channel}/verified", json={"address": address}
    )
    assert response.status_code == 200, response.text
