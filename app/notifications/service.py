"""The outbox: notification rows written with the change that causes them, delivered later.

Delivery never happens inside a transaction: a batch is claimed with a lease (status `sending`,
`lease_until`) and committed, then sent, then the outcome is recorded. A lease that expires (the
process died mid-send) makes the row claimable again, so delivery is at least once; the only
duplicate possible is a crash between the receiver's acceptance and our commit.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import logging
import random
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core import bulk, metrics
from app.core.clock import Clock
from app.core.config import Settings
from app.core.crypto import Sealer, Unreadable
from app.core.db import WAKE_WORKER, is_unavailable, limit_lock_waits, session_scope
from app.core.logging import acting_for, current_request_id
from app.escalation.models import EscalationEvent
from app.incidents.models import Assignment, Incident, Status, TimelineEntry
from app.incidents.timeline import SYSTEM, Actor, entry_row
from app.notifications import preferences, render
from app.notifications.channels import Channels, DeliveryError, Outgoing
from app.notifications.models import (
    Notification,
    NotificationPreference,
    NotificationStatus,
    WebhookSubscription,
)
from app.notifications.preferences import Person, Preference
from app.notifications.render import HEADLINES
from app.services.models import Service

logger = logging.getLogger(__name__)

LEASE = timedelta(seconds=120)
# A batch must finish well inside its lease: BATCH / CONCURRENCY waves of at most SEND_DEADLINE
# (5 × 15 s). More concurrency costs more CPU than it saves with fast receivers: httpcore's pool
# bookkeeping grows with the requests in flight (measured: 25 at once, half the throughput of 5).
DELIVERY_BATCH = 50
CONCURRENCY = 10
SEND_DEADLINE = 15.0
PAGE_EVENTS = ("escalated",)
# How long a batch's outcomes wait for an unreachable database before the lease is left to
# expire (and the batch to be sent again): a restart or a failover takes seconds, not minutes.
RECORD_RETRY_SECONDS = 60.0


def incident_summary(incident: Mapping[str, Any], service_name: str | None) -> dict[str, Any]:
    """What every message and webhook says about an incident."""
    return {
        "id": incident["id"],
        "title": incident["title"],
        "status": incident["status"],
        "severity": incident["severity"],
        "service_id": incident["service_id"],
        "service_name": service_name,
        "labels": incident["labels"],
        "escalation_level": incident["escalation_level"],
    }


def webhook_payload(
    *,
    cause: str,
    event: str,
    incident: dict[str, Any],
    actor: Actor | None,
    data: dict[str, Any],
    now: datetime,
) -> dict[str, Any]:
    """The JSON body of every outgoing webhook (documented in the README and OpenAPI)."""
    return {
        "id": cause,
        "event": f"incident.{event}",
        "created_at": now.isoformat(),
        "incident": incident,
        "actor": None if actor is None
        else {"type": actor.type, "id": actor.id, "name": actor.name},
        "data": data,
    }  # fmt: skip


def plain_row(
    *,
    key: str,
    incident_id: int | None,
    event: str,
    channel: str,
    address: str,
    subject: str,
    payload: dict[str, Any],
    now: datetime,
    user_id: int | None = None,
    webhook_id: int | None = None,
    escalation_event_id: int | None = None,
) -> dict[str, Any]:
    return {
        "key": key, "incident_id": incident_id, "escalation_event_id": escalation_event_id,
        "user_id": user_id, "webhook_id": webhook_id, "channel": channel, "address": address,
        "event": event, "subject": subject[:500], "body": "", "payload": payload,
        "status": NotificationStatus.pending.value, "attempts": 0, "next_attempt_at": now,
        "lease_until": None, "last_error": None, "provider_message_id": None, "sent_at": None,
        "request_id": current_request_id(), "created_at": now, "updated_at": now,
    }  # fmt: skip


def _subject(event: str, incident: Mapping[str, Any]) -> str:
    headline = HEADLINES.get(event, event)
    return f"[{incident['severity'].upper()}] #{incident['id']} {headline}: {incident['title']}"


def rows_for(
    *,
    cause: str,
    event: str,
    incident: dict[str, Any],
    people: Mapping[int, tuple[Person, list[Preference]]],
    user_ids: Sequence[int],
    subscriptions: Sequence[Subscription],
    actor: Actor | None,
    data: dict[str, Any],
    now: datetime,
    escalation_event_id: int | None = None,
    extra: dict[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], list[int]]:
    """One row per user and channel that wants this event, and per subscription that wants it.

    Answers the rows and the users reached (those with at least one row). `incident` is a summary.
    """
    rows: list[dict[str, Any]] = []
    reached: list[int] = []
    subject = _subject(event, incident)
    for user_id in dict.fromkeys(user_ids):
        if user_id not in people:
            continue
        person, preferences = people[user_id]
        chosen = [p for p in preferences if p.wants(event, incident["severity"])]
        if chosen:
            reached.append(user_id)
        for preference in chosen:
            if preference.channel == "webhook":  # the documented webhook body, for people too
                payload = webhook_payload(
                    cause=f"{cause}:user:{user_id}", event=event, incident=incident, actor=actor,
                    data=data, now=now,
                )  # fmt: skip
            else:
                payload = {
                    "event": event, "incident": incident, "actor": actor.name if actor else None,
                    "recipient": person.full_name, **(extra or {}),
                }  # fmt: skip
            rows.append(
                plain_row(
                    key=f"{cause}:user:{user_id}:{preference.channel}", incident_id=incident["id"],
                    event=event, channel=preference.channel,
                    address=preference.effective_address or "", subject=subject, payload=payload,
                    now=now, user_id=user_id, escalation_event_id=escalation_event_id,
                )
            )  # fmt: skip
    for subscription in subscriptions:
        if event not in subscription.events:
            continue
        body = webhook_payload(
            cause=cause, event=event, incident=incident, actor=actor, data=data, now=now
        )
        rows.append(
            plain_row(
                key=f"{cause}:webhook:{subscription.id}", incident_id=incident["id"], event=event,
                channel="webhook", address=subscription.url, subject=subject, payload=body,
                now=now, webhook_id=subscription.id, escalation_event_id=escalation_event_id,
            )
        )  # fmt: skip
    return rows, reached


def action_webhook_row(
    *,
    incident: dict[str, Any],
    event: Mapping[str, Any],
    url: str,
    index: int,
    now: datetime,
) -> dict[str, Any]:
    """The JSON POST of a policy step's `webhook` action (signed with WEBHOOK_SIGNING_SECRET)."""
    cause = f"escalation:{event['id']}"
    data = {"policy_id": event["policy_id"], "step": event["step"], "cycle": event["cycle"]}
    payload = webhook_payload(
        cause=f"{cause}:action:{index}", event="escalated", incident=incident, actor=None,
        data=data, now=now,
    )  # fmt: skip
    return plain_row(
        key=f"{cause}{ACTION_KEY}{index}", incident_id=incident["id"], event="escalated",
        channel="webhook", address=url, subject=_subject("escalated", incident),
        payload=payload, now=now, escalation_event_id=event["id"],
    )  # fmt: skip


@dataclass(frozen=True)
class Subscription:
    id: int
    url: str
    events: list[str]


async def subscriptions(session: AsyncSession) -> list[Subscription]:
    """The enabled webhook subscriptions (a short list, read once per batch)."""
    rows = await session.execute(
        select(WebhookSubscription.id, WebhookSubscription.url, WebhookSubscription.events).where(
            WebhookSubscription.enabled.is_(True)
        )
    )
    return [Subscription(r.id, r.url, list(r.events)) for r in rows]


async def service_names(session: AsyncSession, ids: Iterable[int | None]) -> dict[int, str]:
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    rows = await session.execute(select(Service.id, Service.name).where(Service.id.in_(wanted)))
    return {r.id: r.name for r in rows}


async def announce(
    session: AsyncSession,
    *,
    incident: Incident,
    entry: TimelineEntry,
    event: str,
    actor: Actor,
    now: datetime,
    user_ids: Iterable[int] | None = None,
    detail: str | None = None,
) -> None:
    """Write the notifications of an incident event, in the transaction that records it.

    Who hears of it: for `triggered`, everyone whose preferences ask for new incidents; for
    `assigned`, the people just assigned (`user_ids`); otherwise the incident's responders (its
    assignees and everyone its escalation has paged). Never the person who made the change.
    Every enabled webhook subscription for the event gets it too.
    """
    if entry.id is None:
        await session.flush()
    if user_ids is None:
        user_ids = await _audience(session, incident=incident, event=event)
    incident_row = {c: getattr(incident, c) for c in SUMMARY_COLUMNS}
    await _write(
        session, event=event, told=[Told(incident_row, entry.id, dict(entry.data), actor)],
        user_ids=list(user_ids), now=now, detail=detail,
    )  # fmt: skip


@dataclass(frozen=True)
class Told:
    """One incident event to announce: the incident (SUMMARY_COLUMNS at least), the timeline
    entry recording the event, and who caused it."""

    incident: Mapping[str, Any]
    entry_id: int
    data: dict[str, Any]
    actor: Actor
    request_id: str | None = None  # of the request that caused it, when not the current one


async def announce_opened(session: AsyncSession, told: Sequence[Told], *, now: datetime) -> None:
    """`announce` of `triggered` for many new incidents at once (the ingestion of a batch)."""
    if told:
        audience = await _audience(session, incident=None, event="triggered")
        await _write(session, event="triggered", told=told, user_ids=audience, now=now)


async def _write(
    session: AsyncSession,
    *,
    event: str,
    told: Sequence[Told],
    user_ids: list[int],
    now: datetime,
    detail: str | None = None,
) -> None:
    people = await preferences.for_users(session, user_ids)
    hooks = await subscriptions(session)
    if not people and not any(event in s.events for s in hooks):
        return
    names = await service_names(session, [t.incident["service_id"] for t in told])
    rows: list[dict[str, Any]] = []
    for one in told:
        service_id = one.incident["service_id"]
        summary = incident_summary(one.incident, names.get(service_id) if service_id else None)
        note = detail or one.data.get("note")
        with acting_for(one.request_id or current_request_id()):
            rows += rows_for(
                cause=f"timeline:{one.entry_id}", event=event, incident=summary, people=people,
                user_ids=[uid for uid in user_ids if uid != one.actor.user_id],
                subscriptions=hooks, actor=one.actor, data=one.data, now=now,
                extra={"detail": note} if note else None,
            )[0]  # fmt: skip
    await bulk.insert_rows(session, cast(Table, Notification.__table__), rows)
    if rows:
        session.info[WAKE_WORKER] = True


SUMMARY_COLUMNS = ("id", "title", "status", "severity", "service_id", "labels", "escalation_level")


async def _audience(session: AsyncSession, *, incident: Incident | None, event: str) -> list[int]:
    if event == "triggered" or incident is None:
        # Only stored preferences can ask for new incidents (the defaults do not).
        rows = await session.execute(
            select(NotificationPreference.user_id, NotificationPreference.events).where(
                NotificationPreference.enabled.is_(True)
            )
        )
        return sorted({uid for uid, events in rows if "triggered" in events})
    assignees = set(
        await session.scalars(
            select(Assignment.user_id).where(Assignment.incident_id == incident.id)
        )
    )
    paged: set[int] = set()
    for notified in await session.scalars(
        select(EscalationEvent.notified_user_ids).where(
            EscalationEvent.incident_id == incident.id,
            EscalationEvent.status == "executed",
        )
    ):
        paged.update(notified)
    return sorted(assignees | paged)


async def cancel_pending_pages(session: AsyncSession, *, incident_id: int, now: datetime) -> None:
    """Pages not yet handed to a channel are moot once someone has the incident."""
    await session.execute(
        update(Notification)
        .where(
            Notification.incident_id == incident_id,
            Notification.status == NotificationStatus.pending.value,
            Notification.event.in_(PAGE_EVENTS),
            Notification.webhook_id.is_(None),  # subscriptions still hear of the escalation
        )
        .values(
            status=NotificationStatus.cancelled.value,
            last_error=CANCELLED,
            updated_at=now,
        )
    )


@dataclass(frozen=True)
class Claimed:
    id: int
    incident_id: int | None
    user_id: int | None
    webhook_id: int | None
    channel: str
    address: str
    event: str
    subject: str
    payload: dict[str, Any]
    attempts: int
    secret: str | None
    unsendable: str | None = None  # why it cannot be sent now (a secret no key decrypts)


@dataclass(frozen=True)
class Outcome:
    claimed: Claimed
    subject: str
    body: str
    provider_message_id: str | None = None
    error: str | None = None
    permanent: bool = False
    retry_after: float | None = None


def due(now: datetime) -> ColumnElement[bool]:
    """Rows a worker may claim at `now`: pending and due, or sending with an expired lease."""
    return or_(
        and_(
            Notification.status == NotificationStatus.pending.value,
            Notification.next_attempt_at <= now,
        ),
        and_(
            Notification.status == NotificationStatus.sending.value,
            Notification.lease_until < now,
        ),
    )


async def claim(
    session: AsyncSession,
    *,
    now: datetime,
    batch: int,
    signing_secret: str | None = None,
    sealer: Sealer | None = None,
) -> list[Claimed]:
    """Lease due rows (pending, or sending with an expired lease) to this process; subscriptions'
    secrets are decrypted with `sealer` (a delivery whose secret cannot be read fails)."""
    rows = list(
        await session.scalars(
            select(Notification)
            .where(due(now))
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
    rows = await _drop_moot_pages(session, rows, now=now)
    hook_ids = {r.webhook_id for r in rows if r.webhook_id is not None}
    hooks: dict[int, tuple[str, str]] = {}
    if hook_ids:
        found = await session.execute(
            select(WebhookSubscription.id, WebhookSubscription.url, WebhookSubscription.secret)
            .where(WebhookSubscription.id.in_(hook_ids))
        )  # fmt: skip
        hooks = {hook_id: (url, secret) for hook_id, url, secret in found}
    claimed = []
    for r in rows:
        address, secret, unsendable = r.address, None, None
        if r.webhook_id is not None and r.webhook_id in hooks:
            address, sealed = hooks[r.webhook_id]  # its current URL and secret
            try:
                secret = sealer.open(sealed) if sealer else sealed
            except Unreadable as exc:  # retried like a failed send: the keys may be fixed
                unsendable = f"the subscription's secret cannot be decrypted: {exc}"
        elif r.channel == "webhook" and r.user_id is None:
            if ACTION_KEY not in r.key:
                # A subscription's delivery whose subscription was deleted meanwhile.
                r.status = NotificationStatus.cancelled.value
                r.lease_until = None
                r.last_error = "cancelled: the webhook subscription was deleted"
                continue
            secret = signing_secret  # a policy step's webhook action
        claimed.append(
            Claimed(r.id, r.incident_id, r.user_id, r.webhook_id, r.channel, address, r.event,
                    r.subject, r.payload, r.attempts, secret, unsendable)
        )  # fmt: skip
    return claimed


async def _drop_moot_pages(
    session: AsyncSession, rows: list[Notification], *, now: datetime
) -> list[Notification]:
    """Cancel claimed pages whose incident has left `triggered` (a retry, or an expired lease)."""
    pages = {r.incident_id for r in rows if _is_page(r) and r.incident_id is not None}
    if not pages:
        return rows
    live = set(
        await session.scalars(
            select(Incident.id).where(
                Incident.id.in_(pages), Incident.status == Status.triggered.value
            )
        )
    )
    kept = []
    for row in rows:
        if _is_page(row) and row.incident_id not in live:
            row.status = NotificationStatus.cancelled.value
            row.lease_until = None
            row.last_error = CANCELLED
        else:
            kept.append(row)
    return kept


def _is_page(row: Notification) -> bool:
    """A page: an escalation step's message to a person or its webhook action (no subscription)."""
    return row.event in PAGE_EVENTS and row.webhook_id is None


CANCELLED = "cancelled: the incident left triggered"
ACTION_KEY = ":action:"  # in the key of a policy step's webhook action


def _message(claimed: Claimed, settings: Settings) -> render.Message:
    if claimed.event == RECOVERY_EVENT:
        return recovery_message(claimed.payload, settings)
    if claimed.channel in ("email", "sms", "slack"):
        return render.render(claimed.channel, claimed.payload, base_url=settings.public_base_url)
    return render.Message(subject=claimed.subject, text=claimed.subject)


async def attempt(
    claimed: Claimed, *, channels: Channels, settings: Settings, now: datetime
) -> Outcome:
    """Render and send one notification; never raises."""
    if claimed.unsendable is not None:
        logger.error("notification %s not sent: %s", claimed.id, claimed.unsendable)
        return Outcome(claimed, claimed.subject, "", error=claimed.unsendable[:500])
    try:
        message = _message(claimed, settings)
    except Exception as exc:
        logger.exception("notification %s could not be rendered", claimed.id)
        return Outcome(claimed, claimed.subject, "", error=f"rendering failed: {exc}"[:500],
                       permanent=True)  # fmt: skip
    if claimed.event == RECOVERY_EVENT:
        body = ""  # never store a token
    elif claimed.channel == "webhook":
        body = json.dumps(claimed.payload, separators=(",", ":"))
    else:
        body = message.text
    subject = message.subject or claimed.subject
    outgoing = Outgoing(
        id=claimed.id, channel=claimed.channel, address=claimed.address, message=message,
        payload=claimed.payload, now=now, event=claimed.event, secret=claimed.secret,
        personal=claimed.user_id is not None,
    )  # fmt: skip
    try:
        provider_id = await asyncio.wait_for(channels.send(outgoing), SEND_DEADLINE)
    except DeliveryError as exc:
        return Outcome(claimed, subject, body, error=str(exc)[:500], permanent=exc.permanent,
                       retry_after=exc.retry_after)  # fmt: skip
    except TimeoutError:
        return Outcome(claimed, subject, body, error=f"no answer within {SEND_DEADLINE:.0f} s")
    except Exception as exc:  # a bug in an adapter must not stop the batch
        logger.exception("notification %s: unexpected error", claimed.id)
        return Outcome(claimed, subject, body, error=f"{type(exc).__name__}: {exc}"[:500])
    return Outcome(claimed, subject, body, provider_message_id=provider_id)


def backoff(
    attempts: int,
    *,
    retry_after: float | None = None,
    base: float = 30.0,
    longest: float = 3600.0,
) -> timedelta:
    """By default about 30 s, 2 min, 8 min, 32 min, then hourly (NOTIFY_RETRY_BASE_SECONDS and
    NOTIFY_RETRY_MAX_SECONDS); ±20 % jitter so retries do not march."""
    wait = min(base * 4 ** min(attempts - 1, 30), longest)
    seconds = wait * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not a secret
    if retry_after is not None:
        seconds = max(seconds, min(retry_after, 3600.0))
    return timedelta(seconds=seconds)


async def record_outcomes(
    session: AsyncSession,
    *,
    outcomes: Sequence[Outcome],
    now: datetime,
    max_attempts: int,
    retry_base: float = 30.0,
    retry_longest: float = 3600.0,
) -> None:
    """Record a batch of sends, with a `notified` or `notification_failed` entry each."""
    rows = {
        row.id: row
        for row in await session.scalars(
            select(Notification)
            .where(Notification.id.in_([o.claimed.id for o in outcomes]))
            .with_for_update()
        )
    }
    entries = []
    recorded: list[tuple[str, str, float | None]] = []  # channel, outcome, seconds to send
    for outcome in outcomes:
        claimed = outcome.claimed
        row = rows.get(claimed.id)
        # Someone else re-claimed it after our lease ran out: their outcome is the one to keep.
        if row is None or row.status != NotificationStatus.sending.value:
            continue
        if row.attempts != claimed.attempts:
            continue
        said = {"notification_id": row.id, "incident_id": row.incident_id,
                "channel": row.channel, "attempts": row.attempts,
                "request_id": row.request_id}  # fmt: skip
        row.updated_at = now
        row.lease_until = None
        row.subject = outcome.subject[:500]
        row.body = outcome.body
        data: dict[str, Any] = {
            "notification_id": row.id, "channel": row.channel, "user_id": row.user_id,
            "webhook_id": row.webhook_id, "event": row.event,
        }  # fmt: skip
        if outcome.error is None:
            row.status = NotificationStatus.sent.value
            row.sent_at = now
            row.last_error = None
            row.provider_message_id = (outcome.provider_message_id or "")[:255] or None
            entry_type = "notified"
            recorded.append((row.channel, "sent", (now - row.created_at).total_seconds()))
            logger.info(
                "notification %s (%s) sent for incident %s",
                row.id, row.channel, row.incident_id, extra={**said, "outcome": "sent"},
            )  # fmt: skip
        elif outcome.permanent or row.attempts >= max_attempts:
            row.status = NotificationStatus.failed.value
            row.last_error = outcome.error
            entry_type = "notification_failed"
            data |= {"attempts": row.attempts, "error": outcome.error}
            recorded.append((row.channel, "failed", None))
            logger.warning(
                "notification %s (%s) failed for good after %d attempt(s): %s",
                row.id, row.channel, row.attempts, outcome.error,
                extra={**said, "outcome": "failed"},
            )  # fmt: skip
        else:
            row.status = NotificationStatus.pending.value
            row.last_error = outcome.error
            row.next_attempt_at = now + backoff(
                row.attempts, retry_after=outcome.retry_after, base=retry_base,
                longest=retry_longest,
            )  # fmt: skip
            recorded.append((row.channel, "retry", None))
            logger.warning(
                "notification %s (%s) attempt %d failed, next at %s: %s",
                row.id, row.channel, row.attempts, row.next_attempt_at.isoformat(), outcome.error,
                extra={**said, "outcome": "retry"},
            )  # fmt: skip
            continue
        if row.incident_id is not None:
            with acting_for(row.request_id):
                entries.append(
                    entry_row(incident_id=row.incident_id, type=entry_type, actor=SYSTEM,
                              now=now, data=data)
                )  # fmt: skip
    await bulk.insert_rows(session, cast(Table, TimelineEntry.__table__), entries)
    metrics.count_deliveries(session, recorded)


async def deliver_due(
    sessions: async_sessionmaker[AsyncSession],
    *,
    clock: Clock,
    batch: int,
    channels: Channels,
    concurrency: int = CONCURRENCY,
) -> int:
    """Claim a batch, send it (up to `concurrency` at once) outside any transaction, record it."""
    settings = channels.settings
    async with session_scope(sessions) as session:
        await limit_lock_waits(session)
        claimed = await claim(
            session, now=clock.now(), batch=batch, signing_secret=settings.webhook_signing_secret,
            sealer=Sealer.of(settings),
        )  # fmt: skip
    if not claimed:
        return 0
    gate = asyncio.Semaphore(concurrency)

    async def one(item: Claimed) -> Outcome:
        async with gate:
            return await attempt(item, channels=channels, settings=settings, now=clock.now())

    outcomes = list(await asyncio.gather(*(one(item) for item in claimed)))
    give_up = time.monotonic() + RECORD_RETRY_SECONDS
    for wait in itertools.chain((0.25, 0.5, 1.0), itertools.repeat(2.0)):
        try:
            async with session_scope(sessions) as session:
                await limit_lock_waits(session, milliseconds=5_000)
                await record_outcomes(
                    session, outcomes=outcomes, now=clock.now(),
                    max_attempts=settings.notify_max_attempts,
                    retry_base=settings.notify_retry_base_seconds,
                    retry_longest=settings.notify_retry_max_seconds,
                )  # fmt: skip
            break
        except Exception as exc:
            # What was sent is known only here: dropping it would leave the rows `sending` until
            # their lease ends, then send them again. Wait for the database (a restart, a
            # failover) for a while; past that the lease is the fallback.
            if not is_unavailable(exc) or time.monotonic() + wait > give_up:
                raise
            logger.warning(
                "recording %d delivery outcome(s): the database is unavailable; again in %.2f s",
                len(outcomes), wait,
            )  # fmt: skip
            await asyncio.sleep(wait)
    return len(claimed)


# ---- password recovery ---------------------------------------------------------------------------

RECOVERY_EVENT = "password_recovery"


def recovery_token(secret_key: str, nonce: str) -> str:
    """The reset token mailed for `nonce`, derived from the secret key: the outbox never holds it.

    The database keeps only the token's SHA-256 (to check it) and the nonce (to mail it).
    """
    digest = hmac.new(secret_key.encode(), f"password-recovery:{nonce}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()


def recovery_row(
    *, user_id: int, email: str, nonce: str, minutes: int, now: datetime
) -> dict[str, Any]:
    return plain_row(
        key=f"recovery:{nonce}", incident_id=None, event=RECOVERY_EVENT, channel="email",
        address=email, subject="Password recovery", payload={"nonce": nonce, "minutes": minutes},
        now=now, user_id=user_id,
    )  # fmt: skip


def recovery_message(payload: dict[str, Any], settings: Settings) -> render.Message:
    token = recovery_token(settings.secret_key, payload["nonce"])
    return render.render_recovery(
        token=token, minutes=payload["minutes"], project=settings.project_name,
        base_url=settings.public_base_url,
    )  # fmt: skip


async def next_due(session: AsyncSession) -> datetime | None:
    result: datetime | None = await session.scalar(
        select(func.min(Notification.next_attempt_at)).where(
            Notification.status == NotificationStatus.pending.value
        )
    )
    return result
