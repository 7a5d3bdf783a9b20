"""My page (`/ui/me`): a signed-in user's contact methods (with proof of their addresses),
notification rules and personal API keys, the console's side of `/v1/users/me/contact-methods`,
`/v1/users/me/notification-rules` and `/v1/api-keys`.

Every change goes through the same service functions (`app.notifications.contacts`) and request
schemas as the API, so the console accepts exactly what the API accepts; asking for a code takes
from the same hourly limit (`verification.limit_codes`). A refused form is shown again with the
reason beside its field and what was typed; a change that went through redirects back to the page
(POST, redirect, GET), which then says what happened.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import HTMLResponse, RedirectResponse, Response

from app.apikeys import service as apikey_service
from app.apikeys.models import ApiKey, KeyKind, KeyRole
from app.apikeys.schemas import ApiKeyCreate
from app.core.clock import Clock
from app.core.config import Settings
from app.core.deps import ClockDep, SessionDep, SettingsDep
from app.core.errors import DomainError, NotFound
from app.core.ratelimit import TooManyRequests
from app.core.schemas import IdPath
from app.notifications import contacts, preferences, verification
from app.notifications.models import PROOF_CHANNEL
from app.notifications.schemas import ContactMethodCreate, NotificationRuleCreate
from app.ui.auth import ActorDep, Browser, ViewerDep
from app.ui.forms import field_problems, field_refusal
from app.ui.render import page

router = APIRouter(prefix="/me")

PAGE = "/ui/me"
# Plenty for any real field: the schemas give the precise limits and messages.
FIELD = 10_000
INTEGER = re.compile(r"-?[0-9]{1,9}")  # ASCII digits only ("²".isdigit() is true)
CODE = re.compile(r"[0-9]{6}")
# What each kind of method is called on the page: in the menu, and in the lists.
KIND_CHOICES = (
    ("email", "Email"),
    ("sms", "Text message"),
    ("voice", "Phone call"),
    ("slack", "Slack member id"),
)
KIND_NAMES = {"email": "Email", "sms": "Text message", "voice": "Phone call", "slack": "Slack"}
PROOF_BY = {"email": "email", "sms": "text message"}
METHOD_FIELDS = ("type", "address", "label")
RULE_FIELDS = ("contact_method_id", "delay_minutes", "min_severity")


def method_name(method: contacts.Method) -> str:
    """`Text message +14155552671`."""
    return f"{KIND_NAMES.get(method.type, method.type)} {method.address}"


def after(minutes: int) -> str:
    if minutes == 0:
        return "at once"
    return f"after {minutes} minute{'' if minutes == 1 else 's'}"


def severities_from(min_severity: str) -> str:
    """`high` → `only high and critical`; '' for `info` (every incident)."""
    if min_severity not in preferences.RANK or min_severity == "info":
        return ""
    names = list(reversed(preferences.SEVERITIES[: preferences.RANK[min_severity] + 1]))
    if len(names) == 1:
        return f"only {names[0]}"
    return f"only {', '.join(names[:-1])} and {names[-1]}"


@dataclass(frozen=True)
class RuleLine:
    rule: contacts.Rule
    text: str  # `Text message +14155552671 at once, only high and critical`
    verified: bool


def rule_line(rule: contacts.Rule, methods: dict[int, contacts.Method]) -> RuleLine:
    method = methods.get(rule.contact_method_id)
    what = method_name(method) if method else f"contact method {rule.contact_method_id}"
    text = f"{what} {after(rule.delay_minutes)}"
    only = severities_from(rule.min_severity)
    return RuleLine(rule, f"{text}, {only}" if only else text, method is None or method.verified)


@dataclass
class Shown:
    """What a page shows besides the stored state: messages, errors and what was typed."""

    notice: str | None = None
    method_errors: dict[str, str] = field(default_factory=dict)  # by field; '' for the form
    rule_errors: dict[str, str] = field(default_factory=dict)
    code_errors: dict[int, str] = field(default_factory=dict)  # by method id
    method_draft: dict[str, str] = field(
        default_factory=lambda: {"type": "sms", "address": "", "label": ""}
    )
    rule_draft: dict[str, str] = field(
        default_factory=lambda: {"contact_method_id": "", "delay_minutes": "0",
                                 "min_severity": "info"}
    )  # fmt: skip
    confirm_delete: int | None = None
    key_errors: dict[str, str] = field(default_factory=dict)
    key_draft: dict[str, str] = field(
        default_factory=lambda: {"name": "", "role": "read-only", "expires": ""}
    )
    # A key just made: its whole secret, shown on this one page and never again.
    new_key: str | None = None
    confirm_revoke: ApiKey | None = None


async def _page(
    request: Request,
    session: AsyncSession,
    browser: Browser,
    shown: Shown | None = None,
    *,
    status: int = 200,
    sent: int | None = None,
    verified: int | None = None,
    done: str | None = None,
) -> Response:
    shown = shown or Shown()
    user = browser.user
    methods = await contacts.methods(session, user)
    by_id = {m.id: m for m in methods}
    rules = await contacts.rules(session, user)
    known = (await verification.known_for(session, [user.id]))[user.id]
    # A code was sent and not yet entered: its field is shown (a proof row waiting).
    pending = {
        m.id
        for m in methods
        if not m.verified and (PROOF_CHANNEL[m.type], m.address) in known.unproven
    }
    if sent in by_id:
        method = by_id[sent]
        proof = PROOF_CHANNEL[method.type] or ""
        shown.notice = (
            f"A code was sent to {method.address} by {PROOF_BY.get(proof, proof)}: enter it "
            f"below within {verification.CODE_MINUTES} minutes."
        )
        pending.add(sent)
    elif verified in by_id:
        shown.notice = f"{method_name(by_id[verified])} is verified: pages go there now."
    elif done in DONE:
        shown.notice = DONE[done]
    confirm = by_id.get(shown.confirm_delete) if shown.confirm_delete is not None else None
    keys, _ = await apikey_service.list_page(
        session, limit=500, cursor=None, user_id=user.id, kind=KeyKind.personal
    )
    return page(
        request,
        "me.html",
        browser=browser,
        status_code=status,
        methods=methods,
        rules=[rule_line(r, by_id) for r in rules],
        rule_counts={m.id: sum(r.contact_method_id == m.id for r in rules) for m in methods},
        pending=pending,
        provable={m.id for m in methods if not m.verified and PROOF_CHANNEL[m.type]},
        kinds=KIND_CHOICES,
        kind_names=KIND_NAMES,
        severities=preferences.SEVERITIES,
        method_name=method_name,
        confirm=confirm,
        shown=shown,
        keys=keys,
        key_roles=[r.value for r in KeyRole if apikey_service.may_carry(user.role, r)],
    )


DONE = {
    "method-added": "Contact method added.",
    "method-deleted": "Contact method deleted, and the rules that used it.",
    "rule-added": "Rule added.",
    "rule-deleted": "Rule deleted.",
    "key-revoked": "API key revoked: it stopped working at once.",
}


async def _after_rollback(session: AsyncSession, browser: Browser) -> None:
    """Undo what a refused change flushed; the signed-in user is read again (a rollback
    expires it)."""
    await session.rollback()
    await session.refresh(browser.user)


@router.get("", response_class=HTMLResponse)
async def my_page(
    request: Request,
    session: SessionDep,
    browser: ViewerDep,
    sent: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    verified: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    done: Annotated[str | None, Query(max_length=40)] = None,
    delete_method: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    revoke_key: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> Response:
    """Your contact methods, notification rules and API keys, with forms to change them; with
    `delete_method` or `revoke_key`, the step that confirms deleting or revoking it."""
    shown = Shown()
    if delete_method is not None:
        await contacts.method(session, browser.user, delete_method)  # another's: 404
        shown.confirm_delete = delete_method
    if revoke_key is not None:
        shown.confirm_revoke = await _my_key(session, browser, revoke_key)
    return await _page(request, session, browser, shown, sent=sent, verified=verified, done=done)


# ---- contact methods -----------------------------------------------------------------------------


@router.post("/methods", response_class=HTMLResponse)
async def add_method(
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    browser: ActorDep,
    type: Annotated[str, Form(max_length=FIELD)] = "",
    address: Annotated[str, Form(max_length=FIELD)] = "",
    label: Annotated[str, Form(max_length=FIELD)] = "",
) -> Response:
    """Add a contact method, as `POST /v1/users/me/contact-methods` does."""
    shown = Shown(method_draft={"type": type, "address": address, "label": label})
    try:
        body = ContactMethodCreate.model_validate(
            {"type": type, "address": address, "label": label}
        )
        await contacts.add_method(
            session, user=browser.user, kind=body.type, address=body.address, label=body.label,
            now=clock.now(),
        )  # fmt: skip
    except ValidationError as exc:
        shown.method_errors = field_problems(exc)
        return await _page(request, session, browser, shown, status=422)
    except DomainError as exc:
        await _after_rollback(session, browser)
        name, message = field_refusal(exc, METHOD_FIELDS)
        if exc.status_code == 409:
            name = "address"  # the same address for this kind, already
        shown.method_errors = {name: message}
        return await _page(request, session, browser, shown, status=exc.status_code)
    return RedirectResponse(f"{PAGE}?done=method-added", status_code=303)


@router.post("/methods/{method_id}/delete", response_class=HTMLResponse)
async def delete_method(method_id: IdPath, session: SessionDep, browser: ActorDep) -> Response:
    """Delete a contact method and its rules (the page's confirmation step leads here)."""
    await contacts.remove_method(session, user=browser.user, method_id=method_id)
    return RedirectResponse(f"{PAGE}?done=method-deleted", status_code=303)


@router.post("/methods/{method_id}/send-code", response_class=HTMLResponse)
async def send_code(
    method_id: IdPath,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    clock: ClockDep,
    browser: ActorDep,
) -> Response:
    """Send a 6-digit code to the method's address, as `POST …/contact-methods/{id}/verify`."""
    await contacts.method(session, browser.user, method_id)  # another's: 404, before the limit
    await session.commit()  # the limit is taken in a transaction of its own
    refused = await _limit(request, session, browser, settings, clock, method_id)
    if refused is not None:
        return refused
    try:
        await contacts.send_code(
            session, user=browser.user, method_id=method_id, secret_key=settings.secret_key,
            now=clock.now(),
        )  # fmt: skip
    except DomainError as exc:
        await _after_rollback(session, browser)
        shown = Shown(code_errors={method_id: field_refusal(exc, ())[1]})
        return await _page(request, session, browser, shown, status=exc.status_code)
    return RedirectResponse(f"{PAGE}?sent={method_id}#method-{method_id}", status_code=303)


async def _limit(
    request: Request,
    session: AsyncSession,
    browser: Browser,
    settings: Settings,
    clock: Clock,
    method_id: int,
) -> Response | None:
    try:
        await verification.limit_codes(
            request.app.state.sessionmaker, settings, user_id=browser.user_id, now=clock.now()
        )
    except TooManyRequests as exc:
        shown = Shown(code_errors={method_id: field_refusal(exc, ())[1]})
        response = await _page(request, session, browser, shown, status=429)
        response.headers.update(exc.headers or {})
        return response
    return None


@router.post("/methods/{method_id}/confirm", response_class=HTMLResponse)
async def confirm_code(
    method_id: IdPath,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    clock: ClockDep,
    browser: ActorDep,
    code: Annotated[str, Form(max_length=FIELD)] = "",
) -> Response:
    """Enter the code sent to the method's address, as `POST …/contact-methods/{id}/confirm`."""
    await contacts.method(session, browser.user, method_id)  # another's: 404
    code = code.strip()
    if not CODE.fullmatch(code):
        shown = Shown(code_errors={method_id: "Enter the 6 digits of the code."})
        return await _page(request, session, browser, shown, status=422)
    try:
        check, _ = await contacts.confirm(
            session, user=browser.user, method_id=method_id, code=code,
            secret_key=settings.secret_key, now=clock.now(),
        )  # fmt: skip
    except DomainError as exc:  # a Slack member id: nothing to prove
        await _after_rollback(session, browser)
        shown = Shown(code_errors={method_id: field_refusal(exc, ())[1]})
        return await _page(request, session, browser, shown, status=exc.status_code)
    if check.outcome is not verification.Checked.verified:
        await session.commit()  # a wrong code counts, though the answer is a refusal
        refused = verification.refusal(check)
        shown = Shown(code_errors={method_id: field_refusal(refused, ())[1]})
        response = await _page(request, session, browser, shown, status=refused.status_code)
        response.headers.update(refused.headers or {})
        return response
    return RedirectResponse(f"{PAGE}?verified={method_id}#method-{method_id}", status_code=303)


# ---- notification rules --------------------------------------------------------------------------


@router.post("/rules", response_class=HTMLResponse)
async def add_rule(
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    browser: ActorDep,
    contact_method_id: Annotated[str, Form(max_length=FIELD)] = "",
    delay_minutes: Annotated[str, Form(max_length=FIELD)] = "",
    min_severity: Annotated[str, Form(max_length=FIELD)] = "info",
) -> Response:
    """Add a rule, as `POST /v1/users/me/notification-rules` does."""
    draft = {
        "contact_method_id": contact_method_id,
        "delay_minutes": delay_minutes,
        "min_severity": min_severity,
    }
    shown = Shown(rule_draft=draft)
    # The schema takes numbers only (a JSON string is a client's mistake): the form's text is
    # turned into one here, or refused beside its field.
    method_id, delay = _number(contact_method_id), _number(delay_minutes)
    if method_id is None:
        shown.rule_errors["contact_method_id"] = "choose one of your contact methods"
    if delay is None:
        shown.rule_errors["delay_minutes"] = "a whole number of minutes, from 0 to 1440"
    if shown.rule_errors:
        return await _page(request, session, browser, shown, status=422)
    try:
        body = NotificationRuleCreate.model_validate(
            {"contact_method_id": method_id, "delay_minutes": delay, "min_severity": min_severity}
        )
        await contacts.add_rule(
            session, user=browser.user, method_id=body.contact_method_id,
            delay=body.delay_minutes, min_severity=body.min_severity, now=clock.now(),
        )  # fmt: skip
    except ValidationError as exc:
        shown.rule_errors = field_problems(exc)
        return await _page(request, session, browser, shown, status=422)
    except DomainError as exc:
        await _after_rollback(session, browser)
        name, message = field_refusal(exc, RULE_FIELDS)
        if name == "contact_method_id":
            message = "not one of your contact methods"
        shown.rule_errors = {name: message}
        return await _page(request, session, browser, shown, status=exc.status_code)
    return RedirectResponse(f"{PAGE}?done=rule-added", status_code=303)


def _number(text: str) -> int | None:
    """A whole number typed in a form (plain ASCII digits, maybe a minus), or None."""
    text = text.strip()
    return int(text) if INTEGER.fullmatch(text) else None


@router.post("/rules/{rule_id}/delete", response_class=HTMLResponse)
async def delete_rule(rule_id: IdPath, session: SessionDep, browser: ActorDep) -> Response:
    """Delete one of your rules."""
    await contacts.remove_rule(session, user=browser.user, rule_id=rule_id)
    return RedirectResponse(f"{PAGE}?done=rule-deleted", status_code=303)


# ---- API keys ------------------------------------------------------------------------------------


async def _my_key(session: AsyncSession, browser: Browser, key_id: int) -> ApiKey:
    key = await apikey_service.get(session, key_id)
    if key is None or key.kind != KeyKind.personal.value or key.user_id != browser.user_id:
        raise NotFound(f"API key {key_id} not found")
    return key


KEY_FIELDS = ("name", "role", "expires_at")


@router.post("/keys", response_class=HTMLResponse)
async def add_key(
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    browser: ActorDep,
    name: Annotated[str, Form(max_length=FIELD)] = "",
    role: Annotated[str, Form(max_length=FIELD)] = "read-only",
    expires: Annotated[str, Form(max_length=FIELD)] = "",
) -> Response:
    """Make a personal API key, as `POST /v1/api-keys` does; the page shows it this once."""
    shown = Shown(key_draft={"name": name, "role": role, "expires": expires})
    try:
        # A date: the key works until that day begins (UTC).
        expires_at = (
            datetime.strptime(expires.strip(), "%Y-%m-%d").replace(tzinfo=UTC).isoformat()
            if expires.strip()
            else None
        )
    except ValueError:
        shown.key_errors = {"expires_at": "a date such as 2027-06-30"}
        return await _page(request, session, browser, shown, status=422)
    try:
        body = ApiKeyCreate.model_validate({"name": name, "role": role, "expires_at": expires_at})
        if not apikey_service.may_carry(browser.user.role, body.role):
            shown.key_errors = {"role": f"at most your own role ({browser.user.role})"}
            return await _page(request, session, browser, shown, status=403)
        _, secret = await apikey_service.create(
            session, kind=KeyKind.personal, name=body.name, role=body.role, owner=browser.user,
            created_by=browser.user, expires_at=body.expires_at, team_id=None, team_role=None,
            now=clock.now(),
        )  # fmt: skip
    except ValidationError as exc:
        shown.key_errors = field_problems(exc)
        return await _page(request, session, browser, shown, status=422)
    except DomainError as exc:
        await _after_rollback(session, browser)
        shown.key_errors = dict([field_refusal(exc, KEY_FIELDS)])
        return await _page(request, session, browser, shown, status=exc.status_code)
    # Shown here, not after a redirect: the secret must not travel in a URL nor be kept.
    return await _page(request, session, browser, Shown(new_key=secret), status=201)


@router.post("/keys/{key_id}/revoke", response_class=HTMLResponse)
async def revoke_key(
    key_id: IdPath, session: SessionDep, clock: ClockDep, browser: ActorDep
) -> Response:
    """Revoke one of your API keys (the page's confirmation step leads here)."""
    key = await _my_key(session, browser, key_id)
    await apikey_service.revoke(session, key=key, now=clock.now())
    return RedirectResponse(f"{PAGE}?done=key-revoked", status_code=303)
