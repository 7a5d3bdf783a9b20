"""What Twilio says became of a sent SMS or call (its status callbacks), kept on the notification.

Each callback names the notification (`?n=<id>` in the URL the outbox gave Twilio) and the message
or call (`MessageSid`, `CallSid`). A status is kept only if it comes later in the message's or
call's life than the one kept (callbacks arrive out of order: `sent` after `delivered` changes
nothing), and only for the attempt the row last sent (a retried call's older callbacks are
ignored). A final status adds a `delivery_receipt` entry to the incident's timeline.

An SMS `undelivered` or `failed` marks the row failed (the carrier refused it; sending the same
text again would not help). A call `busy`, `no-answer`, `failed` or `canceled` reached nobody: the
row goes back to pending with the outbox's backoff, for another call, until its attempts are
spent; then it fails (with a `notification_failed` entry too).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import WAKE_WORKER
from app.core.logging import acting_for
from app.incidents import timeline
from app.notifications.models import Notification, NotificationStatus
from app.notifications.outbox import CALL_NOT_ANSWERED, MESSAGE_NOT_DELIVERED, reached_nobody

# Where each status comes in a message's life (higher: later); the last rank is final.
MESSAGE_RANKS = {
    "accepted": 1, "scheduled": 1, "queued": 1, "sending": 2, "sent": 3, "delivered": 4,
    "undelivered": 4, "failed": 4, "canceled": 4, "read": 5,
}  # fmt: skip
CALL_RANKS = {
    "queued": 1, "initiated": 1, "ringing": 2, "in-progress": 3, "answered": 3, "completed": 4,
    "busy": 4, "no-answer": 4, "failed": 4, "canceled": 4,
}  # fmt: skip
FINAL = 4


class Kind(StrEnum):
    message = "message"
    call = "call"


CHANNEL = {Kind.message: "sms", Kind.call: "voice"}


class Recorded(StrEnum):
    """What a callback came to."""

    unknown = "unknown"  # no such notification (or not one of this kind): ignored
    stale = "stale"  # an earlier attempt's, or older than the status kept: ignored
    kept = "kept"  # the status is kept
    delivered = "delivered"
    not_delivered = "not_delivered"  # for good
    retry = "retry"  # a call that reached nobody, to try again


@dataclass(frozen=True)
class Receipt:
    notification_id: int
    kind: Kind
    sid: str
    status: str
    error_code: str | None = None
    answered_by: str | None = None


async def record(
    session: AsyncSession,
    receipt: Receipt,
    *,
    now: datetime,
    max_attempts: int,
    retry_base: float = 30.0,
    retry_longest: float = 3600.0,
) -> Recorded:
    """Keep one status callback on its notification (see the module's docstring)."""
    row: Notification | None = await session.scalar(
        select(Notification).where(Notification.id == receipt.notification_id).with_for_update()
    )
    if row is None or row.channel != CHANNEL[receipt.kind]:
        return Recorded.unknown
    ranks = MESSAGE_RANKS if receipt.kind is Kind.message else CALL_RANKS
    rank = ranks.get(receipt.status)
    if rank is None:
        return Recorded.unknown
    if row.status == NotificationStatus.sending.value:
        # An attempt in flight, whose callback beat the outbox's record of it: kept under its
        # sid (the outbox applies it when it records the send, or drops it if the attempt's sid
        # is another: a call placed by an earlier attempt that the outbox never heard of).
        if receipt.sid != row.provider_message_id:
            row.provider_message_id = receipt.sid or None
            row.receipt = row.receipt_at = row.provider_error = None
    elif not receipt.sid or receipt.sid != row.provider_message_id:
        # Not the attempt the row last sent: an earlier one's, or one whose sending the outbox
        # never learnt of (a timeout after Twilio had accepted it).
        return Recorded.stale
    if row.receipt is not None and rank <= ranks.get(row.receipt, 0):
        return Recorded.stale
    row.receipt = receipt.status
    row.receipt_at = now
    row.provider_error = (receipt.error_code or "")[:64] or row.provider_error
    row.updated_at = now
    if rank < FINAL:
        return Recorded.kept
    outcome = Recorded.delivered
    failed_for_good = False
    if (receipt.kind is Kind.message and receipt.status in MESSAGE_NOT_DELIVERED) or (
        receipt.kind is Kind.call and receipt.status in CALL_NOT_ANSWERED
    ):
        outcome = Recorded.not_delivered
        done = reached_nobody(
            row, now=now, max_attempts=max_attempts, retry_base=retry_base,
            retry_longest=retry_longest,
        )  # fmt: skip
        if done == "retry":
            outcome = Recorded.retry
            session.info[WAKE_WORKER] = True
        failed_for_good = done == "failed" and receipt.kind is Kind.call
    if row.incident_id is not None:
        with acting_for(row.request_id):
            timeline.record(
                session,
                timeline.delivery_receipt(
                    row.incident_id, now=now, notification_id=row.id, channel=row.channel,
                    user_id=row.user_id, receipt=receipt.status, error_code=receipt.error_code,
                    answered_by=receipt.answered_by, outcome=outcome.value,
                ),
            )  # fmt: skip
            if failed_for_good:
                timeline.record(
                    session,
                    timeline.notification_failed(
                        row.incident_id, now=now, notification_id=row.id, channel=row.channel,
                        user_id=row.user_id, webhook_id=row.webhook_id, event=row.event,
                        attempts=row.attempts, error=row.last_error,
                    ),
                )  # fmt: skip
    await session.flush()
    return outcome
