"""The console's admin pages: users (create, role, deactivate), escalation policies (steps), and
the audit log (read only).

Each change goes through the same service functions, request schemas and checks as the API
(`app/users/router.py`, `app/escalation/router.py`), so the console accepts exactly what the
API accepts. A refused form is shown again with the reason and what was typed, never a 500.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData
from starlette.responses import HTMLResponse, RedirectResponse, Response

from app.audit import service as audit_service
from app.audit.models import Action
from app.core.deps import ClockDep, SessionDep, SettingsDep
from app.core.errors import DomainError, NotFound
from app.core.schemas import MAX_ID, IdPath
from app.escalation import policies as policy_service
from app.escalation.models import EscalationPolicy
from app.escalation.schemas import PolicyCreate, PolicyUpdate
from app.flows import users as user_flow
from app.incidents.models import Severity
from app.schedules.models import Schedule
from app.services.models import Service
from app.ui.auth import AdminActorDep, AdminViewerDep, Browser
from app.ui.forms import problems, refusal
from app.ui.render import page
from app.users import service as user_service
from app.users.models import Role, User
from app.users.schemas import UserCreate, UserUpdate

router = APIRouter(prefix="/admin")

# A form carries the stored steps plus one empty row; more rows than the API allows steps (20)
# plus that one is not a form this page made.
MAX_ROWS = 21
# Plenty for any real field: the schemas below give the precise limits and messages.
FIELD = 10_000
FIELD_NAMES = {
    "delay_minutes": "delay (minutes)",
    "repeat_delay_minutes": "repeat delay (minutes)",
    "repeat_count": "repeats",
    "full_name": "full name",
    "is_active": "active",
}


def _problems(exc: ValidationError) -> str:
    return problems(exc, FIELD_NAMES)


# ---- users ---------------------------------------------------------------------------------------


async def _users_page(
    request: Request,
    session: AsyncSession,
    browser: Browser,
    *,
    status: int = 200,
    error: str | None = None,
    draft: dict[str, str] | None = None,
) -> Response:
    users = list(
        await session.scalars(
            select(User)
            .where(User.is_service_account.is_(False))  # API keys' accounts: not people
            .order_by(func.lower(User.full_name), User.id)
            .limit(5000)
        )
    )
    return page(
        request,
        "admin_users.html",
        browser=browser,
        status_code=status,
        users=users,
        roles=[role.value for role in Role],
        error=error,
        draft=draft or {"email": "", "full_name": "", "role": "user", "phone": "", "timezone": ""},
    )


async def _user_or_404(session: AsyncSession, user_id: int) -> User:
    user = await user_service.get(session, user_id)
    if user is None:
        raise NotFound(f"User {user_id} not found")
    return user


@router.get("/users", response_class=HTMLResponse)
async def users_page(request: Request, session: SessionDep, browser: AdminViewerDep) -> Response:
    """Every user, with forms to create one, change a role, deactivate or reactivate."""
    return await _users_page(request, session, browser)


@router.post("/users", response_class=HTMLResponse)
async def create_user(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    clock: ClockDep,
    browser: AdminActorDep,
    email: Annotated[str, Form(max_length=FIELD)] = "",
    full_name: Annotated[str, Form(max_length=FIELD)] = "",
    role: Annotated[str, Form(max_length=FIELD)] = "user",
    password: Annotated[str, Form(max_length=FIELD)] = "",
    phone: Annotated[str, Form(max_length=FIELD)] = "",
    timezone: Annotated[str, Form(max_length=FIELD)] = "",
) -> Response:
    """Create a user, as `POST /v1/users/` does."""
    # Shown again if refused; the password never is.
    draft = {"email": email, "full_name": full_name, "role": role, "phone": phone}
    draft["timezone"] = timezone
    try:
        body = UserCreate.model_validate(
            {
                "email": email,
                "password": password,
                "full_name": full_name,
                "role": role,
                "phone": phone.strip() or None,
                "timezone": timezone.strip() or None,
            }
        )
        await user_service.create(
            session,
            email=body.email,
            password=body.password,
            full_name=body.full_name,
            role=body.role,
            is_active=body.is_active,
            phone=body.phone,
            timezone=body.timezone or settings.default_timezone,
            now=clock.now(),
        )
    except ValidationError as exc:
        return await _users_page(
            request, session, browser, status=422, error=_problems(exc), draft=draft
        )
    except DomainError as exc:
        await session.rollback()
        return await _users_page(
            request, session, browser, status=exc.status_code, error=refusal(exc), draft=draft
        )
    return RedirectResponse("/ui/admin/users", status_code=303)


async def _change_user(
    request: Request,
    session: AsyncSession,
    browser: Browser,
    clock: ClockDep,
    user_id: int,
    values: dict[str, Any],
) -> Response:
    """Apply `values` through `UserUpdate` and the users service, as `PUT /v1/users/{id}`."""
    user = await _user_or_404(session, user_id)
    try:
        body = UserUpdate.model_validate(values)
        changes = body.model_dump(exclude_unset=True)
        await user_flow.update(session, user=user, changes=changes, now=clock.now())
    except ValidationError as exc:
        return await _users_page(request, session, browser, status=422, error=_problems(exc))
    except DomainError as exc:
        await session.rollback()
        return await _users_page(
            request, session, browser, status=exc.status_code, error=refusal(exc)
        )
    if user_id == browser.user_id and not (user.is_admin and user.is_active):
        # You took away your own admin role (or account): the admin pages are closed to you now.
        return RedirectResponse("/ui/incidents", status_code=303)
    return RedirectResponse("/ui/admin/users", status_code=303)


@router.post("/users/{user_id}/role", response_class=HTMLResponse)
async def change_role(
    user_id: IdPath,
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    browser: AdminActorDep,
    role: Annotated[str, Form(max_length=FIELD)] = "",
) -> Response:
    """Make a user an admin or a plain user; the last active admin stays one."""
    return await _change_user(request, session, browser, clock, user_id, {"role": role})


@router.post("/users/{user_id}/deactivate", response_class=HTMLResponse)
async def deactivate_user(
    user_id: IdPath, request: Request, session: SessionDep, clock: ClockDep, browser: AdminActorDep
) -> Response:
    """Deactivate a user: they cannot sign in and their sessions and tokens end."""
    return await _change_user(request, session, browser, clock, user_id, {"is_active": False})


@router.post("/users/{user_id}/reactivate", response_class=HTMLResponse)
async def reactivate_user(
    user_id: IdPath, request: Request, session: SessionDep, clock: ClockDep, browser: AdminActorDep
) -> Response:
    """Let a deactivated user sign in again."""
    return await _change_user(request, session, browser, clock, user_id, {"is_active": True})


# ---- policies: the list --------------------------------------------------------------------------


async def _names(session: AsyncSession) -> tuple[dict[int, str], dict[int, str]]:
    """Users' and schedules' names by id, for summaries."""
    users = await session.execute(select(User.id, User.full_name))
    schedules = await session.execute(select(Schedule.id, Schedule.name))
    return ({i: name for i, name in users.all()}, {i: name for i, name in schedules.all()})


def _minutes(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def step_summary(step: dict[str, Any], users: dict[int, str], schedules: dict[int, str]) -> str:
    """`after 5 min: Uma User, schedule Primary; notify, assign`."""
    who = [
        users.get(t["id"], f"user {t['id']}")
        if t["type"] == "user"
        else "schedule " + schedules.get(t["id"], str(t["id"]))
        for t in step.get("targets", [])
    ]
    does = []
    for action in step.get("actions", []):
        if action["type"] == "set_severity":
            does.append(f"severity → {action['severity']}")
        elif action["type"] == "webhook":
            does.append(f"webhook {action['url']}")
        elif action["type"] == "teams":
            does.append(f"Teams {action['url']}")
        elif action["type"] == "slack":
            does.append(f"Slack {action['channel']}")
        else:
            does.append(action["type"])
    return (
        f"after {_minutes(step.get('delay_minutes', 0))} min: "
        f"{', '.join(who) or 'nobody'}; {', '.join(does)}"
    )


def conditions_summary(conditions: dict[str, Any], services: dict[int, str]) -> str:
    parts = []
    if conditions.get("severities"):
        parts.append("severity " + " or ".join(conditions["severities"]))
    if conditions.get("service_ids"):
        parts.append(
            "service " + " or ".join(services.get(i, f"#{i}") for i in conditions["service_ids"])
        )
    if conditions.get("labels"):
        parts.append(", ".join(f"{k}={v}" for k, v in conditions["labels"].items()))
    if conditions.get("title_contains"):
        parts.append(f"title contains “{conditions['title_contains']}”")
    return "; ".join(parts) or "every incident"


@router.get("/policies", response_class=HTMLResponse)
async def policies_page(request: Request, session: SessionDep, browser: AdminViewerDep) -> Response:
    """The escalation policies, the one that applies first (lowest priority) at the top."""
    items, _ = await policy_service.list_policies(session, limit=500, cursor=None)
    items.sort(key=lambda p: (p.priority, p.id))
    users, schedules = await _names(session)
    rows = (
        await session.execute(select(Service.id, Service.name, Service.escalation_policy_id))
    ).all()
    service_names = {service_id: name for service_id, name, _ in rows}
    used_by: dict[int, list[str]] = {}
    for _, name, policy_id in rows:
        if policy_id is not None:
            used_by.setdefault(policy_id, []).append(name)
    return page(
        request,
        "admin_policies.html",
        browser=browser,
        policies=[
            {
                "policy": p,
                "conditions": conditions_summary(p.conditions or {}, service_names),
                "steps": [step_summary(s, users, schedules) for s in p.steps],
                "services": sorted(used_by.get(p.id, [])),
            }
            for p in items
        ],
    )


# ---- policies: the form --------------------------------------------------------------------------


@dataclass(eq=False)
class StepRow:
    """One step as the form shows it (all text, as typed), or the empty row for a new step."""

    position: str
    delay: str = ""
    users: list[str] = field(default_factory=list)
    schedules: list[str] = field(default_factory=list)
    notify: bool = True
    assign: bool = False
    severity: str = ""
    webhooks: str = ""
    teams: str = ""  # Teams Workflows webhook URLs, one per line
    slack: str = ""  # Slack channel ids the Slack app posts to, one per line
    remove: bool = False
    new: bool = False

    @property
    def used(self) -> bool:
        """Whether the new-step row was filled in (notify is ticked there from the start)."""
        return bool(
            self.delay.strip()
            or self.users
            or self.schedules
            or self.assign
            or self.severity
            or self.webhooks.strip()
            or self.teams.strip()
            or self.slack.strip()
        )

    @classmethod
    def of(cls, step: dict[str, Any], position: int) -> StepRow:
        actions = step.get("actions", [])
        targets = step.get("targets", [])
        severities = [a["severity"] for a in actions if a["type"] == "set_severity"]
        return cls(
            position=str(position),
            delay=_minutes(step.get("delay_minutes", 0)),
            users=[str(t["id"]) for t in targets if t["type"] == "user"],
            schedules=[str(t["id"]) for t in targets if t["type"] == "schedule"],
            notify=any(a["type"] == "notify" for a in actions),
            assign=any(a["type"] == "assign" for a in actions),
            severity=severities[-1] if severities else "",
            webhooks="\n".join(a["url"] for a in actions if a["type"] == "webhook"),
            teams="\n".join(a["url"] for a in actions if a["type"] == "teams"),
            slack="\n".join(a["channel"] for a in actions if a["type"] == "slack"),
        )

    def step(self) -> dict[str, Any]:
        """The step as the API's `Step` schema takes it (validated there, not here)."""
        actions: list[dict[str, Any]] = []
        if self.notify:
            actions.append({"type": "notify"})
        if self.assign:
            actions.append({"type": "assign"})
        if self.severity:
            actions.append({"type": "set_severity", "severity": self.severity})
        for line in self.webhooks.splitlines():
            if line.strip():
                actions.append({"type": "webhook", "url": line.strip()})
        for line in self.teams.splitlines():
            if line.strip():
                actions.append({"type": "teams", "url": line.strip()})
        for line in self.slack.splitlines():
            if line.strip():
                actions.append({"type": "slack", "channel": line.strip()})
        return {
            "delay_minutes": _number(self.delay) if self.delay.strip() else 0,
            "targets": [{"type": "user", "id": _number(i)} for i in self.users]
            + [{"type": "schedule", "id": _number(i)} for i in self.schedules],
            "actions": actions,
        }


def _number(text: str) -> int | float | str:
    """A form's number as JSON would carry it; text that is no number stays text, for the
    schema to refuse in its own words (`priority must be a number, not 'soon'`)."""
    try:
        return int(text.strip())
    except ValueError:
        pass
    try:
        return float(text.strip())
    except ValueError:
        return text


def _text(form: FormData, key: str) -> str:
    value = form.get(key)
    return value if isinstance(value, str) else ""


def _texts(form: FormData, key: str) -> list[str]:
    return [v for v in form.getlist(key) if isinstance(v, str) and v]


def _rows_from(form: FormData) -> list[StepRow]:
    try:
        count = int(_text(form, "step_count"))
    except ValueError:
        count = -1
    if not 0 <= count <= MAX_ROWS:
        raise DomainError("This form was not made by this page; reload it and try again")
    rows = []
    for i in range(count):
        key = f"steps-{i}-"
        rows.append(
            StepRow(
                position=_text(form, key + "position"),
                delay=_text(form, key + "delay"),
                users=_texts(form, key + "users"),
                schedules=_texts(form, key + "schedules"),
                notify=bool(_text(form, key + "notify")),
                assign=bool(_text(form, key + "assign")),
                severity=_text(form, key + "severity"),
                webhooks=_text(form, key + "webhooks"),
                teams=_text(form, key + "teams"),
                slack=_text(form, key + "slack"),
                remove=bool(_text(form, key + "remove")),
                new=bool(_text(form, key + "new")),
            )
        )
    return rows


def _ordered(rows: list[StepRow]) -> tuple[list[StepRow], list[StepRow]]:
    """(the steps to save, in their chosen order; the rows left out: removed, or an unused new
    row). Rows with the same position keep the order they had."""
    kept = [r for r in rows if not r.remove and (r.used or not r.new)]
    left = [r for r in rows if r not in kept]

    def position(pair: tuple[int, StepRow]) -> tuple[float, int]:
        index, row = pair
        try:
            return (float(row.position), index)
        except ValueError:
            return (float(index + 1), index)

    kept = [row for _, row in sorted(enumerate(kept), key=position)]
    return kept, left


def _shown(kept: list[StepRow], left: list[StepRow]) -> list[StepRow]:
    """The rows to show again after a refusal: the steps in their new order (numbered as the
    message numbers them), then the removed ones (still ticked), then an empty new row."""
    rows = [*kept, *(r for r in left if r.remove)]
    for number, row in enumerate(rows, 1):
        row.position = str(number)
        row.new = False
    new = next((r for r in left if r.new and not r.remove), None) or StepRow(position="", new=True)
    new.position = str(len(rows) + 1)
    return [*rows, new]


def _same_steps(new: list[dict[str, Any]], stored: list[dict[str, Any]]) -> bool:
    """Whether the form's steps are the stored ones (the form lists a step's actions in its own
    order, so the order of actions within a step does not count)."""

    def key(steps: list[dict[str, Any]]) -> list[tuple[float, str, str]]:
        return [
            (
                float(step["delay_minutes"]),
                json.dumps(step["targets"], sort_keys=True),
                json.dumps(sorted(json.dumps(a, sort_keys=True) for a in step["actions"])),
            )
            for step in steps
        ]

    return key(new) == key(stored)


async def _policy_or_404(session: AsyncSession, policy_id: int) -> EscalationPolicy:
    policy = await policy_service.get_policy(session, policy_id)
    if policy is None:
        raise NotFound(f"Escalation policy {policy_id} not found")
    return policy


async def _policy_page(
    request: Request,
    session: AsyncSession,
    browser: Browser,
    *,
    policy_id: int | None,
    fields: dict[str, Any],
    rows: list[StepRow],
    status: int = 200,
    error: str | None = None,
    saved: bool = False,
) -> Response:
    users = (
        await session.execute(
            select(User.id, User.full_name, User.email, User.is_active).order_by(
                func.lower(User.full_name), User.id
            )
        )
    ).all()
    schedules = (
        await session.execute(select(Schedule.id, Schedule.name).order_by(Schedule.name))
    ).all()
    return page(
        request,
        "admin_policy.html",
        browser=browser,
        status_code=status,
        policy_id=policy_id,
        fields=fields,
        rows=rows,
        users=users,
        schedules=schedules,
        severities=[s.value for s in Severity],
        error=error,
        saved=saved,
    )


def _fields_of(policy: EscalationPolicy | None) -> dict[str, Any]:
    if policy is None:
        return {
            "name": "",
            "description": "",
            "priority": "100",
            "repeat_count": "0",
            "repeat_delay_minutes": "5",
            "is_active": True,
        }
    return {
        "name": policy.name,
        "description": policy.description,
        "priority": str(policy.priority),
        "repeat_count": str(policy.repeat_count),
        "repeat_delay_minutes": _minutes(policy.repeat_delay_minutes),
        "is_active": policy.is_active,
    }


def _fields_from(form: FormData) -> dict[str, Any]:
    fields: dict[str, Any] = {
        name: _text(form, name)
        for name in ("name", "description", "priority", "repeat_count", "repeat_delay_minutes")
    }
    fields["is_active"] = bool(_text(form, "is_active"))
    return fields


@router.get("/policies/new", response_class=HTMLResponse)
async def new_policy_page(
    request: Request, session: SessionDep, browser: AdminViewerDep
) -> Response:
    """An empty policy form."""
    return await _policy_page(
        request,
        session,
        browser,
        policy_id=None,
        fields=_fields_of(None),
        rows=[StepRow(position="1", new=True)],
    )


@router.get("/policies/{policy_id}", response_class=HTMLResponse)
async def policy_page(
    policy_id: IdPath,
    request: Request,
    session: SessionDep,
    browser: AdminViewerDep,
    saved: str = "",
) -> Response:
    """One policy's form: name, repeats and its steps, plus an empty row to add a step."""
    policy = await _policy_or_404(session, policy_id)
    rows = [StepRow.of(step, number) for number, step in enumerate(policy.steps, 1)]
    rows.append(StepRow(position=str(len(rows) + 1), new=True))
    return await _policy_page(
        request,
        session,
        browser,
        policy_id=policy.id,
        fields=_fields_of(policy),
        rows=rows,
        saved=saved == "1",
    )


async def _save(
    request: Request,
    session: AsyncSession,
    browser: Browser,
    settings: SettingsDep,
    clock: ClockDep,
    policy: EscalationPolicy | None,
) -> Response:
    """Validate the form with the API's schema and save it through the API's service calls;
    a refusal shows the form again as it was sent, with the reason, and changes nothing."""
    form = await request.form()
    fields = _fields_from(form)
    rows = _rows_from(form)
    kept, left = _ordered(rows)
    numbers = ("priority", "repeat_count", "repeat_delay_minutes")
    data = {**fields, **{name: _number(fields[name]) for name in numbers}}
    data["steps"] = [row.step() for row in kept]
    policy_id = policy.id if policy is not None else None
    try:
        if policy is None:
            created = PolicyCreate.model_validate(data)
            values = created.model_dump(mode="json")
            policy = await policy_service.create_policy(
                session, data=values, now=clock.now(),
                allow_private=settings.allow_private_outbound,
            )  # fmt: skip
        else:
            update = PolicyUpdate.model_validate(data)
            dumped = update.model_dump(mode="json")
            changes = {name: dumped[name] for name in update.model_fields_set}
            if _same_steps(changes["steps"], policy.steps):
                # Unchanged steps are not sent: renaming a policy must work even when one of its
                # targets was deactivated since (as with the API, which checks what changes).
                del changes["steps"]
            await policy_service.update_policy(
                session, policy=policy, changes=changes, now=clock.now(),
                allow_private=settings.allow_private_outbound,
            )  # fmt: skip
    except (ValidationError, DomainError) as exc:
        if isinstance(exc, ValidationError):
            status, error = 422, _problems(exc)
        else:
            await session.rollback()
            status, error = exc.status_code, refusal(exc)
        return await _policy_page(
            request,
            session,
            browser,
            policy_id=policy_id,
            fields=fields,
            rows=_shown(kept, left),
            status=status,
            error=error,
        )
    return RedirectResponse(f"/ui/admin/policies/{policy.id}?saved=1", status_code=303)


@router.post("/policies/new", response_class=HTMLResponse)
async def create_policy(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    clock: ClockDep,
    browser: AdminActorDep,
) -> Response:
    """Create a policy from the form (it matches every incident: conditions via the API)."""
    return await _save(request, session, browser, settings, clock, None)


@router.post("/policies/{policy_id}", response_class=HTMLResponse)
async def save_policy(
    policy_id: IdPath,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    clock: ClockDep,
    browser: AdminActorDep,
) -> Response:
    """Save a policy's form."""
    policy = await _policy_or_404(session, policy_id)
    return await _save(request, session, browser, settings, clock, policy)


# ---- the audit log -------------------------------------------------------------------------------


def _readable(value: Any) -> str:
    """A before/after value as one line of text."""
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _changes(
    before: dict[str, Any] | None, after: dict[str, Any] | None
) -> list[tuple[str, str, str]]:
    fields = list(dict.fromkeys([*(before or {}), *(after or {})]))
    return [
        (
            name.replace("_", " "),
            _readable((before or {}).get(name)) if before is not None else "",
            _readable((after or {}).get(name)) if after is not None else "",
        )
        for name in fields
    ]


@router.get("/audit", response_class=HTMLResponse)
async def audit_page(
    request: Request,
    session: SessionDep,
    browser: AdminViewerDep,
    object_type: str = "",
    actor: str = "",
    action: str = "",
    cursor: str = "",
) -> Response:
    """The audit log, newest first, 50 entries a page, filtered by object type, actor, action."""
    filters = {"object_type": object_type[:64], "actor": actor[:32], "action": action[:32]}
    error = None
    if object_type and object_type not in audit_service.OBJECT_TYPES:
        error = f"Unknown object type {object_type[:64]!r}."
    elif action and action not in {a.value for a in Action}:
        error = f"Unknown action {action[:32]!r}."
    elif actor and not (actor.isdigit() and 1 <= int(actor) <= MAX_ID):
        error = "Unknown actor."
    entries: list[dict[str, Any]] = []
    next_cursor = None
    if error is None:
        chosen = audit_service.AuditFilter(
            object_type=object_type or None,
            actor_id=int(actor) if actor else None,
            action=action or None,
        )
        try:
            rows, next_cursor = await audit_service.list_page(
                session, filters=chosen, limit=50, cursor=cursor or None
            )
        except DomainError as exc:  # a cursor this page did not make
            error = exc.detail
        else:
            entries = [
                {**audit_service.as_item(row), "changes": _changes(row.before, row.after)}
                for row in rows
            ]
    users = (await session.execute(select(User.id, User.full_name).order_by(User.full_name))).all()
    return page(
        request,
        "admin_audit.html",
        browser=browser,
        status_code=422 if error else 200,
        error=error,
        filters=filters,
        entries=entries,
        next_cursor=next_cursor,
        object_types=audit_service.OBJECT_TYPES,
        actions=[a.value for a in Action],
        actors=[(user_id, name) for user_id, name in users],
    )
