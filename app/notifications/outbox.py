"""The outbox: notification rows written with the change that causes them, delivered later.

Delivery never happens inside a transaction: a batch is claimed with a lease (status `sending`,
`lease_until`) and committed, then sent, then the outcome is recorded. A lease that expires (the
process died mid-send) makes the row claimable again, so delivery is at least once; the only
duplicate possible is a crash between the receiver's acceptance and our commit.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
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
from app.core.logging import acting_for
from app.incidents import timeline
from app.incidents.models import Incident, Status, TimelineEntry
from app.notifications import actions, render, replies
from app.notifications import slack_messages as slack
from app.notifications.channels import Channels, DeliveryError, Outgoing
from app.notifications.models import (
    ACTION_KEY,
    PAGE_EVENTS,
    Notification,
    NotificationStatus,
    SlackMessage,
    WebhookSubscription,
)

logger = logging.getLogger(__name__)

LEASE = timedelta(seconds=120)
# A batch must finish well inside its lease: BATCH / CONCURRENCY waves of at most SEND_DEADLINE
# (5 × 15 s). More concurrency costs more CPU than it saves with fast receivers: httpcore's pool
# bookkeeping grows with the requests in flight (measured: 25 at once, half the throughput of 5).
DELIVERY_BATCH = 50
CONCURRENCY = 10
SEND_DEADLINE = 15.0
# How long a batch's outcomes wait for an unreachable database before the lease is left to
# expire (and the batch to be sent again): a restart or a failover takes seconds, not minutes.
RECORD_RETRY_SECONDS = 60.0


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
    refused: str | None = None  # why it is never to be sent (a number that opted out)
    created_at: datetime | None = None  # when the row was written (a page's links count from it)


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
    texts = [r for r in rows if r.channel == "sms"]
    opted_out = await replies.opted_out(session, sorted({r.address for r in texts}))
    for r in sorted(texts, key=lambda r: (r.user_id or 0, r.id)):
        if r.address not in opted_out and _is_page(r) and r.user_id and r.incident_id:
            # The page says how to answer it: the incident's short code for this person.
            code = await replies.allocate(
                session, user_id=r.user_id, incident_id=r.incident_id, now=now
            )
            if r.payload.get("reply_code") != code:
                r.payload = {**r.payload, "reply_code": code}
    # The Slack app's messages show the incident as it is now, whenever the row was written.
    shown = await slack.current(
        session, [r.incident_id for r in rows
                  if r.channel in slack.APP_CHANNELS and r.incident_id is not None]
    )  # fmt: skip
    claimed = []
    for r in rows:
        address, secret, unsendable = r.address, None, None
        payload = r.payload
        if r.channel in slack.APP_CHANNELS and r.incident_id in shown:
            payload = {**payload, **shown[r.incident_id]}
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
        refused = replies.OPTED_OUT if r.channel == "sms" and r.address in opted_out else None
        claimed.append(
            Claimed(r.id, r.incident_id, r.user_id, r.webhook_id, r.channel, address, r.event,
                    r.subject, payload, r.attempts, secret, unsendable, refused, r.created_at)
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


@dataclass(frozen=True)
class Renderer:
    """How to render the messages of an event that is not about an incident (a password
    recovery mail, say): given to the outbox by whoever writes such rows."""

    render: Callable[[dict[str, Any], Settings], render.Message]
    keeps_body: bool = True  # False: the message holds a secret, so its text is never stored


Renderers = Mapping[str, Renderer]


def _message(claimed: Claimed, settings: Settings, renderers: Renderers) -> render.Message:
    special = renderers.get(claimed.event)
    if special is not None:
        return special.render(claimed.payload, settings)
    if claimed.channel in ("email", "sms", "slack"):
        return render.render(
            claimed.channel, claimed.payload, base_url=settings.public_base_url,
            links=_action_links(claimed, settings),
        )  # fmt: skip
    if claimed.channel in slack.APP_CHANNELS:
        text, _ = slack.message(claimed.payload, base_url=settings.public_base_url)
        return render.Message(subject=claimed.subject, text=text)
    return render.Message(subject=claimed.subject, text=claimed.subject)


def _action_links(claimed: Claimed, settings: Settings) -> dict[str, str] | None:
    """A page email's one-click Acknowledge and Resolve links, for its recipient, valid for a
    day from when the page was written (`app.notifications.actions`)."""
    if not (
        claimed.channel == "email" and claimed.event in PAGE_EVENTS
        and claimed.user_id is not None and claimed.incident_id is not None
        and claimed.created_at is not None
    ):  # fmt: skip
        return None
    return actions.urls(
        settings, incident_id=claimed.incident_id, user_id=claimed.user_id,
        written_at=claimed.created_at,
    )  # fmt: skip


async def attempt(
    claimed: Claimed,
    *,
    channels: Channels,
    settings: Settings,
    now: datetime,
    renderers: Renderers | None = None,
) -> Outcome:
    """Render and send one notification; never raises."""
    if claimed.refused is not None:
        return Outcome(claimed, claimed.subject, "", error=claimed.refused, permanent=True)
    if claimed.unsendable is not None:
        logger.error("notification %s not sent: %s", claimed.id, claimed.unsendable)
        return Outcome(claimed, claimed.subject, "", error=claimed.unsendable[:500])
    try:
        message = _message(claimed, settings, renderers or {})
    except Exception as exc:
        logger.exception("notification %s could not be rendered", claimed.id)
        return Outcome(claimed, claimed.subject, "", error=f"rendering failed: {exc}"[:500],
                       permanent=True)  # fmt: skip
    special = (renderers or {}).get(claimed.event)
    if special is not None and not special.keeps_body:
        body = ""  # never store a secret
    elif claimed.channel == "webhook":
        body = json.dumps(claimed.payload, separators=(",", ":"))
    else:
        body = message.stored_text()  # a page's one-click links withheld
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


# What a provider's final status says of a text or a call that reached nobody (see
# app.notifications.receipts): the text fails; the call goes back for another attempt.
MESSAGE_NOT_DELIVERED = frozenset({"undelivered", "failed", "canceled"})
CALL_NOT_ANSWERED = frozenset({"busy", "no-answer", "failed", "canceled"})


def reached_nobody(
    row: Notification,
    *,
    now: datetime,
    max_attempts: int,
    retry_base: float = 30.0,
    retry_longest: float = 3600.0,
) -> str | None:
    """A sent text or call whose receipt (`row.receipt`) says it reached nobody: an SMS fails; a
    call goes back to pending with the backoff until its attempts are spent, then fails. Answers
    "retry" or "failed", or None when the receipt says nothing of the kind."""
    if row.status != NotificationStatus.sent.value or row.receipt is None:
        return None
    if row.channel == "sms" and row.receipt in MESSAGE_NOT_DELIVERED:
        row.status = NotificationStatus.failed.value
        row.last_error = _said("SMS " + row.receipt, row.provider_error)
        return "failed"
    if row.channel == "voice" and row.receipt in CALL_NOT_ANSWERED:
        if row.attempts < max_attempts:
            row.status = NotificationStatus.pending.value
            row.next_attempt_at = now + backoff(
                row.attempts, base=retry_base, longest=retry_longest
            )
            row.last_error = _said(f"call not answered ({row.receipt})", row.provider_error)
            return "retry"
        row.status = NotificationStatus.failed.value
        row.last_error = _said(
            f"call not answered ({row.receipt}) after {row.attempts} attempt(s)", row.provider_error
        )
        return "failed"
    return None


def _said(what: str, error_code: str | None) -> str:
    return f"{what}: Twilio error {error_code}" if error_code else what


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
    kept: list[dict[str, Any]] = []  # the Slack app's messages posted, to be updated later
    sent_state: dict[int, dict[str, Any]] = {}  # what each of them shows
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
        if outcome.error is None:
            sid = (outcome.provider_message_id or "")[:255] or None
            if row.provider_message_id != sid:
                # A new attempt: a receipt kept under another sid is moot (one for this attempt
                # may have come already: its callback can beat this record, and is kept).
                row.receipt = row.receipt_at = row.provider_error = None
            row.status = NotificationStatus.sent.value
            row.sent_at = now
            row.last_error = None
            row.provider_message_id = sid
            posted = slack.posted(row.provider_message_id) if row.channel in slack.POSTING else None
            if posted is not None and row.incident_id is not None:
                kept.append(
                    {
                        "incident_id": row.incident_id,
                        "channel": posted[0],
                        "ts": posted[1],
                        "notification_id": row.id,
                        "created_at": now,
                    }
                )
                sent_state[row.id] = {k: claimed.payload.get(k) for k in ("incident", "last")}
            failed = False
            recorded.append((row.channel, "sent", (now - row.created_at).total_seconds()))
            logger.info(
                "notification %s (%s) sent for incident %s",
                row.id, row.channel, row.incident_id, extra={**said, "outcome": "sent"},
            )  # fmt: skip
            # Its final receipt may have come before this record (a busy line answers at once):
            # what it says applies now, as it would have on arrival.
            early = reached_nobody(
                row, now=now, max_attempts=max_attempts, retry_base=retry_base,
                retry_longest=retry_longest,
            )  # fmt: skip
            if early is not None:
                logger.warning(
                    "notification %s (%s) reached nobody: %s", row.id, row.channel,
                    row.last_error, extra={**said, "outcome": early},
                )  # fmt: skip
                failed = early == "failed"
                if early == "retry":
                    session.info[WAKE_WORKER] = True
        elif outcome.permanent or row.attempts >= max_attempts:
            row.status = NotificationStatus.failed.value
            row.last_error = outcome.error
            failed = True
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
        if row.incident_id is not None and row.channel != slack.UPDATE:  # updates: the log only
            with acting_for(row.request_id):
                entries.append(_delivered(row, now=now, failed=failed))
    await bulk.insert_rows(session, cast(Table, TimelineEntry.__table__), entries)
    await _keep_slack_messages(session, kept, sent_state, now=now)
    metrics.count_deliveries(session, recorded)


async def _keep_slack_messages(
    session: AsyncSession, kept: list[dict[str, Any]], sent_state: dict[int, dict[str, Any]],
    *, now: datetime,
) -> None:  # fmt: skip
    """Keep the Slack app's messages just posted, to update them when their incident changes; one
    whose incident changed while it was on its way (no update could name it yet) is updated now."""
    if not kept:
        return
    written = await bulk.insert_rows(
        session, cast(Table, SlackMessage.__table__), kept, returning=("id",), ordered=True
    )
    shown = await slack.current(session, [k["incident_id"] for k in kept])
    updates: list[dict[str, Any]] = []
    for message, (message_id,) in zip(kept, written, strict=True):
        state = shown.get(message["incident_id"])
        if state is not None and state != sent_state[message["notification_id"]]:
            updates += slack.update_rows(
                [(message_id, message["channel"], message["ts"])],
                incident_id=message["incident_id"],
                cause=f"posted:{message['notification_id']}", now=now,
            )  # fmt: skip
    await bulk.insert_rows(session, cast(Table, Notification.__table__), updates)


def _delivered(row: Notification, *, now: datetime, failed: bool) -> timeline.Row:
    """The `notified` or `notification_failed` entry of an incident's notification."""
    assert row.incident_id is not None
    if failed:
        return timeline.notification_failed(
            row.incident_id, now=now, notification_id=row.id, channel=row.channel,
            user_id=row.user_id, webhook_id=row.webhook_id, event=row.event,
            attempts=row.attempts, error=row.last_error,
        )  # fmt: skip
    return timeline.notified(
        row.incident_id, now=now, notification_id=row.id, channel=row.channel,
        user_id=row.user_id, webhook_id=row.webhook_id, event=row.event,
    )  # fmt: skip


async def deliver_due(
    sessions: async_sessionmaker[AsyncSession],
    *,
    clock: Clock,
    batch: int,
    channels: Channels,
    concurrency: int = CONCURRENCY,
    renderers: Renderers | None = None,
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
            return await attempt(
                item, channels=channels, settings=settings, now=clock.now(), renderers=renderers
            )

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


async def next_due(session: AsyncSession) -> datetime | None:
    result: datetime | None = await session.scalar(
        select(func.min(Notification.next_attempt_at)).where(
            Notification.status == NotificationStatus.pending.value
        )
    )
    return result
