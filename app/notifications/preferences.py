"""Who is told what, and where: per user and channel preferences, with defaults for new users.

A user has one preference per channel. Channels never set take their default: email on, to the
account address, for escalations and assignments; the others off. A stored email preference
without an address follows the account address; an SMS one without an address uses the phone
number on the profile.

An email or SMS preference whose address is not verified (`app.notifications.verification`)
still says what its user wants, but nothing is sent there: `verified` says so.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import lock_named
from app.core.errors import Conflict, Unprocessable
from app.core.outbound import check_url_syntax
from app.notifications import verification
from app.notifications.models import ContactVerification, NotificationPreference
from app.notifications.verification import NOTHING_KNOWN, Known
from app.users.models import User

logger = logging.getLogger(__name__)

CHANNELS = ("email", "sms", "slack", "webhook", "teams")
EVENTS = ("triggered", "escalated", "acknowledged", "resolved", "assigned", "commented", "reopened")
SEVERITIES = ("critical", "high", "medium", "low", "info")
RANK = {name: rank for rank, name in enumerate(SEVERITIES)}
DEFAULT_EVENTS = ["escalated", "assigned"]
E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")


@dataclass(frozen=True)
class Preference:
    """A user's effective preference for one channel (stored, or the default)."""

    user_id: int
    channel: str
    enabled: bool
    address: str | None  # as stored (None: the account's email or phone)
    effective_address: str | None  # where messages go
    min_severity: str
    events: list[str]
    is_default: bool
    updated_at: datetime | None
    # email and sms: whether anything but a verification message may go to effective_address;
    # slack, webhook and teams: always (their URLs are held to the outbound address rules).
    verified: bool = True

    def wants(self, event: str, severity: str) -> bool:
        return (
            self.enabled
            and self.effective_address is not None
            and event in self.events
            and RANK.get(severity, len(RANK)) <= RANK[self.min_severity]
        )


@dataclass(frozen=True)
class Person:
    id: int
    email: str
    phone: str | None
    full_name: str


def effective(
    person: Person, stored: NotificationPreference | None, channel: str, known: Known
) -> Preference:
    address = (stored.address if stored else None) or _fallback(person, channel)
    verified = verification.is_verified(
        account_email=person.email, channel=channel, address=address, known=known
    )
    if stored is None:
        enabled = channel == "email"
        return Preference(
            user_id=person.id, channel=channel, enabled=enabled, address=None,
            effective_address=address, min_severity="info", events=list(DEFAULT_EVENTS),
            is_default=True, updated_at=None, verified=verified,
        )  # fmt: skip
    return Preference(
        user_id=person.id, channel=channel, enabled=stored.enabled, address=stored.address,
        effective_address=address, min_severity=stored.min_severity, events=list(stored.events),
        is_default=False, updated_at=stored.updated_at, verified=verified,
    )  # fmt: skip


def _fallback(person: Person, channel: str) -> str | None:
    if channel == "email":
        return person.email
    if channel == "sms":
        return person.phone or None
    return None


async def for_user(session: AsyncSession, user: User) -> list[Preference]:
    """Every channel's preference of one user, in channel order."""
    stored = {
        p.channel: p
        for p in await session.scalars(
            select(NotificationPreference).where(NotificationPreference.user_id == user.id)
        )
    }
    person = Person(user.id, user.email, user.phone, user.full_name)
    known = (await verification.known_for(session, [user.id]))[user.id]
    return _all(person, {c: stored.get(c) for c in CHANNELS}, known)


async def of_channel(session: AsyncSession, user: User, channel: str) -> Preference:
    """One channel's preference of one user."""
    return next(p for p in await for_user(session, user) if p.channel == channel)


async def for_users(
    session: AsyncSession, user_ids: Iterable[int]
) -> dict[int, tuple[Person, list[Preference]]]:
    """The active users among `user_ids` with their preferences (three queries for any number)."""
    ids = sorted(set(user_ids))
    if not ids:
        return {}
    people = {
        row.id: Person(row.id, row.email, row.phone, row.full_name)
        for row in await session.execute(
            select(User.id, User.email, User.phone, User.full_name).where(
                User.id.in_(ids), User.is_active.is_(True)
            )
        )
    }
    stored: dict[tuple[int, str], NotificationPreference] = {
        (p.user_id, p.channel): p
        for p in await session.scalars(
            select(NotificationPreference).where(NotificationPreference.user_id.in_(list(people)))
        )
    } if people else {}  # fmt: skip
    known = await verification.known_for(session, people)
    return {
        uid: (person, _all(person, {c: stored.get((uid, c)) for c in CHANNELS}, known.get(uid)))
        for uid, person in people.items()
    }


def _all(
    person: Person, stored: dict[str, NotificationPreference | None], known: Known | None
) -> list[Preference]:
    return [effective(person, stored[c], c, known or NOTHING_KNOWN) for c in CHANNELS]


def validate(
    *, user: User, channel: str, enabled: bool, address: str | None, allow_private: bool
) -> str | None:
    """The address to store (normalised), or a 422 naming what is wrong."""
    if address is not None:
        address = address.strip() or None
    if channel == "email":
        if address is None:
            return None
        try:
            return validate_email(address, check_deliverability=False).normalized
        except EmailNotValidError as exc:
            raise Unprocessable(f"email: {exc}") from exc
    if channel == "sms":
        if address is None:
            if enabled and not user.phone:
                raise Unprocessable(
                    "sms: give an address (an E.164 number such as +15551234567) "
                    "or set a phone number on your profile"
                )
            return None
        compact = re.sub(r"[\s().-]", "", address)
        if not E164.match(compact):
            raise Unprocessable("sms: the address must be an E.164 number such as +15551234567")
        return compact
    # slack, webhook and teams: a URL is where the message goes, so one is needed to turn it on.
    if address is None:
        if enabled:
            raise Unprocessable(f"{channel}: an https URL is needed to enable this channel")
        return None
    problem = check_url_syntax(address, allow_private=allow_private)
    if problem:
        raise Unprocessable(f"{channel}: {problem}")
    return address


async def put(
    session: AsyncSession,
    *,
    user: User,
    channel: str,
    enabled: bool,
    address: str | None,
    min_severity: str,
    events: Sequence[str],
    allow_private: bool,
    now: datetime,
) -> Preference:
    address = validate(
        user=user, channel=channel, enabled=enabled, address=address, allow_private=allow_private
    )
    # Two first PUTs at once must not both insert: the second waits and updates.
    await lock_named(session, f"preferences:{user.id}")
    stored = await session.scalar(
        select(NotificationPreference)
        .where(NotificationPreference.user_id == user.id, NotificationPreference.channel == channel)
        .with_for_update()
    )
    before = stored.address if stored is not None else None
    values: dict[str, Any] = {
        "enabled": enabled, "address": address, "min_severity": min_severity,
        "events": list(dict.fromkeys(events)), "updated_at": now,
    }  # fmt: skip
    if stored is None:
        stored = NotificationPreference(user_id=user.id, channel=channel, created_at=now, **values)
        session.add(stored)
    else:
        for key, value in values.items():
            setattr(stored, key, value)
    await session.flush()
    if before is not None and before != address:
        # A new address needs its own proof; the old one's is dropped (coming back to it too).
        await verification.forget_unused(session, user=user, channel=channel, address=before)
    known = (await verification.known_for(session, [user.id]))[user.id]
    person = Person(user.id, user.email, user.phone, user.full_name)
    return effective(person, stored, channel, known)


def _verifiable(preference: Preference) -> str:
    if preference.effective_address is None:
        raise Unprocessable(
            "sms: no number to verify: give the preference an address or set a phone number on "
            "your profile"
        )
    return preference.effective_address


async def send_code(
    session: AsyncSession, *, user: User, channel: str, secret_key: str, now: datetime
) -> ContactVerification:
    """Send a verification code to where this channel's messages go (409 when it is verified)."""
    preference = await of_channel(session, user, channel)
    address = _verifiable(preference)
    if preference.verified:
        raise Conflict(f"{channel}: {address} is verified already")
    return await verification.send_code(
        session, user=user, channel=channel, address=address, secret_key=secret_key, now=now
    )


async def confirm(
    session: AsyncSession, *, user: User, channel: str, code: str, secret_key: str, now: datetime
) -> tuple[verification.Check, Preference]:
    """Check a code sent to where this channel's messages go; a wrong code is counted, so commit
    whatever this answers (`verification.refusal` says how to answer a refusal)."""
    preference = await of_channel(session, user, channel)
    address = _verifiable(preference)
    if preference.verified:
        return verification.Check(verification.Checked.verified), preference
    check = await verification.confirm(
        session, user_id=user.id, channel=channel, address=address, code=code,
        secret_key=secret_key, now=now,
    )  # fmt: skip
    await session.flush()
    return check, await of_channel(session, user, channel)


async def vouch(
    session: AsyncSession,
    *,
    user: User,
    channel: str,
    address: str | None,
    admin: User,
    now: datetime,
) -> ContactVerification:
    """An admin marks an address of `user` verified: the one given (normalised), or where the
    channel's messages go now. Logged, naming the admin."""
    if address is not None:
        address = validate(
            user=user, channel=channel, enabled=False, address=address, allow_private=False
        )
    if address is None:
        address = _verifiable(await of_channel(session, user, channel))
    row = await verification.vouch(
        session, user_id=user.id, channel=channel, address=address, admin_id=admin.id, now=now
    )
    logger.info(
        "admin %s marked the %s address %s of user %s verified",
        admin.id, channel, address, user.id,
        extra={"admin_id": admin.id, "user_id": user.id, "channel": channel},
    )  # fmt: skip
    return row
