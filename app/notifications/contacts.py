"""Contact methods and personal notification rules: how each person wants to be paged, and when.

A contact method is one way to reach a user (an email address, a number for texts, a number for
calls, a Slack member id). A rule says "when I am paged, notify me by this method after N
minutes" (PagerDuty's notification rules): e.g. SMS at 0, a call at 2, email at 0.

When an escalation step pages a user who has rules, each rule that suits the incident's severity
becomes one outbox row, due after its delay (`page_rows`). Its key names the step, the user and
the rule, so a step fired twice cannot page twice by one rule. Rows not yet sent are cancelled
the moment anyone acknowledges, snoozes or resolves the incident (`outbox.cancel_pending_pages`,
called by the incident flow), and a row claimed after that is dropped at claim time. So rules are
fired by the worker with the outbox's guarantees: leased, retried, and never sent once moot.

A user with no rules is paged through their notification preferences, as before rules existed
(the mapping is in docs/notification-rules.md). Email addresses and phone numbers must be proven
(`app.notifications.verification`) before they are paged: a number by a code texted to it, for
texts and calls alike; the account's own email is trusted as for preferences. A row for a method
not yet verified is written as failed and says why.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import Conflict, NotFound, Unprocessable
from app.notifications import verification
from app.notifications.models import (
    CHANNEL_OF,
    PROOF_CHANNEL,
    ContactMethod,
    ContactVerification,
    NotificationRule,
    notification_row,
)
from app.notifications.preferences import RANK
from app.notifications.verification import Known
from app.users.models import User

SLACK_MEMBER = re.compile(r"^[UW][A-Z0-9]{2,20}$")
MAX_METHODS = 20
MAX_RULES = 20


# ---- addresses -----------------------------------------------------------------------------------


def normalise(kind: str, address: str) -> str:
    """The address as stored, or a 422 naming what is wrong with it."""
    address = address.strip()
    if kind == "email":
        try:
            # Lower-case as account emails are: the same mailbox is the same method.
            return validate_email(address, check_deliverability=False).normalized.lower()
        except EmailNotValidError as exc:
            raise Unprocessable(f"address: {exc}") from exc
    if kind in ("sms", "voice"):
        return e164(address)
    if not SLACK_MEMBER.match(address):
        raise Unprocessable(
            "address: a Slack member id such as U012AB3CD (in Slack: a person's profile, "
            "the ⋮ menu, Copy member ID)"
        )
    return address


def e164(text: str) -> str:
    """A phone number in E.164 form, checked against the numbering plan of its country."""
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException as exc:
        raise Unprocessable(
            f"address: not a phone number in international form such as +14155552671 ({exc})"
        ) from exc
    if not phonenumbers.is_valid_number(number):
        raise Unprocessable(
            "address: not a valid phone number: check the country code and the number of digits"
        )
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _proven(account_email: str, kind: str, address: str, known: Known) -> bool:
    """Whether a method of this kind at `address` may be paged (Slack member ids always)."""
    proof = PROOF_CHANNEL[kind]
    return proof is None or verification.is_verified(
        account_email=account_email, channel=proof, address=address, known=known
    )


async def _flush_unique(session: AsyncSession, clash: str) -> None:
    """Flush; the same row written by two requests at once (a double click) is a 409 for the
    second, as the check before it would have said."""
    try:
        await session.flush()
    except IntegrityError as exc:
        raise Conflict(clash) from exc


# ---- contact methods -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Method:
    """A contact method as answered: the row and whether its address is proven."""

    id: int
    user_id: int
    type: str
    address: str
    label: str
    verified: bool
    created_at: datetime
    updated_at: datetime


def _method(user: User, row: ContactMethod, known: Known) -> Method:
    return Method(
        id=row.id, user_id=row.user_id, type=row.type, address=row.address, label=row.label,
        verified=_proven(user.email, row.type, row.address, known), created_at=row.created_at,
        updated_at=row.updated_at,
    )  # fmt: skip


async def _known(session: AsyncSession, user: User) -> Known:
    return (await verification.known_for(session, [user.id]))[user.id]


async def methods(session: AsyncSession, user: User) -> list[Method]:
    rows = await session.scalars(
        select(ContactMethod).where(ContactMethod.user_id == user.id).order_by(ContactMethod.id)
    )
    known = await _known(session, user)
    return [_method(user, row, known) for row in rows]


async def _row(session: AsyncSession, user: User, method_id: int) -> ContactMethod:
    row = await session.get(ContactMethod, method_id)
    if row is None or row.user_id != user.id:
        raise NotFound(f"Contact method {method_id} not found")
    return row


async def method(session: AsyncSession, user: User, method_id: int) -> Method:
    return _method(user, await _row(session, user, method_id), await _known(session, user))


async def _taken(session: AsyncSession, user: User, kind: str, address: str) -> None:
    clash = await session.scalar(
        select(ContactMethod.id).where(
            ContactMethod.user_id == user.id,
            ContactMethod.type == kind,
            ContactMethod.address == address,
        )
    )
    if clash is not None:
        raise Conflict(f"You have this {kind} contact method already (id {clash})")


async def add_method(
    session: AsyncSession, *, user: User, kind: str, address: str, label: str, now: datetime
) -> Method:
    address = normalise(kind, address)
    await _taken(session, user, kind, address)
    count = await session.scalar(
        select(func.count()).select_from(ContactMethod).where(ContactMethod.user_id == user.id)
    )
    if (count or 0) >= MAX_METHODS:
        raise Unprocessable(f"At most {MAX_METHODS} contact methods a user")
    row = ContactMethod(
        user_id=user.id, type=kind, address=address, label=label.strip(), created_at=now,
        updated_at=now,
    )  # fmt: skip
    session.add(row)
    await _flush_unique(session, f"You have this {kind} contact method already")
    return _method(user, row, await _known(session, user))


async def change_method(
    session: AsyncSession,
    *,
    user: User,
    method_id: int,
    address: str | None,
    label: str | None,
    now: datetime,
) -> Method:
    """Change a method's address (which then needs proving again) or its label."""
    row = await _row(session, user, method_id)
    before = row.address
    if address is not None:
        address = normalise(row.type, address)
        if address != row.address:
            await _taken(session, user, row.type, address)
            row.address = address
    if label is not None:
        row.label = label.strip()
    row.updated_at = now
    await _flush_unique(session, f"You have this {row.type} contact method already")
    if row.address != before:
        await _forget(session, user=user, kind=row.type, address=before)
    return _method(user, row, await _known(session, user))


async def remove_method(session: AsyncSession, *, user: User, method_id: int) -> None:
    """Delete a method and its rules (the pages already written keep their address)."""
    row = await _row(session, user, method_id)
    kind, address = row.type, row.address
    # Through the session, one by one, so that the audit log records each rule's deletion.
    rules = await session.scalars(
        select(NotificationRule).where(NotificationRule.contact_method_id == row.id)
    )
    for rule in rules:
        await session.delete(rule)
    await session.flush()  # before the method's row, whose deletion cascades to them
    await session.delete(row)
    await session.flush()
    await _forget(session, user=user, kind=kind, address=address)


async def _forget(session: AsyncSession, *, user: User, kind: str, address: str) -> None:
    """An address no longer used by any method or preference loses its proof."""
    proof = PROOF_CHANNEL[kind]
    if proof is None:
        return
    await verification.forget_unused(session, user=user, channel=proof, address=address)


# ---- proving a method's address --------------------------------------------------------------


def _to_prove(row: ContactMethod) -> str:
    proof = PROOF_CHANNEL[row.type]
    if proof is None:
        raise Unprocessable("A Slack contact method needs no verification")
    return proof


async def send_code(
    session: AsyncSession, *, user: User, method_id: int, secret_key: str, now: datetime
) -> ContactVerification:
    """Send a 6-digit code to the method's address (by text for a number, for calls too)."""
    row = await _row(session, user, method_id)
    proof = _to_prove(row)
    if _proven(user.email, row.type, row.address, await _known(session, user)):
        raise Conflict(f"{row.address} is verified already")
    return await verification.send_code(
        session, user=user, channel=proof, address=row.address, secret_key=secret_key, now=now
    )


async def confirm(
    session: AsyncSession, *, user: User, method_id: int, code: str, secret_key: str,
    now: datetime,
) -> tuple[verification.Check, Method]:  # fmt: skip
    """Check a code sent to the method's address; a wrong one counts, so commit whatever this
    answers (`verification.refusal` says how to answer a refusal)."""
    row = await _row(session, user, method_id)
    proof = _to_prove(row)
    if _proven(user.email, row.type, row.address, await _known(session, user)):
        return verification.Check(verification.Checked.verified), await method(
            session, user, method_id
        )
    check = await verification.confirm(
        session, user_id=user.id, channel=proof, address=row.address, code=code,
        secret_key=secret_key, now=now,
    )  # fmt: skip
    await session.flush()
    return check, await method(session, user, method_id)


async def vouch(
    session: AsyncSession, *, user: User, method_id: int, admin: User, now: datetime
) -> Method:
    """An admin marks a method's address verified: it is paged at once."""
    row = await _row(session, user, method_id)
    proof = _to_prove(row)
    await verification.vouch(
        session, user_id=user.id, channel=proof, address=row.address, admin_id=admin.id, now=now
    )
    return await method(session, user, method_id)


# ---- rules ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    id: int
    user_id: int
    contact_method_id: int
    delay_minutes: int
    min_severity: str
    created_at: datetime
    updated_at: datetime


def _rule(row: NotificationRule) -> Rule:
    return Rule(
        id=row.id, user_id=row.user_id, contact_method_id=row.contact_method_id,
        delay_minutes=row.delay_minutes, min_severity=row.min_severity, created_at=row.created_at,
        updated_at=row.updated_at,
    )  # fmt: skip


async def rules(session: AsyncSession, user: User) -> list[Rule]:
    """A user's rules in the order they fire: by delay, then as created."""
    found = await session.scalars(
        select(NotificationRule)
        .where(NotificationRule.user_id == user.id)
        .order_by(NotificationRule.delay_minutes, NotificationRule.id)
    )
    return [_rule(row) for row in found]


async def _rule_row(session: AsyncSession, user: User, rule_id: int) -> NotificationRule:
    row = await session.get(NotificationRule, rule_id)
    if row is None or row.user_id != user.id:
        raise NotFound(f"Notification rule {rule_id} not found")
    return row


async def rule(session: AsyncSession, user: User, rule_id: int) -> Rule:
    return _rule(await _rule_row(session, user, rule_id))


async def _own_method(session: AsyncSession, user: User, method_id: int) -> ContactMethod:
    row = await session.get(ContactMethod, method_id)
    if row is None or row.user_id != user.id:
        raise Unprocessable(f"contact_method_id: {method_id} is not one of this user's methods")
    return row


async def _clash(
    session: AsyncSession, *, method_id: int, delay: int, other_than: int | None = None
) -> None:
    query = select(NotificationRule.id).where(
        NotificationRule.contact_method_id == method_id, NotificationRule.delay_minutes == delay
    )
    if other_than is not None:
        query = query.where(NotificationRule.id != other_than)
    clash = await session.scalar(query)
    if clash is not None:
        raise Conflict(f"Rule {clash} already notifies by this method after {delay} minute(s)")


async def add_rule(
    session: AsyncSession, *, user: User, method_id: int, delay: int, min_severity: str,
    now: datetime,
) -> Rule:  # fmt: skip
    await _own_method(session, user, method_id)
    await _clash(session, method_id=method_id, delay=delay)
    count = await session.scalar(
        select(func.count())
        .select_from(NotificationRule)
        .where(NotificationRule.user_id == user.id)
    )
    if (count or 0) >= MAX_RULES:
        raise Unprocessable(f"At most {MAX_RULES} notification rules a user")
    row = NotificationRule(
        user_id=user.id, contact_method_id=method_id, delay_minutes=delay,
        min_severity=min_severity, created_at=now, updated_at=now,
    )  # fmt: skip
    session.add(row)
    await _flush_unique(session, "A rule already notifies by this method after this delay")
    return _rule(row)


async def change_rule(
    session: AsyncSession, *, user: User, rule_id: int, changes: Mapping[str, Any], now: datetime
) -> Rule:
    row = await _rule_row(session, user, rule_id)
    method_id = changes.get("contact_method_id", row.contact_method_id)
    delay = changes.get("delay_minutes", row.delay_minutes)
    if method_id != row.contact_method_id:
        await _own_method(session, user, method_id)
    await _clash(session, method_id=method_id, delay=delay, other_than=row.id)
    row.contact_method_id = method_id
    row.delay_minutes = delay
    row.min_severity = changes.get("min_severity", row.min_severity)
    row.updated_at = now
    await _flush_unique(session, "A rule already notifies by this method after this delay")
    return _rule(row)


async def remove_rule(session: AsyncSession, *, user: User, rule_id: int) -> None:
    await session.delete(await _rule_row(session, user, rule_id))
    await session.flush()


# ---- paging --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PageRule:
    """A rule as paging needs it: where, after how long, for which incidents, and whether its
    address may be paged."""

    id: int
    delay_minutes: int
    min_severity: str
    channel: str  # the outbox channel (CHANNEL_OF)
    address: str
    verified: bool

    def suits(self, severity: str) -> bool:
        return RANK.get(severity, len(RANK)) <= RANK[self.min_severity]


async def for_paging(session: AsyncSession, emails: Mapping[int, str]) -> dict[int, list[PageRule]]:
    """The rules of these users (`emails`: user id → account email), in firing order; users
    without rules are left out. One query, and one more when some have rules."""
    if not emails:
        return {}
    found = (
        await session.execute(
            select(NotificationRule, ContactMethod)
            .join(ContactMethod, ContactMethod.id == NotificationRule.contact_method_id)
            .where(NotificationRule.user_id.in_(sorted(emails)))
            .order_by(NotificationRule.user_id, NotificationRule.delay_minutes, NotificationRule.id)
        )
    ).all()
    if not found:
        return {}
    known = await verification.known_for(session, {row.user_id for row, _ in found})
    by_user: dict[int, list[PageRule]] = {}
    for rule_row, method_row in found:
        verified = _proven(
            emails[rule_row.user_id], method_row.type, method_row.address,
            known.get(rule_row.user_id, verification.NOTHING_KNOWN),
        )  # fmt: skip
        by_user.setdefault(rule_row.user_id, []).append(
            PageRule(
                id=rule_row.id, delay_minutes=rule_row.delay_minutes,
                min_severity=rule_row.min_severity, channel=CHANNEL_OF[method_row.type],
                address=method_row.address, verified=verified,
            )
        )  # fmt: skip
    return by_user


def page_rows(
    *,
    cause: str,
    user_id: int,
    rules: Sequence[PageRule],
    severity: str,
    incident_id: int,
    subject: str,
    payload: dict[str, Any],
    now: datetime,
    escalation_event_id: int | None,
) -> tuple[list[dict[str, Any]], bool]:
    """One outbox row per rule that suits the incident, due after its delay; answers the rows and
    whether any of them will be sent (a method not verified gets a failed row saying why)."""
    rows: list[dict[str, Any]] = []
    reached = False
    for page_rule in rules:
        if not page_rule.suits(severity):
            continue
        row = notification_row(
            key=f"{cause}:user:{user_id}:rule:{page_rule.id}", incident_id=incident_id,
            event="escalated", channel=page_rule.channel, address=page_rule.address,
            subject=subject, payload={**payload, "rule_id": page_rule.id}, now=now,
            user_id=user_id, escalation_event_id=escalation_event_id,
        )  # fmt: skip
        row["next_attempt_at"] = now + timedelta(minutes=page_rule.delay_minutes)
        if page_rule.verified:
            reached = True
            rows.append(row)
        else:
            rows.append(verification.unverified_row(row))
    return rows, reached
