"""The append-only record of an incident: every entry type, what it reads as, and one builder each.

Each type's builder makes the entry as a row (`Row`), in the transaction of the change it records:
writers that insert many entries at once (ingestion, escalation, delivery) insert the rows with one
statement; the others add one with `record`. The console's labels and the API's descriptions come
from `EntryType`, so a new type cannot go unlabelled (tests/incidents/test_timeline.py checks that
every type has a label and a writer).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any, cast

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.actors import SYSTEM, Actor
from app.core.logging import current_request_id
from app.incidents.models import TimelineEntry

Row = dict[str, Any]


class EntryType(StrEnum):
    """Every kind of timeline entry, with its label (the console) and description (the docs)."""

    label: str
    description: str

    def __new__(cls, value: str, label: str, description: str) -> EntryType:
        member = str.__new__(cls, value)
        member._value_ = value
        member.label = label
        member.description = description
        return member

    created = "created", "Opened", "The incident was opened: by a person, the API or an alert"
    alert_received = (
        "alert_received", "Alert received",
        "An alert came in for it (the alert as its source sent it is in `data.raw`)",
    )  # fmt: skip
    updated = "updated", "Edited", "Fields changed, each with its value before and after"
    acknowledged = "acknowledged", "Acknowledged", "Someone took it on; escalation stopped"
    unacknowledged = (
        "unacknowledged", "Unacknowledged", "Handed back to escalation (triggered again)"
    )  # fmt: skip
    snoozed = "snoozed", "Snoozed", "Put aside until a time; escalation stopped meanwhile"
    unsnoozed = "unsnoozed", "Snooze ended", "Back to triggered: the snooze ended or was ended"
    resolved = "resolved", "Resolved", "Closed; escalation stopped"
    reopened = "reopened", "Reopened", "Triggered again after it was resolved"
    assigned = "assigned", "Assignees changed", "People added to it, removed, or given another role"
    commented = "commented", "Comment", "A comment was added"
    policy_applied = (
        "policy_applied", "Escalation policy applied",
        "The escalation policy chosen when it became triggered, and why (or that none applies)",
    )  # fmt: skip
    escalated = "escalated", "Escalated", "An escalation step fired: whom it paged, what it did"
    escalation_skipped = (
        "escalation_skipped", "Escalation step skipped",
        "A step whose every target is a schedule with nobody on call; the next step is due at once",
    )  # fmt: skip
    escalation_failed = (
        "escalation_failed", "Escalation step failed",
        "A step that could not page anyone, or that raised an error",
    )  # fmt: skip
    notified = "notified", "Notified", "A notification was delivered"
    notification_failed = (
        "notification_failed", "Notification failed",
        "A notification could not be delivered, for good (after its attempts, or refused)",
    )  # fmt: skip
    delivery_receipt = (
        "delivery_receipt", "Delivery receipt",
        "What the provider said became of a sent notification: an SMS delivered or not, a call "
        "answered or not (an unanswered call is tried again)",
    )  # fmt: skip


def type_of(row: Row) -> EntryType:
    """The type of an entry made by one of the builders below."""
    return cast(EntryType, EntryType._value2member_map_[row["type"]])


def _row(
    type: EntryType, incident_id: int, actor: Actor, now: datetime, data: dict[str, Any]
) -> Row:
    return {
        "incident_id": incident_id,
        "type": type.value,
        "actor_type": actor.type,
        "actor_id": actor.id,
        "actor_name": actor.name,
        "data": {**data, "via": actor.via} if actor.via else data,
        "request_id": current_request_id(),
        "created_at": now,
    }


def record(session: AsyncSession, row: Row) -> TimelineEntry:
    """Add an entry to the current transaction: it commits with the change, or not at all."""
    entry = TimelineEntry(**row)
    session.add(entry)
    return entry


def _note(note: str | None) -> dict[str, Any]:
    return {"note": note} if note else {}


# ---- one builder per type --------------------------------------------------------------------


def created(
    incident_id: int, *, actor: Actor, now: datetime, title: str, severity: str,
    service_id: int | None, source: str, dedup_key: str | None,
) -> Row:  # fmt: skip
    data = {"title": title, "severity": severity, "service_id": service_id, "source": source,
            "dedup_key": dedup_key}  # fmt: skip
    return _row(EntryType.created, incident_id, actor, now, data)


def alert_received(
    incident_id: int, *, actor: Actor, now: datetime, integration_id: int, kind: str,
    action: str, title: str, severity: str, raw: Any,
) -> Row:  # fmt: skip
    data = {"integration_id": integration_id, "kind": kind, "action": action, "title": title,
            "severity": severity, "raw": raw}  # fmt: skip
    return _row(EntryType.alert_received, incident_id, actor, now, data)


def updated(
    incident_id: int, *, actor: Actor, now: datetime, changes: dict[str, dict[str, Any]]
) -> Row:
    """`changes`: each changed field's `before` and `after`."""
    return _row(EntryType.updated, incident_id, actor, now, {"changes": changes})


def acknowledged(incident_id: int, *, actor: Actor, now: datetime, note: str | None) -> Row:
    return _row(EntryType.acknowledged, incident_id, actor, now, _note(note))


def unacknowledged(incident_id: int, *, actor: Actor, now: datetime) -> Row:
    return _row(EntryType.unacknowledged, incident_id, actor, now, {})


def snoozed(
    incident_id: int, *, actor: Actor, now: datetime, previous: str, until: datetime,
    note: str | None,
) -> Row:  # fmt: skip
    data = {"from": previous, "until": until.isoformat(), **_note(note)}
    return _row(EntryType.snoozed, incident_id, actor, now, data)


def unsnoozed(
    incident_id: int, *, actor: Actor, now: datetime, snoozed_until: datetime | None
) -> Row:
    data = {"snoozed_until": snoozed_until.isoformat() if snoozed_until else None}
    return _row(EntryType.unsnoozed, incident_id, actor, now, data)


def resolved(
    incident_id: int, *, actor: Actor, now: datetime, previous: str, note: str | None
) -> Row:
    return _row(EntryType.resolved, incident_id, actor, now, {"from": previous, **_note(note)})


def reopened(incident_id: int, *, actor: Actor, now: datetime, note: str | None) -> Row:
    return _row(EntryType.reopened, incident_id, actor, now, _note(note))


def assigned(
    incident_id: int, *, actor: Actor, now: datetime, added: Sequence[tuple[int, str]],
    removed: Sequence[int] = (), changed: Sequence[tuple[int, str]] = (),
) -> Row:  # fmt: skip
    """`added` and `changed`: (user id, role); `removed`: user ids."""
    data = {
        "added": [{"user_id": uid, "role": role} for uid, role in added],
        "removed": list(removed),
        "changed": [{"user_id": uid, "role": role} for uid, role in changed],
    }
    return _row(EntryType.assigned, incident_id, actor, now, data)


def commented(incident_id: int, *, actor: Actor, now: datetime, comment_id: int) -> Row:
    return _row(EntryType.commented, incident_id, actor, now, {"comment_id": comment_id})


def policy_applied(
    incident_id: int, *, now: datetime, policy_id: int | None, name: str | None, reason: str,
    run: int,
) -> Row:  # fmt: skip
    data = {"policy_id": policy_id, "name": name, "reason": reason, "run": run}
    return _row(EntryType.policy_applied, incident_id, SYSTEM, now, data)


def escalated(
    incident_id: int, *, actor: Actor, now: datetime, policy_id: int | None, step: int,
    cycle: int, notified_user_ids: list[int], actions: list[str], late_seconds: float,
) -> Row:  # fmt: skip
    data = {"policy_id": policy_id, "step": step, "cycle": cycle,
            "notified_user_ids": notified_user_ids, "actions": actions,
            "late_seconds": late_seconds}  # fmt: skip
    return _row(EntryType.escalated, incident_id, actor, now, data)


def escalation_skipped(
    incident_id: int, *, now: datetime, policy_id: int | None, step: int, cycle: int, reason: str
) -> Row:
    data = {"policy_id": policy_id, "step": step, "cycle": cycle, "reason": reason}
    return _row(EntryType.escalation_skipped, incident_id, SYSTEM, now, data)


def escalation_failed(incident_id: int, *, now: datetime, step: int, cycle: int, error: str) -> Row:
    data = {"step": step, "cycle": cycle, "error": error}
    return _row(EntryType.escalation_failed, incident_id, SYSTEM, now, data)


def notified(
    incident_id: int, *, now: datetime, notification_id: int, channel: str,
    user_id: int | None, webhook_id: int | None, event: str,
) -> Row:  # fmt: skip
    data = {"notification_id": notification_id, "channel": channel, "user_id": user_id,
            "webhook_id": webhook_id, "event": event}  # fmt: skip
    return _row(EntryType.notified, incident_id, SYSTEM, now, data)


def notification_failed(
    incident_id: int, *, now: datetime, notification_id: int, channel: str,
    user_id: int | None, webhook_id: int | None, event: str, attempts: int, error: str | None,
) -> Row:  # fmt: skip
    data = {"notification_id": notification_id, "channel": channel, "user_id": user_id,
            "webhook_id": webhook_id, "event": event, "attempts": attempts,
            "error": error}  # fmt: skip
    return _row(EntryType.notification_failed, incident_id, SYSTEM, now, data)


def delivery_receipt(
    incident_id: int, *, now: datetime, notification_id: int, channel: str,
    user_id: int | None, receipt: str, error_code: str | None, answered_by: str | None,
    outcome: str,
) -> Row:  # fmt: skip
    """`outcome`: `delivered`, `not_delivered` (for good), or `retry` (a call to try again)."""
    data = {"notification_id": notification_id, "channel": channel, "user_id": user_id,
            "receipt": receipt, "error_code": error_code, "outcome": outcome}  # fmt: skip
    if answered_by:
        data["answered_by"] = answered_by
    return _row(EntryType.delivery_receipt, incident_id, SYSTEM, now, data)
