"""The incident lifecycle: create, change, transitions, assignments, comments, lists.

Every change writes its timeline entry in the same transaction. Transitions lock the incident row
(`SELECT … FOR UPDATE` on PostgreSQL; SQLite's `BEGIN IMMEDIATE` already serialises writers), so
concurrent acknowledgements resolve to one change and no-ops for the rest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, func, or_, select, type_coerce
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from app.core import metrics
from app.core.db import lock_named
from app.core.errors import Conflict, DomainError, Unprocessable
from app.core.pagination import InvalidCursor, decode_cursor, encode_cursor, page_by_id
from app.core.schemas import to_utc
from app.escalation import service as escalation_service
from app.incidents.models import Assignment, Comment, Incident, Severity, Status, TimelineEntry
from app.incidents.timeline import SYSTEM, Actor, record
from app.notifications import service as notification_service
from app.services import service as service_service
from app.users import service as user_service
from app.users.models import User

MAX_SNOOZE = timedelta(days=7)


class IllegalTransition(Conflict):
    def __init__(self, incident: Incident, action: str) -> None:
        super().__init__(f"Cannot {action} incident {incident.id}: its status is {incident.status}")


# ---- loading -------------------------------------------------------------------------------------


def _with_assignees(query: Select[Any]) -> Select[Any]:
    return query.options(selectinload(Incident.assignments).selectinload(Assignment.user))


async def get(session: AsyncSession, incident_id: int, *, lock: bool = False) -> Incident | None:
    query = _with_assignees(select(Incident).where(Incident.id == incident_id))
    if lock:
        # populate_existing: a row already in the session is refreshed from the locked read.
        query = query.with_for_update().execution_options(populate_existing=True)
    incident: Incident | None = await session.scalar(query)
    return incident


async def _reload(session: AsyncSession, incident: Incident) -> Incident:
    """Re-read after a change so the answer carries the stored assignees and version."""
    fresh = await get(session, incident.id)
    assert fresh is not None
    return fresh


# ---- create and update ---------------------------------------------------------------------------


async def create(
    session: AsyncSession,
    *,
    title: str,
    actor: Actor,
    now: datetime,
    description: str = "",
    severity: Severity = Severity.medium,
    service_id: int | None = None,
    service_name: str | None = None,
    labels: dict[str, str] | None = None,
    custom_fields: dict[str, Any] | None = None,
    dedup_key: str | None = None,
    source: str = "api",
) -> tuple[Incident, bool]:
    """A new incident, or the open one with the same dedup key and service (created is False)."""
    if service_name is not None:
        service_id = (await service_service.get_or_create(session, name=service_name, now=now)).id
    elif service_id is not None and await service_service.get(session, service_id) is None:
        raise Unprocessable(f"Service {service_id} does not exist")
    if dedup_key is not None:
        await lock_named(session, dedup_lock(service_id, dedup_key))
        existing = await session.scalar(
            select(Incident.id)
            .where(
                Incident.dedup_key == dedup_key,
                Incident.service_id.is_(None) if service_id is None
                else Incident.service_id == service_id,
                Incident.status != Status.resolved.value,
            )
            .limit(1)
        )  # fmt: skip
        if existing is not None:
            found = await get(session, existing)
            assert found is not None
            return found, False
    incident = await open_new(
        session, title=title, actor=actor, now=now, description=description, severity=severity,
        service_id=service_id, labels=labels, custom_fields=custom_fields, dedup_key=dedup_key,
        source=source,
    )  # fmt: skip
    return await _reload(session, incident), True


async def _dedup_key_free(
    session: AsyncSession, incident: Incident, *, service_id: int | None
) -> None:
    """Refuse (409) what would make `incident` a second open incident with its dedup key on
    `service_id`: the database allows one, and alerts are folded into it."""
    if incident.dedup_key is None or service_id is None:
        return
    await lock_named(session, dedup_lock(service_id, incident.dedup_key))
    other = await session.scalar(
        select(Incident.id)
        .where(
            Incident.dedup_key == incident.dedup_key,
            Incident.service_id == service_id,
            Incident.status != Status.resolved.value,
            Incident.id != incident.id,
        )
        .limit(1)
    )
    if other is not None:
        raise Conflict(
            f"Incident {other} is open with the same dedup_key on service {service_id}; "
            "resolve it first"
        )


def dedup_lock(service_id: int | None, dedup_key: str) -> str:
    """The lock name that serialises writers of one (service, dedup key): API and alerts alike."""
    return f"incidents:dedup:{service_id}:{dedup_key}"


async def open_new(
    session: AsyncSession,
    *,
    title: str,
    actor: Actor,
    now: datetime,
    description: str = "",
    severity: Severity = Severity.medium,
    service_id: int | None = None,
    labels: dict[str, str] | None = None,
    custom_fields: dict[str, Any] | None = None,
    dedup_key: str | None = None,
    source: str = "api",
    last_alert_at: datetime | None = None,
) -> Incident:
    """Insert a new incident (the caller has checked the service and the dedup key): its
    `created` entry, its escalation, its notifications. Not reloaded: no assignees yet."""
    incident = Incident(
        title=title,
        description=description,
        status=Status.triggered.value,
        severity=severity.value,
        service_id=service_id,
        source=source,
        dedup_key=dedup_key,
        alert_count=1,
        labels=labels or {},
        custom_fields=custom_fields or {},
        escalation_level=0,
        escalation_status="none",
        escalation_run=0,
        created_by=actor.user_id,
        last_alert_at=last_alert_at,
        created_at=now,
        updated_at=now,
    )
    session.add(incident)
    reason = await escalation_service.prepare(session, incident=incident)
    await session.flush()
    entry = record(
        session,
        incident=incident,
        type="created",
        actor=actor,
        now=now,
        data=created_data(incident),
    )
    escalation_service.begin(session, incident=incident, reason=reason, now=now)
    await session.flush()
    await notification_service.announce(
        session, incident=incident, entry=entry, event="triggered", actor=actor, now=now
    )
    metrics.count_incidents(session, "opened", [incident.severity])
    return incident


def created_data(incident: Incident | Mapping[str, Any]) -> dict[str, Any]:
    """What the `created` entry records of a new incident (an object or a row)."""
    keys = ("title", "severity", "service_id", "source", "dedup_key")
    if isinstance(incident, Mapping):
        return {key: incident[key] for key in keys}
    return {key: getattr(incident, key) for key in keys}


UPDATABLE = ("title", "description", "severity", "service_id", "labels", "custom_fields")


async def update(
    session: AsyncSession,
    *,
    incident: Incident,
    changes: dict[str, Any],
    expected_version: int | None,
    actor: Actor,
    now: datetime,
) -> Incident:
    """Apply changed fields, with an `updated` entry giving each before and after.

    Nothing changed: nothing is written.
    """
    if expected_version is not None and expected_version != incident.version:
        raise Conflict(
            f"Incident {incident.id} is at version {incident.version}, not {expected_version}; "
            "read it again and retry"
        )
    new_service = changes.get("service_id")
    if new_service not in (None, incident.service_id) and not await service_service.get(
        session, new_service
    ):
        raise Unprocessable(f"Service {new_service} does not exist")
    if new_service not in (None, incident.service_id) and incident.status != Status.resolved.value:
        await _dedup_key_free(session, incident, service_id=new_service)
    diff: dict[str, dict[str, Any]] = {}
    for name in UPDATABLE:
        if name not in changes:
            continue
        value = changes[name]
        value = value.value if isinstance(value, Severity) else value
        before = getattr(incident, name)
        if before != value:
            diff[name] = {"before": before, "after": value}
            setattr(incident, name, value)
    if not diff:
        return incident
    return await _transitioned(session, incident, "updated", actor, now, {"changes": diff})


# ---- transitions ---------------------------------------------------------------------------------


async def acknowledge(
    session: AsyncSession,
    *,
    incident: Incident,
    actor: Actor,
    now: datetime,
    note: str | None = None,
) -> Incident:
    if incident.status == Status.acknowledged.value:
        return incident
    if incident.status != Status.triggered.value:
        raise IllegalTransition(incident, "acknowledge")
    await escalation_service.stop(session, incident=incident, now=now, reason="acknowledged")
    incident.status = Status.acknowledged.value
    incident.acknowledged_at = now
    incident.acknowledged_by = actor.user_id
    return await _transitioned(session, incident, "acknowledged", actor, now, _note(note))


async def resolve(
    session: AsyncSession,
    *,
    incident: Incident,
    actor: Actor,
    now: datetime,
    note: str | None = None,
) -> Incident:
    if incident.status == Status.resolved.value:
        return incident
    data = {"from": incident.status, **_note(note)}
    await escalation_service.stop(session, incident=incident, now=now, reason="resolved")
    incident.status = Status.resolved.value
    incident.resolved_at = now
    incident.resolved_by = actor.user_id
    incident.snoozed_until = None
    return await _transitioned(session, incident, "resolved", actor, now, data)


async def snooze(
    session: AsyncSession,
    *,
    incident: Incident,
    until: datetime,
    actor: Actor,
    now: datetime,
    note: str | None = None,
) -> Incident:
    """Snooze a triggered or acknowledged incident, or move the end of a running snooze."""
    if incident.status not in (
        Status.triggered.value, Status.acknowledged.value, Status.snoozed.value
    ):  # fmt: skip
        raise IllegalTransition(incident, "snooze")
    if incident.status == Status.snoozed.value and incident.snoozed_until == until:
        return incident
    if until <= now:
        raise DomainError("until must be in the future")
    if until > now + MAX_SNOOZE:
        raise DomainError("an incident can be snoozed for at most 7 days")
    data = {"from": incident.status, "until": until.isoformat(), **_note(note)}
    await escalation_service.stop(session, incident=incident, now=now, reason="snoozed")
    incident.status = Status.snoozed.value
    incident.snoozed_until = until
    return await _transitioned(session, incident, "snoozed", actor, now, data)


async def unsnooze(
    session: AsyncSession, *, incident: Incident, actor: Actor, now: datetime
) -> Incident:
    """Back to triggered before the snooze ends (a person), or when it ends (the system)."""
    if incident.status != Status.snoozed.value:
        raise IllegalTransition(incident, "unsnooze")
    data = {"snoozed_until": incident.snoozed_until.isoformat() if incident.snoozed_until else None}
    incident.status = Status.triggered.value
    incident.snoozed_until = None
    incident.acknowledged_at = None
    incident.acknowledged_by = None
    return await _transitioned(session, incident, "unsnoozed", actor, now, data, retriggered=True)


async def unacknowledge(
    session: AsyncSession, *, incident: Incident, actor: Actor, now: datetime
) -> Incident:
    """Acknowledged back to triggered, so that escalation starts again."""
    if incident.status != Status.acknowledged.value:
        raise IllegalTransition(incident, "unacknowledge")
    incident.status = Status.triggered.value
    incident.acknowledged_at = None
    incident.acknowledged_by = None
    return await _transitioned(
        session, incident, "unacknowledged", actor, now, {}, retriggered=True
    )


async def reopen(
    session: AsyncSession,
    *,
    incident: Incident,
    actor: Actor,
    now: datetime,
    note: str | None = None,
) -> Incident:
    if incident.status != Status.resolved.value:
        raise IllegalTransition(incident, "reopen")
    await _dedup_key_free(session, incident, service_id=incident.service_id)
    incident.status = Status.triggered.value
    incident.resolved_at = None
    incident.resolved_by = None
    incident.acknowledged_at = None
    incident.acknowledged_by = None
    return await _transitioned(
        session, incident, "reopened", actor, now, _note(note), retriggered=True
    )


async def _transitioned(
    session: AsyncSession,
    incident: Incident,
    entry_type: str,
    actor: Actor,
    now: datetime,
    data: dict[str, Any],
    *,
    retriggered: bool = False,
) -> Incident:
    """Record the change; once `retriggered`, escalation starts again at step 1."""
    incident.updated_at = now
    entry = record(session, incident=incident, type=entry_type, actor=actor, now=now, data=data)
    if retriggered:
        await escalation_service.start(session, incident=incident, now=now)
    await session.flush()
    if entry_type in ANNOUNCED:
        await notification_service.announce(
            session, incident=incident, entry=entry, event=entry_type, actor=actor, now=now
        )
    if entry_type in COUNTED:
        metrics.count_incidents(session, entry_type, [incident.severity])
    return await _reload(session, incident)


# Transitions that people may ask to be told about (notification preferences' `events`).
ANNOUNCED = ("acknowledged", "resolved", "reopened")
# Transitions counted by the metrics (with `opened`, counted where incidents are inserted).
COUNTED = ("acknowledged", "resolved", "reopened")


def _note(note: str | None) -> dict[str, Any]:
    return {"note": note} if note else {}


async def wake_snoozed(session: AsyncSession, *, now: datetime, batch: int = 100) -> int:
    """Return incidents whose snooze has ended to `triggered` (a worker job; safe to run twice)."""
    ids = list(
        await session.scalars(
            select(Incident.id)
            .where(Incident.status == Status.snoozed.value, Incident.snoozed_until <= now)
            .order_by(Incident.snoozed_until)
            .limit(batch)
            .with_for_update(skip_locked=True)
        )
    )
    for incident_id in ids:
        incident = await get(session, incident_id, lock=True)
        if incident is not None and incident.status == Status.snoozed.value:
            await unsnooze(session, incident=incident, actor=SYSTEM, now=now)
    return len(ids)


async def next_snooze_end(session: AsyncSession) -> datetime | None:
    result: datetime | None = await session.scalar(
        select(func.min(Incident.snoozed_until)).where(Incident.status == Status.snoozed.value)
    )
    return result


# ---- assignments ---------------------------------------------------------------------------------


async def assign(
    session: AsyncSession,
    *,
    incident: Incident,
    actor: Actor,
    now: datetime,
    user_ids: Sequence[int] | None = None,
    add_user_id: int | None = None,
    role: str = "responder",
) -> Incident:
    """Set the whole set of assignees, or add one person (or change their part)."""
    current = {a.user_id: a for a in incident.assignments}
    if user_ids is not None:
        wanted = {uid: current[uid].role if uid in current else "responder" for uid in user_ids}
    else:
        assert add_user_id is not None
        wanted = {uid: a.role for uid, a in current.items()} | {add_user_id: role}
    await _check_assignable(session, set(wanted) - set(current))

    added = sorted(set(wanted) - set(current))
    removed = sorted(set(current) - set(wanted))
    changed = sorted(uid for uid in set(wanted) & set(current) if wanted[uid] != current[uid].role)
    if not (added or removed or changed):
        return incident
    for uid in removed:
        await session.delete(current[uid])
    for uid in changed:
        current[uid].role = wanted[uid]
    for uid in added:
        session.add(
            Assignment(
                incident_id=incident.id,
                user_id=uid,
                role=wanted[uid],
                assigned_at=now,
                assigned_by=actor.user_id,
            )
        )
    incident.updated_at = now
    data = {
        "added": [{"user_id": uid, "role": wanted[uid]} for uid in added],
        "removed": removed,
        "changed": [{"user_id": uid, "role": wanted[uid]} for uid in changed],
    }
    entry = record(session, incident=incident, type="assigned", actor=actor, now=now, data=data)
    await session.flush()
    if added:
        await notification_service.announce(
            session, incident=incident, entry=entry, event="assigned", actor=actor, now=now,
            user_ids=added,
        )  # fmt: skip
    session.expire(incident, ["assignments"])
    return await _reload(session, incident)


async def _check_assignable(session: AsyncSession, user_ids: set[int]) -> None:
    missing = await user_service.not_active(session, user_ids)
    if missing:
        raise Unprocessable(f"No active user with id {', '.join(map(str, missing))}")


# ---- comments and timeline -----------------------------------------------------------------------


async def add_comment(
    session: AsyncSession, *, incident: Incident, author: User, content: str, now: datetime
) -> Comment:
    comment = Comment(
        incident_id=incident.id,
        author_id=author.id,
        author_name=author.full_name,
        content=content,
        created_at=now,
    )
    session.add(comment)
    await session.flush()
    entry = record(
        session,
        incident=incident,
        type="commented",
        actor=Actor.of(author),
        now=now,
        data={"comment_id": comment.id},
    )
    await session.flush()
    await notification_service.announce(
        session, incident=incident, entry=entry, event="commented", actor=Actor.of(author),
        now=now, detail=content,
    )  # fmt: skip
    return comment


async def list_comments(
    session: AsyncSession, *, incident: Incident, limit: int, cursor: str | None
) -> tuple[list[Comment], str | None]:
    query = select(Comment).where(Comment.incident_id == incident.id)
    return await page_by_id(session, query, Comment.id, limit=limit, cursor=cursor)


async def list_timeline(
    session: AsyncSession, *, incident: Incident, limit: int, cursor: str | None
) -> tuple[list[TimelineEntry], str | None]:
    query = select(TimelineEntry).where(TimelineEntry.incident_id == incident.id)
    return await page_by_id(session, query, TimelineEntry.id, limit=limit, cursor=cursor)


# ---- the list ------------------------------------------------------------------------------------

SORTS = {
    "-created_at": (Incident.created_at, True),
    "created_at": (Incident.created_at, False),
    "-updated_at": (Incident.updated_at, True),
    "updated_at": (Incident.updated_at, False),
}


@dataclass
class IncidentFilter:
    statuses: list[Status] = field(default_factory=list)
    severities: list[Severity] = field(default_factory=list)
    service_id: int | None = None
    assignee_id: int | None = None
    labels: dict[str, str] = field(default_factory=dict)
    created_after: datetime | None = None
    created_before: datetime | None = None
    q: str | None = None


async def list_page(
    session: AsyncSession,
    *,
    filters: IncidentFilter,
    sort: str,
    limit: int,
    cursor: str | None,
) -> tuple[list[Incident], str | None]:
    """A keyset page: ordered by (sort column, id), resumed strictly after the cursor's row."""
    column, descending = SORTS[sort]
    query = _with_assignees(select(Incident))
    query = _apply_filters(query, filters, session.get_bind().dialect.name)
    if cursor:
        after = decode_cursor(cursor, keys={"t": str, "id": int, "s": str})
        if after["s"] != sort:
            raise InvalidCursor()
        try:
            moment = datetime.fromisoformat(after["t"])
            if moment.tzinfo is None:
                raise ValueError("naive")
            moment = to_utc(moment)
        except ValueError:
            raise InvalidCursor() from None
        if descending:
            query = query.where(
                or_(column < moment, and_(column == moment, Incident.id < after["id"]))
            )
        else:
            query = query.where(
                or_(column > moment, and_(column == moment, Incident.id > after["id"]))
            )
    order = (column.desc(), Incident.id.desc()) if descending else (column.asc(), Incident.id.asc())
    rows = list((await session.scalars(query.order_by(*order).limit(limit + 1))).all())
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        value = last.created_at if column is Incident.created_at else last.updated_at
        next_cursor = encode_cursor({"t": value.isoformat(), "id": last.id, "s": sort})
    return rows[:limit], next_cursor


def _apply_filters(query: Select[Any], filters: IncidentFilter, dialect: str) -> Select[Any]:
    if filters.statuses:
        query = query.where(Incident.status.in_([s.value for s in filters.statuses]))
    if filters.severities:
        query = query.where(Incident.severity.in_([s.value for s in filters.severities]))
    if filters.service_id is not None:
        query = query.where(Incident.service_id == filters.service_id)
    if filters.assignee_id is not None:
        query = query.where(
            Incident.id.in_(
                select(Assignment.incident_id).where(Assignment.user_id == filters.assignee_id)
            )
        )
    for key, value in filters.labels.items():
        if dialect == "postgresql":
            query = query.where(type_coerce(Incident.labels, JSONB).contains({key: value}))
        else:
            query = query.where(Incident.labels[key].as_string() == value)
    if filters.created_after is not None:
        query = query.where(Incident.created_at >= filters.created_after)
    if filters.created_before is not None:
        query = query.where(Incident.created_at < filters.created_before)
    if filters.q:
        needle = filters.q.lower()
        query = query.where(
            or_(
                func.lower(Incident.title).contains(needle, autoescape=True),
                Incident.dedup_key == filters.q,
            )
        )
    return query
