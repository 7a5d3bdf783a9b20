"""Reading the audit log, and its retention. (Writing it is `app.audit.recording`'s.)"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import recording
from app.audit.models import AuditEntry
from app.core.pagination import decode_cursor, encode_cursor

OBJECT_TYPES = recording.OBJECT_TYPES

# The PostgreSQL setting the retention job declares in its transaction: the trigger on
# `audit_log` lets a DELETE through only for rows older than that many days (see the migration).
RETENTION_SETTING = "ims.audit_retention_days"


@dataclass(frozen=True)
class AuditFilter:
    object_type: str | None = None
    object_id: int | None = None
    actor_id: int | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    team_id: int | None = None


async def list_page(
    session: AsyncSession, *, filters: AuditFilter, limit: int, cursor: str | None
) -> tuple[list[AuditEntry], str | None]:
    """Newest first (by id: entries are numbered in the order they are written)."""
    query = select(AuditEntry)
    if filters.object_type is not None:
        query = query.where(AuditEntry.object_type == filters.object_type)
    if filters.object_id is not None:
        query = query.where(AuditEntry.object_id == filters.object_id)
    if filters.actor_id is not None:
        query = query.where(AuditEntry.actor_id == filters.actor_id)
    if filters.action is not None:
        query = query.where(AuditEntry.action == filters.action)
    if filters.team_id is not None:
        query = query.where(AuditEntry.team_id == filters.team_id)
    if filters.since is not None:
        query = query.where(AuditEntry.at >= filters.since)
    if filters.until is not None:
        query = query.where(AuditEntry.at < filters.until)
    if cursor:
        query = query.where(AuditEntry.id < decode_cursor(cursor, keys={"id": int})["id"])
    rows = list(await session.scalars(query.order_by(AuditEntry.id.desc()).limit(limit + 1)))
    next_cursor = encode_cursor({"id": rows[limit - 1].id}) if len(rows) > limit else None
    return rows[:limit], next_cursor


def as_item(entry: AuditEntry) -> dict[str, Any]:
    """An entry as the API and the console show it."""
    return {
        "id": entry.id,
        "at": entry.at,
        "actor": {"type": entry.actor_type, "id": entry.actor_id, "name": entry.actor_name},
        "action": entry.action,
        "object_type": entry.object_type,
        "object_id": entry.object_id,
        "before": entry.before,
        "after": entry.after,
        "request_id": entry.request_id,
        "source_address": entry.source_address,
        "team_id": entry.team_id,
    }


async def prune(session: AsyncSession, *, now: datetime, days: int, batch: int) -> int:
    """Delete up to `batch` entries older than `days` days (0: none); how many were deleted.

    On PostgreSQL the transaction declares the retention, which the trigger checks for each row
    against the database's own clock: rows are deleted only when both clocks call them old."""
    if days <= 0:
        return 0
    cutoff = now - timedelta(days=days)
    old = select(AuditEntry.id).where(AuditEntry.at < cutoff)
    postgresql = session.get_bind().dialect.name == "postgresql"
    if postgresql:
        database_cutoff = text("now() - make_interval(days => :days)").bindparams(days=int(days))
        old = old.where(AuditEntry.at < database_cutoff)
    ids = list(await session.scalars(old.order_by(AuditEntry.id).limit(batch)))
    if not ids:
        return 0
    if postgresql:
        await session.execute(text(f"SET LOCAL {RETENTION_SETTING} = '{int(days)}'"))
    await session.execute(delete(AuditEntry).where(AuditEntry.id.in_(ids)))
    return len(ids)
