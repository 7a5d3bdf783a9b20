"""Proof that an email address or a phone number is its user's, before anything is sent there.

Without it anyone could point a preference at a stranger's address and have the service mail or
text it (an incident's title, a comment…) on their behalf. So nothing but the verification message
itself goes to an email address or number that is not verified:

- the account's own email is trusted (the identity an admin created, or the first account's),
  unless its user set it themselves (a later self-signup, a change of their own email): then it
  needs proving like any other address;
- any other email address, and every phone number (a preference's or the profile's), needs a
  6-digit code sent to it and entered back within CODE_MINUTES, at most MAX_ATTEMPTS wrong tries
  per code; or an admin's word (`vouch`).

One row per (user, channel, address) in `contact_verifications`. The code is derived from
SECRET_KEY and a nonce (`code_for`), as a recovery token is: the database holds a keyed hash of it,
and the outbox row holds the nonce; the message's text, which shows the code, is never stored.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core import ratelimit
from app.core.config import Settings
from app.core.db import WAKE_WORKER
from app.core.errors import BadRequest, Conflict, DomainError, Gone
from app.core.ratelimit import TooManyRequests
from app.notifications import render, replies
from app.notifications.models import (
    PROOF_CHANNEL,
    ContactMethod,
    ContactVerification,
    Notification,
    NotificationPreference,
    NotificationStatus,
    VerifiedVia,
    notification_row,
)
from app.notifications.outbox import Renderer
from app.users.models import User

VERIFIED_CHANNELS = ("email", "sms")
# The outbox event of a verification message (its text holds the code: never stored).
VERIFICATION_EVENT = "address_verification"
CODE_MINUTES = 15
MAX_ATTEMPTS = 5
# `last_error` of a notification not sent because its address is not verified.
NOT_VERIFIED = "not sent: the address is not verified"


def needs_proof(channel: str) -> bool:
    """Slack and webhook URLs are held to the outbound address rules instead."""
    return channel in VERIFIED_CHANNELS


def new_nonce() -> str:
    return secrets.token_urlsafe(24)


def code_for(secret_key: str, nonce: str) -> str:
    """The 6-digit code sent for `nonce`, derived from the secret key: never kept anywhere."""
    digest = hmac.new(secret_key.encode(), f"address-verification:{nonce}".encode(), hashlib.sha256)
    return f"{int.from_bytes(digest.digest()[:8], 'big') % 1_000_000:06d}"


def code_hash(secret_key: str, *, user_id: int, channel: str, address: str, code: str) -> str:
    """What is stored of a code: keyed (a million codes are quickly tried against a plain hash)
    and bound to the user and address it was sent for."""
    message = f"address-code:{user_id}:{channel}:{address}:{code}".encode()
    return hmac.new(secret_key.encode(), message, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Known:
    """A user's rows: the (channel, address) pairs verified, and those waiting for proof."""

    verified: frozenset[tuple[str, str]] = field(default_factory=frozenset)
    unproven: frozenset[tuple[str, str]] = field(default_factory=frozenset)


NOTHING_KNOWN = Known()


def is_verified(*, account_email: str, channel: str, address: str | None, known: Known) -> bool:
    """Whether messages other than a verification message may go to `address` on `channel`."""
    if not needs_proof(channel):
        return True
    if address is None:
        return False
    if (channel, address) in known.verified:
        return True
    # The account's own email, unless its user set it themselves (a row waits for its proof).
    return (
        channel == "email"
        and address.lower() == account_email
        and (channel, account_email) not in known.unproven
    )


async def known_for(session: AsyncSession, user_ids: Iterable[int]) -> dict[int, Known]:
    """The rows of these users (one query for any number)."""
    ids = sorted(set(user_ids))
    if not ids:
        return {}
    verified: dict[int, set[tuple[str, str]]] = {}
    unproven: dict[int, set[tuple[str, str]]] = {}
    rows = await session.execute(
        select(
            ContactVerification.user_id, ContactVerification.channel,
            ContactVerification.address, ContactVerification.verified_at,
        ).where(ContactVerification.user_id.in_(ids))
    )  # fmt: skip
    for user_id, channel, address, verified_at in rows:
        into = verified if verified_at is not None else unproven
        into.setdefault(user_id, set()).add((channel, address))
    return {
        uid: Known(frozenset(verified.get(uid, ())), frozenset(unproven.get(uid, ())))
        for uid in ids
    }


async def _locked(
    session: AsyncSession, *, user_id: int, channel: str, address: str
) -> ContactVerification | None:
    """The row of this address, locked until the end of the transaction, or None."""
    row: ContactVerification | None = await session.scalar(
        select(ContactVerification)
        .where(
            ContactVerification.user_id == user_id,
            ContactVerification.channel == channel,
            ContactVerification.address == address,
        )
        .with_for_update()
    )
    return row


async def _row(
    session: AsyncSession, *, user_id: int, channel: str, address: str, now: datetime
) -> ContactVerification:
    """The row of this address, locked, made when there is none."""
    row = await _locked(session, user_id=user_id, channel=channel, address=address)
    if row is None:
        row = ContactVerification(
            user_id=user_id, channel=channel, address=address, attempts=0, created_at=now,
            updated_at=now,
        )  # fmt: skip
        session.add(row)
    return row


async def limit_codes(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, *, user_id: int,
    now: datetime,
) -> None:  # fmt: skip
    """Take one of the codes a user may ask for in an hour, across preferences and contact
    methods, from the API and the console alike: `TooManyRequests` when none is left.

    The limit is taken in a transaction of its own (`ratelimit.check`): on SQLite, which has one
    writer at a time, the caller ends its own transaction first."""
    await ratelimit.check(
        sessionmaker,
        {f"verify:user:{user_id}": ratelimit.Limit.per(
            settings.rate_limit_verification_per_user_per_hour, 3600
        )},
        now=now,
        detail="Too many verification codes asked for",
    )  # fmt: skip


async def send_code(
    session: AsyncSession,
    *,
    user: User,
    channel: str,
    address: str,
    secret_key: str,
    now: datetime,
) -> ContactVerification:
    """Start (or start again) the proof of `address`: a new code, queued to it through the outbox.
    Any code sent before stops working, and the wrong attempts start from zero. A number that
    texted STOP gets nothing (409) until it texts START."""
    if channel == "sms" and await replies.opted_out(session, [address]):
        raise Conflict(
            f"{address} replied STOP (opted out of SMS): it must text START to the service's "
            "number before a code can be sent"
        )
    nonce = new_nonce()
    code = code_for(secret_key, nonce)
    row = await _row(session, user_id=user.id, channel=channel, address=address, now=now)
    row.code_hash = code_hash(
        secret_key, user_id=user.id, channel=channel, address=address, code=code
    )
    row.code_sent_at = now
    row.expires_at = now + timedelta(minutes=CODE_MINUTES)
    row.attempts = 0
    row.updated_at = now
    session.add(
        Notification(
            **notification_row(
                key=f"verification:{nonce}", incident_id=None, event=VERIFICATION_EVENT,
                channel=channel, address=address, subject="Address verification",
                payload={"nonce": nonce, "minutes": CODE_MINUTES, "channel": channel}, now=now,
                user_id=user.id,
            )
        )
    )  # fmt: skip
    session.info[WAKE_WORKER] = True
    await session.flush()
    return row


class Checked(StrEnum):
    """What entering a code came to."""

    verified = "verified"
    wrong = "wrong"
    expired = "expired"
    exhausted = "exhausted"  # MAX_ATTEMPTS wrong codes: a new one is needed
    no_code = "no_code"


@dataclass(frozen=True)
class Check:
    outcome: Checked
    attempts_left: int = 0


async def confirm(
    session: AsyncSession,
    *,
    user_id: int,
    channel: str,
    address: str,
    code: str,
    secret_key: str,
    now: datetime,
) -> Check:
    """Check a code for `address`; a wrong one counts (commit even when it is refused)."""
    row = await _locked(session, user_id=user_id, channel=channel, address=address)
    if row is not None and row.verified_at is not None:
        return Check(Checked.verified)
    if row is None or row.code_hash is None or row.expires_at is None:
        return Check(Checked.no_code)
    if row.attempts >= MAX_ATTEMPTS:
        return Check(Checked.exhausted)
    if row.expires_at <= now:
        return Check(Checked.expired)
    wanted = code_hash(secret_key, user_id=user_id, channel=channel, address=address, code=code)
    row.updated_at = now
    if hmac.compare_digest(wanted, row.code_hash):
        _verified(row, via=VerifiedVia.code, by=user_id, now=now)
        return Check(Checked.verified)
    row.attempts += 1
    if row.attempts >= MAX_ATTEMPTS:
        return Check(Checked.exhausted)
    return Check(Checked.wrong, attempts_left=MAX_ATTEMPTS - row.attempts)


# After MAX_ATTEMPTS wrong codes: a pause before the next try (a new code may be asked at once).
EXHAUSTED_RETRY_SECONDS = 60


def refusal(check: Check) -> DomainError:
    """The answer to a code that did not verify the address."""
    if check.outcome is Checked.wrong:
        return BadRequest(f"Wrong code: {check.attempts_left} attempt(s) left for this code")
    if check.outcome is Checked.expired:
        return Gone("The code has expired: ask for a new one")
    if check.outcome is Checked.exhausted:
        return TooManyRequests(
            f"Too many wrong codes: ask for a new one (at most {MAX_ATTEMPTS} tries per code)",
            retry_after=EXHAUSTED_RETRY_SECONDS,
        )
    return BadRequest("No code was sent to this address: ask for one first")


def _verified(row: ContactVerification, *, via: VerifiedVia, by: int | None, now: datetime) -> None:
    row.verified_at = now
    row.verified_via = via.value
    row.verified_by = by
    row.code_hash = None
    row.expires_at = None
    row.attempts = 0
    row.updated_at = now


async def vouch(
    session: AsyncSession, *, user_id: int, channel: str, address: str, admin_id: int, now: datetime
) -> ContactVerification:
    """An admin marks an address verified (any code waiting for it stops working)."""
    row = await _row(session, user_id=user_id, channel=channel, address=address, now=now)
    if row.verified_at is None:
        _verified(row, via=VerifiedVia.admin, by=admin_id, now=now)
    await session.flush()
    return row


async def unproven(session: AsyncSession, *, user_id: int, address: str, now: datetime) -> None:
    """The account's email was set by its user: nothing but a code goes there until proven
    (an address they proved before stays proven)."""
    await _row(session, user_id=user_id, channel="email", address=address, now=now)
    await session.flush()


async def forget_unused(session: AsyncSession, *, user: User, channel: str, address: str) -> None:
    """An address no longer used by the user (a preference or a contact method changed): its
    proof is dropped, so coming back to it needs proving again. The account's email and profile
    phone are kept."""
    if not needs_proof(channel):
        return
    if (channel == "email" and address.lower() == user.email) or (
        channel == "sms" and address == user.phone
    ):
        return
    in_use = await session.scalar(
        select(NotificationPreference.id).where(
            NotificationPreference.user_id == user.id,
            NotificationPreference.channel == channel,
            NotificationPreference.address == address,
        )
    )
    in_use = in_use or await session.scalar(
        select(ContactMethod.id).where(
            ContactMethod.user_id == user.id,
            ContactMethod.type.in_(
                [kind for kind, proof in PROOF_CHANNEL.items() if proof == channel]
            ),
            ContactMethod.address == address,
        )
    )
    if in_use is None:
        await session.execute(
            delete(ContactVerification).where(
                ContactVerification.user_id == user.id,
                ContactVerification.channel == channel,
                ContactVerification.address == address,
            )
        )


def unverified_row(row: dict[str, Any]) -> dict[str, Any]:
    """A notification row (`notification_row`) recorded as not sent: the delivery log says why."""
    return {**row, "status": NotificationStatus.failed.value, "last_error": NOT_VERIFIED}


def _message(payload: dict[str, Any], settings: Settings) -> render.Message:
    return render.render_verification(
        payload["channel"], code=code_for(settings.secret_key, payload["nonce"]),
        minutes=payload["minutes"], project=settings.project_name,
        base_url=settings.public_base_url,
    )  # fmt: skip


# How the outbox renders a verification message; the code is in its text, which is never stored.
RENDERERS = {VERIFICATION_EVENT: Renderer(_message, keeps_body=False)}
