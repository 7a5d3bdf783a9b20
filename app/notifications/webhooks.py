"""Outgoing webhook subscriptions: incident events POSTed to a URL, signed with their own secret."""

from __future__ import annotations

import logging
import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, select
from sqlalchemy import update as sql_update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.actors import Actor
from app.core.crypto import Sealer, Unreadable
from app.core.db import WAKE_WORKER
from app.core.errors import Unprocessable
from app.core.outbound import check_url_syntax
from app.core.pagination import page_by_id
from app.notifications.models import Notification, WebhookSubscription, notification_row

logger = logging.getLogger(__name__)


def new_secret() -> str:
    """256 random bits, URL-safe, with a prefix that says what it is."""
    return "whsec_" + secrets.token_urlsafe(32)


def _set_secret(hook: WebhookSubscription, sealer: Sealer) -> str:
    """A new secret for `hook`, stored encrypted: the secret itself, to show once."""
    secret = new_secret()
    hook.secret = sealer.seal(secret)
    hook.secret_prefix = secret[:10]
    return secret


def _check_url(url: str, *, allow_private: bool) -> str:
    problem = check_url_syntax(url, allow_private=allow_private)
    if problem:
        raise Unprocessable(f"url: {problem}")
    return url


async def create(
    session: AsyncSession,
    *,
    data: dict[str, Any],
    actor: Actor,
    allow_private: bool,
    sealer: Sealer,
    now: datetime,
) -> tuple[WebhookSubscription, str]:
    """The new subscription and its secret (stored encrypted: shown only now)."""
    hook = WebhookSubscription(
        name=data["name"],
        description=data.get("description", ""),
        url=_check_url(data["url"], allow_private=allow_private),
        events=list(dict.fromkeys(data["events"])),
        enabled=data.get("enabled", True),
        team_id=data.get("team_id"),
        created_by=actor.user_id,
        created_at=now,
        updated_at=now,
    )
    secret = _set_secret(hook, sealer)
    session.add(hook)
    await session.flush()
    return hook, secret


async def update(
    session: AsyncSession,
    *,
    hook: WebhookSubscription,
    changes: dict[str, Any],
    allow_private: bool,
    now: datetime,
) -> WebhookSubscription:
    if "url" in changes:
        _check_url(changes["url"], allow_private=allow_private)
    if "events" in changes:
        changes["events"] = list(dict.fromkeys(changes["events"]))
    for name, value in changes.items():
        setattr(hook, name, value)
    hook.updated_at = now
    await session.flush()
    return hook


async def rotate(
    session: AsyncSession, *, hook: WebhookSubscription, sealer: Sealer, now: datetime
) -> str:
    """A new secret (returned, to show once); deliveries not yet sent are signed with it."""
    secret = _set_secret(hook, sealer)
    hook.updated_at = now
    await session.flush()
    return secret


async def seal_stored_secrets(session: AsyncSession, sealer: Sealer) -> int:
    """Encrypt under the current key every secret that is not (stored in plain text before
    encryption at rest, or under a previous SECRET_KEY); run by `migrate`. How many changed; one
    no key can read is left alone and logged (its deliveries say so)."""
    changed = 0
    # Locked while resealed (a rotation by a running API process waits, then wins), and changed
    # through the session, so that the audit log records each (`reseal`).
    for hook in await session.scalars(select(WebhookSubscription).with_for_update()):
        try:
            resealed = sealer.reseal(hook.secret)
        except Unreadable as exc:
            logger.error("webhook subscription %d: its secret is %s", hook.id, exc)
            continue
        if resealed is None:
            continue
        hook.secret = resealed
        changed += 1
    await session.flush()
    return changed


async def get(session: AsyncSession, hook_id: int) -> WebhookSubscription | None:
    return await session.get(WebhookSubscription, hook_id)


async def list_page(
    session: AsyncSession, *, limit: int, cursor: str | None, where: ColumnElement[bool]
) -> tuple[list[WebhookSubscription], str | None]:
    """A page of subscriptions in id order, those `where` keeps."""
    query = select(WebhookSubscription).where(where)
    return await page_by_id(session, query, WebhookSubscription.id, limit=limit, cursor=cursor)


async def delete(session: AsyncSession, *, hook: WebhookSubscription, now: datetime) -> None:
    """Its deliveries not yet sent are cancelled; the log keeps every row."""
    await session.execute(
        sql_update(Notification)
        .where(Notification.webhook_id == hook.id, Notification.status == "pending")
        .values(status="cancelled", last_error="cancelled: the webhook subscription was deleted",
                updated_at=now)
    )  # fmt: skip
    await session.delete(hook)
    await session.flush()


async def send_test(
    session: AsyncSession, *, hook: WebhookSubscription, actor: Actor, now: datetime
) -> Notification:
    """Queue a `ping` delivery, signed like the real ones, to check a receiver."""
    cause = f"test:{hook.id}:{secrets.token_hex(8)}"
    payload = {
        "id": cause,
        "event": "ping",
        "created_at": now.isoformat(),
        "incident": None,
        "actor": {"type": actor.type, "id": actor.id, "name": actor.name},
        "data": {"webhook_id": hook.id, "name": hook.name},
    }
    row = notification_row(
        key=cause, incident_id=None, event="test", channel="webhook", address=hook.url,
        subject=f"Test delivery to {hook.name}", payload=payload, now=now, webhook_id=hook.id,
    )  # fmt: skip
    notification = Notification(**row)
    session.add(notification)
    await session.flush()
    session.info[WAKE_WORKER] = True
    return notification
