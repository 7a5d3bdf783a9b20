"""The incident lifecycle's state and rules: find, check and change incidents, and say what changed.

Each transition checks that it is legal, changes the incident and answers the timeline entry
that records it (None when nothing changes); it writes nothing else. What follows from a change
(escalation starting or stopping, notifications, counts) is `app.flows.incidents`, which every
caller goes through. Writers lock the incident row first (`SELECT … FOR UPDATE` on PostgreSQL;
SQLite's `BEGIN IMMEDIATE` already serialises writers), so concurrent acknowledgements resolve
to one change and no-ops for the rest.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, or_, select, text, type_coerce
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload, selectinload

from app.core.actors import Actor
from app.core.db import lock_names
from app.core.errors import Conflict, DomainError, Unprocessable
from app.core.pagination import InvalidCursor, decode_cursor, encode_cursor, page_by_id
from app.core.schemas import to_utc
from app.escalation.enums import EscalationStatus
from app.incidents import timeline
from app.incidents.models import Assignment, Comment, Incident, Severity, Status, TimelineEntry
from app.incidents.timeline import Row
from app.services.models import Service
from app.users.models import User
from app.users.queries import not_active

MAX_SNOOZE = timedelta(days=7)
# (service id, dedup key): at most one open incident each (see `find_open`).
DedupPair = tuple[int | None, str]


class IllegalTransition(Conflict):
    def __init__(self, incident: Incident, action: str) -> None:
        super().__init__(f"Cannot {action} incident {incident.id}: its status is {incident.status}")


# ---- finding -------------------------------------------------------------------------------------


def _with_assignees(query: Select[Any]) -> Select[Any]:
    return query.options(selectinload(Incident.assignments).selectinload(Assignment.user))


async def get(session: AsyncSession, incident_id: int, *, lock: bool = False) -> Incident | None:
    query = _with_assignees(select(Incident).where(Incident.id == incident_id))
    if lock:
        # populate_existing: a row already in the session is refreshed from the locked read.
        query = query.with_for_update().execution_options(populate_existing=True)
    incident: Incident | None = await session.scalar(query)
    return incident


async def get_many(session: AsyncSession, incident_ids: Sequence[int]) -> list[Incident]:
    """Incidents with their assignees, in the order of `incident_ids`: one statement (the
    assignees and their users joined), where `get`'s eager loads take one per level."""
    query = (
        select(Incident)
        .where(Incident.id.in_(set(incident_ids)))
        .options(joinedload(Incident.assignments).joinedload(Assignment.user))
    )
    found = {incident.id: incident for incident in (await session.scalars(query)).unique()}
    return [found[incident_id] for incident_id in incident_ids]


async def reload(session: AsyncSession, incident: Incident) -> Incident:
    """Re-read after a change so the answer carries the stored assignees and version."""
    fresh = await get(session, incident.id)
    assert fresh is not None
    return fresh


def dedup_lock(service_id: int | None, dedup_key: str) -> str:
    """The lock name that serialises writers of one (service, dedup key): API and alerts alike."""
    return f"incidents:dedup:{service_id}:{dedup_key}"


async def lock_dedup_keys(session: AsyncSession, pairs: Collection[DedupPair]) -> None:
    """Hold the (service, dedup key) pairs until the end of the transaction (see `dedup_lock`)."""
    await lock_names(session, [dedup_lock(service_id, key) for service_id, key in pairs])


async def opened_since(
    session: AsyncSession, *, service_id: int, source: str, since: datetime, cap: int
) -> int:
    """How many incidents the alerts of `source` opened on the service after `since`, counted up
    to `cap` (an index range of the service's newest incidents, never more than `cap` rows)."""
    recent = (
        select(Incident.id)
        .where(
            Incident.service_id == service_id,
            Incident.created_at > since,
            Incident.source == source,
        )
        .limit(cap)
        .subquery()
    )
    return int(await session.scalar(select(func.count()).select_from(recent)) or 0)


_OPEN_BY_PAIRS = text(
    "SELECT i.id, i.service_id, i.dedup_key FROM incidents AS i "
    "JOIN unnest(CAST(:services AS bigint[]), CAST(:keys AS varchar[])) "
    "AS k(service_id, dedup_key) "
    "ON i.service_id = k.service_id AND i.dedup_key = k.dedup_key "
    "WHERE i.status != 'resolved' AND i.dedup_key IS NOT NULL "
    "AND i.service_id IS NOT NULL"  # the partial index's own condition
)


async def find_open(session: AsyncSession, pairs: Collection[DedupPair]) -> dict[DedupPair, int]:
    """The open incident of each (service, dedup key) that has one: the one place this is asked.

    A service's open incidents are unique per key (a partial unique index); incidents without a
    service (opened through the API) are kept so by the dedup lock their writers take.
    """
    keyed = {(s, k) for s, k in pairs if s is not None}
    found: dict[DedupPair, int] = {}
    if keyed and session.get_bind().dialect.name == "postgresql":
        # One statement text for any number of pairs, joined on the partial unique index of open
        # incidents: a plan cached for it stays right however the table grows (with `IN` lists,
        # a cached generic plan could scan every incident of the service).
        services, keys = zip(*keyed, strict=True)
        rows = await session.execute(
            _OPEN_BY_PAIRS, {"services": list(services), "keys": list(keys)}
        )
        found |= {(row.service_id, row.dedup_key): row.id for row in rows}
    elif keyed:
        rows = await session.execute(
            select(Incident.id, Incident.service_id, Incident.dedup_key).where(
                Incident.dedup_key.in_({key for _, key in keyed}),
                Incident.service_id.in_({service for service, _ in keyed}),
                Incident.status != Status.resolved.value,
            )
        )
        found |= {
            (row.service_id, row.dedup_key): row.id
            for row in rows
            if (row.service_id, row.dedup_key) in keyed
        }
    unkeyed = {k for s, k in pairs if s is None}
    if unkeyed:
        rows = await session.execute(
            select(Incident.dedup_key, func.min(Incident.id).label("id"))
            .where(
                Incident.service_id.is_(None),
                Incident.dedup_key.in_(unkeyed),
                Incident.status != Status.resolved.value,
            )
            .group_by(Incident.dedup_key)
        )
        found |= {(None, row.dedup_key): row.id for row in rows}
    return found


async def _dedup_key_free(
    session: AsyncSession, incident: Incident, *, service_id: int | None
) -> None:
    """Refuse (409) what would make `incident` a second open incident with its dedup key on
    `service_id`: the database allows one, and alerts are folded into it."""
    if incident.dedup_key is None or service_id is None:
        return
    pair = (service_id, incident.dedup_key)
    await lock_dedup_keys(session, [pair])
    other = (await find_open(session, [pair])).get(pair)
    if other is not None and other != incident.id:
        raise Conflict(
            f"Incident {other} is open with the same dedup_key on service {service_id}; "
            "resolve it first"
        )


# ---- opening -------------------------------------------------------------------------------------


def new_row(
    *,
    title: str,
    description: str,
    severity: Severity,
    service_id: int | None,
    source: str,
    dedup_key: str | None,
    labels: dict[str, str],
    custom_fields: dict[str, Any],
    created_by: int | None,
    last_alert_at: datetime | None,
    now: datetime,
) -> Row:
    """A new, triggered incident as a row (its escalation fields are set when it is opened)."""
    return {
        "title": title,
        "description": description,
        "status": Status.triggered.value,
        "severity": severity.value,
        "service_id": service_id,
        "source": source,
        "dedup_key": dedup_key,
        "alert_count": 1,
        "labels": labels,
        "custom_fields": custom_fields,
        "escalation_level": 0,
        "escalation_status": EscalationStatus.none.value,
        "escalation_run": 0,
        "created_by": created_by,
        "last_alert_at": last_alert_at,
        "created_at": now,
        "updated_at": now,
        "version": 1,
    }


async def check_service(session: AsyncSession, service_id: int) -> None:
    if await session.get(Service, service_id) is None:
        raise Unprocessable(f"Service {service_id} does not exist")


async def existing_services(session: AsyncSession, service_ids: set[int]) -> set[int]:
    """Those of `service_ids` that name a service (one query)."""
    if not service_ids:
        return set()
    return set(await session.scalars(select(Service.id).where(Service.id.in_(service_ids))))


# ---- changes -------------------------------------------------------------------------------------

UPDATABLE = ("title", "description", "severity", "service_id", "labels", "custom_fields")


async def update(
    session: AsyncSession,
    *,
    incident: Incident,
    changes: dict[str, Any],
    expected_version: int | None,
    actor: Actor,
    now: datetime,
) -> Row | None:
    """Apply changed fields; the `updated` entry gives each before and after. Nothing changed:
    nothing is written (None)."""
    if expected_version is not None and expected_version != incident.version:
        raise Conflict(
            f"Incident {incident.id} is at version {incident.version}, not {expected_version}; "
            "read it again and retry"
        )
    new_service = changes.get("service_id")
    if new_service not in (None, incident.service_id):
        await check_service(session, new_service)
        if incident.status != Status.resolved.value:
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
        return None
    incident.updated_at = now
    return timeline.updated(incident.id, actor=actor, now=now, changes=diff)


def acknowledge(
    incident: Incident, *, actor: Actor, now: datetime, note: str | None = None
) -> Row | None:
    if incident.status == Status.acknowledged.value:
        return None
    if incident.status != Status.triggered.value:
        raise IllegalTransition(incident, "acknowledge")
    incident.status = Status.acknowledged.value
    incident.acknowledged_at = now
    incident.acknowledged_by = actor.user_id
    incident.updated_at = now
    return timeline.acknowledged(incident.id, actor=actor, now=now, note=note)


def resolve(
    incident: Incident, *, actor: Actor, now: datetime, note: str | None = None
) -> Row | None:
    if incident.status == Status.resolved.value:
        return None
    entry = timeline.resolved(
        incident.id, actor=actor, now=now, previous=incident.status, note=note
    )
    incident.status = Status.resolved.value
    incident.resolved_at = now
    incident.resolved_by = actor.user_id
    incident.snoozed_until = None
    incident.updated_at = now
    return entry


def snooze(
    incident: Incident, *, until: datetime, actor: Actor, now: datetime, note: str | None = None
) -> Row | None:
    """Snooze a triggered or acknowledged incident, or move the end of a running snooze."""
    if incident.status not in (
        Status.triggered.value, Status.acknowledged.value, Status.snoozed.value
    ):  # fmt: skip
        raise IllegalTransition(incident, "snooze")
    if incident.status == Status.snoozed.value and incident.snoozed_until == until:
        return None
    if until <= now:
        raise DomainError("until must be in the future")
    if until > now + MAX_SNOOZE:
        raise DomainError("an incident can be snoozed for at most 7 days")
    entry = timeline.snoozed(
        incident.id, actor=actor, now=now, previous=incident.status, until=until, note=note
    )
    incident.status = Status.snoozed.value
    incident.snoozed_until = until
    incident.updated_at = now
    return entry


def unsnooze(incident: Incident, *, actor: Actor, now: datetime) -> Row:
    """Back to triggered before the snooze ends (a person), or when it ends (the system)."""
    if incident.status != Status.snoozed.value:
        raise IllegalTransition(incident, "unsnooze")
    entry = timeline.unsnoozed(
        incident.id, actor=actor, now=now, snoozed_until=incident.snoozed_until
    )
    incident.status = Status.triggered.value
    incident.snoozed_until = None
    incident.acknowledged_at = None
    incident.acknowledged_by = None
    incident.updated_at = now
    return entry


def unacknowledge(incident: Incident, *, actor: Actor, now: datetime) -> Row:
    """Acknowledged back to triggered, so that escalation starts again."""
    if incident.status != Status.acknowledged.value:
        raise IllegalTransition(incident, "unacknowledge")
    incident.status = Status.triggered.value
    incident.acknowledged_at = None
    incident.acknowledged_by = None
    incident.updated_at = now
    return timeline.unacknowledged(incident.id, actor=actor, now=now)


async def reopen(
    session: AsyncSession,
    *,
    incident: Incident,
    actor: Actor,
    now: datetime,
    note: str | None = None,
) -> Row:
    if incident.status != Status.resolved.value:
        raise IllegalTransition(incident, "reopen")
    await _dedup_key_free(session, incident, service_id=incident.service_id)
    incident.status = Status.triggered.value
    incident.resolved_at = None
    incident.resolved_by = None
    incident.acknowledged_at = None
    incident.acknowledged_by = None
    incident.updated_at = now
    return timeline.reopened(incident.id, actor=actor, now=now, note=note)


async def snoozes_due(session: AsyncSession, *, now: datetime, batch: int) -> list[int]:
    """Incidents whose snooze has ended (claimed: skipped by other workers)."""
    return list(
        await session.scalars(
            select(Incident.id)
            .where(Incident.status == Status.snoozed.value, Incident.snoozed_until <= now)
            .order_by(Incident.snoozed_until)
            .limit(batch)
            .with_for_update(skip_locked=True)
        )
    )


async def next_snooze_end(session: AsyncSession) -> datetime | None:
    result: datetime | None = await session.scalar(
        select(func.min(Incident.snoozed_until)).where(Incident.status == Status.snoozed.value)
    )
    return result


# ---- assignments ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Assigned:
    entry: Row
    added: list[int]


async def assign(
    session: AsyncSession,
    *,
    incident: Incident,
    actor: Actor,
    now: datetime,
    user_ids: Sequence[int] | None = None,
    add_user_id: int | None = None,
    role: str = "responder",
) -> Assigned | None:
    """Set the whole set of assignees, or add one person (or change their part)."""
    current = {a.user_id: a for a in incident.assignments}
    if user_ids is not None:
        wanted = {uid: current[uid].role if uid in current else "responder" for uid in user_ids}
    else:
        assert add_user_id is not None
        wanted = {uid: a.role for uid, a in current.items()} | {add_user_id: role}
    missing = await not_active(session, set(wanted) - set(current))
    if missing:
        raise Unprocessable(f"No active user with id {', '.join(map(str, missing))}")
    added = sorted(set(wanted) - set(current))
    removed = sorted(set(current) - set(wanted))
    changed = sorted(uid for uid in set(wanted) & set(current) if wanted[uid] != current[uid].role)
    if not (added or removed or changed):
        return None
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
    entry = timeline.assigned(
        incident.id, actor=actor, now=now, added=[(uid, wanted[uid]) for uid in added],
        removed=removed, changed=[(uid, wanted[uid]) for uid in changed],
    )  # fmt: skip
    return Assigned(entry, added)


# ---- comments and timeline -----------------------------------------------------------------------


async def add_comment(
    session: AsyncSession, *, incident: Incident, author: User, content: str, now: datetime
) -> tuple[Comment, Row]:
    comment = Comment(
        incident_id=incident.id,
        author_id=author.id,
        author_name=author.full_name,
        content=content,
        created_at=now,
    )
    session.add(comment)
    await session.flush()
    entry = timeline.commented(incident.id, actor=Actor.of(author), now=now, comment_id=comment.id)
    return comment, entry


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
    # Incidents of the services of these teams (ids, or a statement selecting them).
    team_ids: list[int] | Select[Any] | None = None
    # The rows the caller may see (app.auth.policy.visible_service); None: every row.
    visible: ColumnElement[bool] | None = None


async def list_page(
    session: AsyncSession,
    *,
    filters: IncidentFilter,
    sort: str,
    limit: int,
    cursor: str | None,
) -> tuple[list[Incident], str | None]:
    """A keyset page: ordered by (sort column, id), resumed strictly after the cursor's row."""
    query = _page_query(
        _with_assignees(select(Incident)), session, filters=filters, sort=sort, limit=limit,
        cursor=cursor,
    )  # fmt: skip
    rows = list((await session.scalars(query)).all())
    return rows[:limit], _next_cursor(rows, sort, limit)


# What a reader of an incident sees of it (`IncidentRead`), in that order.
READ_FIELDS = (
    "id", "title", "description", "status", "severity", "service_id", "source", "dedup_key",
    "alert_count", "last_alert_at", "labels", "custom_fields", "assignees", "escalation_policy_id",
    "escalation_level", "escalation_status", "created_by", "acknowledged_at", "acknowledged_by",
    "resolved_at", "resolved_by", "snoozed_until", "created_at", "updated_at", "version",
)  # fmt: skip
_READ_COLUMNS = [Incident.__table__.c[name] for name in READ_FIELDS if name != "assignees"]
_ASSIGNEE = (
    User.id.label("assignee_id"), User.full_name, User.role, User.is_active, User.timezone,
    Assignment.role.label("response_role"), Assignment.assigned_at,
)  # fmt: skip
_ASSIGNEE_NAMES = (
    "id", "full_name", "role", "is_active", "timezone", "response_role", "assigned_at"
)  # fmt: skip


async def list_page_read(
    session: AsyncSession,
    *,
    filters: IncidentFilter,
    sort: str,
    limit: int,
    cursor: str | None,
) -> tuple[list[dict[str, Any]], str | None]:
    """`list_page` as readers see it: each incident a dict of `READ_FIELDS` (`assignees` as
    `Incident.assignees` gives them), read as plain rows, without building an ORM object for
    each incident and assignee: one statement (the page joined to its assignees), whatever the
    page size."""
    page = _page_query(
        select(Incident.id), session, filters=filters, sort=sort, limit=limit, cursor=cursor
    )
    column, descending = SORTS[sort]
    order = (column.desc(), Incident.id.desc()) if descending else (column.asc(), Incident.id.asc())
    query = (
        select(*_READ_COLUMNS, *_ASSIGNEE)
        .outerjoin(Assignment, Assignment.incident_id == Incident.id)
        .outerjoin(User, User.id == Assignment.user_id)
        .where(Incident.id.in_(page))
        .order_by(*order, Assignment.assigned_at, Assignment.user_id)
    )
    incidents: list[Any] = []  # each incident's row, the first of its rows
    items: list[dict[str, Any]] = []
    width = len(_READ_COLUMNS)
    for row in await session.execute(query):
        if not incidents or incidents[-1].id != row.id:
            incidents.append(row)
            values = iter(row[:width])
            items.append({n: [] if n == "assignees" else next(values) for n in READ_FIELDS})
        if row[width] is not None:  # an assignee (its user id)
            items[-1]["assignees"].append(dict(zip(_ASSIGNEE_NAMES, row[width:], strict=True)))
    return items[:limit], _next_cursor(incidents, sort, limit)


def _page_query(
    query: Select[Any],
    session: AsyncSession,
    *,
    filters: IncidentFilter,
    sort: str,
    limit: int,
    cursor: str | None,
) -> Select[Any]:
    """`query` filtered, resumed after the cursor's row, ordered and limited to one row more
    than the page (which says whether there is a next page)."""
    column, descending = SORTS[sort]
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
    return query.order_by(*order).limit(limit + 1)


def _next_cursor(rows: Sequence[Any], sort: str, limit: int) -> str | None:
    """The cursor after the page's last row, when a row beyond the page was found."""
    if len(rows) <= limit:
        return None
    last = rows[limit - 1]
    value = last.created_at if SORTS[sort][0] is Incident.created_at else last.updated_at
    return encode_cursor({"t": value.isoformat(), "id": last.id, "s": sort})


def _apply_filters(query: Select[Any], filters: IncidentFilter, dialect: str) -> Select[Any]:
    if filters.statuses:
        query = query.where(Incident.status.in_([s.value for s in filters.statuses]))
    if filters.severities:
        query = query.where(Incident.severity.in_([s.value for s in filters.severities]))
    if filters.service_id is not None:
        query = query.where(Incident.service_id == filters.service_id)
    if filters.team_ids is not None:
        query = query.where(
            Incident.service_id.in_(select(Service.id).where(Service.team_id.in_(filters.team_ids)))
        )
    if filters.visible is not None:
        query = query.where(filters.visible)
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
