"""Answering an SMS page by text: the short per-user codes, what a reply says, opted-out numbers.

An SMS page ends with "Reply 4a to ack, 4r to resolve": `4` is the incident's code for the person
paged, allocated when the outbox claims the page (`allocate`, in the claim's transaction). A
person's code for an incident stays the same on every page about it; a new incident gets the
smallest number none of their codes used within REPLY_CODE_DAYS holds, so codes stay one or two
digits and are reused once old. A code means something only to the person it was given to: the
reply's number tells who they are (a number verified as theirs).

Numbers that answered STOP (or another opt-out keyword) are kept in `sms_opt_outs` until they
answer START: nothing is texted to them meanwhile (the outbox fails such a row at once).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import lock_names
from app.notifications.models import ContactVerification, SmsOptOut, SmsReplyCode
from app.users.models import User

REPLY_CODE_DAYS = 7
# `last_error` of an SMS not sent because its number opted out.
OPTED_OUT = "not sent: the number replied STOP (opted out of SMS); it can text START to opt in"

# The keywords carriers require (and Twilio acts on by default): single words, any case.
OPT_OUT_KEYWORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
OPT_IN_KEYWORDS = frozenset({"START", "UNSTOP", "YES"})
HELP_KEYWORDS = frozenset({"HELP", "INFO"})


# ---- codes ---------------------------------------------------------------------------------------


async def allocate(session: AsyncSession, *, user_id: int, incident_id: int, now: datetime) -> int:
    """The user's code for the incident: the one it has, or the smallest free one (see above).
    Serialised per user (PostgreSQL: an advisory lock until the end of the transaction)."""
    await lock_names(session, [f"sms-reply-codes:{user_id}"])
    rows = list(await session.scalars(select(SmsReplyCode).where(SmsReplyCode.user_id == user_id)))
    for row in rows:
        if row.incident_id == incident_id:
            row.created_at = now
            return row.code
    recent = now - timedelta(days=REPLY_CODE_DAYS)
    taken = {row.code for row in rows if row.created_at > recent}
    code = next(n for n in range(1, len(taken) + 2) if n not in taken)
    stale = next((row for row in rows if row.code == code), None)
    if stale is not None:
        stale.incident_id, stale.created_at = incident_id, now
    else:
        session.add(SmsReplyCode(user_id=user_id, code=code, incident_id=incident_id,
                                 created_at=now))  # fmt: skip
    await session.flush()
    return code


async def incident_for(session: AsyncSession, *, user_id: int, code: int) -> int | None:
    """The incident a user's code stands for, or None."""
    found: int | None = await session.scalar(
        select(SmsReplyCode.incident_id).where(
            SmsReplyCode.user_id == user_id, SmsReplyCode.code == code
        )
    )
    return found


# ---- what a reply says ---------------------------------------------------------------------------


class Keyword(StrEnum):
    opt_out = "opt_out"
    opt_in = "opt_in"
    help = "help"


class Action(StrEnum):
    acknowledge = "acknowledge"
    resolve = "resolve"


@dataclass(frozen=True)
class Command:
    code: int
    action: Action


_ACTIONS = {"a": Action.acknowledge, "ack": Action.acknowledge,
            "acknowledge": Action.acknowledge, "r": Action.resolve, "res": Action.resolve,
            "resolve": Action.resolve}  # fmt: skip
_CODE_FIRST = re.compile(r"(\d{1,6})([a-z]+)")
_ACTION_FIRST = re.compile(r"([a-z]+)(\d{1,6})")


def keyword(body: str) -> Keyword | None:
    """An opt-out, opt-in or help keyword: the whole message is that one word (any case)."""
    word = body.strip().upper()
    if word in OPT_OUT_KEYWORDS or word == "STOP ALL":
        return Keyword.opt_out
    if word in OPT_IN_KEYWORDS:
        return Keyword.opt_in
    if word in HELP_KEYWORDS:
        return Keyword.help
    return None


def command(body: str) -> Command | None:
    """ "4a", "4 R", "ack 4", "Resolve 4" …: case and spaces do not matter; None otherwise."""
    text = "".join(body.lower().split()).rstrip(".!")
    for pattern, code_group, action_group in ((_CODE_FIRST, 1, 2), (_ACTION_FIRST, 2, 1)):
        match = pattern.fullmatch(text)
        if match and match.group(action_group) in _ACTIONS:
            return Command(int(match.group(code_group)), _ACTIONS[match.group(action_group)])
    return None


# ---- who texted ----------------------------------------------------------------------------------


async def owners_of(session: AsyncSession, number: str) -> Sequence[User]:
    """The active users who verified `number` as theirs (more than one: it is ambiguous)."""
    return list(
        await session.scalars(
            select(User)
            .join(ContactVerification, ContactVerification.user_id == User.id)
            .where(
                ContactVerification.channel == "sms",
                ContactVerification.address == number,
                ContactVerification.verified_at.is_not(None),
                User.is_active.is_(True),
            )
            .order_by(User.id)
        )
    )


# ---- opting out ----------------------------------------------------------------------------------


async def opt_out(session: AsyncSession, *, number: str, word: str, now: datetime) -> None:
    """Remember the number opted out (once: two STOPs at once write one row)."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    await session.execute(
        insert(SmsOptOut)
        .values(address=number[:32], keyword=word.upper()[:16], created_at=now)
        .on_conflict_do_nothing(index_elements=["address"])
    )


async def opt_in(session: AsyncSession, *, number: str) -> None:
    await session.execute(delete(SmsOptOut).where(SmsOptOut.address == number))


async def opted_out(session: AsyncSession, numbers: Sequence[str]) -> set[str]:
    """Which of these numbers opted out."""
    if not numbers:
        return set()
    return set(
        await session.scalars(select(SmsOptOut.address).where(SmsOptOut.address.in_(numbers)))
    )
