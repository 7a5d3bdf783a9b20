"""The outbox: notification rows written with the change that causes them, delivered later.

Delivery never happens inside a transaction: a batch is claimed with a lease (status `sending`,
`lease_until`) and committed, then sent, then the outcome is recorded. A lease that expires (the
process died mid-send) makes the row claimable again, so delivery is at least once; the only
duplicate possible is a crash between the receiver's acceptance and our commit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.clock import Clock
from app.db import limit_lock_waits, session_scope
from app.incidents.models import TimelineEntry
from app.incidents.timeline import SYSTEM, entry_row
from app.notifications.models import Notification, NotificationStatus

logger = logging.getLogger(__name__)

LEASE = timedelta(seconds=120)
# A batch must finish well inside its lease: BATCH / CONCURRENCY waves of at most SEND_DEADLINE.
DELIVERY_BATCH = 100
CONCURRENCY = 25
SEND_DEADLINE = 15.0
MAX_ATTEMPTS = 5
PAGE_EVENTS = ("escalated",)


def _incident_summary(incident: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": incident["id"],
        "title": incident["title"],
        "status": incident["status"],
        "severity": incident["severity"],
        "service_id": incident["service_id"],
        "labels": incident["labels"],
        "escalation_level": incident["escalation_level"],
    }


def page_rows(
    *, incident: Mapping[str, Any], event: Mapping[str, Any], user_ids: list[int], now: datetime
) -> list[dict[str, Any]]:
    """One page per user for an escalation step (the `log` channel until preferences exist)."""
    # Titles may be 500 characters: the subject column holds 500 too, so it is cut to fit.
    subject = f"[{incident['severity'].upper()}] #{incident['id']} {incident['title']}"[:500]
    body = (
        f"Incident #{incident['id']} ({incident['severity']}, {incident['status']}) escalated to "
        f"step {event['step']}: {incident['title']}\n"
        f"Acknowledge: POST /v1/incidents/{incident['id']}/acknowledge"
    )
    return [
        _row(
            key=f"escalation:{event['id']}:user:{user_id}:log", incident=incident, event=event,
            user_id=user_id, channel="log", address=f"user:{user_id}", subject=subject, body=body,
            payload={"incident": _incident_summary(incident), "step": event["step"]}, now=now,
        )
        for user_id in user_ids
    ]  # fmt: skip


def webhook_row(
    *, incident: Mapping[str, Any], event: Mapping[str, Any], url: str, index: int, now: datetime
) -> dict[str, Any]:
    """The JSON POST of a step's `webhook` action."""
    payload = {
        "event": "incident.escalated",
        "incident": _incident_summary(incident),
        "escalation": {"policy_id": event["policy_id"], "step": event["step"],
                       "cycle": event["cycle"]},
        "sent_at": now.isoformat(),
    }  # fmt: skip
    return _row(
        key=f"escalation:{event['id']}:webhook:{index}", incident=incident, event=event,
        user_id=None, channel="webhook", address=url,
        subject=f"Incident #{incident['id']} escalated", body="", payload=payload, now=now,
    )  # fmt: skip


def _row(
    *,
    key: str,
    incident: Mapping[str, Any],
    event: Mapping[str, Any],
    user_id: int | None,
    channel: str,
    address: str,
    subject: str,
    body: str,
    payload: dict[str, Any],
    now: datetime,
) -> dict[str, Any]:
    return {
        "key": key, "incident_id": incident["id"], "escalation_event_id": event["id"],
        "user_id": user_id, "channel": channel, "address": address, "event": "escalated",
        "subject": subject, "body": body, "payload": payload,
        "status": NotificationStatus.pending.value, "attempts": 0, "next_attempt_at": now,
        "lease_until": None, "last_error": None, "provider_message_id": None, "sent_at": None,
        "created_at": now, "updated_at": now,
    }  # fmt: skip


async def cancel_pending_pages(session: AsyncSession, *, incident_id: int, now: datetime) -> None:
    """Pages not yet handed to a channel are moot once someone has the incident."""
    await session.execute(
        update(Notification)
        .where(
            Notification.incident_id == incident_id,
            Notification.status == NotificationStatus.pending.value,
            Notification.event.in_(PAGE_EVENTS),
        )
        .values(
            status=NotificationStatus.cancelled.value,
            last_error="cancelled: the incident left triggered",
            updated_at=now,
        )
    )


@dataclass(frozen=True)
class Claimed:
    id: int
    incident_id: int | None
    user_id: int | None
    channel: str
    address: str
    subject: str
    body: str
    payload: dict[str, Any]
    attempts: int


async def claim(session: AsyncSession, *, now: datetime, batch: int) -> list[Claimed]:
    """Lease due rows (pending, or sending with an expired lease) to this process."""
    due = or_(
        and_(
            Notification.status == NotificationStatus.pending.value,
            Notification.next_attempt_at <= now,
        ),
        and_(
            Notification.status == NotificationStatus.sending.value,
            Notification.lease_until < now,
        ),
    )
    rows = list(
        await session.scalars(
            select(Notification)
            .where(due)
            .order_by(Notification.next_attempt_at, Notification.id)
            .limit(batch)
            .with_for_update(skip_locked=True)
        )
    )
    for row in rows:
        row.status = NotificationStatus.sending.value
        row.lease_until = now + LEASE
        row.attempts += 1
        row.updated_at = now
    return [
        Claimed(r.id, r.incident_id, r.user_id, r.channel, r.address, r.subject, r.body,
                r.payload, r.attempts)
        for r in rows
    ]  # fmt: skip


async def send(claimed: Claimed, *, http: httpx.AsyncClient) -> str | None:
    """Deliver one message; None on success, else the error."""
    if claimed.channel == "log":
        logger.info(
            "page for user %s about incident %s: %s", claimed.user_id, claimed.incident_id,
            claimed.subject,
        )  # fmt: skip
        return None
    if claimed.channel == "webhook":
        try:
            response = await http.post(claimed.address, json=claimed.payload)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"[:500]
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}"
    return f"unknown channel {claimed.channel}"


def backoff(attempts: int) -> timedelta:
    return min(timedelta(seconds=30 * 2 ** (attempts - 1)), timedelta(minutes=15))


async def record_outcomes(
    session: AsyncSession, *, outcomes: list[tuple[Claimed, str | None]], now: datetime
) -> None:
    """Record a batch of sends, with a `notified` or `notification_failed` entry each."""
    rows = {
        row.id: row
        for row in await session.scalars(
            select(Notification)
            .where(Notification.id.in_([claimed.id for claimed, _ in outcomes]))
            .with_for_update()
        )
    }
    entries = []
    for claimed, error in outcomes:
        row = rows.get(claimed.id)
        # Someone else re-claimed it after our lease ran out: their outcome is the one to keep.
        if row is None or row.status != NotificationStatus.sending.value:
            continue
        if row.attempts != claimed.attempts:
            continue
        row.updated_at = now
        row.lease_until = None
        data = {"notification_id": row.id, "channel": row.channel, "user_id": row.user_id}
        if error is None:
            row.status = NotificationStatus.sent.value
            row.sent_at = now
            row.last_error = None
            entry_type = "notified"
            data["event"] = row.event
        elif row.attempts >= MAX_ATTEMPTS:
            row.status = NotificationStatus.failed.value
            row.last_error = error
            entry_type = "notification_failed"
            data |= {"attempts": row.attempts, "error": error}
        else:
            row.status = NotificationStatus.pending.value
            row.last_error = error
            row.next_attempt_at = now + backoff(row.attempts)
            continue
        if row.incident_id is not None:
            entries.append(
                entry_row(incident_id=row.incident_id, type=entry_type, actor=SYSTEM, now=now,
                          data=data)
            )  # fmt: skip
    if entries:
        await session.execute(insert(TimelineEntry), entries)


async def deliver_due(
    sessions: async_sessionmaker[AsyncSession],
    *,
    clock: Clock,
    batch: int,
    http: httpx.AsyncClient,
    concurrency: int = CONCURRENCY,
) -> int:
    """Claim a batch, send it (up to `concurrency` at once) outside any transaction, record it."""
    async with session_scope(sessions) as session:
        await limit_lock_waits(session)
        claimed = await claim(session, now=clock.now(), batch=batch)
    if not claimed:
        return 0
    gate = asyncio.Semaphore(concurrency)

    async def attempt(item: Claimed) -> tuple[Claimed, str | None]:
        async with gate:
            try:
                error = await asyncio.wait_for(send(item, http=http), SEND_DEADLINE)
            except TimeoutError:
                error = f"no answer within {SEND_DEADLINE:.0f} s"
        if error is not None:
            logger.warning("notification %s (%s) failed: %s", item.id, item.channel, error)
        return item, error

    outcomes = list(await asyncio.gather(*(attempt(item) for item in claimed)))
    async with session_scope(sessions) as session:
        await limit_lock_waits(session, milliseconds=5_000)
        await record_outcomes(session, outcomes=outcomes, now=clock.now())
    return len(claimed)


async def next_due(session: AsyncSession) -> datetime | None:
    result: datetime | None = await session.scalar(
        select(func.min(Notification.next_attempt_at)).where(
            Notification.status == NotificationStatus.pending.value
        )
    )
    return result
