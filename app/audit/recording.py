"""Recording: one `audit_log` row for every create, update and delete of a configuration row,
written by the session itself in the flush that writes the change (so in its transaction).

Nothing to call: every ORM change of an audited class is recorded, whatever the code path. A
Core `insert()`, `update()` or `delete()` statement on an audited table would bypass the session,
so none is used (tests/audit/test_audit.py fails when one appears). Rows that the database
deletes by itself with their parent (`ON DELETE CASCADE`) are covered by the parent's entry.

The check per flush is a dictionary lookup per object written: the alert path, which writes
incidents, entries and notifications (none of them audited), issues no extra statement.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from sqlalchemy import event, insert, inspect
from sqlalchemy.orm import Mapper, Session, UOWTransaction
from sqlalchemy.orm.util import identity_key

from app.apikeys.models import ApiKey
from app.audit.models import Action, AuditEntry, ObjectType
from app.core.clock import Clock
from app.core.db import SESSION_CLOCK
from app.core.logging import current_actor, current_request_id, current_source
from app.escalation.models import EscalationPolicy
from app.integrations.models import Integration
from app.notifications.models import (
    ContactMethod,
    NotificationPreference,
    NotificationRule,
    WebhookSubscription,
)
from app.schedules.models import Schedule, ScheduleOverride
from app.services.models import Service
from app.teams.models import Team, TeamMember
from app.users.models import User

# The audited classes, and their `object_type` in the log. (A schedule's layers and rotations
# are a column of the schedule: its entries show them.)
AUDITED: dict[type, ObjectType] = {
    User: "user",
    Service: "service",
    Integration: "integration",
    EscalationPolicy: "escalation_policy",
    Schedule: "schedule",
    ScheduleOverride: "schedule_override",
    WebhookSubscription: "webhook_subscription",
    NotificationPreference: "notification_preference",
    ContactMethod: "contact_method",
    NotificationRule: "notification_rule",
    ApiKey: "api_key",
    Team: "team",
    TeamMember: "team_member",
}
OBJECT_TYPES = tuple(sorted(AUDITED.values()))

# Secrets, never written to the log: the column appears (so a change shows) with this instead.
REDACTED = "[redacted]"
SECRETS: dict[type, frozenset[str]] = {
    User: frozenset({"hashed_password"}),  # a password's hash
    Integration: frozenset({"key_hash"}),  # an alert source's key's hash
    WebhookSubscription: frozenset({"secret"}),  # the signing secret, encrypted
    Schedule: frozenset({"calendar_token_hash"}),  # the calendar link's token's hash
    ApiKey: frozenset({"key_hash"}),  # an API key's hash
}
# Changed by every update: left out of an update's before and after (the entry's `at` says
# when), and an update that changes nothing else is not recorded.
BOOKKEEPING = frozenset({"updated_at"})


_COLUMNS: dict[type, tuple[str, ...]] = {}


def _columns(cls: type) -> tuple[str, ...]:
    columns = _COLUMNS.get(cls)
    if columns is None:
        mapper: Mapper[Any] = inspect(cls)
        columns = _COLUMNS[cls] = tuple(prop.key for prop in mapper.column_attrs)
    return columns


def _plain(value: Any) -> Any:
    """`value` as JSON would hold it."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat() if value.tzinfo else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    return value


def _shown(cls: type, key: str, value: Any) -> Any:
    if key in SECRETS.get(cls, ()) and value is not None:
        return REDACTED
    return _plain(value)


def _whole(obj: Any) -> dict[str, Any]:
    """Every loaded column of `obj` (no statement is issued for one that is not)."""
    cls, loaded = type(obj), inspect(obj).dict
    return {key: _shown(cls, key, loaded[key]) for key in _columns(cls) if key in loaded}


def _changes(obj: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(before, after) of the columns this flush changes; empty if none really changed."""
    cls, attrs = type(obj), inspect(obj).attrs
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    for key in _columns(cls):
        if key in BOOKKEEPING:
            continue
        history = attrs[key].history
        if not history.added and not history.deleted:
            continue
        old = history.deleted[0] if history.deleted else None
        new = history.added[0] if history.added else None
        if old == new:
            continue
        before[key], after[key] = _shown(cls, key, old), _shown(cls, key, new)
    return before, after


def _action(obj: Any, before: dict[str, Any], after: dict[str, Any]) -> Action:
    """The update's verb: a domain verb where a plain `update` would hide what happened."""
    if isinstance(obj, User) and "is_active" in after:
        return Action.reactivate if after["is_active"] else Action.deactivate
    if isinstance(obj, Integration) and "key_hash" in after:
        return Action.rotate
    if isinstance(obj, WebhookSubscription) and "secret" in after:
        # A new secret has a new prefix; the same secret sealed again (a new SECRET_KEY) not.
        return Action.rotate if "secret_prefix" in after else Action.reseal
    if isinstance(obj, Schedule) and "calendar_token_hash" in after:
        return Action.rotate
    if isinstance(obj, ApiKey) and after.get("revoked_at") is not None:
        return Action.revoke
    return Action.update


def _team(session: Session, obj: Any, values: dict[str, Any] | None) -> int | None:
    """The team that owns `obj` (so that its managers read the entry), found without a
    statement: its own `team_id` column, or its parent's (a service's, a schedule's) when the
    session holds the parent (the routes that change them load it first)."""
    if isinstance(obj, Team):
        return _id(obj)
    loaded = inspect(obj).dict
    if "team_id" in loaded or (values and "team_id" in values):
        return loaded.get("team_id", (values or {}).get("team_id"))
    parent: tuple[type, str] | None = _PARENTS.get(type(obj))
    if parent is None:
        return None
    model, column = parent
    parent_id = loaded.get(column)
    if parent_id is None:
        return None
    found = session.identity_map.get(identity_key(model, parent_id))
    return getattr(found, "team_id", None) if found is not None else None


# Audited objects owned through a parent: (the parent's class, the column naming it).
_PARENTS: dict[type, tuple[type, str]] = {
    Integration: (Service, "service_id"),
    ScheduleOverride: (Schedule, "schedule_id"),
}


def _id(obj: Any) -> int:
    state = inspect(obj)
    identity = state.identity
    return int(identity[0] if identity else state.dict["id"])


def entries(session: Session) -> list[dict[str, Any]]:
    """The audit rows of what the session is flushing (called after the flush's statements,
    while the session still knows what was new, changed and deleted)."""
    found: list[tuple[Action, Any, dict[str, Any] | None, dict[str, Any] | None]] = []
    for obj in session.new:
        if type(obj) in AUDITED:
            found.append((Action.create, obj, None, _whole(obj)))
    for obj in session.dirty:
        if type(obj) in AUDITED:
            before, after = _changes(obj)
            if after:
                found.append((_action(obj, before, after), obj, before, after))
    for obj in session.deleted:
        if type(obj) in AUDITED:
            found.append((Action.delete, obj, _whole(obj), None))
    if not found:
        return []
    clock: Clock | None = session.info.get(SESSION_CLOCK)
    now = clock.now() if clock is not None else datetime.now(UTC)
    actor = current_actor()
    shared = {
        "at": now,
        "actor_type": actor.type,
        "actor_id": actor.id,
        "actor_name": actor.name[:255],
        "request_id": current_request_id(),
        "source_address": current_source(),
    }
    return [
        {
            **shared,
            "action": action.value,
            "object_type": AUDITED[type(obj)],
            "object_id": _id(obj),
            "before": before,
            "after": after,
            "team_id": _team(session, obj, before),
        }
        for action, obj, before, after in found
    ]


@event.listens_for(Session, "after_flush")
def _record(session: Session, _flush: UOWTransaction) -> None:
    rows = entries(session)
    if rows:
        session.connection().execute(insert(AuditEntry), rows)
