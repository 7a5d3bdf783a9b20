"""Notification preferences, the delivery log, and outgoing webhook subscriptions."""

from __future__ import annotations

import logging
from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request, status
from sqlalchemy import select

from app.auth import policy as authz
from app.auth.dependencies import AdminUser, CurrentPrincipal, CurrentUser
from app.auth.policy import Action
from app.core.actors import Actor
from app.core.clock import Clock
from app.core.config import Settings
from app.core.crypto import Sealer
from app.core.deps import ClockDep, SessionDep, SettingsDep
from app.core.errors import Forbidden, NotFound, Unprocessable
from app.core.pagination import page_by_id
from app.core.schemas import CursorQuery, IdPath, LimitQuery, Page
from app.incidents.dependencies import ValidIncident
from app.notifications import contacts, verification
from app.notifications import preferences as preference_service
from app.notifications import webhooks as webhook_service
from app.notifications.models import Notification, WebhookSubscription
from app.notifications.schemas import (
    AddressVerification,
    AddressVouch,
    ChannelName,
    ContactMethodCreate,
    ContactMethodRead,
    ContactMethodUpdate,
    DeliveryChannel,
    DeliveryStatus,
    NotificationRead,
    NotificationRuleCreate,
    NotificationRuleRead,
    NotificationRuleUpdate,
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
from app.teams.dependencies import may_give_to
from app.users import service as user_service
from app.users.models import User

logger = logging.getLogger(__name__)

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


async def _person(user_id: IdPath, session: SessionDep, caller: CurrentPrincipal) -> User:
    """The user whose preferences are asked for: yourself, or anyone for an admin."""
    if caller.user_id != user_id and not authz.allowed(caller, Action.administer, authz.NO_TEAM):
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


async def _limit_codes(request: Request, settings: Settings, clock: Clock, user: User) -> None:
    """Verification codes a user may ask for, across preferences and contact methods (the
    console takes from the same bucket: `verification.limit_codes`)."""
    await verification.limit_codes(
        request.app.state.sessionmaker, settings, user_id=user.id, now=clock.now()
    )


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
    await _limit_codes(request, settings, clock, user)
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


# ---- contact methods and notification rules ------------------------------------------------------

contact_routes = APIRouter(prefix="/users", tags=["notifications"])

METHOD_404: Responses = {404: {"description": "No such contact method (of this user)"}}
RULE_404: Responses = {404: {"description": "No such notification rule (of this user)"}}
METHOD_INVALID: Responses = {
    409: {"description": "The user has this contact method already"},
    422: {"description": "The address does not suit the type (the detail says why)"},
}
RULE_INVALID: Responses = {
    409: {"description": "A rule already notifies by this method after this delay"},
    422: {"description": "Not one of the user's contact methods, or too many rules"},
}
MethodId = Annotated[int, Path(ge=1, le=2**63 - 1)]
RuleId = Annotated[int, Path(ge=1, le=2**63 - 1)]


def _methods_page(items: list[contacts.Method]) -> dict[str, Any]:
    return {"items": items, "next_cursor": None}


def _rules_page(items: list[contacts.Rule]) -> dict[str, Any]:
    return {"items": items, "next_cursor": None}


async def _add_method(
    session: SessionDep, clock: ClockDep, person: User, body: ContactMethodCreate
) -> contacts.Method:
    return await contacts.add_method(
        session, user=person, kind=body.type, address=body.address, label=body.label,
        now=clock.now(),
    )  # fmt: skip


async def _change_method(
    session: SessionDep, clock: ClockDep, person: User, method_id: int, body: ContactMethodUpdate
) -> contacts.Method:
    return await contacts.change_method(
        session, user=person, method_id=method_id, address=body.address, label=body.label,
        now=clock.now(),
    )  # fmt: skip


async def _add_rule(
    session: SessionDep, clock: ClockDep, person: User, body: NotificationRuleCreate
) -> contacts.Rule:
    return await contacts.add_rule(
        session, user=person, method_id=body.contact_method_id, delay=body.delay_minutes,
        min_severity=body.min_severity.value, now=clock.now(),
    )  # fmt: skip


async def _change_rule(
    session: SessionDep, clock: ClockDep, person: User, rule_id: int, body: NotificationRuleUpdate
) -> contacts.Rule:
    changes = body.model_dump(exclude_unset=True)
    if "min_severity" in changes:
        changes["min_severity"] = changes["min_severity"].value
    return await contacts.change_rule(
        session, user=person, rule_id=rule_id, changes=changes, now=clock.now()
    )


@contact_routes.get("/me/contact-methods", response_model=Page[ContactMethodRead])
async def my_contact_methods(user: CurrentUser, session: SessionDep) -> object:
    """Your contact methods, oldest first, each saying whether it may be paged yet."""
    return _methods_page(await contacts.methods(session, user))


@contact_routes.post(
    "/me/contact-methods",
    response_model=ContactMethodRead,
    status_code=status.HTTP_201_CREATED,
    responses=METHOD_INVALID,
)
async def add_my_contact_method(
    body: ContactMethodCreate, user: CurrentUser, session: SessionDep, clock: ClockDep
) -> object:
    """Add a way to reach you. An email address or a number is paged once verified: ask for a
    code with `…/verify` and enter it with `…/confirm`."""
    return await _add_method(session, clock, user, body)


@contact_routes.get(
    "/me/contact-methods/{method_id}", response_model=ContactMethodRead, responses=METHOD_404
)
async def my_contact_method(method_id: MethodId, user: CurrentUser, session: SessionDep) -> object:
    """One of your contact methods."""
    return await contacts.method(session, user, method_id)


@contact_routes.patch(
    "/me/contact-methods/{method_id}",
    response_model=ContactMethodRead,
    responses=METHOD_404 | METHOD_INVALID,
)
async def change_my_contact_method(
    method_id: MethodId,
    body: ContactMethodUpdate,
    user: CurrentUser,
    session: SessionDep,
    clock: ClockDep,
) -> object:
    """Change a contact method's label or address (a new address needs verifying again)."""
    return await _change_method(session, clock, user, method_id, body)


@contact_routes.delete(
    "/me/contact-methods/{method_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=METHOD_404,
)
async def delete_my_contact_method(
    method_id: MethodId, user: CurrentUser, session: SessionDep
) -> None:
    """Delete a contact method and the rules that use it."""
    await contacts.remove_method(session, user=user, method_id=method_id)


@contact_routes.post(
    "/me/contact-methods/{method_id}/verify",
    response_model=VerificationSent,
    status_code=status.HTTP_202_ACCEPTED,
    responses=METHOD_404 | SEND_CODE,
)
async def verify_my_contact_method(
    method_id: MethodId,
    request: Request,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    clock: ClockDep,
) -> object:
    """Send a 6-digit code to the method's address (a text for sms and voice numbers alike)."""
    await contacts.method(session, user, method_id)  # 404 before the limit is taken
    await session.commit()  # the limit is taken in a transaction of its own
    await _limit_codes(request, settings, clock, user)
    row = await contacts.send_code(
        session, user=user, method_id=method_id, secret_key=settings.secret_key, now=clock.now()
    )
    return VerificationSent(
        channel=cast(VerifiableChannel, row.channel), address=row.address,
        expires_at=row.expires_at, attempts_allowed=verification.MAX_ATTEMPTS,
    )  # fmt: skip


@contact_routes.post(
    "/me/contact-methods/{method_id}/confirm",
    response_model=ContactMethodRead,
    responses=METHOD_404 | CONFIRM,
)
async def confirm_my_contact_method(
    method_id: MethodId,
    body: VerificationCode,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    clock: ClockDep,
) -> object:
    """Enter the code sent to the method's address: it is verified, and pages go there."""
    check, method = await contacts.confirm(
        session, user=user, method_id=method_id, code=body.code,
        secret_key=settings.secret_key, now=clock.now(),
    )  # fmt: skip
    if check.outcome is not verification.Checked.verified:
        await session.commit()  # a wrong code counts, though the answer is an error
        raise verification.refusal(check)
    return method


@contact_routes.get("/me/notification-rules", response_model=Page[NotificationRuleRead])
async def my_notification_rules(user: CurrentUser, session: SessionDep) -> object:
    """Your notification rules in the order they fire (by delay). None: you are paged through
    your notification preferences."""
    return _rules_page(await contacts.rules(session, user))


@contact_routes.post(
    "/me/notification-rules",
    response_model=NotificationRuleRead,
    status_code=status.HTTP_201_CREATED,
    responses=RULE_INVALID,
)
async def add_my_notification_rule(
    body: NotificationRuleCreate, user: CurrentUser, session: SessionDep, clock: ClockDep
) -> object:
    """ "When I am paged, notify me by this contact method after N minutes." Once you have a
    rule, pages follow your rules only; your preferences still decide the other messages."""
    return await _add_rule(session, clock, user, body)


@contact_routes.patch(
    "/me/notification-rules/{rule_id}",
    response_model=NotificationRuleRead,
    responses=RULE_404 | RULE_INVALID,
)
async def change_my_notification_rule(
    rule_id: RuleId,
    body: NotificationRuleUpdate,
    user: CurrentUser,
    session: SessionDep,
    clock: ClockDep,
) -> object:
    """Change a rule's method, delay or severity."""
    return await _change_rule(session, clock, user, rule_id, body)


@contact_routes.delete(
    "/me/notification-rules/{rule_id}", status_code=status.HTTP_204_NO_CONTENT, responses=RULE_404
)
async def delete_my_notification_rule(
    rule_id: RuleId, user: CurrentUser, session: SessionDep
) -> None:
    """Delete a rule (pages already written by it are not affected)."""
    await contacts.remove_rule(session, user=user, rule_id=rule_id)


# Anyone's (admins; users may use these for themselves too).


@contact_routes.get(
    "/{user_id}/contact-methods", response_model=Page[ContactMethodRead], responses=SOMEONE_ELSE
)
async def user_contact_methods(person: Person, session: SessionDep) -> object:
    """A user's contact methods (admins; users may read their own)."""
    return _methods_page(await contacts.methods(session, person))


@contact_routes.post(
    "/{user_id}/contact-methods",
    response_model=ContactMethodRead,
    status_code=status.HTTP_201_CREATED,
    responses=SOMEONE_ELSE | METHOD_INVALID,
)
async def add_user_contact_method(
    body: ContactMethodCreate, person: Person, session: SessionDep, clock: ClockDep
) -> object:
    """Add a contact method for a user (admins). It is paged once verified: by its owner's
    code, or by an admin's word (`…/verified`)."""
    return await _add_method(session, clock, person, body)


@contact_routes.patch(
    "/{user_id}/contact-methods/{method_id}",
    response_model=ContactMethodRead,
    responses=SOMEONE_ELSE | METHOD_404 | METHOD_INVALID,
)
async def change_user_contact_method(
    method_id: MethodId,
    body: ContactMethodUpdate,
    person: Person,
    session: SessionDep,
    clock: ClockDep,
) -> object:
    """Change a user's contact method (admins)."""
    return await _change_method(session, clock, person, method_id, body)


@contact_routes.delete(
    "/{user_id}/contact-methods/{method_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=SOMEONE_ELSE | METHOD_404,
)
async def delete_user_contact_method(
    method_id: MethodId, person: Person, session: SessionDep
) -> None:
    """Delete a user's contact method and its rules (admins)."""
    await contacts.remove_method(session, user=person, method_id=method_id)


@contact_routes.post(
    "/{user_id}/contact-methods/{method_id}/verified",
    response_model=ContactMethodRead,
    responses=SOMEONE_ELSE | METHOD_404,
)
async def vouch_for_contact_method(
    method_id: MethodId, person: Person, admin: AdminUser, session: SessionDep, clock: ClockDep
) -> object:
    """Mark a user's contact method verified (admins): it is paged at once. Logged."""
    method = await contacts.vouch(
        session, user=person, method_id=method_id, admin=admin, now=clock.now()
    )
    logger.info(
        "admin %s marked contact method %s of user %s verified", admin.id, method_id, person.id,
        extra={"admin_id": admin.id, "user_id": person.id},
    )  # fmt: skip
    return method


@contact_routes.get(
    "/{user_id}/notification-rules",
    response_model=Page[NotificationRuleRead],
    responses=SOMEONE_ELSE,
)
async def user_notification_rules(person: Person, session: SessionDep) -> object:
    """A user's notification rules in firing order (admins; users may read their own)."""
    return _rules_page(await contacts.rules(session, person))


@contact_routes.post(
    "/{user_id}/notification-rules",
    response_model=NotificationRuleRead,
    status_code=status.HTTP_201_CREATED,
    responses=SOMEONE_ELSE | RULE_INVALID,
)
async def add_user_notification_rule(
    body: NotificationRuleCreate, person: Person, session: SessionDep, clock: ClockDep
) -> object:
    """Add a notification rule for a user (admins)."""
    return await _add_rule(session, clock, person, body)


@contact_routes.patch(
    "/{user_id}/notification-rules/{rule_id}",
    response_model=NotificationRuleRead,
    responses=SOMEONE_ELSE | RULE_404 | RULE_INVALID,
)
async def change_user_notification_rule(
    rule_id: RuleId,
    body: NotificationRuleUpdate,
    person: Person,
    session: SessionDep,
    clock: ClockDep,
) -> object:
    """Change a user's notification rule (admins)."""
    return await _change_rule(session, clock, person, rule_id, body)


@contact_routes.delete(
    "/{user_id}/notification-rules/{rule_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=SOMEONE_ELSE | RULE_404,
)
async def delete_user_notification_rule(
    rule_id: RuleId, person: Person, session: SessionDep
) -> None:
    """Delete a user's notification rule (admins)."""
    await contacts.remove_rule(session, user=person, rule_id=rule_id)


# ---- the delivery log ----------------------------------------------------------------------------


@notifications.get("/", response_model=Page[NotificationRead], responses=SOMEONE_ELSE)
async def list_notifications(
    caller: CurrentPrincipal,
    session: SessionDep,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
    status: Annotated[list[DeliveryStatus] | None, Query()] = None,
    channel: Annotated[list[DeliveryChannel] | None, Query()] = None,
    incident_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    user_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
) -> object:
    """The delivery log, oldest first: every admin sees all; a user sees their own."""
    if not caller.is_admin:
        if user_id is not None and user_id != caller.user_id:
            raise Forbidden("Only admins may read other users' notifications")
        user_id = caller.user_id
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
    notification_id: IdPath, caller: CurrentPrincipal, session: SessionDep
) -> object:
    """One notification with its delivery state (admins: any; users: their own)."""
    row = await session.get(Notification, notification_id)
    if row is None or (not caller.is_admin and row.user_id != caller.user_id):
        raise NotFound(f"Notification {notification_id} not found")
    return row


@incident_notifications.get(
    "/{incident_id}/notifications",
    response_model=Page[NotificationRead],
    responses={404: {"description": "No such incident"}},
)
async def list_incident_notifications(
    incident: ValidIncident,
    caller: CurrentPrincipal,
    session: SessionDep,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> object:
    """What was sent about an incident, to whom, and how it went (a user sees their own)."""
    query = select(Notification).where(Notification.incident_id == incident.id)
    if not caller.is_admin:
        query = query.where(Notification.user_id == caller.user_id)
    items, next_cursor = await page_by_id(
        session, query, Notification.id, limit=limit, cursor=cursor
    )
    return {"items": items, "next_cursor": next_cursor}


# ---- outgoing webhooks ---------------------------------------------------------------------------


async def valid_webhook(
    webhook_id: IdPath, session: SessionDep, principal: CurrentPrincipal
) -> WebhookSubscription:
    """The subscription, when the caller may inspect it (admins, its team's managers: its URL
    and events are for them only)."""
    hook = await webhook_service.get(session, webhook_id)
    missing = f"Webhook {webhook_id} not found"
    return await authz.found(session, principal, Action.inspect, hook, missing=missing)


async def changeable_webhook(
    hook: Annotated[WebhookSubscription, Depends(valid_webhook)],
    session: SessionDep,
    principal: CurrentPrincipal,
) -> WebhookSubscription:
    await authz.require(session, principal, Action.configure, hook.team_id, missing="")
    return hook


ChangeableWebhook = Annotated[WebhookSubscription, Depends(changeable_webhook)]
ValidWebhook = Annotated[WebhookSubscription, Depends(valid_webhook)]
INVALID_URL: Responses = {422: {"description": "Bad URL or events (the detail says what)"}}


@webhooks.get("/", response_model=Page[WebhookRead])
async def list_webhooks(
    session: SessionDep,
    principal: CurrentPrincipal,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> object:
    """Outgoing webhook subscriptions (admins: all; a team's managers: their team's)."""
    items, next_cursor = await webhook_service.list_page(
        session, limit=limit, cursor=cursor,
        where=authz.inspectable(principal, WebhookSubscription.team_id),
    )  # fmt: skip
    return {"items": items, "next_cursor": next_cursor}


@webhooks.post(
    "/", response_model=WebhookCreated, status_code=status.HTTP_201_CREATED, responses=INVALID_URL
)
async def create_webhook(
    body: WebhookCreate,
    session: SessionDep,
    settings: SettingsDep,
    clock: ClockDep,
    principal: CurrentPrincipal,
) -> object:
    """Subscribe a URL to incident events (admins; a team's managers, to their team's incidents).
    The answer shows the signing secret, once."""
    await may_give_to(session, principal, body.team_id)
    hook, secret = await webhook_service.create(
        session, data=body.model_dump(), actor=Actor.of(principal.user),
        allow_private=settings.allow_private_outbound, sealer=Sealer.of(settings),
        now=clock.now(),
    )  # fmt: skip
    return _with_secret(hook, secret)


@webhooks.get(
    "/{webhook_id}",
    response_model=WebhookRead,
    responses={403: {"description": "Only admins and the team's managers read it"}},
)
async def read_webhook(hook: ValidWebhook) -> object:
    """One subscription (admins, its team's managers); the secret shows only its first
    characters."""
    return hook


@webhooks.put("/{webhook_id}", response_model=WebhookRead, responses=INVALID_URL)
async def update_webhook(
    body: WebhookUpdate,
    hook: ChangeableWebhook,
    session: SessionDep,
    settings: SettingsDep,
    clock: ClockDep,
    principal: CurrentPrincipal,
) -> object:
    """Change a subscription (admins, its team's managers); only the fields given change."""
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    if "team_id" in changes and changes["team_id"] != hook.team_id:
        await may_give_to(session, principal, changes["team_id"])
    return await webhook_service.update(
        session, hook=hook, changes=changes, allow_private=settings.allow_private_outbound,
        now=clock.now(),
    )  # fmt: skip


@webhooks.delete("/{webhook_id}", response_model=WebhookRead)
async def delete_webhook(hook: ChangeableWebhook, session: SessionDep, clock: ClockDep) -> object:
    """Delete a subscription (admins, its team's managers); its deliveries not yet sent are
    cancelled."""
    shown = WebhookRead.model_validate(hook)
    await webhook_service.delete(session, hook=hook, now=clock.now())
    return shown


@webhooks.post("/{webhook_id}/rotate-secret", response_model=WebhookCreated)
async def rotate_webhook_secret(
    hook: ChangeableWebhook, session: SessionDep, settings: SettingsDep, clock: ClockDep
) -> object:
    """Replace the signing secret (admins, its team's managers); the answer shows the new one,
    once."""
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
    hook: ChangeableWebhook, session: SessionDep, clock: ClockDep, principal: CurrentPrincipal
) -> object:
    """Queue a signed `ping` delivery to the URL (admins, its team's managers); follow it in
    the delivery log."""
    return await webhook_service.send_test(
        session, hook=hook, actor=Actor.of(principal.user), now=clock.now()
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
