"""Who did something, and the append-only record of it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.logging import current_request_id
from app.incidents.models import Incident, TimelineEntry
from app.users.models import User


@dataclass(frozen=True)
class Actor:
    type: Literal["user", "integration", "system"]
    id: int | None
    name: str

    @classmethod
    def of(cls, user: User) -> Actor:
        return cls("user", user.id, user.full_name)

    @property
    def user_id(self) -> int | None:
        return self.id if self.type == "user" else None


SYSTEM = Actor("system", None, "system")


def entry_row(
    *, incident_id: int, type: str, actor: Actor, now: datetime, data: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A timeline entry as a row, for writers that insert many at once."""
    return {
        "incident_id": incident_id,
        "type": type,
        "actor_type": actor.type,
        "actor_id": actor.id,
        "actor_name": actor.name,
        "data": data or {},
        "request_id": current_request_id(),
        "created_at": now,
    }


def record(
    session: AsyncSession,
    *,
    incident: Incident,
    type: str,
    actor: Actor,
    now: datetime,
    data: dict[str, Any] | None = None,
) -> TimelineEntry:
    """Add an entry to the current transaction: it commits with the change, or not at all."""
    entry = TimelineEntry(
        **entry_row(incident_id=incident.id, type=type, actor=actor, now=now, data=data)
    )
    session.add(entry)
    return entry
