"""One-click links in page emails: Acknowledge and Resolve, each a signed token in a URL.

A token (`app.core.signed`, under a key derived from SECRET_KEY for this purpose only) names one
incident, one user (the page's recipient), one action, when its page was written, when it stops
working (24 hours later) and an id of its own. Nothing about it is stored until it is used: then
its id goes into `action_token_uses` (unique) in the transaction of the action, so it acts once.

A link works only while all of these hold, checked in this order (`refusal`): its signature, its
expiry, the incident still exists, its user is still active, it has not been used, the incident
has not been resolved since the page was written; and for Acknowledge, the incident is still
triggered. Opening the link (GET) only shows what it would do; the form on that page (POST) does
it: mail scanners and link previews fetch every link in a mail.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.core.signed import Signer
from app.incidents.models import Incident, Status, TimelineEntry
from app.incidents.timeline import EntryType
from app.notifications.models import ActionTokenUse
from app.users.models import User

ACTIONS = ("acknowledge", "resolve")
LIFETIME = timedelta(hours=24)
PURPOSE = b"incident-management: one-click actions in page emails, v1"
PATH = "/v1/actions/"
USES = cast(Table, ActionTokenUse.__table__)


@dataclass(frozen=True)
class Link:
    """What a token says (its signature checked)."""

    token_id: str
    incident_id: int
    user_id: int
    action: str
    issued_at: datetime  # when its page was written
    expires_at: datetime


def make(
    settings: Settings, *, incident_id: int, user_id: int, action: str, written_at: datetime
) -> str:
    """A new token for one action on one incident by one user, from a page written then."""
    if action not in ACTIONS:
        raise ValueError(f"no such action: {action}")
    issued = int(written_at.timestamp())
    claims = {
        "jti": secrets.token_urlsafe(12),
        "inc": incident_id,
        "sub": user_id,
        "act": action,
        "iat": issued,
        "exp": issued + int(LIFETIME.total_seconds()),
    }
    return Signer.of(settings, purpose=PURPOSE).sign(claims)


def urls(
    settings: Settings, *, incident_id: int, user_id: int, written_at: datetime
) -> dict[str, str]:
    """The page's links, by action: `{PUBLIC_BASE_URL}/v1/actions/<token>`."""
    return {
        action: settings.public_base_url + PATH + make(
            settings, incident_id=incident_id, user_id=user_id, action=action,
            written_at=written_at,
        )
        for action in ACTIONS
    }  # fmt: skip


def read(settings: Settings, token: str) -> Link | None:
    """The link a token stands for, or None: garbled, forged, changed, or not one of ours."""
    claims = Signer.of(settings, purpose=PURPOSE).verify(token)
    if claims is None:
        return None
    try:
        return Link(
            token_id=_text(claims["jti"]),
            incident_id=_number(claims["inc"]),
            user_id=_number(claims["sub"]),
            action=_action(claims["act"]),
            issued_at=datetime.fromtimestamp(_number(claims["iat"]), UTC),
            expires_at=datetime.fromtimestamp(_number(claims["exp"]), UTC),
        )
    except (KeyError, TypeError, ValueError, OverflowError, OSError):
        return None


def _text(value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 64:
        raise ValueError("bad token id")
    return value


def _number(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError("not a number")
    return value


def _action(value: Any) -> str:
    if value not in ACTIONS:
        raise ValueError("no such action")
    return cast(str, value)


@dataclass(frozen=True)
class Refusal:
    """Why a link does not act: an HTTP status, a title and a sentence for its page."""

    status: int
    title: str
    message: str


@dataclass(frozen=True)
class Usable:
    """A link that may act: its incident (locked, when asked for) and its user."""

    link: Link
    incident: Incident
    user: User


async def check(
    session: AsyncSession, link: Link, *, now: datetime, incident: Incident | None
) -> Usable | Refusal:
    """Whether `link` may act now on `incident` (read by the caller, locked before acting;
    None: it no longer exists). Reads only."""
    number = f"#{link.incident_id}"
    if now >= link.expires_at:
        return Refusal(
            410, "This link has expired",
            f"Links in a page email work for {_hours(LIFETIME)} hours after the page was sent; "
            f"this one expired at {_moment(link.expires_at)}. Nothing was changed. Open incident "
            f"{number} in the console instead.",
        )  # fmt: skip
    if incident is None:
        return Refusal(404, "No such incident", f"Incident {number} no longer exists.")
    user = await session.scalar(select(User).where(User.id == link.user_id))
    if user is None or not user.is_active:
        return Refusal(
            403, "This link no longer works",
            "The account this page was sent to is deactivated; its links no longer act. "
            "Nothing was changed.",
        )  # fmt: skip
    used = await session.scalar(
        select(ActionTokenUse).where(ActionTokenUse.token_id == link.token_id)
    )
    if used is not None:
        return Refusal(
            409, "This link has been used already",
            f"It was used at {_moment(used.used_at)} ({_verb(used.action, past=True)} incident "
            f"{number}); each link acts once. Nothing was changed.",
        )  # fmt: skip
    resolved = await session.execute(
        select(TimelineEntry.actor_name, TimelineEntry.created_at)
        .where(
            TimelineEntry.incident_id == incident.id,
            TimelineEntry.type == EntryType.resolved.value,
            TimelineEntry.created_at >= link.issued_at,
        )
        .order_by(TimelineEntry.id.desc())
        .limit(1)
    )
    since = resolved.first()
    if incident.status == Status.resolved.value or since is not None:
        state = "is resolved" if incident.status == Status.resolved.value else "was resolved"
        said = f" ({_moment(since.created_at)}, by {since.actor_name})" if since else ""
        return Refusal(
            410, f"Incident {number} {state}",
            f"Incident {number} {state}{said} since this page was sent; its links no longer "
            "work. Nothing was changed.",
        )  # fmt: skip
    if link.action == "acknowledge" and incident.status == Status.acknowledged.value:
        by = await _name(session, incident.acknowledged_by)
        when = _moment(incident.acknowledged_at) if incident.acknowledged_at else "earlier"
        return Refusal(
            409, f"Incident {number} is acknowledged already",
            f"{by or 'Someone'} acknowledged it at {when}. Nothing was changed.",
        )  # fmt: skip
    if link.action == "acknowledge" and incident.status == Status.snoozed.value:
        until = _moment(incident.snoozed_until) if incident.snoozed_until else "later"
        return Refusal(
            409, f"Incident {number} is snoozed",
            f"It is snoozed until {until} and cannot be acknowledged now. Nothing was changed.",
        )  # fmt: skip
    return Usable(link, incident, user)


async def spend(session: AsyncSession, link: Link, *, now: datetime) -> bool:
    """Record the link as used, in the caller's transaction; False: it was used already (by a
    request that committed meanwhile)."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    written = await session.scalar(
        insert(USES)
        .values(
            token_id=link.token_id,
            incident_id=link.incident_id,
            user_id=link.user_id,
            action=link.action,
            used_at=now,
        )
        .on_conflict_do_nothing(index_elements=["token_id"])
        .returning(USES.c.id)
    )
    return written is not None


async def _name(session: AsyncSession, user_id: int | None) -> str | None:
    if user_id is None:
        return None
    name: str | None = await session.scalar(select(User.full_name).where(User.id == user_id))
    return name


def _verb(action: str, *, past: bool = False) -> str:
    if past:
        return {"acknowledge": "acknowledging", "resolve": "resolving"}[action]
    return {"acknowledge": "Acknowledge", "resolve": "Resolve"}[action]


def _moment(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _hours(delta: timedelta) -> int:
    return int(delta.total_seconds() // 3600)
