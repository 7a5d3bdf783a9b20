"""Notification preferences, the delivery log, and outgoing webhook subscriptions."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, status
from sqlalchemy import select

from app.auth.dependencies import AdminUser, CurrentUser
from app.core import ratelimit
from app.core.actors import Actor
from app.core.crypto import Sealer
from app.core.deps import ClockDep, SessionDep, SettingsDep
from app.core.errors import Forbidden, NotFound, Unprocessable
from app.core.pagination import page_by_id
from app.core.schemas import CursorQuery, IdPath, LimitQuery, Page
from app.incidents.dependencies import ValidIncident
from app.notifications import preferences as preference_service
from app.notifications import verification
from app.notifications import webhooks as webhook_service
from app.notifications.models import Notification, WebhookSubscription
from app.notifications.schemas import (
    AddressVerification,
    AddressVouch,
    ChannelName,
    DeliveryChannel,
    DeliveryStatus,
    NotificationRead,
    PreferenceRead,
    PreferenceUpdate,
    VerifiableChannel,
    VerificationCode,
    VerificationSent,
    WebhookCreate,
    WebhookCreated,
    WebhookPayload,
    WebhookRead,
    WebhookUpdate,
)
from app.users import service as user_service
from app.users.models import User

Responses = dict[int | str, dict[str, Any]]

preferences = APIRouter(prefix="/notification-preferences", tags=["notifications"])
notifications = APIRouter(prefix="/notifications", tags=["notifications"])
incident_notifications = APIRouter(prefix="/incidents", tags=["incidents"])
webhooks = APIRouter(prefix="/webhooks", tags=["webhooks"])

INVALID_ADDRESS: Responses = {422: {"description": "The address does not suit the channel"}}
SOMEONE_ELSE: Responses = {
    403: {"description": "Another user's (admins only)"},
    404: {"description": "No such user"},
}


# ---- preferences ---------------------------------------------------------------------------------


async def _person(user_id: IdPath, session: SessionDep, caller: CurrentUser) -> User:
    """The user whose preferences are asked for: yourself, or anyone for an admin."""
    if caller.id != user_id and caller.role != "admin":
        raise Forbidden("Only admins may read or change another user's preferences")
    user = await user_service.get(session, user_id)
    if user is None:
        raise NotFound(f"User {user_id} not found")
    return user


Person = Annotated[User, Depends(_person)]


def _page(items: list[preference_service.Preference]) -> dict[str, Any]:
    return {"items": items, "next_cursor": None}


async def _put(
    session: SessionDep,
    settings: SettingsDep,
    clock: ClockDep,
    *,
    user: User,
    channel: str,
    body: PreferenceUpdate,
) -> preference_service.Preference:
    if body.channel is not None and body.channel != channel:
        raise Unprocessable(
            f"channel: the body names {body.channel!r} but the path {channel!r}; "
            "leave it out or make them the same"
        )
    return await preference_service.put(
        session, user=user, channel=channel, enabled=body.enabled, address=body.address,
        min_severity=body.min_severity.value, events=body.events,
        allow_private=settings.allow_private_outbound, now=clock.now(),
    )  # fmt: skip


@preferences.get("/me", response_model=Page[PreferenceRead])
async def my_preferences(user: CurrentUser, session: SessionDep) -> object:
    """Your preference for every channel (one item each; `is_default` until you set it)."""
    return _page(await preference_service.for_user(session, user))


@preferences.put("/me/{channel}", response_model=PreferenceRead, responses=INVALID_ADDRESS)
async def set_my_preference(
    channel: ChannelName,
    body: PreferenceUpdate,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    clock: ClockDep,
) -> object:
    """Set how you are told on one channel (the whole preference: omitted fields take defaults)."""
    return await _put(session, settings, clock, user=user, channel=channel, body=body)


@preferences.get("/{user_id}", response_model=Page[PreferenceRead], responses=SOMEONE_ELSE)
async def user_preferences(person: Person, session: SessionDep) -> object:
    """A user's preference for every channel (admins; users may read their own)."""
    return _page(await preference_service.for_user(session, person))


@preferences.put(
    "/{user_id}/{channel}",
    response_model=PreferenceRead,
    responses=SOMEONE_ELSE | INVALID_ADDRESS,
)
async def set_user_preference(
    channel: ChannelName,
    body: PreferenceUpdate,
    person: Person,
    session: SessionDep,
    settings: SettingsDep,
    clock: ClockDep,
) -> object:
    """Set a user's preference on one channel (admins; users may set their own)."""
    return await _put(session, settings, clock, user=person, channel=channel, body=body)


# ---- verified addresses --------------------------------------------------------------------------

SEND_CODE: Responses = {
    409: {"description": "The address is verified already, or the number texted STOP"},
    422: {"description": "No address to verify (sms without a number)"},
    429: {"description": "Too many codes asked for: wait the `Retry-After` seconds"},
}
CONFIRM: Responses = {
    400: {"description": "Wrong code (the detail says how many tries are left), or none sent"},
    410: {"description": "The code has expired: ask for a new one"},
    429: {"description": "Too many wrong codes: ask for a new one"},
}


@preferences.post(
    "/me/{channel}/verify",
    response_model=VerificationSent,
    status_code=status.HTTP_202_ACCEPTED,
    responses=SEND_CODE,
)
async def send_my_verification_code(
    channel: VerifiableChannel,
    request: Request,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    clock: ClockDep,
) -> object:
    """Send a 6-digit code to where this channel's messages go; enter it with `…/confirm`."""
    # The limit is taken in a transaction of its own; the request's has only read the user so
    # far: end it, as SQLite has one writer at a time.
    await session.commit()
    await ratelimit.check(
        request.app.state.sessionmaker,
        {f"verify:user:{user.id}": ratelimit.Limit.per(
            settings.rate_limit_verification_per_user_per_hour, 3600
        )},
        now=clock.now(),
        detail="Too many verification codes asked for",
    )  # fmt: skip
    row = await preference_service.send_code(
        session, user=user, channel=channel, secret_key=settings.secret_key, now=clock.now()
    )
    return VerificationSent(
        channel=channel, address=row.address, expires_at=row.expires_at,
        attempts_allowed=verification.MAX_ATTEMPTS,
    )  # fmt: skip


@preferences.post("/me/{channel}/confirm", response_model=PreferenceRead, responses=CONFIRM)
async def confirm_my_address(
    channel: VerifiableChannel,
    body: VerificationCode,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    clock: ClockDep,
) -> object:
    """Enter the code sent to this channel's address: it is verified, and messages go there."""
    check, preference = await preference_service.confirm(
        session, user=user, channel=channel, code=body.code, secret_key=settings.secret_key,
        now=clock.now(),
    )  # fmt: skip
    if check.outcome is not verification.Checked.verified:
        await session.commit()  # a wrong code counts, though the answer is an error
        raise verification.refusal(check)
    return preference


@preferences.post(
    "/{user_id}/{channel}/verified",
    response_model=AddressVerification,
    responses=SOMEONE_ELSE | INVALID_ADDRESS,
)
async def vouch_for_address(
    channel: VerifiableChannel,
    body: AddressVouch,
    person: Person,
    admin: AdminUser,
    session: SessionDep,
    clock: ClockDep,
) -> object:
    """Mark a user's email address or number verified (admins): messages go there at once."""
    return await preference_service.vouch(
        session, user=person, channel=channel, address=body.address, admin=admin, now=clock.now()
    )


# ---- the delivery log ----------------------------------------------------------------------------


@notifications.get("/", response_model=Page[NotificationRead], responses=SOMEONE_ELSE)
async def list_notifications(
    user: CurrentUser,
    session: SessionDep,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
    status: Annotated[list[DeliveryStatus] | None, Query()] = None,
    channel: Annotated[list[DeliveryChannel] | None, Query()] = None,
    incident_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    user_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
) -> object:
    """The delivery log, oldest first: every admin sees all; a user sees their own."""
    if user.role != "admin":
        if user_id is not None and user_id != user.id:
            raise Forbidden("Only admins may read other users' notifications")
        user_id = user.id
    query = select(Notification)
    if status:
        query = query.where(Notification.status.in_(status))
    if channel:
        query = query.where(Notification.channel.in_(channel))
    if incident_id is not None:
        query = query.where(Notification.incident_id == incident_id)
    if user_id is not None:
        query = query.where(Notification.user_id == user_id)
    items, next_cursor = await page_by_id(
        session, query, Notification.id, limit=limit, cursor=cursor
    )
    return {"items": items, "next_cursor": next_cursor}


@notifications.get(
    "/{notification_id}",
    response_model=NotificationRead,
    responses={404: {"description": "No such notification (or not yours)"}},
)
async def read_notification(
    notification_id: IdPath, user: CurrentUser, session: SessionDep
) -> object:
    """One notification with its delivery state (admins: any; users: their own)."""
    row = await session.get(Notification, notification_id)
    if row is None or (user.role != "admin" and row.user_id != user.id):
        raise NotFound(f"Notification {notification_id} not found")
    return row


@incident_notifications.get(
    "/{incident_id}/notifications",
    response_model=Page[NotificationRead],
    responses={404: {"description": "No such incident"}},
)
async def list_incident_notifications(
    incident: ValidIncident,
    user: CurrentUser,
    session: SessionDep,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> object:
    """What was sent about an incident, to whom, and how it went (a user sees their own)."""
    query = select(Notification).where(Notification.incident_id == incident.id)
    if user.role != "admin":
        query = query.where(Notification.user_id == user.id)
    items, next_cursor = await page_by_id(
        session, query, Notification.id, limit=limit, cursor=cursor
    )
    return {"items": items, "next_cursor": next_cursor}


# ---- outgoing webhooks ---------------------------------------------------------------------------


async def valid_webhook(
    webhook_id: IdPath, session: SessionDep, _: AdminUser
) -> WebhookSubscription:
    hook = await webhook_service.get(session, webhook_id)
    if hook is None:
        raise NotFound(f"Webhook {webhook_id} not found")
    return hook


ValidWebhook = Annotated[WebhookSubscription, Depends(valid_webhook)]
INVALID_URL: Responses = {422: {"description": "Bad URL or events (the detail says what)"}}


@webhooks.get("/", response_model=Page[WebhookRead])
async def list_webhooks(
    session: SessionDep, _: AdminUser, limit: LimitQuery = 50, cursor: CursorQuery = None
) -> object:
    """Outgoing webhook subscriptions (admin)."""
    items, next_cursor = await webhook_service.list_page(session, limit=limit, cursor=cursor)
    return {"items": items, "next_cursor": next_cursor}


@webhooks.post(
    "/", response_model=WebhookCreated, status_code=status.HTTP_201_CREATED, responses=INVALID_URL
)
async def create_webhook(
    body: WebhookCreate,
    session: SessionDep,
    settings: SettingsDep,
    clock: ClockDep,
    admin: AdminUser,
) -> object:
    """Subscribe a URL to incident events (admin). The answer shows the signing secret, once."""
    hook, secret = await webhook_service.create(
        session, data=body.model_dump(), actor=Actor.of(admin),
        allow_private=settings.allow_private_outbound, sealer=Sealer.of(settings),
        now=clock.now(),
    )  # fmt: skip
    return _with_secret(hook, secret)


@webhooks.get("/{webhook_id}", response_model=WebhookRead)
async def read_webhook(hook: ValidWebhook) -> object:
    """One subscription (admin); the secret shows only its first characters."""
    return hook


@webhooks.put("/{webhook_id}", response_model=WebhookRead, responses=INVALID_URL)
async def update_webhook(
    body: WebhookUpdate,
    hook: ValidWebhook,
    session: SessionDep,
    settings: SettingsDep,
    clock: ClockDep,
) -> object:
    """Change a subscription (admin); only the fields given change."""
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    return await webhook_service.update(
        session, hook=hook, changes=changes, allow_private=settings.allow_private_outbound,
        now=clock.now(),
    )  # fmt: skip


@webhooks.delete("/{webhook_id}", response_model=WebhookRead)
async def delete_webhook(hook: ValidWebhook, session: SessionDep, clock: ClockDep) -> object:
    """Delete a subscription (admin); its deliveries not yet sent are cancelled."""
    shown = WebhookRead.model_validate(hook)
    await webhook_service.delete(session, hook=hook, now=clock.now())
    return shown


@webhooks.post("/{webhook_id}/rotate-secret", response_model=WebhookCreated)
async def rotate_webhook_secret(
    hook: ValidWebhook, session: SessionDep, settings: SettingsDep, clock: ClockDep
) -> object:
    """Replace the signing secret (admin); the answer shows the new one, once."""
    secret = await webhook_service.rotate(
        session, hook=hook, sealer=Sealer.of(settings), now=clock.now()
    )
    return _with_secret(hook, secret)


def _with_secret(hook: WebhookSubscription, secret: str) -> WebhookCreated:
    return WebhookCreated(**WebhookRead.model_validate(hook).model_dump(), secret=secret)


@webhooks.post(
    "/{webhook_id}/test", response_model=NotificationRead, status_code=status.HTTP_202_ACCEPTED
)
async def test_webhook(
    hook: ValidWebhook, session: SessionDep, clock: ClockDep, admin: AdminUser
) -> object:
    """Queue a signed `ping` delivery to the URL (admin); follow it in the delivery log."""
    return await webhook_service.send_test(
        session, hook=hook, actor=Actor.of(admin), now=clock.now()
    )


def document_webhooks(app: FastAPI) -> None:
    """Publish the outgoing webhook in the OpenAPI document (its `webhooks` section)."""

    @app.webhooks.post("incident-event")
    def incident_event(
        body: WebhookPayload,
        x_event_id: Annotated[str, Header(description="The same on every retry of a delivery")],
        x_timestamp: Annotated[str, Header(description="Unix seconds when it was signed")],
        x_signature: Annotated[
            str,
            Header(description='sha256=<hex HMAC-SHA256(secret, X-Timestamp + "." + body)>'),
        ],
    ) -> None:
        """What a subscription's URL receives for each incident event it listens to.

        Answer with any 2xx. A 408, 429 or 5xx (or no answer within the read timeout) is retried
        with backoff; any other status fails the delivery at once.
        """
